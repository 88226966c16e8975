"""Prometheus metrics (docs/design.md 3.5). The names are a contract; no label carries a
customer id, a token or a claim, so the series stay few and the scrape stays free of secrets.
The standard ``process_*`` and ``python_*`` series of prometheus-client come along.

Every label value is created at start, so a rate over a counter that has not moved yet is 0
rather than absent. Only prometheus-client's metric modules are imported, each by its own
name: its package's ``__init__`` loads its HTTP servers and push clients (``http.server``,
``wsgiref``, ``urllib.request``), which the sidecar, writing the exposition itself, does
without (``claimgate.lean``).
"""

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.gc_collector import GC_COLLECTOR
from prometheus_client.metrics import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.platform_collector import PLATFORM_COLLECTOR
from prometheus_client.process_collector import PROCESS_COLLECTOR
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from claimgate.lifetime import Standing, standing
from claimgate.limits import Refusal
from claimgate.policy import Decision, Kind
from claimgate.store import Claim, Operation

# The ``*_created`` series add a timestamp per label value that no dashboard here needs.
disable_created_metrics()

CAPTURE_SOURCES = ("link", "admin")
RELOAD_RESULTS = ("applied", "rejected")

# claimgate's own work per request is well under a millisecond; the buckets resolve that.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
# A store on the same network answers within milliseconds; its timeout is half a second.
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Claim ages, from minutes to days: where onOffice's coming lifetime limit may fall.
MINUTE, HOUR = 60.0, 3600.0
AGE_BUCKETS = (
    *(m * MINUTE for m in (1, 5, 15, 30)),
    *(h * HOUR for h in (1, 2, 4, 8, 12, 24, 48, 96, 168)),
)


class LoopHistogram:
    """A histogram observed for every API request, on the event loop's thread only.

    prometheus-client's ``Histogram.observe`` takes two locks and walks the buckets in
    Python (2.7 us, twice per request); this one counts in a list, and a scrape, on the same
    thread, reads the counts out in the same exposition.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = (*buckets, float("inf"))
        self._counts = [0] * len(self._bounds)
        """Observations per bucket, not cumulative: a value lands in the first bound it
        does not exceed, as Prometheus's ``le`` says."""
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def describe(self) -> Iterator[HistogramMetricFamily]:
        """The names the registry checks for clashes, without samples."""
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, buckets = 0, []
        for bound, count in zip(self._bounds, self._counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self._sum
        )


