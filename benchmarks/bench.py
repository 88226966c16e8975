"""Throughput of claimgate against bare mitmdump, side by side in one run (issue 7, DESIGN 5).

For each body size it measures, with the same load generator and the same upstream:

- ``direct``: the client straight to the upstream (what the machine can do at all);
- ``mitmdump``: plain ``mitmdump`` as HTTPS_PROXY, intercepting, no addon;
- ``claimgate``: ``claimgate run`` as HTTPS_PROXY, ``inject`` mode, the customer's claim
  present, so every request is parsed, decided, rewritten and logged.

The upstream is nginx answering a fixed onOffice-shaped JSON over TLS (so it is never the
bottleneck); the client is ``hey`` (its ``-x`` sends CONNECT, keep-alive, concurrent). Both
come from Debian and are installed when missing. It prints requests per second, p50 and p99
latency, and the ratios claimgate / mitmdump. It is a benchmark: it never fails on speed.

    ./dev bench [--duration 10] [--runs 3] [--concurrency 16] [--sizes 1024,65536]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from claimgate import onoffice
from claimgate.testing import (
    make_certificates,
    make_claim,
    make_secret,
    make_token,
    service_call_url,
    signed_request,
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ensure_tools() -> None:
    missing = [
        name
        for name, tool in (("nginx", "nginx"), ("hey", "hey"))
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing:
        print(f"installing {', '.join(missing)} with apt-get ...", flush=True)
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )


def body_of_size(size: int, token: str, secret: str) -> bytes:
    """A signed onOffice request of about ``size`` bytes (a long field list), without a claim."""
    base = len(signed_request(token, secret))
    fields = [f"feld{i:05d}" for i in range(max(0, (size - base) // 13))]
    return signed_request(token, secret, parameters={"data": ["Id", *fields], "listlimit": 10})


@contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    with log.open("wb") as out:
        child = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        try:
            yield
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


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
        p50_ms=float(re.search(r"50%+ in ([\d.]+) secs", output).group(1)) * 1000,  # type: ignore[union-attr]
        p99_ms=float(re.search(r"99%+ in ([\d.]+) secs", output).group(1)) * 1000,  # type: ignore[union-attr]
    )


def median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
    )


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
    work: Path, port: int, admin: int, capture: int, upstream: int, upstream_ca: Path
) -> Path:
    config = work / "claimgate.toml"
    config.write_text(f"""
[proxy]
listen = "127.0.0.1:{port}"
api_hosts = ["localhost:{upstream}"]
upstream_ca = "{upstream_ca}"
ca_dir = "{work / "claimgate-ca"}"
[capture]
listen = "127.0.0.1:{capture}"
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
    token, secret = make_token(), make_secret()
    admin_token, provider_secret = make_secret(), make_secret()
    with tempfile.TemporaryDirectory(prefix="claimgate-bench-") as tmp:
        work = Path(tmp)
        ca, cert, key = make_certificates(work, ["localhost", "127.0.0.1"])
        with nginx(work, cert, key) as upstream:
            url = f"https://localhost:{upstream}/api/stable/api.php"
            mitm_port, cg_port = free_port(), free_port()
            admin, capture = free_port(), free_port()
            config = claimgate_config(work, cg_port, admin, capture, upstream, ca)
            env = os.environ | {
                "BENCH_PROVIDER_SECRET": provider_secret,
                "BENCH_ADMIN_TOKEN": admin_token,
                "BENCH_API_TOKEN": token,
                "CLAIMGATE_LOG_FORMAT": "json",
            }
            claimgate = [
                str(Path(sys.executable).with_name("claimgate")),
                "run",
                "--config",
                str(config),
            ]
            rows = []
            with (
                process(mitmdump_args(mitm_port, work / "mitm-ca", ca), work / "mitmdump.log"),
                process(claimgate, work / "claimgate.log", env),
            ):
                wait_for_port(mitm_port)
                wait_for_port(admin)
                give_claim(admin, admin_token, provider_secret)
                for size in args.sizes:
                    body_file = work / f"body-{size}.json"
                    body_file.write_bytes(body_of_size(size, token, secret))
                    targets = {
                        "direct": None,
                        "mitmdump": f"http://127.0.0.1:{mitm_port}",
                        "claimgate": f"http://127.0.0.1:{cg_port}",
                    }
                    measured: dict[str, list[Result]] = {name: [] for name in targets}
                    for proxy in targets.values():  # warm-up: TLS, certificate cache
                        hey(url, body_file, 2, args.concurrency, proxy)
                    for _ in range(args.runs):  # interleaved, so drift hits all alike
                        for name, proxy in targets.items():
                            measured[name].append(
                                hey(url, body_file, args.duration, args.concurrency, proxy)
                            )
                    rows.append((size, {name: median(r) for name, r in measured.items()}))
            decisions = [
                json.loads(line)
                for line in (work / "claimgate.log").read_text().splitlines()
                if '"api_request"' in line
            ]
            injected = sum(1 for d in decisions if d.get("decision") == "injected")
        report(rows, args, injected, len(decisions))


def report(rows, args: argparse.Namespace, injected: int, decisions: int) -> None:
    print(
        f"\nhey -c {args.concurrency}, {args.runs} x {args.duration:g} s per cell (median), "
        f"keep-alive, intercepted HTTPS through the forward listener; upstream nginx\n"
    )
    print(f"{'body':>8} {'target':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  ratio")
    for size, results in rows:
        for name in ("direct", "mitmdump", "claimgate"):
            r = results[name]
            ratio = ""
            if name == "claimgate":
                ratio = f"{r.rps / results['mitmdump'].rps:.3f} x mitmdump"
            print(f"{size:>8} {name:<10} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}  {ratio}")
    print(f"\nclaimgate decisions logged: {decisions}, injected: {injected}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--sizes", type=lambda v: [int(s) for s in v.split(",")], default=[1024, 65536]
    )
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
