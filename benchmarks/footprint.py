"""Footprint of claimgate against bare mitmdump: memory, time to ready, latency added.

The issue's protocol, both proxies side by side in one run:

- ``--starts`` (3) alternate starts of each, after one unmeasured start of each (the CAs
  created, the files in the page cache): ``mitmdump -q`` on one port, as ``./dev bench`` runs
  it, and ``claimgate run`` on the sidecar configuration: what deploy/kubernetes's configmap
  sets, runnable locally (forward listener, capture listener in front of a small local app,
  admin listener, inject, JSON logs, ``config.watch``), every listener on a free loopback
  port; the memory store, or with ``--store redis`` the configmap's own choice, the Redis
  store, on a ``redis-server`` of its own for the run;
- ready: from exec until ``/readyz`` answers 200 (claimgate), until a request through it is
  answered (mitmdump), polled every 5 ms;
- idle: VmRSS ``--idle`` (3) seconds after ready, before any traffic;
- latency added at concurrency 1: ``--latency-requests`` sequential requests to the onOffice
  API double through the proxy, each paired with one straight to the double; median and
  p99 of both, added = through - direct;
- soak: ``--soak-requests`` (50,000) requests as ``./dev soak`` sends them (4 clients, new
  connections every 1,000 per client; through claimgate every one injected), bounded by
  ``--soak-seconds`` each, on the last ``--soak-starts`` (all 3) starts of each; VmRSS after.

The proxies are pinned to one CPU, this process (clients, API double, app) to the other.
Every module's bytecode is cached, as in the image (``--bytecode``).

Then where the start-up time goes (``--startup-runs`` of each, 0 to skip): ``-X importtime``
of the unchanged processes, and the probe (``benchmarks/startup/sitecustomize.py``), which
times every import and the set-up calls between exec and ready; and candidate cuts tried on
claimgate through the probe (``--trial-runs`` of each, 0 to skip), no code changed.

A benchmark, not a test: it never fails on the numbers, it says which targets are met.
About 8 minutes on a 2-vCPU VM, most of it the six soaks.

    ./dev footprint [--starts 3] [--idle 3] [--latency-requests 400] [--soak-requests 50000]
                    [--soak-seconds 150] [--soak-starts 3] [--startup-runs 3] [--trial-runs 8]
                    [--store memory|redis]
"""

import argparse
import http.client
import json
import math
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from benchmarks import bench, soak, startup_time
from benchmarks.figures import fmt, format_table, median, percentile, ratio, rss_mib, verdict
from claimgate.testing import (
    ApiDouble,
    ClaimgateProcess,
    free_port,
    make_claim,
    make_secret,
    make_token,
    signed_request,
)

NAMES = ("mitmdump", "claimgate")
PROBE_DIR = Path(__file__).with_name("startup")
POLL = 0.005
"""Seconds between two ready probes."""
READY_TIMEOUT = 30.0
WARM_UP_REQUESTS = 20
"""Requests on each client before the latency is measured: CONNECT, TLS, minted certificate."""
SOAK_SLICE = 2500
"""Requests between two checks of the soak's time bound (``./dev soak``'s slice)."""
TARGETS = {"idle": 0.95, "ready": 0.8}
"""claimgate / mitmdump at most (the issue)."""
SOAK_GROWTH_MIB = 20.0
"""claimgate's RSS after the soak at most this much above its idle RSS (the issue)."""


# --- the processes ---------------------------------------------------------------------


@dataclass
class World:
    """What every start shares: the work directory, the API double, the app, credentials."""

    work: Path
    api: ApiDouble
    app_port: int
    token: str
    secret: str
    claim: str
    admin_token: str
    provider_secret: str
    proxy_cpus: set[int]
    python: dict[str, str] = field(default_factory=dict)
    """Python's settings for every child (``bytecode_env``)."""
    store: str = "memory"
    """claimgate's ``claims.store``."""

    @property
    def secrets(self) -> dict[str, str]:
        return {
            "FOOTPRINT_PROVIDER_SECRET": self.provider_secret,
            "FOOTPRINT_ADMIN_TOKEN": self.admin_token,
            "FOOTPRINT_API_TOKEN": self.token,
        }