class Metrics:
    """One registry per process (not the global one, so tests can have several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The process's own health beside claimgate's: resident memory, CPU, open files,
        # collections by generation. Operators watch RSS over long runs (docs/performance.md).
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.api_requests = Counter(
            "claimgate_api_requests",
            "API requests seen, by the decision taken.",
            ["decision"],
            registry=self.registry,
        )
        self.violations = Counter(
            "claimgate_violations",
            "Violations of the extendedclaim rules, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.claims_captured = Counter(
            "claimgate_claims_captured",
            "Verified claims captured: link (service call or webhook) or admin (POST /claims).",
            ["source"],
            registry=self.registry,
        )
        self.claims_cached = Gauge(
            "claimgate_claims_cached",
            "Customers with a claim in this process's store.",
            registry=self.registry,
        )
        self.request_duration = LoopHistogram(
            "claimgate_request_duration_seconds",
            "claimgate's own time per API request (parse, decide, rewrite), not the API's.",
            DURATION_BUCKETS,
            self.registry,
        )
        self.store_errors = Counter(
            "claimgate_store_errors",
            "Store operations that failed or timed out.",
            registry=self.registry,
        )
        self.store_duration = Histogram(
            "claimgate_store_duration_seconds",
            "Time of each shared-store operation, answered or failed, by operation.",
            ["operation"],
            buckets=STORE_BUCKETS,
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "claimgate_config_reloads",
            "Configuration reloads (SIGHUP or watching), by result: applied or rejected.",
            ["result"],
            registry=self.registry,
        )
        self.requests_refused = Counter(
            "claimgate_requests_refused",
            "Request heads, request bodies and connections refused, by listener and reason.",
            ["listener", "reason"],
            registry=self.registry,
        )
        self.claim_age = LoopHistogram(
            "claimgate_claim_age_seconds",
            "Age of each claim that went out to the API, from its service call's timestamp.",
            AGE_BUCKETS,
            self.registry,
        )
        self.claim_age_at_rejection = LoopHistogram(
            "claimgate_claim_age_at_rejection_seconds",
            "Age at which the API refused a claim as outdated (error 201).",
            AGE_BUCKETS,
            self.registry,
        )
        self.idle_connections_closed = Counter(
            "claimgate_idle_connections_closed",
            "Idle connections a full listener closed to make room for a new one, by listener.",
            ["listener"],
            registry=self.registry,
        )
        self.connections_open = Gauge(
            "claimgate_connections_open",
            "Client connections open on each listener (each held to limits.connections).",
            ["listener"],
            registry=self.registry,
        )
        self.bodies_held = Gauge(
            "claimgate_request_bodies_held_bytes",
            "Bytes of request bodies held on each proxy listener (each held to limits.bodies).",
            ["listener"],
            registry=self.registry,
        )
        self.build_info = Gauge(
            "claimgate_build_info",
            "claimgate's version and the mitmproxy it runs on, as labels; always 1.",
            ["version", "mitmproxy"],
            registry=self.registry,
        )
        self.ca_expiry = Gauge(
            "claimgate_ca_expiry_timestamp_seconds",
            "When the interception CA's certificate expires, in Unix time.",
            registry=self.registry,
        )
        self.claims_expiring = Gauge(
            "claimgate_claims_expiring",
            "Customers whose freshest claim expires within claims.warn_before (this process).",
            registry=self.registry,
        )
        self.claims_expired = Gauge(
            "claimgate_claims_expired",
            "Customers whose freshest claim has expired or was refused (this process).",
            registry=self.registry,
        )
        self.api_requests_by_decision = {d: self.api_requests.labels(d.value) for d in Decision}
        """Bound once: ``labels()`` takes a lock and builds a key on every call."""
        for kind in Kind:
            self.violations.labels(kind.value)
        for source in CAPTURE_SOURCES:
            self.claims_captured.labels(source)
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(result)
        for operation in Operation:
            self.store_duration.labels(operation.value)

    def count_build(self, version: str, mitmproxy: str) -> None:
        """``claimgate_build_info``: which version each replica runs, during a roll-out."""
        self.build_info.labels(version, mitmproxy).set(1)

    def count_claims_with(self, count: Callable[[], int]) -> None:
        """Read ``claimgate_claims_cached`` from ``count`` at every scrape."""
        self.claims_cached.set_function(count)

    def count_connections_with(self, listener: str, count: Callable[[], int]) -> None:
        """Read ``listener``'s ``claimgate_connections_open`` from ``count`` at every scrape;
        its ``claimgate_idle_connections_closed_total`` and every reason of its
        ``claimgate_requests_refused_total`` start at 0."""
        self.connections_open.labels(listener).set_function(count)
        self.idle_connections_closed.labels(listener)
        for refusal in Refusal:
            self.requests_refused.labels(listener, refusal.value)

    def count_bodies_with(self, listener: str, held: Callable[[], int]) -> None:
        """Read ``listener``'s ``claimgate_request_bodies_held_bytes`` from ``held`` at every
        scrape."""
        self.bodies_held.labels(listener).set_function(held)

    def count_expiry_with(
        self,
        held: Callable[[], list[Claim]],
        ttl: float,
        warn_before: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Read the expiring and expired gauges from the claims ``held``, at every scrape."""

        def counting(wanted: Standing) -> Callable[[], int]:
            def count() -> int:
                now = clock()
                return sum(1 for c in held() if standing(c, now, ttl, warn_before) is wanted)

            return count

        self.claims_expiring.set_function(counting(Standing.EXPIRING))
        self.claims_expired.set_function(counting(Standing.EXPIRED))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return exposition(self.registry)


_PROMETHEUS_TYPES = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}
"""The text format's type for each OpenMetrics type it lacks."""
_NAME_SUFFIXES = {"counter": "_total", "info": "_info"}
_OPENMETRICS_ONLY = ("_created", "_gsum", "_gcount")
"""Samples the text format has no place for in their family: put in gauges of their own."""


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format (version 0.0.4) exactly as prometheus-client's ``generate_latest``
    writes it, for metric and label names in Prometheus's classic character set (every name
    here: prometheus-client refuses others when a metric is made)."""
    out: list[str] = []
    for metric in registry.collect():
        kind = metric.type
        _family_head(
            out,
            metric.name + _NAME_SUFFIXES.get(kind, ""),
            metric.documentation,
            _PROMETHEUS_TYPES.get(kind, kind),
        )
        apart: dict[str, list[str]] = {}
        for sample in metric.samples:
            suffix = next((s for s in _OPENMETRICS_ONLY if sample.name == metric.name + s), None)
            if suffix is None:
                out.append(_sample_line(sample))
            else:
                apart.setdefault(suffix, []).append(_sample_line(sample))
        for suffix, lines in sorted(apart.items()):
            _family_head(out, metric.name + suffix, metric.documentation, "gauge")
            out.extend(lines)
    return "".join(out).encode()


def _family_head(out: list[str], name: str, documentation: str, kind: str) -> None:
    help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")


def _sample_line(sample: Sample) -> str:
    labels = ""
    if sample.labels:
        pairs = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(sample.labels.items()))
        labels = "{" + pairs + "}"
    timestamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
    return f"{sample.name}{labels} {floatToGoString(sample.value)}{timestamp}\n"


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
