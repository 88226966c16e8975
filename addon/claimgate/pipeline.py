"""The injection pipeline: one API request's body in, one outcome out (docs/design.md 2.3-2.8).

Knows nothing of mitmproxy. The addon hands over the body bytes as sent and their
``Content-Encoding``; the pipeline decodes them within ``proxy.max_body_size``, looks up the
facts in the store, lets ``policy`` decide and ``rewrite`` carry the decision out, and
returns an ``Outcome``: the new body or a local answer, and the record its decision line is
written from. The addon then makes at most one edit to the flow, so a request is never
forwarded half rewritten. Every record is built here, by ``_record``, and nowhere else.
"""

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from claimgate import decoding, onoffice, policy, rewrite
from claimgate.fingerprint import fingerprint
from claimgate.monitor import RequestContext
from claimgate.policy import Affinity, Decision, Kind, Mode, Verdict, Violation
from claimgate.settings import Settings
from claimgate.sink import answer_body
from claimgate.store import Claim, ClaimOwner, ClaimStore

RETIRING = frozenset({onoffice.CLAIM_OUTDATED, onoffice.CLAIM_NOT_MATCHING})
"""Errors that say the claim itself is dead (201 outdated, 248 no matching): retire it."""


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """What claimgate answers itself instead of forwarding: never reaches the API."""

    status: int
    body: bytes
    violation: str
    """The ``X-Claimgate-Violation`` header: the violation kinds, or ``internal_error``."""


@dataclass(slots=True)
class Outcome:
    """What to do with one API request, and what its decision line will say."""

    record: RequestContext
    body: bytes | None = None
    """The rewritten body (decoded: the flow encodes it again), or None to send it as is."""
    answer: LocalAnswer | None = None


class Pipeline:
    """The rules for API requests, bound to the settings and the claim store."""

    def __init__(self, settings: Settings, store: ClaimStore) -> None:
        self.store = store
        self.mode = settings.policy.mode
        self.max_body_size = settings.proxy.max_body_size
        self.ttl = settings.claims.ttl
        self.affinity = settings.claims.affinity
        self.provider_tokens = frozenset(settings.policy.provider_tokens)
        self.static_customers = {c.token.reveal(): c.customer_web_id for c in settings.customers}
        self.token_secrets = {
            c.token.reveal(): c.secret.reveal() for c in settings.customers if c.secret
        }

    async def run(self, raw: bytes, content_encoding: str | None, started: float) -> Outcome:
        """Decide about one request body; ``started`` is when claimgate began on it."""
        try:
            request = rewrite.parse(decoding.decode(raw, content_encoding, self.max_body_size))
        except decoding.BodyTooLarge:
            limit = self.max_body_size
            reason = f"body larger than proxy.max_body_size ({limit} bytes) once decoded"
            verdict = policy.malformed(reason, self.mode)
            return self._outcome(verdict, started, refusal=(413, answer_body(limit)))
        except (rewrite.MalformedRequest, decoding.UndecodableBody) as error:
            return self._outcome(policy.malformed(str(error), self.mode), started)

        token = request.token
        customer = self.static_customers.get(token) or await self.store.customer_of_token(token)
        carried = dict.fromkeys([c for a in request.actions for c in a.claims])  # in order
        owners = {c: await self.store.owner_of_claim(c) for c in carried}
        claim = await self._claim_for(owners, customer) if customer else None
        facts = policy.Facts(
            mode=self.mode,
            customer_web_id=customer,
            provider_token=fingerprint(token) in self.provider_tokens,
            claim=claim,
            now=time.time(),
            ttl=self.ttl,
            claim_owners={
                c: owner.customer_web_id if (owner := owners[c]) else None
                for c in policy.carried_claims(request, claim)
            },
            token_secret=self.token_secrets.get(token),
        )
        verdict = policy.decide(request, facts)
        new_body = None
        if verdict.decision is not Decision.BLOCKED and verdict.changes_body:
            assert claim is not None  # policy changes a body only to put the claim in
            secrets = {i: self.token_secrets[token] for i in verdict.resign}
            new_body = rewrite.rewrite(request, claim.claim, verdict.inject_into, secrets)
        outcome = self._outcome(verdict, started, request, claim, customer, new_body)
        if claim is not None and verdict.decision is not Decision.BLOCKED:
            outcome.record.carried_freshest = _carrying(request, claim.claim, verdict)
        return outcome

    async def _claim_for(
        self, owners: Mapping[str, ClaimOwner | None], customer: str
    ) -> Claim | None:
        """The claim the request should carry (docs/design.md 2.12): the customer's freshest,
        or with ``claims.affinity = "user"`` the freshest of the user whose claim it carries
        (the first the store knows, in the order of the actions; ``owners`` is in that order)."""
        if self.affinity is Affinity.USER:
            for owner in owners.values():
                if owner is not None and owner.customer_web_id == customer and owner.user_id:
                    mine = await self.store.freshest(customer, owner.user_id)
                    if mine is not None:
                        return mine
        return await self.store.freshest(customer)

    def streamed_too_large(self, size: str, started: float) -> Outcome:
        """A body above ``proxy.max_body_size`` on the wire, streamed by mitmproxy, never held.

        ``size`` is its ``Content-Length`` or ``unknown (chunked)``. It goes on untouched; in
        ``enforce`` the caller points it at the sink, which answers 413 (docs/design.md 2.7).
        """
        reason = f"body larger than proxy.max_body_size ({size} bytes)"
        verdict = policy.malformed(reason, self.mode)
        blocked = verdict.decision is Decision.BLOCKED
        return Outcome(_record(verdict, started, answered_locally=blocked))

    def failed(self, started: float) -> Outcome:
        """claimgate's own error: sent on untouched, or in ``enforce`` answered 502."""
        enforce = self.mode is Mode.ENFORCE
        verdict = Verdict(Decision.BLOCKED if enforce else Decision.PASSED, ())
        record = _record(verdict, started, internal_error=True)
        if not enforce:
            return Outcome(record)
        body = onoffice.request_error_body(onoffice.UNKNOWN_ERROR, 500)
        return Outcome(record, answer=LocalAnswer(502, body, "internal_error"))

    async def rejections(
        self, record: RequestContext, raw: bytes, content_encoding: str | None
    ) -> tuple[Violation, ...]:
        """The API's refusals (193/201/248) of a claim it was sent (docs/design.md 2.8).

        They are added to ``record`` and returned, for the caller to report. A 201 or 248
        for an action that carried the customer's freshest claim retires that claim in the
        store (docs/design.md 2.11).
        """
        if not _claim_may_have_gone_out(record):
            return ()
        refusals = _rejected_claims(raw, content_encoding, self.max_body_size)
        if not refusals:
            return ()  # the usual answer
        violations = tuple(
            Violation(
                Kind.API_REJECTED_CLAIM,
                {
                    "action": index,
                    "errorcode": code,
                    "customer": record.customer,
                    "token_fp": record.token_fp,
                    "claim_fp": _sent_fingerprint(record, index),
                },
            )
            for index, code in refusals
        )
        record.verdict = _with_violations(record.verdict, violations)
        retire = any(i in record.carried_freshest and c in RETIRING for i, c in refusals)
        if retire and record.claim is not None:
            await self.store.refuse(record.claim)
        return violations

    def _outcome(
        self,
        verdict: Verdict,
        started: float,
        request: rewrite.ApiRequest | None = None,
        claim: Claim | None = None,
        customer: str | None = None,
        new_body: bytes | None = None,
        refusal: tuple[int, bytes] | None = None,
    ) -> Outcome:
        """The verdict carried out: the new body, or when blocked the answer given instead.

        A blocked request is answered as onOffice would refuse it, unless ``refusal`` names
        another status and body.
        """
        blocked = verdict.decision is Decision.BLOCKED
        record = _record(verdict, started, request, claim, customer, answered_locally=blocked)
        if not blocked:
            return Outcome(record, body=new_body)
        kinds = ",".join(sorted({v.kind.value for v in verdict.violations}))
        status, body = refusal or (400 if request is None else 200, policy.block_response(request))
        return Outcome(record, answer=LocalAnswer(status, body, kinds))