@dataclass
class Running:
    name: str
    pid: int
    proxy: str
    """The forward listener, ``http://host:port``."""
    ca: Path
    """The interception CA's certificate, for the clients."""
    ready_s: float
    ready_at: float
    """``time.monotonic()`` when it was seen ready."""
    lines: Callable[[], list[str]]
    """Everything the process wrote so far."""
    admin: int = 0
    gate: ClaimgateProcess | None = None


def sidecar_config(world: World, forward: int, capture: int, admin: int) -> Path:
    """deploy/kubernetes/configmap.yaml's settings, on loopback, ``world.store``, local app."""
    config = world.work / f"claimgate-{forward}.toml"
    config.write_text(f"""
[proxy]
listen = "127.0.0.1:{forward}"
api_hosts = ["localhost:{world.api.port}"]
upstream_ca = "{world.api.ca_path}"
ca_dir = "{world.work / "claimgate-ca"}"
[capture]
upstream = "http://127.0.0.1:{world.app_port}"
listen = "127.0.0.1:{capture}"
public_base_url = "https://app.example.com"
provider_secret = "env:FOOTPRINT_PROVIDER_SECRET"
[claims]
store = "{world.store}"
[policy]
mode = "inject"
[admin]
listen = "127.0.0.1:{admin}"
token = "env:FOOTPRINT_ADMIN_TOKEN"
shutdown_grace = "20s"
[log]
format = "json"
[config]
watch = true
[[customers]]
customer_web_id = "{bench.CUSTOMER}"
token = "env:FOOTPRINT_API_TOKEN"
""")
    return config


def poll_until(ready: Callable[[], bool], t0: float, alive: Callable[[], bool]) -> float:
    """Seconds from ``t0`` until ``ready()`` first holds; raises when the process died."""
    deadline = t0 + READY_TIMEOUT
    while time.monotonic() < deadline:
        if ready():
            return time.monotonic() - t0
        if not alive():
            raise RuntimeError("the process exited before it was ready")
        time.sleep(POLL)
    raise RuntimeError(f"not ready within {READY_TIMEOUT} s")


def answers(port: int, target: str, proxied: bool = False) -> bool:
    """Whether an HTTP GET of ``target`` on 127.0.0.1:``port`` (as a proxy request when
    ``proxied``) is answered 200 now."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", target)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def bytecode_env(mode: str, work: Path) -> dict[str, str]:
    """Python's settings for the children: ``cached`` as in the image (pip compiled every
    module, claimgate's too), in a cache of this run's own (``PYTHONPYCACHEPREFIX``: nothing
    is written next to the sources), which the unmeasured starts fill; ``source``: as this
    environment says (with ``PYTHONDONTWRITEBYTECODE`` set, an editable install compiles
    claimgate's modules from source at every start, and only claimgate's)."""
    if mode == "source":
        return {}
    return {"PYTHONPYCACHEPREFIX": str(work / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment less every ``*_PROXY`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    return env | extra


@contextmanager
def launch(world: World, name: str, extra: dict[str, str] | None = None) -> Iterator[Running]:
    """Start ``name``, measure its time to ready from exec, stop it when the block ends."""
    extra = dict(extra or {})
    if name == "claimgate":
        with launch_claimgate(world, extra) as running:
            yield running
    else:
        with launch_mitmdump(world, extra) as running:
            yield running


@contextmanager
def launch_claimgate(world: World, extra: dict[str, str]) -> Iterator[Running]:
    forward, capture, admin = free_port(), free_port(), free_port()
    config = sidecar_config(world, forward, capture, admin)
    t0 = time.monotonic()
    env = world.python | world.secrets | extra | {"FOOTPRINT_T0": repr(t0)}
    gate = ClaimgateProcess(config, env, cpus=world.proxy_cpus)
    result: dict[str, float] = {}
    done = threading.Event()

    def poll() -> None:
        with suppress(RuntimeError):  # reported below: no "ready" in result
            result["ready"] = poll_until(
                lambda: answers(admin, "/readyz"), t0, lambda: not done.is_set()
            )

    poller = threading.Thread(target=poll, name="footprint-ready", daemon=True)
    poller.start()
    try:
        gate.start(timeout=READY_TIMEOUT)
    except BaseException:
        done.set()
        raise
    poller.join(READY_TIMEOUT)
    try:
        if "ready" not in result:
            raise RuntimeError("claimgate logged claimgate_ready, yet /readyz never said 200")
        yield Running(
            "claimgate",
            gate.pid,
            f"http://127.0.0.1:{forward}",
            world.work / "claimgate-ca" / "mitmproxy-ca-cert.pem",
            result["ready"],
            t0 + result["ready"],
            lambda: list(gate.lines),
            admin,
            gate,
        )
    finally:
        gate.stop()


@contextmanager
def launch_mitmdump(world: World, extra: dict[str, str]) -> Iterator[Running]:
    port = free_port()
    confdir = world.work / "mitmdump-ca"
    args = bench.mitmdump_args(port, confdir, world.api.ca_path)
    log = world.work / f"mitmdump-{port}.log"
    t0 = time.monotonic()
    env = child_env(world.python | extra | {"FOOTPRINT_T0": repr(t0)})
    with bench.process(args, log, env, world.proxy_cpus) as pid:
        target = f"http://127.0.0.1:{world.app_port}/ready"
        ready = poll_until(
            lambda: answers(port, target, proxied=True),
            t0,
            lambda: Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid),
        )
        yield Running(
            "mitmdump",
            pid,
            f"http://127.0.0.1:{port}",
            confdir / "mitmproxy-ca-cert.pem",
            ready,
            t0 + ready,
            lambda: log.read_text(errors="replace").splitlines(keepends=True),
        )


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        return "zombie"


@contextmanager
def local_app() -> Iterator[int]:
    """The provider's app behind the capture listener (and mitmdump's ready target): 200."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- one measured start ---------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p99_ms: float
    direct_median_ms: float
    direct_p99_ms: float

    @property
    def added_median_ms(self) -> float:
        return self.median_ms - self.direct_median_ms

    @property
    def added_p99_ms(self) -> float:
        return self.p99_ms - self.direct_p99_ms


