"""Where the start-up time goes: ``-X importtime`` and the probe's record, summarised.

Pure functions over what the processes wrote (``benchmarks/footprint.py`` runs them): the
import tree from ``-X importtime`` and from the probe (``benchmarks/startup/sitecustomize.py``),
each import booked to claimgate or mitmproxy (their own modules, and whatever their modules
pulled in first), and the timeline of the set-up calls from exec to ready.
"""

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.figures import fmt, format_table, median

IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
READY_CALL = "running hooks"
"""mitmproxy's ``running`` event: its end is ready on the process's own clock, for claimgate
(``claimgate_ready`` is logged last in it) and mitmdump alike."""
GAP = "(between calls)"
EXPLICIT_GC = "gc.collect"
DURING_IMPORTS = frozenset({"ssl.create_default_context"})
"""Calls made by module code as it is imported: reported on their own, not as steps."""
CANDIDATES = (
    ("mitmproxy.proxy.layers.quic", "QUIC and HTTP/3 (aioquic): the sidecar has no QUIC listener"),
    ("wsproto", "WebSocket, for a WebSocket through the capture listener only"),
    ("pyparsing", "mitmproxy's command and flow-filter grammars: no commands, no filters"),
    ("ruamel", "mitmproxy's YAML options file (config.yaml): claimgate never reads one"),
    ("structlog", "claimgate's logging (structlog.dev, the console renderer, included)"),
    ("prometheus_client", "/metrics"),
    ("h2", "HTTP/2 (mitmproxy negotiates it with clients that offer it)"),
)
"""Imports worth a look (module prefix, what it is for on the sidecar path)."""


def owner_of(module: str) -> str | None:
    """``claimgate`` or ``mitmproxy`` for their own modules (mitmproxy_rs is mitmproxy's)."""
    root = module.split(".")[0]
    if root == "claimgate":
        return "claimgate"
    if root == "mitmproxy" or root.startswith("mitmproxy_"):
        return "mitmproxy"
    return None


@dataclass
class Imported:
    """One module's import: its own time and the imports it made first, nested (ms)."""

    name: str
    start: float
    end: float
    self_ms: float = 0.0
    children: list["Imported"] = field(default_factory=list)
    owner: str = "interpreter"
    """claimgate or mitmproxy for their own modules and for whatever their modules pulled in
    first, else ``interpreter`` (``runpy`` and the like)."""
    rss_kib: int = 0
    """Resident memory growth during its own part (children excluded), KiB (probe only)."""
    grown_kib: int = 0
    """Resident memory growth during the whole import, children included, KiB (probe only)."""

    @property
    def ms(self) -> float:
        return self.end - self.start


def parse_importtime(lines: Iterable[str]) -> list[Imported]:
    """The roots of ``-X importtime``'s tree (it lists children before their parent).

    Start and end are not known there: each import runs from 0 to its cumulative time.
    importtime does not list the imports made through ``importlib.import_module`` (tornado's
    package, for one, imports ``tornado.web`` so): their time is in the importer's own time.
    """
    pending: dict[int, list[Imported]] = {}
    for line in lines:
        found = IMPORTTIME.match(line)
        if not found:
            continue
        own, cumulative, indent, name = found.groups()
        depth = (len(indent) - 1) // 2
        node = Imported(name, 0.0, int(cumulative) / 1000, int(own) / 1000)
        node.children = pending.pop(depth + 1, [])
        pending.setdefault(depth, []).append(node)
    roots = pending.get(0, [])
    assign_owners(roots)
    return roots


def probe_imports(records: Iterable[Sequence[Any]], thread: int) -> list[Imported]:
    """The probe's imports made on ``thread``, as a tree; times in ms on the monotonic clock.

    ``records`` are (module, thread, start s, end s, depth, RSS KiB before, after), in the
    order the imports ended: children before their parent.
    """
    pending: dict[int, list[Imported]] = {}
    for name, tid, start, end, depth, rss_before, rss_after in records:
        if tid != thread:
            continue
        node = Imported(name, start * 1000, end * 1000)
        node.children = pending.pop(depth + 1, [])
        node.self_ms = node.ms - sum(child.ms for child in node.children)
        node.grown_kib = rss_after - rss_before
        node.rss_kib = node.grown_kib - sum(child.grown_kib for child in node.children)
        pending.setdefault(depth, []).append(node)
    roots = pending.get(0, [])
    assign_owners(roots)
    return roots


