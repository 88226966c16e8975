"""The embedded claim store: one process, no server, bounded in time and size.

Built on cachetools' ``TTLCache``: entries leave after ``retention`` seconds and the least
recently used leave first once ``max_entries`` is reached, so memory stays flat however many
customers pass through. Retention is longer than the claim TTL on purpose: an expired claim
is still found, so the caller can report ``expired_claim`` rather than ``missing_claim``.

All mutations happen under one lock and never await, so concurrent hooks (tasks on the event
loop, or threads) cannot interleave a compare with its write: newest-wins holds.
"""

import threading
import time
from collections.abc import Callable

from cachetools import LRUCache, TTLCache

from claimgate.store import Claim, secret_key

RETENTION_FACTOR = 2
"""Claims are kept this many TTLs, to tell ``expired_claim`` from ``missing_claim``."""


class MemoryStore:
    """Freshest claim per customer, token -> customer and claim -> customer, in memory."""

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        timer: Callable[[], float] = time.time,
    ) -> None:
        retention = ttl * RETENTION_FACTOR
        self._lock = threading.Lock()
        self._claims: TTLCache[str, Claim] = TTLCache(max_entries, retention, timer=timer)
        # Keyed by secret_key(token) / secret_key(claim): no token or claim is held as a key.
        # Tokens do not expire (activation happens once per customer); the size bound holds.
        self._token_owners: LRUCache[str, str] = LRUCache(max_entries)
        self._claim_owners: TTLCache[str, str] = TTLCache(max_entries * 4, retention, timer=timer)

    async def put(self, claim: Claim) -> bool:
        with self._lock:
            current = self._claims.get(claim.customer_web_id)
            if current is not None and current.timestamp > claim.timestamp:
                self._claim_owners[secret_key(claim.claim)] = claim.customer_web_id
                return False
            self._claims[claim.customer_web_id] = claim
            self._claim_owners[secret_key(claim.claim)] = claim.customer_web_id
            return True

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def freshest(self, customer_web_id: str) -> Claim | None:
        with self._lock:
            return self._claims.get(customer_web_id)

    async def owner_of_claim(self, claim: str) -> str | None:
        with self._lock:
            return self._claim_owners.get(secret_key(claim))

    async def learn_token(self, token: str, customer_web_id: str) -> None:
        with self._lock:
            self._token_owners[secret_key(token)] = customer_web_id

    async def customer_of_token(self, token: str) -> str | None:
        with self._lock:
            return self._token_owners.get(secret_key(token))

    async def forget(self, customer_web_id: str) -> bool:
        with self._lock:
            return self._claims.pop(customer_web_id, None) is not None

    async def claims(self) -> list[Claim]:
        with self._lock:
            self._claims.expire()
            return list(self._claims.values())

    def token_entries(self) -> list[tuple[str, str]]:
        """(secret_key(token), customer) pairs: what a shared store writes back after an outage."""
        with self._lock:
            return list(self._token_owners.items())

    async def ping(self) -> None:
        """Memory always answers."""

    def __len__(self) -> int:
        with self._lock:
            self._claims.expire()
            return len(self._claims)
