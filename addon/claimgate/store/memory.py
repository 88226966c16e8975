"""The embedded claim store: one process, no server, bounded in time and size.

Claims sit in a cachetools ``LRUCache`` of customers: once ``max_entries`` is reached the
least recently used leave, so memory stays flat however many customers pass through. Each
customer holds its freshest claim and those of at most ``max_users - 1`` other users
(docs/design.md 2.12). Tokens and claim owners sit in plain dictionaries bounded the same
way, oldest first out, keyed by a 16-byte digest: a third of the memory of a cache per entry
(100,000 customers with their claims, tokens and claim owners take about 82 MiB with one
user each, and each further user of a customer about 0.5 KB; ``tests/test_store_memory.py``
measures both).

A claim is kept for its retention, counted from the service call's own timestamp, and read
as absent after it; the retention is longer than the claim TTL on purpose: an expired claim
is still found, so the caller can report ``expired_claim`` rather than ``missing_claim``.
(A per-entry timer, as in ``TTLCache``, would cost twice the memory and measure from the
wrong moment.)

All mutations happen under one lock and never await, so concurrent hooks (tasks on the event
loop, or threads) cannot interleave a compare with its write: newest-wins holds.
"""

import hashlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from cachetools import LRUCache

from claimgate.fingerprint import secret_bytes
from claimgate.store import DEFAULT_MAX_USERS, Claim, ClaimOwner

DIGEST_BYTES = 16
"""Of SHA-256: collision-free in practice for tokens and claims."""

RETENTION_FACTOR = 2
"""Claims are kept this many TTLs, to tell ``expired_claim`` from ``missing_claim``."""


def digest(secret: str) -> bytes:
    """How the memory store names a token or claim without holding it."""
    return hashlib.sha256(secret_bytes(secret)).digest()[:DIGEST_BYTES]


class BoundedMap[V](dict[bytes, V]):
    """A dictionary that drops its oldest entry when a new one would exceed ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: bytes, value: V) -> None:
        self.pop(key, None)  # a repeat moves to the young end
        if len(self) >= self.limit:
            del self[next(iter(self))]
        self[key] = value


class _Held:
    """One customer's claims: the freshest, and the freshest of each other user (or None:
    most customers have one user, and a dictionary per customer would cost a quarter more)."""

    __slots__ = ("freshest", "others")

    def __init__(self, freshest: Claim) -> None:
        self.freshest = freshest
        self.others: dict[str, Claim] | None = None

    def of(self, user_id: str) -> Claim | None:
        if self.freshest.user_id == user_id:
            return self.freshest
        return self.others.get(user_id) if self.others else None

    def set(self, claim: Claim) -> None:
        """Hold ``claim`` as its user's freshest (the caller has checked it is newer)."""
        if self.freshest.user_id == claim.user_id:
            self.freshest = claim
        elif self.others is None:
            self.others = {claim.user_id: claim}
        else:
            self.others[claim.user_id] = claim

    def promote(self, claim: Claim) -> None:
        """Make ``claim`` the customer's freshest; the one it replaces stays its user's."""
        if self.freshest.user_id != claim.user_id:
            others = self.others or {}
            others.pop(claim.user_id, None)
            others[self.freshest.user_id] = self.freshest
            self.others = others
        self.freshest = claim

    def bound(self, max_users: int) -> None:
        """Drop the users whose claims are oldest beyond ``max_users``; never the freshest."""
        while self.others and 1 + len(self.others) > max_users:
            oldest = min(self.others.values(), key=lambda c: c.timestamp)
            del self.others[oldest.user_id]
        if not self.others:
            self.others = None

    def users(self) -> list[Claim]:
        rest = sorted(self.others.values(), key=lambda c: -c.timestamp) if self.others else []
        return [self.freshest, *rest]


