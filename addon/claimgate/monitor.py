"""Where observations go: each one to the log, the metrics and the status page at once.

The addon and the admin listener report what happened here and nowhere else, so a violation
can never be logged without being counted, or counted without showing on the status page.
Everything reported names secrets by fingerprint only.
"""

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from claimgate import capture, onoffice, policy
from claimgate.activity import Activity
from claimgate.fingerprint import fingerprint
from claimgate.lifetime import Lifetime
from claimgate.limits import Refusal
from claimgate.metrics import Metrics
from claimgate.policy import Kind, Verdict, Violation
from claimgate.settings import ClaimsSettings
from claimgate.store import Claim, Operation
from claimgate.telemetry import get_logger, info_line, printable
from claimgate.throttle import LineBudget

log = get_logger()

DAY = 86_400.0
CA_WARN_BEFORE = 30 * DAY
"""How long before the interception CA expires claimgate says so when it starts (the
``ClaimgateCAExpiring`` alert, deploy/prometheus, warns as long before)."""


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
    upgraded_to_https: bool = False
    """It was sent as plain HTTP; claimgate sent it to the API over TLS instead."""
    carried_freshest: frozenset[int] = frozenset()
    """The actions that went out with ``claim``: only their refusals retire it."""
    logged: bool = False


type CallLater = Callable[[float, Callable[[], None]], object]


