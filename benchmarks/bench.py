"""Throughput of claimgate against bare mitmdump, side by side in one run (docs/design.md 5).

Proxies, each on its own port, all started once and kept running:

- ``mitmdump``: plain ``mitmdump -q`` as HTTPS_PROXY, intercepting, no addon: the budget's
  baseline (``mitmdump-b``, a second one, is the A/A control);
- ``core``: mitmproxy exactly as claimgate assembles it (its addons and options), without
  claimgate's addon (``core_proxy.py``): what claimgate's own work costs;
- ``least``: ``core`` with the least an injector can do per request (``least_injector.py``:
  decode, put the claim in, encode, one log line): the floor under that own work;
- ``claimgate``: ``claimgate run``, ``inject`` mode, the customer's claim present, so every
  request is parsed, decided, rewritten and logged.

Two measurements, both with ``hey`` (CONNECT, keep-alive, concurrent) against nginx answering
an onOffice-shaped JSON over TLS; the proxies are pinned to one CPU, client and upstream to the
others, so a proxy never competes with its own load:

1. **one at a time**: ``direct``, then each proxy alone, interleaved over ``--runs`` rounds;
   requests per second, p50 and p99 latency, and CPU milliseconds per request of the proxy.
2. **paired**: two proxies loaded at the same moment, sharing their CPU. Both are
   single-threaded and CPU-bound, so the scheduler gives each half, and their throughput
   ratio is the inverse ratio of their CPU cost per request, with the machine's drift
   (steal time, clock changes) hitting both alike. On a shared VM, one-at-a-time ratios
   move by 5-10 % between identical runs; paired ones by 1-3 %, which the A/A pair shows.
   The budget verdict uses the paired ratios.

A benchmark, not a test: it never fails on speed.

    ./dev bench [--runs 3] [--duration 10] [--pair-rounds 6] [--pair-duration 5]
                [--concurrency 16] [--sizes 1024,65536] [--spelling sdk|python]
"""

import argparse
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from claimgate import onoffice
from claimgate.testing import (
    ClaimgateProcess,
    free_port,
    make_certificates,
    make_claim,
    make_secret,
    make_token,
    service_call_url,
    signed_request,
    stop_process,
)

READ = onoffice.ACTION_PREFIX + "read"
CUSTOMER = "4711"
ANSWER = json.dumps(
    {
        "status": {"code": 200, "errorcode": 0, "message": "OK"},
        "response": {
            "results": [
                {
                    "actionid": READ,
                    "resourceid": "",
                    "resourcetype": "estate",
                    "cacheable": True,
                    "identifier": "",
                    "data": {"meta": {"cntabsolute": 1}, "records": []},
                    "status": {"errorcode": 0, "message": "OK"},
                }
            ]
        },
    }
)


