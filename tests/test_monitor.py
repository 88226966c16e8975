from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from claimgate.activity import Activity
from claimgate.capture import LinkKind
from claimgate.metrics import Metrics
from claimgate.monitor import Monitor, RequestContext
from claimgate.policy import Decision, Kind, Verdict, Violation
from claimgate.store import Claim


def counter(monitor: Monitor, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(monitor.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(name)


def new_monitor() -> Monitor:
    return Monitor(Metrics(), Activity())


def test_a_violation_is_logged_counted_and_remembered_at_once():
    monitor = new_monitor()
    with capture_logs() as logs:
        monitor.violation(Violation(Kind.MISSING_CLAIM, {"customer": "21312"}))
    assert logs == [
        {"event": "violation", "kind": "missing_claim", "customer": "21312", "log_level": "warning"}
    ]
    assert counter(monitor, "claimgate_violations_total", kind="missing_claim") == 1
    assert monitor.activity.last_violation("21312").kind == "missing_claim"


def test_the_decision_line_is_written_once_and_counted():
    monitor = new_monitor()
    claim = Claim("21312", "17", "the-claim", 1)
    context = RequestContext("tokfp", "21312", 2, Verdict(Decision.INJECTED, ()), claim, 0.0003)
    with capture_logs() as logs:
        monitor.decision(context, 200)
        monitor.decision(context, 200)
    (line,) = logs
    assert line["event"] == "api_request" and line["decision"] == "injected"
    assert line["upstream_status"] == 200 and line["duration_ms"] == 0.3
    assert "the-claim" not in repr(line)
    assert counter(monitor, "claimgate_api_requests_total", decision="injected") == 1
    assert counter(monitor, "claimgate_request_duration_seconds_count") == 1


def test_only_stored_captures_are_counted():
    monitor = new_monitor()
    with capture_logs() as logs:
        monitor.captured(Claim("1", "2", "c", 5, source="admin"), LinkKind.SERVICE_CALL, True)
        monitor.captured(Claim("1", "2", "d", 4), LinkKind.SERVICE_CALL, False)
    assert [line["stored"] for line in logs] == [True, False]
    assert counter(monitor, "claimgate_claims_captured_total", source="admin") == 1
    assert counter(monitor, "claimgate_claims_captured_total", source="link") == 0