@dataclass(frozen=True)
class Start:
    name: str
    ready_s: float
    idle_mib: float
    latency: Latency
    soak_requests: int = 0
    soak_s: float = math.nan
    soak_mib: float = math.nan


def body_for(world: World, name: str) -> bytes:
    """claimgate gets what legacy code sends (no claim) and injects; the others get the
    request with the claim, so the API double does the same work for all."""
    if name == "claimgate":
        return signed_request(world.token, world.secret)
    return signed_request(world.token, world.secret, claim=world.claim)


def _post(client: httpx.Client, url: str, body: bytes) -> float:
    started = time.perf_counter()
    answer = client.post(url, content=body)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200 or answer.json()["status"]["errorcode"] != 0:
        raise RuntimeError(f"unexpected answer: {answer.status_code} {answer.text[:300]}")
    return elapsed * 1000


def measure_latency(world: World, running: Running, requests: int) -> Latency:
    """``requests`` sequential requests through the proxy, each paired with a direct one
    (which goes first alternates), on two keep-alive connections."""
    proxied_body, direct_body = body_for(world, running.name), body_for(world, "direct")
    trust = ssl.create_default_context(cafile=str(running.ca))
    url = world.api.url
    through: list[float] = []
    direct: list[float] = []
    with (
        httpx.Client(verify=str(world.api.ca_path), trust_env=False) as straight,
        httpx.Client(proxy=running.proxy, verify=trust, trust_env=False) as proxied,
    ):
        for _ in range(WARM_UP_REQUESTS):
            _post(straight, url, direct_body)
            _post(proxied, url, proxied_body)
        for i in range(requests):
            if i % 2:
                through.append(_post(proxied, url, proxied_body))
                direct.append(_post(straight, url, direct_body))
            else:
                direct.append(_post(straight, url, direct_body))
                through.append(_post(proxied, url, proxied_body))
    world.api.clear()
    return Latency(
        statistics.median(through),
        percentile(through, 99),
        statistics.median(direct),
        percentile(direct, 99),
    )


