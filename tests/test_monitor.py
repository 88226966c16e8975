import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from claimgate.activity import Activity
from claimgate.capture import LinkKind, Refused
from claimgate.fingerprint import fingerprint
from claimgate.lifetime import Lifetime
from claimgate.limits import Refusal
from claimgate.metrics import Metrics
from claimgate.monitor import CA_WARN_BEFORE, DAY, Monitor, RequestContext
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
        admin, link = Claim("1", "2", "c", 5, source="admin"), Claim("1", "2", "d", 4)
        monitor.captured(admin, LinkKind.SERVICE_CALL, True, provider_secret_fp="fp")
        monitor.captured(link, LinkKind.SERVICE_CALL, False, provider_secret_fp="fp")
    assert [line["stored"] for line in logs] == [True, False]
    assert counter(monitor, "claimgate_claims_captured_total", source="admin") == 1
    assert counter(monitor, "claimgate_claims_captured_total", source="link") == 0


def test_captures_and_learned_tokens_name_the_provider_secret_that_verified_them():
    monitor = new_monitor()
    old, new = fingerprint("old-provider-secret"), fingerprint("new-provider-secret")
    with capture_logs() as logs:
        claim = Claim("21312", "17", "the-claim", 5)
        monitor.captured(claim, LinkKind.SERVICE_CALL, True, provider_secret_fp=old)
        monitor.token_learned("21312", "17", "the-token", "link", provider_secret_fp=new)
    assert [(line["event"], line["provider_secret_fp"]) for line in logs] == [
        ("claim_captured", old),
        ("token_learned", new),
    ]
    assert logs[1]["token_fp"] == fingerprint("the-token")
    assert "the-claim" not in repr(logs) and "the-token" not in repr(logs)


def refused_link(customer: str) -> Refused:
    return Refused(
        "bad_signature",
        "signature does not match",
        LinkKind.SERVICE_CALL,
        customer,
        "17",
        "claimfp",
    )


def test_a_refused_link_is_counted_but_remembered_for_no_customer():
    monitor = new_monitor()
    with capture_logs() as logs:
        monitor.refused_link(refused_link("4711"), "/service", "link")
    (line,) = logs
    assert (line["event"], line["kind"], line["customer"]) == ("violation", "bad_signature", "4711")
    assert counter(monitor, "claimgate_violations_total", kind="bad_signature") == 1
    assert monitor.activity.customers_with_violations() == []
    assert monitor.activity.violations_last_hour()["bad_signature"] == 1
    assert [customer for _, _, customer in monitor.activity.recent_violations()] == [None]


def test_refusal_lines_past_the_budget_are_reported_in_one_line_later():
    scheduled: list[tuple[float, Callable[[], None]]] = []
    monitor = Monitor(Metrics(), Activity(), call_later=lambda d, f: scheduled.append((d, f)))
    budget = monitor.refusal_lines.per_second
    with capture_logs() as logs:
        for _ in range(budget + 25):
            monitor.refused_link(refused_link("4711"), "/service", "link")
            monitor.request_refused(Refusal.HEADER_SIZE, "capture", "192.0.2.1")
    assert len(logs) <= budget + 1  # the second may turn during the loop
    assert len(scheduled) == 1  # one report, however many were left out
    with capture_logs() as report:
        scheduled[0][1]()
    (line,) = report
    assert line["event"] == "refusals_suppressed"
    assert line["suppressed"] + len(logs) == 2 * (budget + 25)
    assert counter(monitor, "claimgate_violations_total", kind="bad_signature") == budget + 25
    assert (
        counter(
            monitor,
            "claimgate_requests_refused_total",
            listener="capture",
            reason="headers_too_large",
        )
        == budget + 25
    )


def test_idle_connections_closed_are_counted_per_listener_and_logged_within_the_budget():
    scheduled: list[tuple[float, Callable[[], None]]] = []
    monitor = Monitor(Metrics(), Activity(), call_later=lambda d, f: scheduled.append((d, f)))
    monitor.metrics.count_connections_with("capture", lambda: 0)
    monitor.metrics.count_connections_with("admin", lambda: 0)
    assert counter(monitor, "claimgate_idle_connections_closed_total", listener="admin") == 0
    budget = monitor.refusal_lines.per_second
    with capture_logs() as logs:
        for _ in range(budget + 5):
            monitor.idle_connection_closed("capture", "192.0.2.7")
    assert logs[0] == {
        "event": "idle_connection_closed",
        "listener": "capture",
        "client": "192.0.2.7",
        "log_level": "info",
    }
    assert len(logs) <= budget + 1 and len(scheduled) == 1  # as for refusals
    closed = budget + 5
    assert counter(monitor, "claimgate_idle_connections_closed_total", listener="capture") == closed
    assert counter(monitor, "claimgate_idle_connections_closed_total", listener="admin") == 0