class MemoryStore:
    """Freshest claims per customer and user, token -> customer and claim -> owner, in memory."""

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        *,
        max_users: int = DEFAULT_MAX_USERS,
        timer: Callable[[], float] = time.time,
    ) -> None:
        self._retention = ttl * RETENTION_FACTOR
        self._max_users = max_users
        self._timer = timer
        self._lock = threading.Lock()
        self._claims: LRUCache[str, _Held] = LRUCache(max_entries)
        # Keyed by digest(token) / digest(claim): no token or claim is held. Tokens do not
        # expire (activation happens once per customer); the size bound holds.
        self._token_owners: BoundedMap[str] = BoundedMap(max_entries)
        # Who a claim was issued to, for telling stale claims from foreign ones and for the
        # user whose rights it stands for: a claim that old is long replaced, so the oldest
        # may go.
        self._claim_owners: BoundedMap[ClaimOwner] = BoundedMap(max_entries)

    def retain(self, ttl: float) -> None:
        self._retention = ttl * RETENTION_FACTOR

    def _alive(self, claim: Claim) -> bool:
        return claim.timestamp + self._retention > self._timer()

    def _current(self, customer_web_id: str) -> _Held | None:
        """The customer's claims still within their retention (the others are dropped)."""
        held = self._claims.get(customer_web_id)
        if held is None:
            return None
        if not self._alive(held.freshest):  # the newest: the others are older still
            del self._claims[customer_web_id]
            return None
        if held.others and not all(self._alive(c) for c in held.others.values()):
            held.others = {u: c for u, c in held.others.items() if self._alive(c)} or None
        return held

    async def put(self, claim: Claim) -> bool:
        customer = sys.intern(claim.customer_web_id)  # shared by every map that names it
        owner = ClaimOwner(customer, sys.intern(claim.user_id))
        with self._lock:
            self._claim_owners.put(digest(claim.claim), owner)
            if not self._alive(claim):
                return False  # already past its retention: nothing to keep
            held = self._current(customer)
            if held is None:
                self._claims[customer] = _Held(claim)
                return True
            mine = held.of(claim.user_id)
            if mine is not None and mine.timestamp > claim.timestamp:
                return False
            if mine is not None and mine.claim == claim.claim and mine.refused:
                claim = replace(claim, refused=True)  # captured again, still refused
            freshest = claim.timestamp >= held.freshest.timestamp
            if freshest:
                held.promote(claim)
            else:
                held.set(claim)
            held.bound(self._max_users)
            self._claims[customer] = held  # the most recently used now
            return freshest

    async def refuse(self, claim: Claim) -> bool:
        with self._lock:
            held = self._current(claim.customer_web_id)
            mine = held.of(claim.user_id) if held is not None else None
            if held is None or mine is None or mine.claim != claim.claim or mine.refused:
                return False
            held.set(replace(mine, refused=True))
            return True

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def freshest(self, customer_web_id: str, user_id: str | None = None) -> Claim | None:
        with self._lock:
            held = self._current(customer_web_id)
            if held is None:
                return None
            return held.freshest if user_id is None else held.of(user_id)

    async def users(self, customer_web_id: str) -> list[Claim]:
        with self._lock:
            held = self._current(customer_web_id)
            return [] if held is None else held.users()

    async def owner_of_claim(self, claim: str) -> ClaimOwner | None:
        with self._lock:
            return self._claim_owners.get(digest(claim))

    async def learn_token(self, token: str, customer_web_id: str) -> None:
        with self._lock:
            self._token_owners.put(digest(token), sys.intern(customer_web_id))

    async def customer_of_token(self, token: str) -> str | None:
        with self._lock:
            return self._token_owners.get(digest(token))

    async def forget(self, customer_web_id: str) -> bool:
        with self._lock:
            return self._claims.pop(customer_web_id, None) is not None

    async def claims(self) -> list[Claim]:
        return self.held()

    def held(self) -> list[Claim]:
        with self._lock:
            self._drop_expired()
            return [held.freshest for held in self._claims.values()]

    def every_user_claim(self) -> list[Claim]:
        """Each user's freshest claim of every customer: what a shared store writes back."""
        with self._lock:
            self._drop_expired()
            return [claim for held in self._claims.values() for claim in held.users()]

    def token_entries(self) -> list[tuple[bytes, str]]:
        """(digest(token), customer) pairs: what a shared store writes back after an outage."""
        with self._lock:
            return list(self._token_owners.items())

    async def ping(self) -> None:
        """Memory always answers."""

    def __len__(self) -> int:
        with self._lock:
            self._drop_expired()
            return len(self._claims)

    def _drop_expired(self) -> None:
        expired = [key for key, held in self._claims.items() if not self._alive(held.freshest)]
        for key in expired:
            del self._claims[key]