def run_soak(world: World, running: Running, requests: int, seconds: float) -> tuple[int, float]:
    """``./dev soak``'s load through ``running`` until ``requests`` were sent or ``seconds``
    passed (checked every 2,500); returns (requests sent, seconds)."""
    trust = ssl.create_default_context(cafile=str(running.ca))
    body = body_for(world, running.name)
    started = time.monotonic()
    sent = 0
    while sent < requests and time.monotonic() - started < seconds:
        count = min(SOAK_SLICE, requests - sent)
        soak._drive(running.proxy, trust, world.api.url, body, count, clients=4, reconnect=1000)
        sent += count
        world.api.clear()  # the double's own record of requests must not grow
    return sent, time.monotonic() - started


def measure_start(world: World, name: str, args: argparse.Namespace, with_soak: bool) -> Start:
    with launch(world, name) as running:
        time.sleep(max(0.0, running.ready_at + args.idle - time.monotonic()))
        idle = rss_mib(running.pid)
        if running.gate is not None:
            bench.give_claim(running.admin, world.admin_token, world.provider_secret)
        latency = measure_latency(world, running, args.latency_requests)
        if not with_soak:
            return Start(name, running.ready_s, idle, latency)
        sent, seconds = run_soak(world, running, args.soak_requests, args.soak_seconds)
        return Start(name, running.ready_s, idle, latency, sent, seconds, rss_mib(running.pid))


# --- the start-up breakdown -------------------------------------------------------------------


def probe_start(
    world: World, name: str, index: int, breakdown: startup_time.Breakdown, trials: str = ""
) -> None:
    """One start with the probe on ``PYTHONPATH`` (and ``trials`` tried out); its record
    added to ``breakdown``."""
    out = world.work / f"probe-{name}-{index}-{trials.replace(',', '+')}.json"
    path = os.pathsep.join(p for p in (str(PROBE_DIR), os.environ.get("PYTHONPATH")) if p)
    env = {"FOOTPRINT_PROBE_OUT": str(out), "PYTHONPATH": path, "FOOTPRINT_TRY": trials}
    with launch(world, name, env) as running:
        observed_ms = running.ready_s * 1000
    breakdown.add_probe(json.loads(out.read_text()), observed_ms)


def importtime_start(world: World, name: str, breakdown: startup_time.Breakdown) -> None:
    """One start under ``-X importtime``; its tree added to ``breakdown``."""
    with launch(world, name, {"PYTHONPROFILEIMPORTTIME": "1"}) as running:
        pass
    breakdown.add_importtime(running.lines())


def startup_breakdown(world: World, runs: int) -> dict[str, startup_time.Breakdown]:
    result = {name: startup_time.Breakdown(name) for name in NAMES}
    for index in range(runs):
        for name in NAMES:
            importtime_start(world, name, result[name])
            probe_start(world, name, index, result[name])
    return result


def try_cuts(
    world: World, runs: int
) -> tuple[dict[str, startup_time.Breakdown], dict[str, list[float]]]:
    """claimgate with each of ``startup_time.TRIALS``, each start of a trial next to one as
    it is (which of the two goes first alternates): the machine's speed drifts by 10-20 %
    within seconds here, so only adjacent starts are compared. Returns the breakdowns and,
    per trial, the paired differences of the time to ready (ms)."""
    base, _ = startup_time.TRIALS[0]
    result = {label: startup_time.Breakdown(label) for label, _ in startup_time.TRIALS}
    diffs: dict[str, list[float]] = {label: [] for label, _ in startup_time.TRIALS[1:]}
    for index in range(runs):
        for label, trials in startup_time.TRIALS[1:]:
            pair = [(base, ""), (label, trials)]
            for name, spec in pair if index % 2 == 0 else pair[::-1]:
                probe_start(world, "claimgate", index, result[name], spec)
            diff = result[label].observed_ms[-1] - result[base].observed_ms[-1]
            diffs[label].append(diff)
            print(f"  trial {index + 1} {label}: {diff:+.0f} ms", file=sys.stderr, flush=True)
    return result, diffs


