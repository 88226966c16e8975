"""Where observations go: each one to the log, the metrics and the status page at once.

The addon and the admin listener report what happened here and nowhere else, so a violation
can never be logged without being counted, or counted without showing on the status page.
Everything reported names secrets by fingerprint only.
"""

import time
from dataclasses import dataclass
from typing import Any

from claimgate import capture, policy
from claimgate.activity import Activity
from claimgate.fingerprint import fingerprint
from claimgate.metrics import Metrics
from claimgate.policy import Verdict, Violation
from claimgate.store import Claim
from claimgate.telemetry import get_logger

log = get_logger()


@dataclass(slots=True)
class RequestContext:
    """What the request hook decided about an API request, until its decision line is written."""

    token_fp: str
    customer: str | None
    actions: int
    verdict: Verdict
    claim: Claim | None
    own_seconds: float
    answered_locally: bool = False
    internal_error: bool = False
    """claimgate failed on this request; it was forwarded untouched or answered 502."""
    logged: bool = False


class Monitor:
    """The one place that logs, counts and remembers what claimgate saw."""

    def __init__(self, metrics: Metrics, activity: Activity) -> None:
        self.metrics = metrics
        self.activity = activity

    def violation(self, violation: Violation) -> None:
        kind = violation.kind.value
        log.warning("violation", kind=kind, **violation.context)
        self.metrics.violations.labels(kind).inc()
        self.activity.violation(kind, violation.context.get("customer"))

    def refused_link(self, result: capture.Refused, path: str, source: str) -> None:
        context = {
            "reason": result.reason,
            "link": result.kind.value,
            "customer": result.customer_web_id,
            "user": result.user_id,
            "claim_fp": result.claim_fingerprint,
            "path": path,
            "source": source,
        }
        self.violation(Violation(policy.Kind(result.violation), context))

    def captured(self, claim: Claim, kind: capture.LinkKind, stored: bool) -> None:
        log.info(
            "claim_captured",
            link=kind.value,
            source=claim.source,
            customer=claim.customer_web_id,
            user=claim.user_id,
            claim_fp=fingerprint(claim.claim),
            call_timestamp=claim.timestamp,
            stored=stored,
            **({} if stored else {"reason": "the store holds a newer claim"}),
        )
        if stored:
            self.metrics.claims_captured.labels(claim.source).inc()

    def token_learned(self, customer: str, user: str, token: str, source: str) -> None:
        log.info(
            "token_learned",
            customer=customer,
            user=user,
            token_fp=fingerprint(token),
            source=source,
        )

    def store_error(self, operation: str, error: BaseException) -> None:
        self.metrics.store_errors.inc()
        log.info("store_error", operation=operation, error=type(error).__name__)

    def store_unavailable(self, reason: str) -> None:
        self.violation(Violation(policy.Kind.STORE_UNAVAILABLE, {"reason": reason}))

    def store_recovered(self, written: int) -> None:
        log.info("store_recovered", pending_written=written)

    def decision(
        self,
        context: RequestContext,
        upstream_status: int | None,
        upstream_error: str | None = None,
    ) -> None:
        """The ``api_request`` line (DESIGN 3.5), written once per request."""
        if context.logged:
            return
        context.logged = True
        verdict = context.verdict
        fields: dict[str, Any] = {
            "customer": context.customer,
            "token_fp": context.token_fp,
            "actions": context.actions,
            "decision": verdict.decision.value,
            "violations": [v.kind.value for v in verdict.violations],
            "upstream_status": None if context.answered_locally else upstream_status,
            "duration_ms": round(context.own_seconds * 1000, 3),
        }
        if verdict.would is not None:
            fields["would"] = verdict.would.value
        if context.claim is not None:
            fields["claim_fp"] = fingerprint(context.claim.claim)
            fields["claim_age"] = round(policy.claim_age(context.claim, time.time()))
            fields["user"] = context.claim.user_id
        if upstream_error:
            fields["upstream_error"] = upstream_error
        if context.internal_error:
            fields["error"] = "internal_error"
        log.info("api_request", **fields)
        self.metrics.api_requests_by_decision[verdict.decision].inc()
        self.metrics.request_duration.observe(context.own_seconds)
        self.activity.decision(verdict.decision.value)
