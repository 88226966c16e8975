"""What to do with one API request: the decision and the violations, from facts alone.

Pure: the pipeline looks up the facts in the store (who owns the token, the customer's
freshest claim, who owns the claims the request already carries: ``carried_claims`` says
which), this module decides (docs/design.md 2.3-2.6), and ``rewrite`` carries the decision
out. Keeping the rules here makes every mode testable without a proxy and keeps ``observe``
honest: it runs the very rules ``enforce`` runs.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from claimgate import onoffice
from claimgate.fingerprint import fingerprint
from claimgate.rewrite import ApiRequest
from claimgate.store import Claim


class Mode(StrEnum):
    """What claimgate does to API requests (docs/design.md 2.6)."""

    OBSERVE = "observe"
    INJECT = "inject"
    ENFORCE = "enforce"


class Affinity(StrEnum):
    """Whose freshest claim a request gets (docs/design.md 2.12)."""

    CUSTOMER = "customer"
    """The customer's freshest, whoever's it is: the latest service call of the customer."""
    USER = "user"
    """The freshest of the user whose (older) claim the request carries, if the store knows
    it; else the customer's."""


class Decision(StrEnum):
    """The ``decision`` of a request, a contract (docs/design.md 3.5 metric label values)."""

    INJECTED = "injected"
    REPLACED = "replaced"
    KEPT = "kept"
    PASSED = "passed"
    BLOCKED = "blocked"
    OBSERVED = "observed"


class Kind(StrEnum):
    """Violation kinds (docs/design.md 3.4), a contract shared by logs and metrics."""

    MISSING_CLAIM = "missing_claim"
    EXPIRED_CLAIM = "expired_claim"
    REJECTED_CLAIM = "rejected_claim"
    UNKNOWN_TOKEN = "unknown_token"
    STALE_CLAIM = "stale_claim"
    FOREIGN_CLAIM = "foreign_claim"
    HMAC_V1 = "hmac_v1"
    MALFORMED_REQUEST = "malformed_request"
    BAD_SIGNATURE = "bad_signature"
    STALE_SERVICE_CALL = "stale_service_call"
    API_REJECTED_CLAIM = "api_rejected_claim"
    STORE_UNAVAILABLE = "store_unavailable"


WITHOUT_CLAIM = frozenset(
    {Kind.MISSING_CLAIM, Kind.EXPIRED_CLAIM, Kind.REJECTED_CLAIM, Kind.UNKNOWN_TOKEN}
)
"""Kinds meaning no claim could be had for the request at all."""

BLOCKING = frozenset(
    {
        Kind.MISSING_CLAIM,
        Kind.EXPIRED_CLAIM,
        Kind.REJECTED_CLAIM,
        Kind.UNKNOWN_TOKEN,
        Kind.HMAC_V1,
        Kind.MALFORMED_REQUEST,
    }
)
"""Kinds after which no valid claim reaches the API: ``enforce`` answers them itself."""


@dataclass(frozen=True, slots=True)
class Violation:
    kind: Kind
    context: Mapping[str, Any] = field(default_factory=dict)
    """What an operator needs to act: ids and fingerprints, never a secret."""


@dataclass(slots=True)
class Facts:
    """Everything the pipeline looked up for one request.

    Read-only by convention: built for every request, and a frozen dataclass costs several
    times more to build.
    """

    mode: Mode
    customer_web_id: str | None
    provider_token: bool
    claim: Claim | None
    now: float
    ttl: float
    claim_owners: Mapping[str, str | None] = field(default_factory=dict)
    """Owner customer of each claim the request already carries (None: never seen)."""
    token_secret: str | None = None
    """The request token's API secret, when configured: version-1 actions may be re-signed."""


@dataclass(slots=True)
class Verdict:
    """What ``decide`` concluded. Read-only by convention, as ``rewrite.Action``: one is built
    for every request, and a frozen dataclass costs four times as much to build."""

    decision: Decision
    violations: tuple[Violation, ...]
    inject_into: tuple[int, ...] = ()
    resign: tuple[int, ...] = ()
    would: Decision | None = None
    """In ``observe`` mode: what ``enforce`` would have decided."""

    @property
    def changes_body(self) -> bool:
        return bool(self.inject_into or self.resign)


def claim_age(claim: Claim, now: float) -> float:
    return max(0.0, now - claim.timestamp)


def is_expired(claim: Claim, now: float, ttl: float) -> bool:
    return claim_age(claim, now) > ttl


def decide(request: ApiRequest, facts: Facts) -> Verdict:
    """Apply the rules of ``facts.mode`` to ``request``."""
    if facts.mode is Mode.OBSERVE:
        enforced = _decide(request, facts, Mode.ENFORCE)
        return Verdict(Decision.OBSERVED, enforced.violations, would=enforced.decision)
    return _decide(request, facts, facts.mode)


def carried_claims(request: ApiRequest, freshest: Claim | None) -> set[str]:
    """The claims the request already carries, other than the freshest: whose are they?"""
    carried = {c for a in request.actions for c in a.claims}
    if freshest is not None:
        carried.discard(freshest.claim)
    return carried


