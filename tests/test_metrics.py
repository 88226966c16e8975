from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from claimgate.metrics import DURATION_BUCKETS, LoopHistogram, Metrics, exposition
from claimgate.policy import Decision, Kind
from claimgate.store import Claim, Operation


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def test_names_are_the_contract_and_every_label_value_exists_at_zero():
    metrics = Metrics()
    metrics.count_claims_with(lambda: 7)
    for listener in ("capture", "admin"):
        metrics.count_connections_with(listener, lambda: 0)
    scrape = samples(metrics)
    for decision in Decision:
        assert scrape[("claimgate_api_requests_total", (("decision", decision.value),))] == 0
    for kind in Kind:
        assert scrape[("claimgate_violations_total", (("kind", kind.value),))] == 0
    for source in ("link", "admin"):
        assert scrape[("claimgate_claims_captured_total", (("source", source),))] == 0
    # The README's reasons, written out: the code is checked against the contract.
    for reason in (
        "request_line_too_long",
        "headers_too_large",
        "too_many_headers",
        "header_timeout",
        "body_too_slow",
        "too_many_connections",
        "too_many_body_bytes",
    ):
        for listener in ("admin", "capture"):
            series = (("listener", listener), ("reason", reason))
            assert scrape[("claimgate_requests_refused_total", series)] == 0
    assert scrape[("claimgate_claims_cached", ())] == 7
    assert scrape[("claimgate_store_errors_total", ())] == 0
    for operation in Operation:
        series = (("operation", operation.value),)
        assert scrape[("claimgate_store_duration_seconds_count", series)] == 0
    assert scrape[("claimgate_request_duration_seconds_count", ())] == 0


def test_open_connections_are_read_per_listener_at_each_scrape():
    metrics = Metrics()
    open_now = {"capture": 3, "admin": 1}
    for listener in open_now:
        metrics.count_connections_with(listener, lambda name=listener: open_now[name])
    assert samples(metrics)[("claimgate_connections_open", (("listener", "capture"),))] == 3
    open_now["capture"] = 0
    scrape = samples(metrics)
    assert scrape[("claimgate_connections_open", (("listener", "capture"),))] == 0
    assert scrape[("claimgate_connections_open", (("listener", "admin"),))] == 1


def test_counts_move_and_registries_are_separate():
    one, other = Metrics(), Metrics()
    one.violations.labels("missing_claim").inc()
    one.request_duration.observe(0.0004)
    scrape = samples(one)
    assert scrape[("claimgate_violations_total", (("kind", "missing_claim"),))] == 1
    assert scrape[("claimgate_request_duration_seconds_bucket", (("le", "0.0005"),))] == 1
    assert scrape[("claimgate_request_duration_seconds_bucket", (("le", "0.00025"),))] == 0
    assert samples(other)[("claimgate_violations_total", (("kind", "missing_claim"),))] == 0


def test_no_label_but_decision_kind_source_reason_result_listener_and_operation():
    metrics = Metrics()
    metrics.count_connections_with("capture", lambda: 1)
    labels: dict[bool, set[str]] = {True: set(), False: set()}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            labels[sample.name.startswith("claimgate_")].update(sample.labels)
    assert labels[True] <= {
        "decision",
        "kind",
        "source",
        "reason",
        "result",
        "listener",
        "operation",
        "le",
    }
    # prometheus-client's process and interpreter series: nothing from requests either.
    assert labels[False] <= {
        "generation",
        "implementation",
        "major",
        "minor",
        "patchlevel",
        "version",
    }


def test_no_created_series():
    assert b"_created" not in Metrics().render()


def test_the_process_reports_its_memory_cpu_and_collections():
    scrape = samples(Metrics())
    assert scrape[("process_resident_memory_bytes", ())] > 10_000_000
    assert ("process_cpu_seconds_total", ()) in scrape
    assert scrape[("python_gc_collections_total", (("generation", "0"),))] >= 0
    assert any(name == "python_info" for name, _ in scrape)


def expiry(metrics: Metrics) -> tuple[float, float]:
    scrape = samples(metrics)
    return scrape[("claimgate_claims_expiring", ())], scrape[("claimgate_claims_expired", ())]


def test_expiring_and_expired_customers_are_counted_at_every_scrape():
    now = [1_800_000_000.0]
    held = [
        Claim("fresh", "1", "a", int(now[0])),
        Claim("expiring", "1", "b", int(now[0]) - 3500),
        Claim("expired", "1", "c", int(now[0]) - 4000),
        Claim("refused", "1", "d", int(now[0]), refused=True),
    ]
    metrics = Metrics()
    metrics.count_expiry_with(lambda: held, ttl=3600, warn_before=600, clock=lambda: now[0])
    assert expiry(metrics) == (1, 2)
    now[0] += 3100  # "fresh" is now within its last 600 s, "expiring" has expired
    assert expiry(metrics) == (1, 3)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(DURATION_BUCKETS),  # on a bound: counted in its bucket
            st.floats(0, 2, allow_nan=False),
        ),
        max_size=30,
    )
)
def test_the_loop_histogram_is_exposed_as_prometheus_client_exposes_a_histogram(values):
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop_histogram = LoopHistogram("h_seconds", "Help.", DURATION_BUCKETS, ours)
    histogram = Histogram("h_seconds", "Help.", buckets=DURATION_BUCKETS, registry=theirs)
    for value in values:
        loop_histogram.observe(value)
        histogram.observe(value)
    assert generate_latest(ours) == generate_latest(theirs)


TYPES = ("counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset")
TYPES += ("unknown",)
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created", "_gsum", "_gcount", "_info")
NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)


@st.composite
def families(draw) -> list[Metric]:
    made = []
    for name in draw(st.lists(NAMES, max_size=4, unique=True)):
        metric = Metric(name, draw(st.text(max_size=20)), draw(st.sampled_from(TYPES)))
        for _ in range(draw(st.integers(0, 4))):
            labels = draw(
                st.dictionaries(
                    NAMES.filter(lambda n: not n.startswith("__")), st.text(max_size=10), max_size=3
                )
            )
            value = draw(st.floats() | st.integers(-(10**12), 10**12))
            timestamp = draw(st.none() | st.floats(0, 2e9))
            metric.add_sample(
                metric.name + draw(st.sampled_from(SUFFIXES)), labels, value, timestamp
            )
        made.append(metric)
    return made


class Fixed:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


@given(families())
def test_the_exposition_is_byte_for_byte_prometheus_clients(metrics):
    """Any family, any label value (quotes, backslashes, new lines, any text), any value."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed(metrics))
    assert exposition(registry) == generate_latest(registry)


def test_the_sidecars_scrape_has_prometheus_clients_families_and_series():
    """The same registry, the process collectors included (their values move between two
    scrapes, so the series are compared by name and labels)."""
    metrics = Metrics()

    def series(text: bytes) -> list[tuple[str, str, str, list]]:
        return [
            (f.name, f.type, f.documentation, [(s.name, s.labels) for s in f.samples])
            for f in text_string_to_metric_families(text.decode())
        ]

    assert series(metrics.render()) == series(generate_latest(metrics.registry))