def assign_owners(roots: Iterable[Imported], inherited: str = "interpreter") -> None:
    for node in roots:
        node.owner = owner_of(node.name) or inherited
        assign_owners(node.children, node.owner)


def walk(roots: Iterable[Imported]) -> Iterator[tuple[int, Imported]]:
    """Every import with its depth, parents before their children, in import order."""
    stack = [(0, node) for node in reversed(list(roots))]
    while stack:
        depth, node = stack.pop()
        yield depth, node
        stack.extend((depth + 1, child) for child in reversed(node.children))


def total_ms(roots: Iterable[Imported]) -> float:
    return sum(node.ms for node in roots)


def by_owner(roots: Iterable[Imported]) -> dict[str, dict[str, float]]:
    """owner -> ms in its own modules (``own``), ms in what they pulled in (``pulled``),
    and the resident memory all of it added (``rss_mib``)."""
    totals: dict[str, dict[str, float]] = {}
    for _, node in walk(roots):
        kind = "own" if owner_of(node.name) == node.owner else "pulled"
        entry = totals.setdefault(node.owner, {"own": 0.0, "pulled": 0.0, "rss_mib": 0.0})
        entry[kind] += node.self_ms
        entry["rss_mib"] += node.rss_kib / 1024
    return totals


def top_cumulative(roots: Iterable[Imported], count: int) -> list[tuple[int, Imported]]:
    """The ``count`` imports with the largest cumulative time, with their depth."""
    return sorted(walk(roots), key=lambda item: -item[1].ms)[:count]


def top_own(roots: Iterable[Imported], owner: str, count: int) -> list[Imported]:
    """``owner``'s own modules with the largest own time (children excluded)."""
    own = [node for _, node in walk(roots) if owner_of(node.name) == owner]
    return sorted(own, key=lambda node: -node.self_ms)[:count]


def subtree(roots: Iterable[Imported], prefix: str) -> tuple[float, float, list[str]]:
    """(ms, MiB, importers) of the first imports of ``prefix`` and of its submodules, each
    with whatever it pulled in first: at most what not importing ``prefix`` would save
    (less, where another module would then import what it shares)."""
    ms = mib = 0.0
    importers: list[str] = []

    def visit(nodes: Iterable[Imported], parent: str) -> None:
        nonlocal ms, mib
        for node in nodes:
            if node.name == prefix or node.name.startswith(prefix + "."):
                ms += node.ms
                mib += node.grown_kib / 1024
                if parent not in importers:
                    importers.append(parent)
            else:
                visit(node.children, node.name)

    visit(roots, "(a call)")
    return ms, mib, importers


def third_party(roots: Iterable[Imported]) -> set[str]:
    """Top-level packages imported that are neither claimgate's nor mitmproxy's."""
    return {node.name.split(".")[0] for _, node in walk(roots) if owner_of(node.name) is None}


# --- the probe's calls: a timeline from exec to ready -------------------------------------


@dataclass
class Step:
    label: str
    start: float
    end: float
    """ms since exec."""
    children: list["Step"] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return self.end - self.start


def ready_at(probe: dict[str, Any]) -> float:
    """ms from exec until the probed process was ready, on its own clock."""
    ends = [end for label, _, end, _ in probe["calls"] if label == READY_CALL]
    return ((min(ends) if ends else probe["end"]) - probe["t0"]) * 1000


