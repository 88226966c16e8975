"""The embedded claim store: one process, no server, bounded in time and size.

Claims sit in a cachetools ``LRUCache``: once ``max_entries`` is reached the least recently
used leave, so memory stays flat however many customers pass through. Tokens and claim
owners sit in plain dictionaries bounded the same way, oldest first out, keyed by a 16-byte
digest: a third of the memory of a cache per entry (100,000 customers with their claims,
tokens and claim owners take about 75 MB; ``tests/test_store_memory.py`` measures it).

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

from claimgate.store import Claim

DIGEST_BYTES = 16
"""Of SHA-256: collision-free in practice for tokens and claims."""

RETENTION_FACTOR = 2
"""Claims are kept this many TTLs, to tell ``expired_claim`` from ``missing_claim``."""


def digest(secret: str) -> bytes:
    """How the memory store names a token or claim without holding it."""
    return hashlib.sha256(secret.encode()).digest()[:DIGEST_BYTES]


class BoundedMap(dict[bytes, str]):
    """A dictionary that drops its oldest entry when a new one would exceed ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: bytes, value: str) -> None:
        self.pop(key, None)  # a repeat moves to the young end
        if len(self) >= self.limit:
            del self[next(iter(self))]
        self[key] = value


class MemoryStore:
    """Freshest claim per customer, token -> customer and claim -> customer, in memory."""

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        timer: Callable[[], float] = time.time,
    ) -> None:
        self._retention = ttl * RETENTION_FACTOR
        self._timer = timer
        self._lock = threading.Lock()
        self._claims: LRUCache[str, Claim] = LRUCache(max_entries)
        # Keyed by digest(token) / digest(claim): no token or claim is held. Tokens do not
        # expire (activation happens once per customer); the size bound holds.
        self._token_owners = BoundedMap(max_entries)
        # Who a claim was issued to, for telling stale claims from foreign ones: a claim that
        # old is long replaced, so the oldest may go.
        self._claim_owners = BoundedMap(max_entries)

    def _alive(self, claim: Claim) -> bool:
        return claim.timestamp + self._retention > self._timer()

    def _current(self, customer_web_id: str) -> Claim | None:
        """The customer's claim unless past its retention (then it is dropped)."""
        claim = self._claims.get(customer_web_id)
        if claim is not None and not self._alive(claim):
            del self._claims[customer_web_id]
            return None
        return claim

    async def put(self, claim: Claim) -> bool:
        customer = sys.intern(claim.customer_web_id)  # shared by every map that names it
        with self._lock:
            self._claim_owners.put(digest(claim.claim), customer)
            current = self._current(customer)
            if current is not None and current.timestamp > claim.timestamp:
                return False
            if not self._alive(claim):
                return False  # already past its retention: nothing to keep
            if current is not None and current.claim == claim.claim and current.refused:
                claim = replace(claim, refused=True)  # captured again, still refused
            self._claims[customer] = claim
            return True

    async def refuse(self, customer_web_id: str, claim: str) -> bool:
        with self._lock:
            current = self._current(customer_web_id)
            if current is None or current.claim != claim or current.refused:
                return False
            self._claims[customer_web_id] = replace(current, refused=True)
            return True

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def freshest(self, customer_web_id: str) -> Claim | None:
        with self._lock:
            return self._current(customer_web_id)

    async def owner_of_claim(self, claim: str) -> str | None:
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
            return list(self._claims.values())

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
        expired = [key for key, claim in self._claims.items() if not self._alive(claim)]
        for key in expired:
            del self._claims[key]