# --- running it all --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    proxy_cpus, load_cpus = bench.cpu_split()
    os.sched_setaffinity(0, load_cpus)
    token, secret = make_token(), make_secret()
    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="claimgate-footprint-") as tmp,
        ApiDouble({token: secret}) as api,
        local_app() as app_port,
        store(args.store) as store_url,
    ):
        world = World(
            Path(tmp),
            api,
            app_port,
            token,
            secret,
            make_claim(),
            make_secret(),
            make_secret(),
            proxy_cpus,
            bytecode_env(args.bytecode, Path(tmp)),
            store_url,
        )
        for name in NAMES:  # unmeasured: the CAs are created, the bytecode, the page cache
            with launch(world, name):
                pass
        starts: dict[str, list[Start]] = {name: [] for name in NAMES}
        for round_ in range(args.starts):
            order = NAMES if round_ % 2 == 0 else NAMES[::-1]
            with_soak = round_ >= args.starts - args.soak_starts
            for name in order:
                start = measure_start(world, name, args, with_soak and args.soak_requests > 0)
                starts[name].append(start)
                print(f"  {describe_start(round_, start)}", file=sys.stderr, flush=True)
        breakdowns = startup_breakdown(world, args.startup_runs) if args.startup_runs else {}
        trials, diffs = try_cuts(world, args.trial_runs) if args.trial_runs else ({}, {})
    if args.starts:
        print(report(starts, args, proxy_cpus, load_cpus))
    if breakdowns:
        print(startup_time.report(breakdowns.values()))
        print(startup_time.report_candidates(breakdowns))
    if trials:
        print(startup_time.report_trials(trials, diffs))
    print(f"\nwhole run: {time.monotonic() - began:.0f} s")


@contextmanager
def store(kind: str) -> Iterator[str]:
    """claimgate's ``claims.store`` for ``kind``: a ``redis-server`` of the run's own (from
    ``./dev setup``), on loopback, for ``redis``."""
    if kind == "memory":
        yield "memory"
        return
    from tests.redis_server import RedisServer

    with RedisServer() as server:
        yield server.url


def describe_start(round_: int, start: Start) -> str:
    soaked = (
        f", {start.soak_requests} requests in {start.soak_s:.0f} s: {start.soak_mib:.1f} MiB"
        if start.soak_requests
        else ""
    )
    return (
        f"start {round_ + 1} {start.name}: ready {start.ready_s:.3f} s, idle "
        f"{start.idle_mib:.1f} MiB, added {start.latency.added_median_ms:.2f} ms{soaked}"
    )


def summary(starts: dict[str, list[Start]]) -> dict[str, dict[str, float]]:
    """Per proxy, the median over its starts of each measurement."""
    result = {}
    for name, measured in starts.items():
        result[name] = {
            "ready_s": median(s.ready_s for s in measured),
            "idle_mib": median(s.idle_mib for s in measured),
            "soak_mib": median(s.soak_mib for s in measured),
            "soak_growth_mib": median(s.soak_mib - s.idle_mib for s in measured),
            "soak_requests": median(s.soak_requests for s in measured if s.soak_requests),
            "added_median_ms": median(s.latency.added_median_ms for s in measured),
            "added_p99_ms": median(s.latency.added_p99_ms for s in measured),
            "median_ms": median(s.latency.median_ms for s in measured),
            "p99_ms": median(s.latency.p99_ms for s in measured),
            "direct_median_ms": median(s.latency.direct_median_ms for s in measured),
            "direct_p99_ms": median(s.latency.direct_p99_ms for s in measured),
        }
    return result


def paired_ready_ratios(starts: dict[str, list[Start]]) -> list[float]:
    """claimgate's time to ready over mitmdump's, round by round (the two starts of a round
    follow each other, so the machine's drift over the run cancels out)."""
    return [
        ratio(gate.ready_s, mitm.ready_s)
        for gate, mitm in zip(starts["claimgate"], starts["mitmdump"], strict=False)
    ]


METRICS = (
    ("ready_s", "time to ready, s", 3),
    ("idle_mib", "RSS idle, MiB", 1),
    ("soak_mib", "RSS after the soak, MiB", 1),
    ("soak_growth_mib", "  growth over idle, MiB", 1),
    ("direct_median_ms", "direct call, median ms", 2),
    ("median_ms", "through the proxy, median ms", 2),
    ("added_median_ms", "added per request, median ms", 2),
    ("direct_p99_ms", "direct call, p99 ms", 2),
    ("p99_ms", "through the proxy, p99 ms", 2),
    ("added_p99_ms", "added per request, p99 ms", 2),
)