def timeline(probe: dict[str, Any]) -> list[Step]:
    """The probe's calls until ready as a tree (ms since exec, cut at ready), the time
    before the probe ran (the interpreter's own start) and the gaps between the top calls
    (``GAP``: imports and module code) as steps of their own."""
    t0 = probe["t0"]
    ready = ready_at(probe)
    steps = [
        Step(label, (start - t0) * 1000, min((end - t0) * 1000, ready))
        for label, start, end, _ in probe["calls"]
        if (start - t0) * 1000 < ready and label not in DURING_IMPORTS
    ]
    steps.sort(key=lambda s: (s.start, -s.end))
    roots: list[Step] = []
    stack: list[Step] = []
    for step in steps:
        while stack and step.start >= stack[-1].end:
            stack.pop()
        (stack[-1].children if stack else roots).append(step)
        stack.append(step)
    begin = (probe["probe_start"] - t0) * 1000
    filled = [Step("interpreter start-up, site", 0.0, begin)]
    cursor = begin
    for step in roots:
        if step.start > cursor:
            filled.append(Step(GAP, cursor, step.start))
        filled.append(step)
        cursor = max(cursor, step.end)
    if ready > cursor:
        filled.append(Step(GAP, cursor, ready))
    return filled


def overlap(intervals: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """How much of [start, end] the intervals cover, counting each interval on its own."""
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)


Row = tuple[str, float, float, float, float]
"""(label, indented by depth; at ms since exec; ms; of which imports; of which GC)."""


def flatten_timeline(
    steps: Sequence[Step],
    imports: Sequence[Imported],
    collections: Sequence[tuple[float, float]],
    t0_ms: float,
    smallest: float = 0.3,
) -> list[Row]:
    """The timeline as rows. ``imports`` (the roots) and ``collections`` (start, end) are in
    ms on the monotonic clock, ``t0_ms`` is exec on it. Siblings with the same label are
    merged (``options.update x9``), a gap is named after its largest imports, and rows
    under ``smallest`` ms are left out."""
    spans = [(node.start - t0_ms, node.end - t0_ms) for node in imports]
    gcs = [(a - t0_ms, b - t0_ms) for a, b in collections]
    rows: list[Row] = []

    def gap_label(step: Step) -> str:
        inside = [
            (overlap([(n.start - t0_ms, n.end - t0_ms)], step.start, step.end), n.name)
            for n in imports
        ]
        names = [name for ms, name in sorted(inside, reverse=True)[:3] if ms > 0]
        return "imports: " + ", ".join(names) if names else "(no import)"

    def add(nodes: Sequence[Step], depth: int) -> None:
        merged: dict[str, list[Step]] = {}
        for index, node in enumerate(nodes):
            key = f"{GAP}{index}" if node.label == GAP else node.label
            merged.setdefault(key, []).append(node)
        for group in merged.values():
            ms = sum(node.ms for node in group)
            if ms < smallest:
                continue
            first = group[0]
            label = gap_label(first) if first.label == GAP else first.label
            if len(group) > 1:
                label += f" x{len(group)}"
            imported = sum(overlap(spans, node.start, node.end) for node in group)
            collected = sum(overlap(gcs, node.start, node.end) for node in group)
            rows.append(("  " * depth + label, first.start, ms, imported, collected))
            add([child for node in group for child in node.children], depth + 1)

    add(steps, 0)
    return rows


def median_rows(runs: Sequence[Sequence[Row]]) -> list[Row]:
    """The first run's rows, each number the median over the runs that have the row (the
    n-th row with a label matches the n-th row with that label in each run)."""

    def keyed(rows: Sequence[Row]) -> dict[tuple[str, int], Row]:
        seen: dict[str, int] = {}
        result = {}
        for row in rows:
            seen[row[0]] = seen.get(row[0], 0) + 1
            result[(row[0], seen[row[0]])] = row
        return result

    if not runs:
        return []
    all_keyed = [keyed(rows) for rows in runs]
    result = []
    for key in all_keyed[0]:
        matching = [k[key] for k in all_keyed if key in k]
        numbers = [median(row[i] for row in matching) for i in range(1, 5)]
        result.append((key[0], *numbers))  # type: ignore[arg-type]
    return result


