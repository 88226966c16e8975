from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from claimgate.metrics import DURATION_BUCKETS, LoopHistogram, Metrics
from claimgate.policy import Decision, Kind
from claimgate.store import Claim


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def test_names_are_the_contract_and_every_label_value_exists_at_zero():
    metrics = Metrics()
    metrics.count_claims_with(lambda: 7)
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
    ):
        assert scrape[("claimgate_requests_refused_total", (("reason", reason),))] == 0
    assert scrape[("claimgate_claims_cached", ())] == 7
    assert scrape[("claimgate_store_errors_total", ())] == 0
    assert scrape[("claimgate_request_duration_seconds_count", ())] == 0


def test_counts_move_and_registries_are_separate():
    one, other = Metrics(), Metrics()
    one.violations.labels("missing_claim").inc()
    one.request_duration.observe(0.0004)
    scrape = samples(one)
    assert scrape[("claimgate_violations_total", (("kind", "missing_claim"),))] == 1
    assert scrape[("claimgate_request_duration_seconds_bucket", (("le", "0.0005"),))] == 1
    assert scrape[("claimgate_request_duration_seconds_bucket", (("le", "0.00025"),))] == 0
    assert samples(other)[("claimgate_violations_total", (("kind", "missing_claim"),))] == 0


def test_no_label_but_decision_kind_source_reason_and_result():
    labels: dict[bool, set[str]] = {True: set(), False: set()}
    for family in text_string_to_metric_families(Metrics().render().decode()):
        for sample in family.samples:
            labels[sample.name.startswith("claimgate_")].update(sample.labels)
    assert labels[True] <= {"decision", "kind", "source", "reason", "result", "le"}
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
