"""Small helpers the footprint benchmark reports with: statistics, /proc, plain-text tables."""

import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path


def median(values: Iterable[float]) -> float:
    """The median of the values that are not NaN; NaN when none is (nothing was measured)."""
    present = [v for v in values if not math.isnan(v)]
    return statistics.median(present) if present else math.nan


def percentile(values: Sequence[float], percent: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * percent / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is missing or the denominator is 0."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator


def parse_vm_rss(status: str) -> float:
    """VmRSS in MiB from the text of ``/proc/PID/status``."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"VmRSS in {unit!r}")
            return int(value) / 1024
    raise ValueError("no VmRSS line (a kernel thread, or a process that has exited)")


def rss_mib(pid: int, proc: Path = Path("/proc")) -> float:
    """A process's resident memory now, in MiB (``VmRSS`` of ``/proc/PID/status``)."""
    return parse_vm_rss((proc / str(pid) / "status").read_text())


def fmt(value: float, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals; ``-`` for NaN (not measured)."""
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table: a rule under the headers, the first column left-aligned and the
    others right-aligned, no trailing blanks."""
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([row[0].ljust(widths[0]), *rest]).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(value: float, limit: float) -> str:
    """Whether a measurement is within its target (at most ``limit``)."""
    if math.isnan(value):
        return "not measured"
    return "met" if value <= limit else "NOT met"