def calls_during_imports(probe: dict[str, Any], ready_ms: float) -> dict[str, dict[str, Any]]:
    """The ``DURING_IMPORTS`` calls before ready: label -> count, ms, and the modules whose
    import made them (the innermost import running at the time)."""
    t0 = probe["t0"]
    records = [r for r in probe["imports"] if r[1] == probe["main_thread"]]
    found: dict[str, dict[str, Any]] = {}
    for label, start, end, _ in probe["calls"]:
        if label not in DURING_IMPORTS or (end - t0) * 1000 > ready_ms:
            continue
        entry = found.setdefault(label, {"count": 0, "ms": 0.0, "in": []})
        entry["count"] += 1
        entry["ms"] += (end - start) * 1000
        running = [r for r in records if r[2] <= start and end <= r[3]]
        module = max(running, key=lambda r: r[4])[0] if running else "(no import)"
        if module not in entry["in"]:
            entry["in"].append(module)
    return found


def collections_before(probe: dict[str, Any], ready_ms: float) -> dict[str, float]:
    """The cyclic collector's runs before ready: the automatic ones (count, ms, and how many
    and how long of them were full, generation 2) and the explicit ``gc.collect`` (ms)."""
    t0 = probe["t0"]
    explicit = [(s, e) for label, s, e, _ in probe["calls"] if label == EXPLICIT_GC]
    result = {"count": 0, "ms": 0.0, "full_count": 0, "full_ms": 0.0, "explicit_ms": 0.0}
    for generation, start, end in probe.get("collections", []):
        if (end - t0) * 1000 > ready_ms:
            continue
        ms = (end - start) * 1000
        if any(s <= start and end <= e for s, e in explicit):
            result["explicit_ms"] += ms
            continue
        result["count"] += 1
        result["ms"] += ms
        if generation == 2:
            result["full_count"] += 1
            result["full_ms"] += ms
    return result


# --- several runs of each process, summarised -----------------------------------------------


@dataclass
class Breakdown:
    """The start-up of one program over several runs."""

    name: str
    observed_ms: list[float] = field(default_factory=list)
    """Time to ready from exec, observed outside, in the probed runs."""
    ready_ms: list[float] = field(default_factory=list)
    """The probe's own: the end of mitmproxy's running event."""
    timelines: list[list[Row]] = field(default_factory=list)
    imports: list[list[Imported]] = field(default_factory=list)
    """The probe's imports until ready (main thread)."""
    importtime: list[list[Imported]] = field(default_factory=list)
    last_import_ms: list[float] = field(default_factory=list)
    rss_at_ready_mib: list[float] = field(default_factory=list)
    rss_at_probe_mib: list[float] = field(default_factory=list)
    collections: list[dict[str, float]] = field(default_factory=list)
    during_imports: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    ca_ms: list[float] = field(default_factory=list)
    """Time in ``CertStore.from_store`` before ready, all loads."""

    def add_probe(self, probe: dict[str, Any], observed_ms: float) -> None:
        t0_ms = probe["t0"] * 1000
        ready = ready_at(probe)
        roots = probe_imports(probe["imports"], probe["main_thread"])
        before = [node for node in roots if node.end - t0_ms <= ready]
        spans = [(s * 1000, e * 1000) for _, s, e in probe.get("collections", [])]
        rows = flatten_timeline(timeline(probe), before, spans, t0_ms)
        rows.append(("ready -> answered outside", ready, observed_ms - ready, 0.0, 0.0))
        self.observed_ms.append(observed_ms)
        self.ready_ms.append(ready)
        self.timelines.append(rows)
        self.imports.append(before)
        self.last_import_ms.append(max((n.end - t0_ms for n in before), default=math.nan))
        rss = [rss for label, _, _, rss in probe["calls"] if label == READY_CALL]
        self.rss_at_ready_mib.append(rss[0] / 1024 if rss else math.nan)
        self.rss_at_probe_mib.append(probe["probe_start_rss_kib"] / 1024)
        self.collections.append(collections_before(probe, ready))
        self.during_imports.append(calls_during_imports(probe, ready))
        self.ca_ms.append(
            sum(
                (end - start) * 1000
                for label, start, end, _ in probe["calls"]
                if label == "CertStore.from_store" and (end - probe["t0"]) * 1000 <= ready
            )
        )

    def add_importtime(self, lines: Iterable[str]) -> None:
        self.importtime.append(parse_importtime(lines))