@dataclass(frozen=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float = 0.0
    """CPU milliseconds the proxy spent per request (0 for ``direct``)."""
    requests: int = 0
    """Answers counted by hey."""


@dataclass(frozen=True)
class Pairing:
    """One paired round: ``a``'s throughput over ``b``'s, and what each spent per request."""

    ratio: float
    cpu_us: tuple[float, float]
    """CPU microseconds per request of ``a`` and of ``b`` in the round: with the ratio, the
    same comparison in absolute terms (``claimgate`` minus ``core`` is claimgate's own work)."""


@dataclass(frozen=True)
class Proxy:
    name: str
    url: str
    pid: int


PAIRS = (
    ("mitmdump-b", "mitmdump"),
    ("claimgate", "mitmdump"),
    ("claimgate", "core"),
    ("least", "core"),
)
"""Paired comparisons (numerator, denominator); the first is the A/A control."""
BUDGETS = {1024: 0.95, 65536: 0.9}
"""docs/design.md 5: claimgate / mitmdump throughput at these body sizes."""
OWN_WORK_TARGETS = {1024: 0.05, 65536: 0.15}
"""docs/performance.md, "Own work per request": claimgate's own share of the sidecar's CPU
at most this, read off the paired claimgate / core ratio (own work = 1 - ratio)."""


def ensure_tools() -> None:
    """Stop before starting anything when nginx or hey is absent: ``./dev setup`` installs them."""
    missing = [
        tool
        for tool in ("nginx", "hey")
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing:
        raise SystemExit(f"bench: {' and '.join(missing)} not installed: run ./dev setup")


SPELLINGS = {
    "sdk": "as the official PHP SDK's json_encode writes them (compact, '/' as '\\/')",
    "python": "as Python's json.dumps writes them by default (spaced)",
}
"""How request bodies are written; the first is what most of the API's traffic looks like."""


def body_of_size(size: int, token: str, secret: str, spelling: str = "sdk") -> bytes:
    """A signed onOffice request of about ``size`` bytes (a long field list), without a claim."""
    base = len(signed_request(token, secret))
    fields = [f"feld{i:05d}" for i in range(max(0, (size - base) // 13))]
    body = signed_request(token, secret, parameters={"data": ["Id", *fields], "listlimit": 10})
    if spelling == "python":
        return body
    return json.dumps(json.loads(body), separators=(",", ":")).replace("/", "\\/").encode()


@contextmanager
def process(
    args: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
) -> Iterator[int]:
    """Run ``args`` (on ``cpus`` only, when given) until the block ends; yields its pid."""

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    with log.open("wb") as out:
        child = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=pin,
        )
        try:
            yield child.pid
        finally:
            stop_process(child)


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def nginx(work: Path, cert: Path, key: Path) -> Iterator[int]:
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/body;
  client_max_body_size 4m;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      default_type application/json;
      return 200 '{ANSWER}';
    }}
  }}
}}
""")
    executable = shutil.which("nginx") or "/usr/sbin/nginx"
    with process([executable, "-c", str(conf), "-p", str(work)], work / "nginx.out"):
        wait_for_port(port)
        yield port


def hey(url: str, body: Path, duration: float, concurrency: int, proxy: str | None) -> Result:
    args = [
        "hey",
        "-z",
        f"{duration}s",
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-T",
        "application/x-www-form-urlencoded",
        "-D",
        str(body),
    ]
    if proxy:
        args += ["-x", proxy]
    output = subprocess.run(
        [*args, url], capture_output=True, text=True, check=True, timeout=duration + 60
    ).stdout
    errors = re.search(r"Error distribution:(.*)", output, re.S)
    if errors:
        raise RuntimeError("hey saw errors:\n" + errors.group(1)[:2000])
    statuses = re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)
    if any(code != "200" for code, _ in statuses):
        raise RuntimeError(f"non-200 answers: {statuses}")
    return Result(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_percentile_ms(output, 50),
        p99_ms=_percentile_ms(output, 99),
        requests=sum(int(count) for _, count in statuses),
    )


def _percentile_ms(output: str, percent: int) -> float:
    """A latency percentile from hey's report; NaN when hey left it out (too few answers)."""
    found = re.search(rf"{percent}%+ in ([\d.]+) secs", output)
    return float(found.group(1)) * 1000 if found else math.nan


def median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        statistics.median(r.cpu_ms for r in results),
    )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, body: Path, args: argparse.Namespace, proxy: Proxy | None) -> Result:
    """One proxy (or none) loaded alone, with its CPU time per request."""
    before = cpu_seconds(proxy.pid) if proxy else 0.0
    result = hey(url, body, args.duration, args.concurrency, proxy.url if proxy else None)
    if proxy is None:
        return result
    spent = cpu_seconds(proxy.pid) - before
    requests = result.rps * args.duration
    return replace(result, cpu_ms=1000 * spent / requests if requests else 0.0)


def paired(
    url: str, body: Path, args: argparse.Namespace, a: Proxy, b: Proxy, a_first: bool
) -> Pairing:
    """Throughput of ``a`` over ``b``, both loaded at the same moment on the same CPU.

    The load that starts first gets a head start of a few percent (seen in the A/A pair), so
    callers alternate ``a_first`` from round to round.
    """
    results: dict[str, Result] = {}

    def load(proxy: Proxy) -> None:
        results[proxy.name] = hey(url, body, args.pair_duration, args.concurrency, proxy.url)

    order = (a, b) if a_first else (b, a)
    threads = [threading.Thread(target=load, args=(proxy,)) for proxy in order]
    before = {proxy.name: cpu_seconds(proxy.pid) for proxy in order}
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def cpu_us(proxy: Proxy) -> float:
        spent = cpu_seconds(proxy.pid) - before[proxy.name]
        return 1e6 * spent / max(results[proxy.name].requests, 1)

    return Pairing(results[a.name].rps / results[b.name].rps, (cpu_us(a), cpu_us(b)))


def cpu_split() -> tuple[set[int], set[int]]:
    """(CPUs for the proxies, CPUs for client and upstream): one CPU apart when there are two."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return set(available), set(available)
    return {available[-1]}, set(available[:-1])


def mitmdump_args(port: int, confdir: Path, upstream_ca: Path) -> list[str]:
    executable = str(Path(sys.executable).with_name("mitmdump"))
    return [
        executable,
        "--mode",
        f"regular@127.0.0.1:{port}",
        "--set",
        f"confdir={confdir}",
        "--set",
        f"ssl_verify_upstream_trusted_ca={upstream_ca}",
        "--set",
        "onboarding=false",
        "--set",
        "connection_strategy=lazy",
        "-q",
    ]


def claimgate_config(
    work: Path, name: str, port: int, admin: int, upstream: int, upstream_ca: Path
) -> Path:
    """A configuration with the forward listener on ``port``; its file is ``name.toml``."""
    config = work / f"{name}.toml"
    config.write_text(f"""