def report(
    starts: dict[str, list[Start]],
    args: argparse.Namespace,
    proxy_cpus: set[int],
    load_cpus: set[int],
) -> str:
    values = summary(starts)
    mitm, gate = values["mitmdump"], values["claimgate"]
    rows = []
    for key, label, digits in METRICS:
        ratio_text = "" if "direct" in key else fmt(ratio(gate[key], mitm[key]), 2)
        rows.append((label, fmt(mitm[key], digits), fmt(gate[key], digits), ratio_text))
    soaked = int(gate["soak_requests"]) if not math.isnan(gate["soak_requests"]) else 0
    growth = gate["soak_growth_mib"]
    paired = paired_ready_ratios(starts)
    soaks = min(args.soak_starts, args.starts) if args.soak_requests else 0
    lines = [
        f"\nproxies on CPU {sorted(proxy_cpus)}, clients, API double and app on CPU "
        f"{sorted(load_cpus)}; median of {args.starts} alternate starts of each (soaked: "
        f"{soaks} of them); latency: {args.latency_requests} sequential requests, each "
        f"paired with a direct one; bytecode: {args.bytecode}; claimgate's store: {args.store}\n",
        format_table(("", "mitmdump", "claimgate", "ratio"), rows),
        "\nper start:",
        format_table(
            ("start", "ready s", "idle MiB", "added ms", "added p99", "soak reqs", "after MiB"),
            (
                (
                    f"{i + 1} {s.name}",
                    f"{s.ready_s:.3f}",
                    f"{s.idle_mib:.1f}",
                    f"{s.latency.added_median_ms:.2f}",
                    f"{s.latency.added_p99_ms:.2f}",
                    s.soak_requests or "",
                    fmt(s.soak_mib),
                )
                for name in NAMES
                for i, s in enumerate(starts[name])
            ),
        ),
        "\ntargets (the issue):",
        f"  idle RSS <= {TARGETS['idle']}x mitmdump's: "
        f"{fmt(ratio(gate['idle_mib'], mitm['idle_mib']), 3)} "
        f"({verdict(ratio(gate['idle_mib'], mitm['idle_mib']), TARGETS['idle'])})",
        f"  ready <= {TARGETS['ready']}x mitmdump's time: "
        f"{fmt(ratio(gate['ready_s'], mitm['ready_s']), 3)} "
        f"({verdict(ratio(gate['ready_s'], mitm['ready_s']), TARGETS['ready'])}); the two "
        f"starts of each round compared: {fmt(median(paired), 3)} "
        f"[{fmt(min(paired, default=math.nan), 3)}-{fmt(max(paired, default=math.nan), 3)}]",
        f"  RSS after the soak ({soaked} requests) within {SOAK_GROWTH_MIB:g} MiB of idle: "
        f"{'-' if math.isnan(growth) else f'{growth:+.1f}'} MiB "
        f"({verdict(growth, SOAK_GROWTH_MIB)})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="measured starts of each")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds after ready")
    parser.add_argument("--latency-requests", type=int, default=400)
    parser.add_argument("--soak-requests", type=int, default=50_000)
    parser.add_argument("--soak-seconds", type=float, default=150.0, help="bound per soak")
    parser.add_argument("--soak-starts", type=int, default=3, help="the last N starts soak")
    parser.add_argument("--startup-runs", type=int, default=3, help="0: no breakdown")
    parser.add_argument(
        "--trial-runs", type=int, default=8, help="runs of each cut tried (0: none)"
    )
    parser.add_argument(
        "--bytecode",
        choices=("cached", "source"),
        default="cached",
        help="cached: every module's bytecode cached, as in the image (default); source: as "
        "this environment has it (PYTHONDONTWRITEBYTECODE: claimgate compiled at each start)",
    )
    parser.add_argument(
        "--store",
        choices=("memory", "redis"),
        default="memory",
        help="claimgate's claim store: memory (default), or redis on a redis-server of its own",
    )
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
