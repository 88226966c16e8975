"""The footprint benchmark's own pure helpers (benchmarks/figures.py, benchmarks/startup_time.py,
benchmarks/footprint.py): statistics, the RSS reader, the tables, the start-up analysis.

Nothing here starts a process or asserts how fast anything is; tests/test_bench.py runs the
benchmark itself in a short form.
"""

import math
import os
import types
from pathlib import Path

import pytest
from benchmarks import footprint, startup_time
from benchmarks.figures import (
    fmt,
    format_table,
    median,
    parse_vm_rss,
    percentile,
    ratio,
    rss_mib,
    verdict,
)

STATUS = """Name:\tpython
State:\tS (sleeping)
VmPeak:\t  120000 kB
VmRSS:\t   68896 kB
RssAnon:\t   40000 kB
"""


def test_median_skips_what_was_not_measured():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert median([1.0, math.nan, 3.0]) == 2.0
    assert math.isnan(median([]))
    assert math.isnan(median([math.nan]))


def test_percentile_interpolates_between_ranks():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert math.isnan(percentile([], 99))


def test_ratio_is_nan_when_a_side_is_missing_or_zero():
    assert ratio(67.0, 72.0) == pytest.approx(0.9306, abs=1e-4)
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))
    assert math.isnan(ratio(1.0, math.nan))


def test_vm_rss_is_read_in_mib():
    assert parse_vm_rss(STATUS) == pytest.approx(68896 / 1024)


def test_vm_rss_missing_or_in_another_unit_is_an_error():
    with pytest.raises(ValueError, match="no VmRSS"):
        parse_vm_rss("Name:\tkthreadd\nState:\tS\n")
    with pytest.raises(ValueError, match="'MB'"):
        parse_vm_rss("VmRSS:\t 12 MB\n")


def test_rss_mib_reads_proc(tmp_path: Path):
    (tmp_path / "4711").mkdir()
    (tmp_path / "4711" / "status").write_text(STATUS)
    assert rss_mib(4711, proc=tmp_path) == pytest.approx(68896 / 1024)
    assert rss_mib(os.getpid()) > 1  # this very process, from the real /proc


def test_format_table_aligns_columns():
    table = format_table(("", "mitmdump", "claimgate"), [("ready s", "0.600", "0.640")])
    assert table.splitlines() == [
        "         mitmdump  claimgate",
        "-------  --------  ---------",
        "ready s     0.600      0.640",
    ]


def test_format_table_wants_one_cell_per_header():
    with pytest.raises(IndexError):
        format_table(("a", "b"), [("only one",)])


def test_fmt_and_verdict_say_when_nothing_was_measured():
    assert fmt(1.23456, 2) == "1.23"
    assert fmt(math.nan) == "-"
    assert verdict(0.93, 0.95) == "met"
    assert verdict(0.95, 0.95) == "met"
    assert verdict(1.01, 0.8) == "NOT met"
    assert verdict(math.nan, 0.8) == "not measured"


