"""Where claims live: the ``Claim`` record and the ``ClaimStore`` protocol.

Every store keeps, per customer, the freshest claim (docs/design.md 2.4): the one from the
newest verified service call by the call's own timestamp, so a late, older call never wins;
and beside it the freshest claim of each of the customer's users (at most
``claims.max_users_per_customer``; the user whose claim is oldest leaves first), for
``claims.affinity = "user"`` (docs/design.md 2.12). A claim the API refused is marked so
(docs/design.md 2.11) until a newer one replaces it.

It also keeps which customer an API token belongs to (learned from activation links, keyed
by the token's SHA-256 so the store never holds a token in clear; kept without expiry, since
a customer is activated once) and which customer and user a claim was issued to (to tell a
stale claim from a foreign one, and whose rights a carried claim stands for).
"""

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

from claimgate.fingerprint import fingerprint, secret_bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """A verified ``apiClaim`` and the service call that carried it."""

    customer_web_id: str
    user_id: str
    claim: str
    timestamp: int
    """The service call's own ``timestamp`` (Unix seconds): what "freshest" compares."""
    source: str = "link"
    """``link`` for a signed service call or webhook, ``admin`` for ``POST /claims``."""
    refused: bool = False
    """The API refused it (201 or 248): never injected again (docs/design.md 2.11)."""

    def __repr__(self) -> str:
        return (
            f"Claim(customer_web_id={self.customer_web_id!r}, user_id={self.user_id!r}, "
            f"claim=<fp {fingerprint(self.claim)}>, timestamp={self.timestamp}, "
            f"source={self.source!r}, refused={self.refused})"
        )


DEFAULT_MAX_USERS = 10
"""Users per customer whose freshest claims are kept, unless ``claims.max_users_per_customer``
says otherwise: most customers have a handful of users who open a provider's service."""

SECRET_KEY_LENGTH = 32
"""Hex digits of SHA-256 kept: 128 bits, collision-free in practice, half the memory."""


def secret_key(secret: str) -> str:
    """How stores index a token or claim without holding it: its SHA-256, shortened.

    The same 128 bits as the memory store's binary digest, so keys carry over.
    """
    return hashlib.sha256(secret_bytes(secret)).hexdigest()[:SECRET_KEY_LENGTH]


class ClaimOwner(NamedTuple):
    """Who a claim was captured for: kept after a newer claim replaced it (bounded)."""

    customer_web_id: str
    user_id: str | None
    """None for an owner recorded before users were (an older claimgate's Redis data)."""


class Operation(StrEnum):
    """What a shared store asks of its server: the ``operation`` of its events and of
    ``claimgate_store_duration_seconds``."""

    PUT = "put"
    GET = "get"
    """A customer's claims read into the local copy (one it did not hold, or a lost race)."""
    REFUSE = "refuse"
    FORGET = "forget"
    OWNER = "owner"
    TOKEN = "token"
    PING = "ping"


class StoreEvents(Protocol):
    """What a shared store reports, so operators see its trouble (docs/design.md 3.4, 3.5)."""

    def store_timed(self, operation: Operation, seconds: float) -> None:
        """One operation took ``seconds``, answered or failed (at most the timeout, and
        waiting for a free connection included): a slowing store shows before it fails."""
        ...

    def store_error(self, operation: str, error: BaseException) -> None:
        """One operation (an ``Operation``, or ``connect``) failed or timed out."""
        ...

    def store_unavailable(self, reason: str) -> None:
        """The store stopped answering; the local copy serves from now on."""
        ...

    def store_recovered(self, written: int) -> None:
        """The store answers again; ``written`` captures made meanwhile were written."""
        ...


class ClaimStore(Protocol):
    """What the addon needs from a store. Methods are async so a networked store fits."""

    async def start(self) -> None:
        """Connect and load what is shared; never fails for an unreachable server."""
        ...

    async def close(self) -> None: ...

    def retain(self, ttl: float) -> None:
        """Keep claims for this ``claims.ttl`` (times the retention factor) from now on: a
        reload changed it. A claim already past the old retention may be gone."""
        ...

    async def put(self, claim: Claim) -> bool:
        """Keep ``claim`` as its user's freshest if newer than that user's, and as the
        customer's if newer than the customer's; True if it is now the customer's freshest."""
        ...

    async def refuse(self, claim: Claim) -> bool:
        """Mark ``claim`` refused where it is still held (as the customer's or its user's
        freshest); True if it was marked now.

        A claim the API refused stays refused, however often it is captured again.
        """
        ...

    async def freshest(self, customer_web_id: str, user_id: str | None = None) -> Claim | None:
        """The customer's freshest claim (of ``user_id`` only, if given), expired or not: the
        caller judges expiry."""
        ...

    async def users(self, customer_web_id: str) -> list[Claim]:
        """The freshest claim of each of the customer's users held, newest first."""
        ...

    async def owner_of_claim(self, claim: str) -> ClaimOwner | None:
        """The customer and user a claim was captured for, if the store has seen it."""
        ...

    async def learn_token(self, token: str, customer_web_id: str) -> None:
        """Remember that API ``token`` belongs to ``customer_web_id``."""
        ...

    async def customer_of_token(self, token: str) -> str | None:
        """The customer an API token belongs to, if known."""
        ...

    async def forget(self, customer_web_id: str) -> bool:
        """Drop a customer's claim; True if there was one."""
        ...

    async def claims(self) -> list[Claim]:
        """Every customer's freshest claim (for the status page)."""
        ...

    def held(self) -> list[Claim]:
        """Every customer's freshest claim in this process's copy, without waiting (scrapes)."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise when it does not (readiness)."""
        ...

    def __len__(self) -> int:
        """Number of customers with a claim (for the ``claimgate_claims_cached`` gauge)."""
        ...