[proxy]
listen = "127.0.0.1:{port}"
api_hosts = ["localhost:{upstream}"]
upstream_ca = "{upstream_ca}"
ca_dir = "{work / f"{name}-ca"}"
[capture]
listen = "127.0.0.1:{free_port()}"
upstream = "http://127.0.0.1:9"
provider_secret = "env:BENCH_PROVIDER_SECRET"
[admin]
listen = "127.0.0.1:{admin}"
token = "env:BENCH_ADMIN_TOKEN"
[[customers]]
customer_web_id = "{CUSTOMER}"
token = "env:BENCH_API_TOKEN"
""")
    return config


def give_claim(admin: int, admin_token: str, provider_secret: str) -> None:
    """Store the customer's claim through the admin API, so every request gets injected."""
    url = service_call_url(
        "https://provider.example/service",
        provider_secret,
        customer_web_id=CUSTOMER,
        user_id="17",
        claim=make_claim(),
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{admin}/claims",
        data=json.dumps({"url": url}).encode(),
        headers={"Authorization": f"Bearer {admin_token}"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as answer:
        assert answer.status == 201, answer.status


def run(args: argparse.Namespace) -> None:
    ensure_tools()
    proxy_cpus, load_cpus = cpu_split()
    os.sched_setaffinity(0, load_cpus)  # hey and nginx inherit it
    token, secret = make_token(), make_secret()
    admin_token, provider_secret = make_secret(), make_secret()
    with tempfile.TemporaryDirectory(prefix="claimgate-bench-") as tmp:
        work = Path(tmp)
        ca, cert, key = make_certificates(work, ["localhost", "127.0.0.1"])
        secrets = {
            "BENCH_PROVIDER_SECRET": provider_secret,
            "BENCH_ADMIN_TOKEN": admin_token,
            "BENCH_API_TOKEN": token,
        }
        env = os.environ | secrets | {"CLAIMGATE_LOG_FORMAT": "json"}
        admin = free_port()
        with nginx(work, cert, key) as upstream, ExitStack() as stack:
            url = f"https://localhost:{upstream}/api/stable/api.php"

            def start(name: str, command: list[str], port: int) -> Proxy:
                pid = stack.enter_context(process(command, work / f"{name}.log", env, proxy_cpus))
                wait_for_port(port)
                return Proxy(name, f"http://127.0.0.1:{port}", pid)

            def config(name: str, port: int, admin_port: int) -> str:
                return str(claimgate_config(work, name, port, admin_port, upstream, ca))

            running: dict[str, Proxy] = {}
            for name in ("mitmdump", "mitmdump-b"):
                port = free_port()
                running[name] = start(name, mitmdump_args(port, work / f"{name}-ca", ca), port)
            for name, script in (("core", "core_proxy.py"), ("least", "least_injector.py")):
                port = free_port()
                command = [sys.executable, str(Path(__file__).with_name(script))]
                running[name] = start(name, [*command, config(name, port, free_port())], port)
            port = free_port()
            claimgate_toml = claimgate_config(work, "claimgate", port, admin, upstream, ca)
            gate = ClaimgateProcess(claimgate_toml, secrets, cpus=proxy_cpus)
            stack.enter_context(gate)  # returns once every listener is up
            running["claimgate"] = Proxy("claimgate", f"http://127.0.0.1:{port}", gate.pid)
            give_claim(admin, admin_token, provider_secret)
            rows = [
                measure_size(size, url, work, token, secret, running, args) for size in args.sizes
            ]
    decisions = [event.get("decision") for event in gate.events("api_request")]
    injected = decisions.count("injected")
    report(rows, args, proxy_cpus, load_cpus, injected, len(decisions))


Row = tuple[int, dict[str, Result], dict[tuple[str, str], list[Pairing]]]


def measure_size(
    size: int,
    url: str,
    work: Path,
    token: str,
    secret: str,
    running: dict[str, Proxy],
    args: argparse.Namespace,
) -> Row:
    """Both measurements for one body size."""
    body = work / f"body-{size}.json"
    body.write_bytes(body_of_size(size, token, secret, args.spelling))
    for proxy in running.values():  # warm-up: TLS, certificate cache
        hey(url, body, 2, args.concurrency, proxy.url)
    alone = ("mitmdump", "core", "claimgate")
    measured: dict[str, list[Result]] = {name: [] for name in ("direct", *alone)}
    for _ in range(args.runs):  # interleaved, so drift hits all alike
        measured["direct"].append(measure(url, body, args, None))
        for name in alone:
            measured[name].append(measure(url, body, args, running[name]))
    pairings: dict[tuple[str, str], list[Pairing]] = {pair: [] for pair in PAIRS}
    for round_ in range(args.pair_rounds):
        for a, b in PAIRS:
            pairing = paired(url, body, args, running[a], running[b], a_first=round_ % 2 == 0)
            pairings[(a, b)].append(pairing)
    return size, {name: median(results) for name, results in measured.items()}, pairings


def report(
    rows: list[Row],
    args: argparse.Namespace,
    proxy_cpus: set[int],
    load_cpus: set[int],
    injected: int,
    decisions: int,
) -> None:
    print(
        f"\nproxies on CPU {sorted(proxy_cpus)}, hey and nginx on CPU {sorted(load_cpus)}; "
        f"hey -c {args.concurrency}, keep-alive, intercepted HTTPS through the forward listener; "
        f"request bodies {SPELLINGS[args.spelling]}"
    )
    print(f"\n1. one at a time: median of {args.runs} x {args.duration:g} s, interleaved\n")
    print(f"{'body':>6} {'target':<10} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10}")
    for size, results, _ in rows:
        for name, r in results.items():
            cpu = f"{r.cpu_ms:10.2f}" if r.cpu_ms else ""
            print(f"{size:>6} {name:<10} {r.rps:>7.0f} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {cpu}")
    print(
        f"\n2. paired: two proxies loaded at once on CPU {sorted(proxy_cpus)}, throughput ratio, "
        f"median [min-max] of {args.pair_rounds} x {args.pair_duration:g} s; beside it each "
        "one's CPU us per request in those rounds, median\n"
    )
    for size, _, pairings in rows:
        for (a, b), rounds in pairings.items():
            label = f"{a} / {b}" + (" (A/A control)" if a.startswith(b) else "")
            values = [p.ratio for p in rounds]
            cpu_a, cpu_b = (statistics.median(p.cpu_us[i] for p in rounds) for i in (0, 1))
            print(
                f"{size:>6} {label:<36} {statistics.median(values):.3f} "
                f"[{min(values):.3f}-{max(values):.3f}]   {cpu_a:.0f} / {cpu_b:.0f} us"
            )
    print("\nbudgets (docs/design.md 5), from the paired claimgate / mitmdump ratio:")
    for size, _, pairings in rows:
        ratio = statistics.median(p.ratio for p in pairings[("claimgate", "mitmdump")])
        budget = BUDGETS.get(size)
        verdict = "no budget" if budget is None else f">= {budget}: "
        if budget is not None:
            verdict += "met" if ratio >= budget else "NOT met"
        print(f"{size:>6} bytes: {ratio:.3f} x mitmdump ({verdict})")
    print(
        "\nown work (docs/performance.md), from the paired claimgate / core ratio, and in CPU"
        " time: claimgate's us per request less core's, the median of their rounds' difference;"
        " the same for the least an injector can do (least / core):"
    )
    for size, _, pairings in rows:
        own, own_us = _own_work(pairings[("claimgate", "core")])
        least, least_us = _own_work(pairings[("least", "core")])
        target = OWN_WORK_TARGETS.get(size)
        verdict = "no target" if target is None else f"<= {target:.0%}: "
        if target is not None:
            verdict += "met" if own <= target else "NOT met"
        print(
            f"{size:>6} bytes: {own:.1%} of the sidecar's CPU ({verdict}), {own_us:.0f} us; "
            f"least injector {least:.1%}, {least_us:.0f} us"
        )
    print(f"\nclaimgate decisions logged: {decisions}, injected: {injected}")


def _own_work(rounds: list[Pairing]) -> tuple[float, float]:
    """A numerator's work beyond ``core``: its share of the numerator's CPU, and in us."""
    share = 1 - statistics.median(p.ratio for p in rounds)
    return share, statistics.median(p.cpu_us[0] - p.cpu_us[1] for p in rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="one-at-a-time rounds")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    parser.add_argument(
        "--pair-rounds", type=int, default=6, help="even: each proxy starts first as often"
    )
    parser.add_argument("--pair-duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--sizes", type=lambda v: [int(s) for s in v.split(",")], default=[1024, 65536]
    )
    parser.add_argument(
        "--spelling",
        choices=list(SPELLINGS),
        default="sdk",
        help="; ".join(f"{name}: {meaning}" for name, meaning in SPELLINGS.items()),
    )
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