# --- imports --------------------------------------------------------------------------------

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |   mitmproxy.utils
import time:       300 |        300 |     cryptography
import time:       200 |        500 |   mitmproxy.certs
import time:        50 |        650 | mitmproxy
import time:      1000 |       1000 |   tornado
import time:       500 |       1500 | claimgate.admin
claimgate: some other line
"""


def test_importtime_tree_and_owners():
    roots = startup_time.parse_importtime(IMPORTTIME.splitlines())
    assert [r.name for r in roots] == ["mitmproxy", "claimgate.admin"]
    mitmproxy, admin = roots
    assert [c.name for c in mitmproxy.children] == ["mitmproxy.utils", "mitmproxy.certs"]
    assert mitmproxy.children[1].children[0].name == "cryptography"
    assert mitmproxy.ms == 0.65 and mitmproxy.self_ms == 0.05
    assert admin.children[0].owner == "claimgate"  # tornado is claimgate's import
    assert mitmproxy.children[1].children[0].owner == "mitmproxy"
    assert startup_time.total_ms(roots) == pytest.approx(2.15)
    owners = startup_time.by_owner(roots)
    assert owners["claimgate"]["own"] == pytest.approx(0.5)
    assert owners["claimgate"]["pulled"] == pytest.approx(1.0)
    assert owners["mitmproxy"]["own"] == pytest.approx(0.35)
    assert owners["mitmproxy"]["pulled"] == pytest.approx(0.3)
    top = startup_time.top_cumulative(roots, 2)
    assert [(depth, node.name) for depth, node in top] == [(0, "claimgate.admin"), (1, "tornado")]


def test_owner_of_names_claimgate_and_mitmproxy_only():
    assert startup_time.owner_of("claimgate.runner") == "claimgate"
    assert startup_time.owner_of("mitmproxy.proxy.layers") == "mitmproxy"
    assert startup_time.owner_of("mitmproxy_rs") == "mitmproxy"
    assert startup_time.owner_of("claimgatex") is None
    assert startup_time.owner_of("tornado.web") is None


# (module, thread, start s, end s, depth, RSS KiB before, after), in the order they ended
PROBE_IMPORTS = [
    ("claimgate.settings", 1, 1.010, 1.020, 1, 1000, 1100),
    ("tornado.web", 1, 1.025, 1.045, 1, 1100, 1500),
    ("claimgate.cli", 1, 1.000, 1.050, 0, 1000, 1600),
    ("elsewhere", 2, 1.000, 1.100, 0, 0, 0),
    ("mitmproxy.proxy.layers.quic", 1, 1.060, 1.070, 0, 1600, 1700),
]


def test_probe_imports_self_time_and_memory():
    roots = startup_time.probe_imports(PROBE_IMPORTS, thread=1)
    assert [r.name for r in roots] == ["claimgate.cli", "mitmproxy.proxy.layers.quic"]
    cli = roots[0]
    assert cli.ms == pytest.approx(50)
    assert cli.self_ms == pytest.approx(20)
    assert cli.rss_kib == 600 - 100 - 400
    assert [(c.name, c.owner) for c in cli.children] == [
        ("claimgate.settings", "claimgate"),
        ("tornado.web", "claimgate"),
    ]
    ms, mib, importers = startup_time.subtree(roots, "tornado")
    assert ms == pytest.approx(20)
    assert mib == pytest.approx(400 / 1024)
    assert importers == ["claimgate.cli"]
    assert startup_time.subtree(roots, "mitmproxy.proxy.layers")[0] == pytest.approx(10)
    assert startup_time.subtree(roots, "absent") == (0.0, 0.0, [])
    assert startup_time.third_party(roots) == {"tornado"}
    assert [n.name for n in startup_time.top_own(roots, "claimgate", 5)] == [
        "claimgate.cli",
        "claimgate.settings",
    ]


# A probe's record: exec at 100.0 s; the probe ran at 100.02; imports, then set-up calls.
PROBE = {
    "t0": 100.0,
    "probe_start": 100.020,
    "probe_start_rss_kib": 10240,
    "end": 105.0,
    "main_thread": 1,
    "imports": [
        ("claimgate.cli", 1, 100.030, 100.400, 0, 10240, 60000),
        ("tornado.platform.asyncio", 1, 100.500, 100.502, 0, 60000, 60100),
    ],
    "calls": [
        ("load_settings", 100.410, 100.420, 61000),
        ("options.update", 100.430, 100.431, 61000),
        ("options.update", 100.432, 100.440, 61000),
        ("running hooks", 100.450, 100.600, 69000),
        ("gc.collect", 100.560, 100.590, 69000),
        ("options.update", 104.0, 104.1, 70000),  # at shutdown: after ready
    ],
    "collections": [
        (0, 100.100, 100.101),
        (2, 100.200, 100.220),
        (2, 100.565, 100.585),  # inside gc.collect
        (0, 104.5, 104.6),  # after ready
    ],
}


def test_timeline_from_exec_to_ready():
    assert startup_time.ready_at(PROBE) == pytest.approx(600)
    steps = startup_time.timeline(PROBE)
    labels = [s.label for s in steps]
    assert labels == [
        "interpreter start-up, site",
        startup_time.GAP,
        "load_settings",
        startup_time.GAP,
        "options.update",
        startup_time.GAP,
        "options.update",
        startup_time.GAP,
        "running hooks",
    ]
    assert steps[0].ms == pytest.approx(20)
    assert steps[-1].children[0].label == "gc.collect"


def test_flattened_timeline_names_gaps_after_their_imports():
    steps = startup_time.timeline(PROBE)
    imports = startup_time.probe_imports(PROBE["imports"], 1)
    collections = [(s * 1000, e * 1000) for _, s, e in PROBE["collections"]]
    rows = startup_time.flatten_timeline(steps, imports, collections, PROBE["t0"] * 1000)
    labels = [row[0] for row in rows]
    assert labels[:3] == ["interpreter start-up, site", "imports: claimgate.cli", "load_settings"]
    assert "options.update x2" in labels
    assert labels[-2:] == ["running hooks", "  gc.collect"]
    by_label = {row[0]: row for row in rows}
    _, at, ms, imported, collected = by_label["imports: claimgate.cli"]
    assert (at, ms) == (pytest.approx(20), pytest.approx(390))
    assert imported == pytest.approx(370)
    assert collected == pytest.approx(21)
    assert by_label["running hooks"][3] == pytest.approx(2)  # tornado.platform.asyncio
    assert by_label["  gc.collect"][4] == pytest.approx(20)


def test_median_rows_matches_rows_by_label_and_occurrence():
    runs = [
        [("a", 0.0, 10.0, 1.0, 0.0), ("b", 10.0, 5.0, 0.0, 0.0), ("b", 20.0, 1.0, 0.0, 0.0)],
        [("a", 0.0, 12.0, 3.0, 0.0), ("b", 12.0, 7.0, 0.0, 0.0)],
        [("a", 0.0, 20.0, 2.0, 0.0), ("b", 20.0, 6.0, 0.0, 0.0), ("b", 30.0, 3.0, 0.0, 0.0)],
    ]
    assert startup_time.median_rows(runs) == [
        ("a", 0.0, 12.0, 2.0, 0.0),
        ("b", 12.0, 6.0, 0.0, 0.0),
        ("b", 25.0, 2.0, 0.0, 0.0),
    ]
    assert startup_time.median_rows([]) == []


def test_collections_before_ready_tell_automatic_from_explicit():
    found = startup_time.collections_before(PROBE, startup_time.ready_at(PROBE))
    assert found["count"] == 2
    assert found["ms"] == pytest.approx(21)
    assert found["full_count"] == 1
    assert found["full_ms"] == pytest.approx(20)
    assert found["explicit_ms"] == pytest.approx(20)


def test_breakdown_report_names_every_section():
    breakdown = startup_time.Breakdown("claimgate")
    breakdown.add_probe(PROBE, observed_ms=610.0)
    breakdown.add_importtime(IMPORTTIME.splitlines())
    assert breakdown.ready_ms == [pytest.approx(600)]
    assert breakdown.last_import_ms == [pytest.approx(502)]
    assert breakdown.timelines[0][-1][0] == "ready -> answered outside"
    text = startup_time.report([breakdown])
    for section in ("imports by owner", "by cumulative time", "first import", "running hooks"):
        assert section in text
    candidates = startup_time.report_candidates({"claimgate": breakdown, "mitmdump": breakdown})
    assert "mitmproxy.proxy.layers.quic" in candidates


def test_trials_report_the_paired_difference():
    trials = {}
    for label, observed in (("as it is", 610.0), ("all four", 500.0)):
        trials[label] = startup_time.Breakdown(label)
        trials[label].add_probe(PROBE, observed_ms=observed)
    text = startup_time.report_trials(trials, {"all four": [-120.0, -100.0, -90.0]})
    assert "3 pairs each" in text
    row = next(line for line in text.splitlines() if line.startswith("all four"))
    assert row.split()[2:5] == ["500", "-100", "[-120,"]
    assert trials["all four"].ca_ms == [0.0]  # no CertStore.from_store in PROBE


# --- footprint.py's summary and report ------------------------------------------------------


def start(name: str, ready: float, idle: float, added: float, soak_mib: float = math.nan):
    latency = footprint.Latency(1.0 + added, 2.0 + added, 1.0, 2.0)
    soaked = 50_000 if not math.isnan(soak_mib) else 0
    return footprint.Start(name, ready, idle, latency, soaked, 100.0, soak_mib)


STARTS = {
    "mitmdump": [
        start("mitmdump", 0.60, 72.0, 3.0),
        start("mitmdump", 0.62, 72.5, 3.2),
        start("mitmdump", 0.58, 71.5, 2.8, soak_mib=79.0),
    ],
    "claimgate": [
        start("claimgate", 0.50, 67.0, 2.0),
        start("claimgate", 0.44, 67.5, 2.2),
        start("claimgate", 0.47, 66.5, 1.8, soak_mib=80.0),
    ],
}


def test_latency_added_is_through_minus_direct():
    latency = footprint.Latency(median_ms=4.0, p99_ms=9.0, direct_median_ms=1.5, direct_p99_ms=3)
    assert latency.added_median_ms == 2.5
    assert latency.added_p99_ms == 6.0


def test_summary_takes_medians_over_the_starts():
    values = footprint.summary(STARTS)
    assert values["claimgate"]["ready_s"] == 0.47
    assert values["claimgate"]["idle_mib"] == 67.0
    assert values["claimgate"]["soak_mib"] == 80.0  # the one soaked start
    assert values["claimgate"]["soak_growth_mib"] == pytest.approx(13.5)
    assert values["mitmdump"]["added_median_ms"] == pytest.approx(3.0)


def test_ready_is_also_compared_round_by_round():
    ratios = footprint.paired_ready_ratios(STARTS)
    assert ratios == [pytest.approx(0.5 / 0.6), pytest.approx(0.44 / 0.62), 0.47 / 0.58]


def test_report_says_which_targets_are_met():
    args = types.SimpleNamespace(
        starts=3,
        soak_starts=1,
        soak_requests=50_000,
        latency_requests=400,
        bytecode="cached",
        store="redis",
    )
    text = footprint.report(STARTS, args, {1}, {0})
    assert "claimgate's store: redis" in text
    assert "idle RSS <= 0.95x mitmdump's: 0.931 (met)" in text
    assert "ready <= 0.8x mitmdump's time: 0.783 (met)" in text
    assert "within 20 MiB of idle: +13.5 MiB (met)" in text
    assert "the two starts of each round compared: 0.810 [0.710-0.833]" in text
    assert "3 claimgate" in text  # the per-start table


def test_bytecode_cache_stays_out_of_the_sources(tmp_path: Path):
    assert footprint.bytecode_env("source", tmp_path) == {}
    cached = footprint.bytecode_env("cached", tmp_path)
    assert cached["PYTHONPYCACHEPREFIX"] == str(tmp_path / "pycache")
    assert cached["PYTHONDONTWRITEBYTECODE"] == ""  # empty: bytecode is written
