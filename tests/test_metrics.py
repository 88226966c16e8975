from prometheus_client.parser import text_string_to_metric_families

from claimgate.metrics import Metrics
from claimgate.policy import Decision, Kind


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


def test_no_label_but_decision_kind_source_and_reason():
    labels: dict[bool, set[str]] = {True: set(), False: set()}
    for family in text_string_to_metric_families(Metrics().render().decode()):
        for sample in family.samples:
            labels[sample.name.startswith("claimgate_")].update(sample.labels)
    assert labels[True] <= {"decision", "kind", "source", "reason", "le"}
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