def malformed(reason: str, mode: Mode) -> Verdict:
    """The verdict for a body that is not an onOffice request."""
    violation = Violation(Kind.MALFORMED_REQUEST, {"reason": reason})
    if mode is Mode.OBSERVE:
        return Verdict(Decision.OBSERVED, (violation,), would=Decision.BLOCKED)
    decision = Decision.BLOCKED if mode is Mode.ENFORCE else Decision.PASSED
    return Verdict(decision, (violation,))


def _decide(request: ApiRequest, facts: Facts, mode: Mode) -> Verdict:
    targets = [a for a in request.actions if not a.is_unlock_provider]
    if facts.provider_token or not targets:
        return Verdict(Decision.PASSED, ())

    token_fp = fingerprint(request.token)
    unusable = _unusable_claim(facts, token_fp)
    if unusable is not None:
        return _without_claim(mode, [unusable])
    assert facts.claim is not None
    freshest = facts.claim.claim

    resignable = _resignable(request, facts.token_secret)
    violations: list[Violation] = []
    inject_into: list[int] = []
    resign: list[int] = []
    replaced = False
    for action in targets:
        resigned = False
        if not action.hmac_v2:
            if action.index not in resignable:
                violations.append(
                    Violation(
                        Kind.HMAC_V1,
                        {
                            "action": action.index,
                            "resourcetype": action.resourcetype,
                            "customer": facts.customer_web_id,
                            "token_fp": token_fp,
                        },
                    )
                )
                continue
            resign.append(action.index)
            resigned = True
        carried = [c for c in action.claims if c != freshest]
        for claim in carried:
            violations.extend(_carried_claim_violation(claim, action.index, facts))
        if carried:
            replaced = True
        if carried or not action.claims or resigned:
            inject_into.append(action.index)

    if mode is Mode.ENFORCE and any(v.kind in BLOCKING for v in violations):
        return Verdict(Decision.BLOCKED, tuple(violations))
    if replaced:
        decision = Decision.REPLACED
    elif inject_into:
        decision = Decision.INJECTED
    elif len(violations) == 0:
        decision = Decision.KEPT
    else:
        decision = Decision.PASSED
    return Verdict(decision, tuple(violations), tuple(inject_into), tuple(resign))


def _resignable(request: ApiRequest, secret: str | None) -> frozenset[int]:
    """Version-1 actions that may become version 2: secret known and their HMAC genuine.

    Checking the old HMAC first keeps claimgate from signing requests nobody signed.
    """
    if secret is None:
        return frozenset()
    return frozenset(
        a.index
        for a in request.actions
        if not a.hmac_v2 and onoffice.hmac_v1(secret, request.token, a.decoded()) == a.hmac
    )


def _unusable_claim(facts: Facts, token_fp: str) -> Violation | None:
    """Why no claim can be injected at all, if that is so."""
    if facts.customer_web_id is None:
        return Violation(Kind.UNKNOWN_TOKEN, {"token_fp": token_fp})
    claim = facts.claim
    if claim is not None and not claim.refused and not is_expired(claim, facts.now, facts.ttl):
        return None  # the usual case: no context to build
    context: dict[str, Any] = {"customer": facts.customer_web_id, "token_fp": token_fp}
    if claim is None:
        return Violation(Kind.MISSING_CLAIM, context)
    # the API's word (refused) outranks claimgate's guess of the lifetime
    kind = Kind.REJECTED_CLAIM if claim.refused else Kind.EXPIRED_CLAIM
    context |= {
        "claim_fp": fingerprint(claim.claim),
        "claim_age": round(claim_age(claim, facts.now)),
        "user": claim.user_id,
    }
    return Violation(kind, context)


def _without_claim(mode: Mode, violations: list[Violation]) -> Verdict:
    decision = Decision.BLOCKED if mode is Mode.ENFORCE else Decision.PASSED
    return Verdict(decision, tuple(violations))


def _carried_claim_violation(claim: str, index: int, facts: Facts) -> list[Violation]:
    owner = facts.claim_owners.get(claim)
    if owner is None:
        return []
    kind = Kind.STALE_CLAIM if owner == facts.customer_web_id else Kind.FOREIGN_CLAIM
    context = {"action": index, "customer": facts.customer_web_id, "claim_fp": fingerprint(claim)}
    if kind is Kind.FOREIGN_CLAIM:
        context["claim_owner"] = owner
    return [Violation(kind, context)]


def block_response(request: ApiRequest | None) -> bytes:
    """The onOffice-shaped answer ``enforce`` gives: error 193 in every action.

    Error 193 is what the API itself answers for a missing claim, so the integration's
    existing error handling sees a familiar failure.
    """
    if request is None:
        return onoffice.request_error_body(onoffice.INVALID_JSON)
    results = [
        onoffice.action_error_result(a.decoded(), onoffice.CLAIM_REQUIRED) for a in request.actions
    ]
    return onoffice.response_body(results)