def _record(
    verdict: Verdict,
    started: float,
    request: rewrite.ApiRequest | None = None,
    claim: Claim | None = None,
    customer: str | None = None,
    answered_locally: bool = False,
    internal_error: bool = False,
) -> RequestContext:
    return RequestContext(
        token_fp=fingerprint(request.token) if request else "",
        customer=customer,
        actions=len(request.actions) if request else 0,
        verdict=verdict,
        claim=claim,
        own_seconds=time.perf_counter() - started,
        answered_locally=answered_locally,
        internal_error=internal_error,
    )


def _sent_fingerprint(record: RequestContext, action: int) -> str | None:
    """The fingerprint of the claim ``action`` went out with, when claimgate knows it: the
    freshest, if the action carried it; None for one that carried a claim of its own."""
    if record.claim is None or action not in record.carried_freshest:
        return None
    return fingerprint(record.claim.claim)


def _carrying(request: rewrite.ApiRequest, freshest: str, verdict: Verdict) -> frozenset[int]:
    """The actions that go out with ``freshest``: injected into, or carrying it alone."""
    injected = set(verdict.inject_into)  # a set: a request may hold thousands of actions
    return frozenset(
        [a.index for a in request.actions if a.index in injected or a.claims == (freshest,)]
    )


def _claim_may_have_gone_out(record: RequestContext) -> bool:
    """Whether the API's 193/201/248 can be about a claim that was sent.

    Not for a request answered locally, nor one claimgate could not read (malformed, or its
    own error: it went out as it came), nor one forwarded knowingly without a claim, whose
    193 repeats a violation already reported (missing, expired, unknown token).
    """
    if record.answered_locally or record.internal_error:
        return False
    kinds = {v.kind for v in record.verdict.violations}
    if Kind.MALFORMED_REQUEST in kinds:
        return False
    return not (record.verdict.decision is Decision.PASSED and kinds & policy.WITHOUT_CLAIM)


def _rejected_claims(raw: bytes, content_encoding: str | None, limit: int) -> list[tuple[int, int]]:
    try:
        content = decoding.decode(raw, content_encoding, limit)
    except (decoding.BodyTooLarge, decoding.UndecodableBody):
        return []  # beyond what claimgate reads: the answer goes on unread
    if not onoffice.may_reject_claim(content):
        return []
    try:
        return onoffice.rejected_claim_codes(json.loads(content))
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
        return []


def _with_violations(verdict: Verdict, violations: tuple[Violation, ...]) -> Verdict:
    return Verdict(
        verdict.decision,
        (*verdict.violations, *violations),
        verdict.inject_into,
        verdict.resign,
        verdict.would,
    )
