"""``./dev bench`` and ``./dev footprint`` in a short form, so the benchmarks cannot rot
unnoticed.

They assert that every proxy was measured and every comparison reported, and that claimgate
injected every request it was sent; never how fast anything was (speed is the benchmark's
business, not CI's). nginx and hey come from ``./dev setup``; without them the benchmark
exits naming that step, and this test fails with its message.
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from mitmproxy.test import tflow, tutils

from claimgate.testing import make_secret, make_token

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench.py"


def test_bench_measures_every_proxy_and_reports_every_comparison():
    short = ["--runs", "1", "--duration", "1", "--pair-rounds", "2", "--pair-duration", "1"]
    bench = subprocess.Popen(
        [sys.executable, str(BENCH), *short, "--sizes", "1024"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its nginx and proxies are in its group: one kill stops all
    )
    try:
        report, errors = bench.communicate(timeout=300)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    assert bench.returncode == 0, errors[-2000:]
    for target in ("direct", "mitmdump", "core", "claimgate"):
        assert re.search(rf"^\s+1024 {target}\s+\d+", report, re.M), target
    pairs = ("mitmdump-b / mitmdump (A/A control)", "claimgate / mitmdump", "claimgate / core")
    for pair in (*pairs, "least / core"):
        line = re.search(
            rf"1024 {re.escape(pair)}\s+\d\.\d{{3}} \[.*\]\s+(\d+) / (\d+) us$", report, re.M
        )
        assert line, pair
        assert int(line.group(1)) > 0 and int(line.group(2)) > 0, line.group(0)  # CPU was read
    assert re.search(r"1024 bytes: \d\.\d{3} x mitmdump \(>= 0.95: (met|NOT met)\)", report)
    ratio = float(re.search(r"1024 claimgate / core\s+(\d\.\d{3}) \[", report).group(1))
    own = re.search(
        r"1024 bytes: (-?\d+\.\d)% of the sidecar's CPU \(<= 5%: (met|NOT met)\), -?\d+ us; "
        r"least injector (-?\d+\.\d)%, -?\d+ us$",
        report,
        re.M,
    )
    assert abs(float(own.group(1)) - 100 * (1 - ratio)) < 0.06  # the median's complement
    least = float(re.search(r"1024 least / core\s+(\d\.\d{3}) \[", report).group(1))
    assert abs(float(own.group(3)) - 100 * (1 - least)) < 0.06
    if abs(float(own.group(1)) - 5.0) > 0.05:  # else the rounding decides
        assert (own.group(2) == "met") == (float(own.group(1)) < 5.0)
    logged, injected = re.search(r"decisions logged: (\d+), injected: (\d+)", report).groups()
    assert int(logged) > 0 and logged == injected


SHORT_FOOTPRINT = ["--starts", "1", "--idle", "0.5", "--latency-requests", "20"]


def footprint_report(*arguments: str) -> str:
    """What ``./dev footprint`` with ``arguments`` printed; it must have succeeded."""
    footprint = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.footprint", *arguments],
        cwd=BENCH.parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        report, errors = footprint.communicate(timeout=300)
    finally:
        if footprint.poll() is None:
            os.killpg(footprint.pid, signal.SIGKILL)
            footprint.wait()
    assert footprint.returncode == 0, errors[-2000:]
    return report


def test_footprint_measures_both_and_breaks_the_start_up_down():
    """``./dev footprint`` in a short form: every measurement reported for both proxies, a
    verdict for every target, the start-up breakdown's sections; never a number's size."""
    report = footprint_report(
        *SHORT_FOOTPRINT, "--soak-requests", "200", "--startup-runs", "1", "--trial-runs", "1"
    )
    assert "claimgate's store: memory" in report
    number = r"-?\d+\.\d+"
    for label in ("time to ready, s", "RSS idle, MiB", "RSS after the soak, MiB"):
        assert re.search(rf"^{re.escape(label)}\s+{number}\s+{number}\s+{number}$", report, re.M)
    for label in ("added per request, median ms", "added per request, p99 ms"):
        assert re.search(rf"^{re.escape(label)}\s+{number}\s+{number}\s+{number}$", report, re.M)
    for target in ("idle RSS <= 0.95x", "ready <= 0.8x", "within 20 MiB of idle"):
        assert re.search(rf"{re.escape(target)}.*\((met|NOT met)\)", report), target
    for name in ("mitmdump", "claimgate"):
        assert re.search(rf"^{name}: ready at \d+ ms from exec", report, re.M), name
        assert f"{name}: imports by owner" in report
    assert re.search(r"^\s+CertStore.from_store\s+\d+", report, re.M)  # the probe's calls
    assert "candidates among the imports" in report
    assert re.search(r"^all four\s+\d+\s+[-+]\d+", report, re.M)  # the cuts tried


def test_footprint_runs_claimgate_on_the_redis_store_of_the_kubernetes_example_too():
    """With ``--store redis`` claimgate starts on a redis-server of the run's own: ready only
    once the store answers, and every soaked request injected from the claim stored there."""
    no_breakdown = ["--startup-runs", "0", "--trial-runs", "0"]
    report = footprint_report(
        *SHORT_FOOTPRINT, "--soak-requests", "100", *no_breakdown, "--store", "redis"
    )
    assert "claimgate's store: redis" in report
    assert re.search(r"^1 claimgate\s+\d+\.\d{3}\s+\d+\.\d\s+.*\s100\s+\d+\.\d$", report, re.M)


def test_the_least_injector_puts_the_claim_into_every_action_and_logs_every_answer(capfd):
    """The floor is only a floor if it does the injecting: every action, parameters or none."""
    from benchmarks.bench import body_of_size
    from benchmarks.least_injector import LeastInjector

    body = json.loads(body_of_size(2048, make_token(), make_secret()))
    body["request"]["actions"].append(
        {"actionid": "urn:onoffice-de-ns:smart:2.5:smartml:action:read"}
    )
    flow = tflow.tflow(req=tutils.treq(content=json.dumps(body).encode()), resp=True)
    injector = LeastInjector("the-claim")
    injector.request(flow)
    injector.response(flow)
    sent = json.loads(flow.request.content)
    assert len(sent["request"]["actions"]) == 2
    assert all(a["parameters"]["extendedclaim"] == "the-claim" for a in sent["request"]["actions"])
    assert flow.request.headers["content-length"] == str(len(flow.request.raw_content))
    sys.stdout.flush()
    lines = capfd.readouterr().out.splitlines()
    assert [json.loads(line)["upstream_status"] for line in lines] == [200]
