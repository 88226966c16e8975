"""Is an inbound request a Marketplace link, and is it genuine? (docs/design.md 2.2)

onOffice opens the provider's service URL, webhook URL or activation URL with signed
parameters (docs/onoffice-protocol.md 3a, 3b, 3d). A request that carries ``apiClaim`` and
``customerWebId`` is such a link; ``examine`` verifies its signature with the provider secret
(with any of them while it is rotated) and its timestamp against the allowed age, and returns
either the claim to store or the violation to report (docs/design.md 3.4). It is pure: the
capture listener turns a flow into a ``LinkRequest`` and acts on the answer, and the request
goes on to the app whatever it is.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from claimgate import signature
from claimgate.fingerprint import fingerprint
from claimgate.store import Claim

FUTURE_SKEW = 120.0
"""Seconds a link's timestamp may lie ahead of our clock: the API's own ±120 s window."""

BAD_SIGNATURE = "bad_signature"
STALE_SERVICE_CALL = "stale_service_call"
MALFORMED = "malformed_request"

LINK_MARKER = "apiClaim"
"""Every Marketplace link carries it; a request without it is not parsed any further."""
MAX_LINK_PARAMETERS = 1000
"""PHP's default ``max_input_vars``: an app on PHP reads no more of a link. onOffice's links
carry about ten; a link past this is refused before its parameters are parsed and sorted,
which for hundreds of thousands of them would hold the event loop for seconds."""

_TIMESTAMP = re.compile(r"-?[0-9]{1,19}")
"""An integer timestamp; the length cap keeps absurd values from costly ``int`` parsing."""
ONOFFICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a ``customerWebId`` or ``userId`` may be (onOffice's are numbers): anything else is no
link onOffice made, and these ids go into logs, the store and the status page."""


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """What the capture listener saw, free of mitmproxy."""

    base: str
    """``scheme://host[:port]`` that onOffice signed: the caller decides from the public base
    URL, trusted forwarded headers, or Host and TLS."""
    path: str
    """The raw path as requested, without the query."""
    query: str
    """The raw query string, without ``?``."""
    form: str | None = None
    """The raw ``application/x-www-form-urlencoded`` body of a POST, else None."""


class LinkKind(StrEnum):
    """Which Marketplace link a request is.

    A webhook is a GET carrying the same signed parameters as a service call (protocol 3d)
    and delivers a claim just as good, so it is a ``SERVICE_CALL``.
    """

    SERVICE_CALL = "service_call"
    ACTIVATION = "activation"


@dataclass(frozen=True, slots=True)
class Captured:
    """A genuine, fresh link: the claim to store and, for activations, the API token."""

    kind: LinkKind
    claim: Claim
    api_token: str | None
    """The ``apiToken`` of an activation link (None for service calls)."""
    provider_secret_fp: str = ""
    """The fingerprint of the provider secret that verified the link: during a rotation it
    tells which of them onOffice signs with."""

    def __repr__(self) -> str:
        token = None if self.api_token is None else f"<fp {fingerprint(self.api_token)}>"
        return (
            f"Captured(kind={self.kind!r}, claim={self.claim!r}, api_token={token}, "
            f"provider_secret_fp={self.provider_secret_fp!r})"
        )


@dataclass(frozen=True, slots=True)
class Refused:
    """A link that must not feed the store, and what to report about it."""

    violation: str
    """``bad_signature``, ``stale_service_call``, or ``malformed_request`` for ids that are
    not onOffice's (docs/design.md 3.4)."""
    reason: str
    """Short human reason; never contains a secret."""
    kind: LinkKind
    customer_web_id: str
    """Empty when the link's ids were refused: they are not repeated anywhere."""
    user_id: str
    claim_fingerprint: str


def examine(
    request: LinkRequest,
    secrets: Sequence[str],
    max_age: float,
    now: float,
    future_skew: float = FUTURE_SKEW,
) -> Captured | Refused | None:
    """Judge a request: None if it is no Marketplace link, else captured or refused.

    ``secrets`` are the provider secrets a genuine link may be signed with, more than one
    during a rotation; with none, every link is refused. The ids are checked first, before
    anything is done with them; then the signature before the timestamp, so a forged link is
    always reported as ``bad_signature``, whatever timestamp it claims.
    """
    if isinstance(secrets, str):  # each of its characters would pass for a secret
        raise TypeError("secrets must be a sequence of secrets, not one string")
    if LINK_MARKER not in request.query and LINK_MARKER not in (request.form or ""):
        return None  # the app's own traffic: not worth reading as PHP would
    pairs = request.query.count("&") + (request.form or "").count("&") + 2
    if pairs > MAX_LINK_PARAMETERS:  # a count in C, before anything is parsed or sorted
        activation = "apiToken" in request.query or "apiToken" in (request.form or "")
        kind = LinkKind.ACTIVATION if activation else LinkKind.SERVICE_CALL
        reason = f"more than {MAX_LINK_PARAMETERS} parameters"
        return Refused(MALFORMED, reason, kind, "", "", "")
    params = _parameters(request)
    claim, customer = params.get("apiClaim"), params.get("customerWebId")
    token = params.get("apiToken")
    if not isinstance(claim, str) or not isinstance(customer, str) or isinstance(token, dict):
        return None  # an array where onOffice sends a string: not a link it made
    kind = LinkKind.SERVICE_CALL if token is None else LinkKind.ACTIVATION
    user = params.get("userId")  # onOffice always sends one; without it, the user is ""
    if not (_is_onoffice_id(customer) and (user is None or _is_onoffice_id(user))):
        reason = "customerWebId or userId is not 1-64 letters, digits, '-' or '_'"
        return Refused(MALFORMED, reason, kind, "", "", "")
    user_id = "" if user is None else str(user)
    # A base64 claim has no spaces: one here was a literal '+' that form decoding turned.
    claim = claim.replace(" ", "+")

    def refuse(violation: str, reason: str) -> Refused:
        return Refused(violation, reason, kind, customer, user_id, fingerprint(claim))

    given = params.get(signature.SIGNATURE_PARAM)
    if not isinstance(given, str):
        return refuse(BAD_SIGNATURE, "signature missing")
    if not secrets:
        return refuse(BAD_SIGNATURE, "no provider secret configured")
    secret = signature.matching_secret(request.base, request.path, params, given, secrets)
    if secret is None:
        return refuse(BAD_SIGNATURE, "signature does not match")
    timestamp = params.get("timestamp")
    if not isinstance(timestamp, str) or not _TIMESTAMP.fullmatch(timestamp):
        return refuse(STALE_SERVICE_CALL, "timestamp missing or not an integer")
    issued = int(timestamp)
    if issued < now - max_age:
        return refuse(STALE_SERVICE_CALL, "older than max_age")
    if issued > now + future_skew:
        return refuse(STALE_SERVICE_CALL, "in the future")
    taken = Claim(customer, user_id, claim, issued, source="link")
    return Captured(kind, taken, token, provider_secret_fp=fingerprint(secret))


def _is_onoffice_id(value: object) -> bool:
    return isinstance(value, str) and ONOFFICE_ID.fullmatch(value) is not None


def _parameters(request: LinkRequest) -> dict[str, signature.PhpValue]:
    """Query and form body parameters, read as PHP reads them; form values win a clash."""
    params = signature.parse_query(request.query)
    if request.form is not None:
        params.update(signature.parse_query(request.form))
    return params