def test_the_ca_s_expiry_is_exposed_and_said_only_when_near_or_past():
    now = 1_800_000_000.0
    said = {}
    for left in (-1.0, 0.0, DAY * 3.5, CA_WARN_BEFORE - 1, CA_WARN_BEFORE, 3650 * DAY):
        monitor = new_monitor()
        with capture_logs() as logs:
            monitor.ca_loaded(now + left, now)
        assert counter(monitor, "claimgate_ca_expiry_timestamp_seconds") == now + left
        said[left] = [(line["event"], line.get("days_left")) for line in logs]
    assert said == {
        -1.0: [("ca_expired", None)],
        0.0: [("ca_expired", None)],
        DAY * 3.5: [("ca_expiring", 3)],
        CA_WARN_BEFORE - 1: [("ca_expiring", 29)],
        CA_WARN_BEFORE: [],
        3650 * DAY: [],
    }


def test_a_refused_path_reaches_the_log_capped_and_printable():
    monitor = new_monitor()
    with capture_logs() as logs:
        monitor.refused_link(refused_link("4711"), "/s\x1b[31m" + "p" * 5000, "link")
    path = logs[0]["path"]
    assert len(path) < 300 and "\x1b" not in path and path.isprintable()


def test_a_violation_s_texts_from_the_request_reach_the_log_printable_and_capped():
    """An action's resourcetype is the sender's: a lone surrogate (which JSON can spell and
    no encoder writes), an escape, a megabyte. The violation is still counted and logged."""
    monitor = new_monitor()
    resourcetype = "x\ud800\x1b[31m" + "r" * 1_000_000
    context = {"action": 1, "resourcetype": resourcetype, "customer": "21312"}
    with capture_logs() as logs:
        monitor.violation(Violation(Kind.HMAC_V1, context))
    (line,) = logs
    logged = line["resourcetype"]
    assert len(logged) < 300 and logged.isascii() and logged.isprintable()
    assert (line["action"], line["customer"]) == (1, "21312")
    assert counter(monitor, "claimgate_violations_total", kind="hmac_v1") == 1


def went_out(claim: Claim, *violations: Violation) -> RequestContext:
    """A request the freshest ``claim`` was injected into (action 0), with what came back."""
    verdict = Verdict(Decision.INJECTED, violations, inject_into=(0,))
    return RequestContext(
        "tokfp", "21312", 1, verdict, claim, 0.0001, carried_freshest=frozenset({0})
    )


def outdated(action: int = 0) -> Violation:
    return Violation(Kind.API_REJECTED_CLAIM, {"action": action, "errorcode": 201})


def test_the_ages_of_claims_that_went_out_teach_the_lifetime():
    monitor = Monitor(Metrics(), Activity(), lifetime=Lifetime(ttl=12 * 3600))
    now = time.time()
    with capture_logs() as logs:
        monitor.decision(went_out(Claim("21312", "17", "a", int(now) - 3600)), 200)
        monitor.decision(went_out(Claim("21312", "17", "b", int(now) - 7200), outdated()), 200)
        monitor.decision(went_out(Claim("21312", "17", "c", int(now) - 7300), outdated()), 200)
    assert counter(monitor, "claimgate_claim_age_seconds_count") == 3
    assert counter(monitor, "claimgate_claim_age_at_rejection_seconds_count") == 2
    report = monitor.lifetime.report()
    assert report["longest_accepted_age"] in (3600, 3601)  # a second may turn
    assert report["shortest_refused_age"] in (7200, 7201)
    (told,) = [line for line in logs if line["event"] == "claim_lifetime_observed"]
    assert told["suggested_ttl"] < told["claim_age"] < told["ttl"]
    assert told["claim_fp"] == fingerprint("b")  # the first refused, named by fingerprint


def test_a_refusal_of_another_claim_teaches_nothing_about_the_freshest():
    monitor = new_monitor()
    claim = Claim("21312", "17", "a", int(time.time()) - 60)
    monitor.decision(went_out(claim, outdated(action=1)), 200)  # action 1 carried its own
    assert counter(monitor, "claimgate_claim_age_at_rejection_seconds_count") == 0
    assert monitor.lifetime.report()["longest_accepted_age"] is None  # refused: not accepted
    blocked = RequestContext("t", "21312", 1, Verdict(Decision.BLOCKED, ()), claim, 0.0)
    blocked.answered_locally = True
    monitor.decision(blocked, None)
    assert counter(monitor, "claimgate_claim_age_seconds_count") == 1