def report(breakdowns: Iterable[Breakdown], top: int = 12) -> str:
    lines = ["\nWHERE THE START-UP TIME GOES (medians of the probed runs)"]
    for b in breakdowns:
        gc = {key: median(c[key] for c in b.collections) for key in b.collections[0]}
        lines += [
            f"\n{b.name}: ready at {median(b.observed_ms):.0f} ms from exec in the probed runs "
            f"({median(b.ready_ms):.0f} ms on its own clock); the last import before ready "
            f"ended at {median(b.last_import_ms):.0f} ms; imports "
            f"{median(total_ms(i) for i in b.imports):.0f} ms (probe), "
            f"{median(total_ms(i) for i in b.importtime):.0f} ms (-X importtime); automatic "
            f"GC before ready {gc['count']:.0f} runs, {gc['ms']:.1f} ms ({gc['full_count']:.0f} "
            f"full, {gc['full_ms']:.1f} ms); RSS {median(b.rss_at_probe_mib):.1f} MiB when "
            f"the probe started, {median(b.rss_at_ready_mib):.1f} MiB at ready",
            *_during_imports(b),
            "",
            format_table(
                ("step", "at ms", "ms", "imports", "GC"),
                (
                    (label, f"{at:.0f}", f"{ms:.1f}", _blank(imported), _blank(collected))
                    for label, at, ms, imported, collected in median_rows(b.timelines)
                ),
            ),
            f"\n{b.name}: imports by owner, ms (probe; -X importtime in brackets)\n",
            _owner_table(b),
            f"\n{b.name}: top {top} imports by cumulative time (-X importtime)\n",
            format_table(("module", "owner", "cumulative ms", "self ms"), _top_rows(b, top)),
            f"\n{b.name}: packages by time at first import, what they pulled in included (probe)\n",
            format_table(("package", "ms", "MiB", "first imported by"), _package_rows(b, top)),
        ]
        for owner in ("claimgate", "mitmproxy"):
            own = [top_own(i, owner, 8) for i in b.imports]
            if own[0]:
                names = ", ".join(
                    f"{n.name} {median(_self_of(i, n.name) for i in b.imports):.1f}" for n in own[0]
                )
                lines.append(f"\n{b.name}: {owner}'s slowest own modules (ms, probe): {names}")
    return "\n".join(lines)


def report_candidates(breakdowns: dict[str, Breakdown]) -> str:
    """The imports in ``CANDIDATES``, what each costs the sidecar (probe) and mitmdump."""
    rows = []
    for prefix, why in CANDIDATES:
        cells = [prefix]
        for name in ("claimgate", "mitmdump"):
            measured = [subtree(i, prefix) for i in breakdowns[name].imports]
            cells.append(f"{median(m[0] for m in measured):.1f}")
            cells.append(f"{median(m[1] for m in measured):.1f}")
        cells.append(why)
        rows.append(cells)
    return "\n\ncandidates among the imports (first import, with what it pulled in):\n\n" + (
        format_table(
            ("import", "claimgate ms", "MiB", "mitmdump ms", "MiB", "on the sidecar path"), rows
        )
    )


def _during_imports(b: Breakdown) -> list[str]:
    lines = []
    for label in sorted({label for d in b.during_imports for label in d}):
        runs = [d.get(label, {"count": 0, "ms": 0.0, "in": []}) for d in b.during_imports]
        where = ", ".join(dict.fromkeys(m for r in runs for m in r["in"]))
        lines.append(
            f"  {label} while importing: {median(r['count'] for r in runs):.0f} calls, "
            f"{median(r['ms'] for r in runs):.1f} ms (in {where})"
        )
    return lines


