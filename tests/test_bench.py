"""``./dev bench`` in a short form, so the benchmark cannot rot unnoticed.

It asserts that every proxy was measured and every comparison reported, and that claimgate
injected every request it was sent; never how fast anything was (speed is the benchmark's
business, not CI's). nginx and hey come from ``./dev setup``; without them the benchmark
exits naming that step, and this test fails with its message.
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

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
    for pair in ("mitmdump-b / mitmdump (A/A control)", "claimgate / mitmdump", "claimgate / core"):
        assert re.search(rf"1024 {re.escape(pair)}\s+\d\.\d{{3}} \[", report), pair
    assert re.search(r"1024 bytes: \d\.\d{3} x mitmdump \(>= 0.95: (met|NOT met)\)", report)
    logged, injected = re.search(r"decisions logged: (\d+), injected: (\d+)", report).groups()
    assert int(logged) > 0 and logged == injected