class Monitor:
    """The one place that logs, counts and remembers what claimgate saw.

    What strangers can provoke (refused links, heads, bodies and connections, idle
    connections closed to make room) is always counted but logged within a ``LineBudget``;
    ``call_later`` (the event loop's) reports the lines left out a second later, in one line.
    """

    def __init__(
        self,
        metrics: Metrics,
        activity: Activity,
        call_later: CallLater | None = None,
        lifetime: Lifetime | None = None,
    ) -> None:
        self.metrics = metrics
        self.activity = activity
        self.lifetime = lifetime or Lifetime(ClaimsSettings().ttl)
        """Measured against ``claims.ttl`` (the default one unless told)."""
        self.refusal_lines = LineBudget()
        self.ca_not_after: float | None = None
        """When the interception CA expires (Unix time), once ``ca_loaded`` was told."""
        self._call_later = call_later
        self._report_pending = False

    def violation(self, violation: Violation) -> None:
        """Counted, remembered and logged; a text in its context may come from the request
        (an action's resourcetype), so each is made printable and capped first."""
        kind = violation.kind.value
        self.metrics.violations.labels(kind).inc()
        context = {
            name: printable(value) if isinstance(value, str) else value
            for name, value in violation.context.items()
        }
        self.activity.violation(kind, context.get("customer"))
        log.warning("violation", kind=kind, **context)

    def refused_link(self, result: capture.Refused, path: str, source: str) -> None:
        """Counted like any violation, but never per customer: the ids are unverified."""
        kind = result.violation
        self.metrics.violations.labels(kind).inc()
        self.activity.violation(kind, None)
        if self._refusal_line_admitted():
            context = {
                "reason": result.reason,
                "link": result.kind.value,
                "customer": result.customer_web_id or None,
                "user": result.user_id or None,
                "claim_fp": result.claim_fingerprint or None,
                "path": printable(path),
                "source": source,
            }
            log.warning("violation", kind=kind, **context)

    def request_refused(self, refusal: Refusal, listener: str, client: str) -> None:
        """A request head, a request body or a connection refused at a listener."""
        self.metrics.requests_refused.labels(listener, refusal.value).inc()
        if self._refusal_line_admitted():
            log.warning(
                "request_refused",
                reason=refusal.value,
                status=refusal.status,
                listener=listener,
                client=client,
            )

    def ca_loaded(self, not_after: float, now: float) -> None:
        """The interception CA in use, valid until ``not_after`` (Unix time): in the metrics,
        and a line at start when it expires within ``CA_WARN_BEFORE`` or has expired, since
        every client that checks the chain then refuses what claimgate presents."""
        self.metrics.ca_expiry.set(not_after)
        self.ca_not_after = not_after
        expires = datetime.datetime.fromtimestamp(not_after, datetime.UTC).isoformat()
        if not_after <= now:
            log.error("ca_expired", expired=expires)
        elif not_after - now < CA_WARN_BEFORE:
            log.warning("ca_expiring", expires=expires, days_left=int((not_after - now) // DAY))

    def idle_connection_closed(self, listener: str, client: str) -> None:
        """A full listener closed its connection idle longest (``client``'s) to make room."""
        self.metrics.idle_connections_closed.labels(listener).inc()
        if self._refusal_line_admitted():
            log.info("idle_connection_closed", listener=listener, client=client)

    def _refusal_line_admitted(self) -> bool:
        if self.refusal_lines.admit():
            return True
        if not self._report_pending and self._call_later is not None:
            self._report_pending = True
            self._call_later(1.0, self.report_suppressed)
        return False

    def report_suppressed(self) -> None:
        """One line for the refusals counted but not logged since the last report."""
        self._report_pending = False
        suppressed = self.refusal_lines.take_suppressed()
        if suppressed:
            log.warning("refusals_suppressed", suppressed=suppressed)

    def captured(
        self, claim: Claim, kind: capture.LinkKind, stored: bool, *, provider_secret_fp: str
    ) -> None:
        """``provider_secret_fp`` names the provider secret that verified the link."""
        log.info(
            "claim_captured",
            link=kind.value,
            source=claim.source,
            customer=claim.customer_web_id,
            user=claim.user_id,
            claim_fp=fingerprint(claim.claim),
            call_timestamp=claim.timestamp,
            provider_secret_fp=provider_secret_fp,
            stored=stored,
            **({} if stored else {"reason": "the store holds a newer claim"}),
        )
        if stored:
            self.metrics.claims_captured.labels(claim.source).inc()

    def token_learned(
        self, customer: str, user: str, token: str, source: str, *, provider_secret_fp: str
    ) -> None:
        log.info(
            "token_learned",
            customer=customer,
            user=user,
            token_fp=fingerprint(token),
            source=source,
            provider_secret_fp=provider_secret_fp,
        )

    def store_timed(self, operation: Operation, seconds: float) -> None:
        self.metrics.store_duration.labels(operation.value).observe(seconds)

    def store_error(self, operation: str, error: BaseException) -> None:
        self.metrics.store_errors.inc()
        log.info("store_error", operation=operation, error=type(error).__name__)

    def store_unavailable(self, reason: str) -> None:
        self.violation(Violation(policy.Kind.STORE_UNAVAILABLE, {"reason": reason}))

    def store_recovered(self, written: int) -> None:
        log.info("store_recovered", pending_written=written)

    def config_reloaded(self, changed: tuple[str, ...], fingerprint: str, trigger: str) -> None:
        """A reload was applied: ``changed`` names the keys (never a value)."""
        self.metrics.config_reloads.labels("applied").inc()
        log.info("config_reloaded", changed=list(changed), config_fp=fingerprint, trigger=trigger)

    def config_rejected(self, key: str, problem: str, trigger: str) -> None:
        """A reload was refused whole; the running settings stay."""
        self.metrics.config_reloads.labels("rejected").inc()
        log.warning("config_rejected", key=key, problem=problem, trigger=trigger)

    def decision(
        self,
        context: RequestContext,
        upstream_status: int | None,
        upstream_error: str | None = None,
    ) -> None:
        """The ``api_request`` line (docs/design.md 3.5), written once per request."""
        if context.logged:
            return
        context.logged = True
        verdict = context.verdict
        decision = verdict.decision.value
        fields: dict[str, Any] = {
            "customer": context.customer,
            "token_fp": context.token_fp,
            "actions": context.actions,
            "decision": decision,
            "violations": [v.kind.value for v in verdict.violations],
            "upstream_status": None if context.answered_locally else upstream_status,
            "duration_ms": round(context.own_seconds * 1000, 3),
        }
        if verdict.would is not None:
            fields["would"] = verdict.would.value
        if context.claim is not None:
            now = time.time()
            age = policy.claim_age(context.claim, now)
            fields["claim_fp"] = fingerprint(context.claim.claim)
            fields["claim_age"] = round(age)
            fields["user"] = context.claim.user_id
            if context.carried_freshest and not context.answered_locally:
                self._learn_lifetime(context, upstream_status, age, now)
        if upstream_error:
            fields["upstream_error"] = printable(upstream_error)
        if context.upgraded_to_https:
            fields["upgraded_to_https"] = True
        if context.internal_error:
            fields["error"] = "internal_error"
        info_line("api_request", fields)
        self.metrics.api_requests_by_decision[verdict.decision].inc()
        self.metrics.request_duration.observe(context.own_seconds)
        self.activity.decision(decision)

    def _learn_lifetime(
        self, context: RequestContext, status: int | None, age: float, now: float
    ) -> None:
        """What a claim that went out at ``age`` teaches (docs/design.md 2.11)."""
        assert context.claim is not None
        self.metrics.claim_age.observe(age)
        rejections = [v for v in context.verdict.violations if v.kind is Kind.API_REJECTED_CLAIM]
        if not rejections:
            if status is not None and 200 <= status < 300:
                self.lifetime.accepted(age)
            return
        outdated = any(
            v.context.get("errorcode") == onoffice.CLAIM_OUTDATED
            and v.context.get("action") in context.carried_freshest
            for v in rejections
        )
        if outdated:
            self.metrics.claim_age_at_rejection.observe(age)
            suggested = self.lifetime.refused(age, now)
            if suggested is not None:
                log.warning(
                    "claim_lifetime_observed",
                    claim_age=round(age),
                    ttl=round(self.lifetime.ttl),
                    suggested_ttl=suggested,
                    customer=context.customer,
                    claim_fp=fingerprint(context.claim.claim),
                )