def _blank(value: float) -> str:
    return f"{value:.1f}" if value >= 0.05 else ""


def _self_of(roots: list[Imported], name: str) -> float:
    return next((n.self_ms for _, n in walk(roots) if n.name == name), math.nan)


def _owner_table(b: Breakdown) -> str:
    probe = [by_owner(i) for i in b.imports]
    importtime = [by_owner(i) for i in b.importtime]

    def value(runs: list[dict[str, dict[str, float]]], owner: str, kinds: Sequence[str]) -> str:
        return fmt(
            median(sum(d[owner][k] for k in kinds) if owner in d else math.nan for d in runs)
        )

    rows = []
    for owner in sorted({o for d in probe for o in d}):
        cells = [owner]
        for kinds in (("own",), ("pulled",), ("own", "pulled")):
            cells.append(f"{value(probe, owner, kinds)} [{value(importtime, owner, kinds)}]")
        cells.append(value(probe, owner, ("rss_mib",)))
        rows.append(cells)
    return format_table(("owner", "own modules", "pulled in", "total", "RSS MiB"), rows)


def _top_rows(b: Breakdown, top: int) -> list[tuple[str, str, str, str]]:
    if not b.importtime:
        return []
    rows = []
    for depth, node in top_cumulative(b.importtime[0], top):
        found = [next((n for _, n in walk(r) if n.name == node.name), None) for r in b.importtime]
        present = [n for n in found if n is not None]
        rows.append(
            (
                "  " * depth + node.name,
                node.owner,
                fmt(median(n.ms for n in present)),
                fmt(median(n.self_ms for n in present)),
            )
        )
    return rows


def _package_rows(b: Breakdown, top: int) -> list[tuple[str, str, str, str]]:
    packages = set().union(*(third_party(i) for i in b.imports)) if b.imports else set()
    measured = []
    for package in packages:
        values = [subtree(i, package) for i in b.imports]
        importers = ", ".join(values[0][2][:3]) + (", ..." if len(values[0][2]) > 3 else "")
        measured.append(
            (package, median(v[0] for v in values), median(v[1] for v in values), importers)
        )
    measured.sort(key=lambda m: -m[1])
    return [(p, fmt(ms), fmt(mib), by) for p, ms, mib, by in measured[:top]]


TRIALS = (
    ("as it is", ""),
    ("CA loaded once (no reload in TlsConfig.running)", "ca-once"),
    ("CA key loaded without the RSA check", "ca-unchecked"),
    ("GC off until ready, no gc.collect()", "gc-off,no-collect"),
    ("all four", "ca-once,ca-unchecked,gc-off,no-collect"),
)
"""Cuts tried on claimgate through the probe (``FOOTPRINT_TRY``), without changing code."""


def report_trials(trials: dict[str, Breakdown], diffs: dict[str, list[float]]) -> str:
    """Each trial's time to ready, its paired difference to the start as it is next to it
    (median [min, max]), and what the steps it cuts took (medians)."""
    rows = []
    for label, b in trials.items():
        paired = diffs.get(label, [])
        gc = [c["ms"] + c["explicit_ms"] for c in b.collections]
        rows.append(
            (
                label,
                f"{median(b.observed_ms):.0f}",
                f"{median(paired):+.0f} [{min(paired):+.0f}, {max(paired):+.0f}]" if paired else "",
                f"{median(b.ca_ms):.1f}",
                f"{median(gc):.1f}",
                f"{median(b.rss_at_ready_mib):.1f}",
            )
        )
    runs = max((len(v) for v in diffs.values()), default=0)
    return (
        f"\n\nclaimgate, cuts tried through the probe ({runs} pairs each: the trial next to a "
        "start as it is):\n\n"
        + format_table(
            ("trial", "ready ms", "paired diff ms", "CA ms", "GC ms", "RSS at ready MiB"), rows
        )
    )
