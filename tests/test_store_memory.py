import asyncio
import base64
import os
import random
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from claimgate.store import Claim, ClaimOwner
from claimgate.store.memory import RETENTION_FACTOR, MemoryStore

T0 = int(time.time())
"""Claims are kept for their retention counted from their own timestamp: keep them recent.
Reset before every test (a module is imported long before its last test runs)."""


@pytest.fixture(autouse=True)
def recent_timestamps() -> None:
    global T0
    T0 = int(time.time())


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


def claim(customer: str = "c1", timestamp: int = 100, value: str | None = None, user: str = "u"):
    return Claim(customer, user, value or f"claim-{customer}-{timestamp}", T0 + timestamp)


async def test_newer_claim_replaces_older():
    store = MemoryStore(ttl=60, max_entries=10)
    assert await store.put(claim(timestamp=100))
    assert await store.put(claim(timestamp=101, user="other"))
    assert (await store.freshest("c1")).timestamp == T0 + 101


async def test_late_older_claim_never_wins_but_is_known_as_the_customers():
    store = MemoryStore(ttl=60, max_entries=10)
    await store.put(claim(timestamp=200))
    assert not await store.put(claim(timestamp=150, value="late"))
    assert (await store.freshest("c1")).timestamp == T0 + 200
    assert await store.owner_of_claim("late") == ClaimOwner("c1", "u")


async def test_equal_timestamp_later_arrival_wins():
    store = MemoryStore(ttl=60, max_entries=10)
    await store.put(claim(timestamp=100, value="first"))
    assert await store.put(claim(timestamp=100, value="second"))
    assert (await store.freshest("c1")).claim == "second"


async def test_customers_are_independent_and_replaced_claims_keep_their_owner():
    store = MemoryStore(ttl=60, max_entries=10)
    await store.put(claim("a", 1, "a-old"))
    await store.put(claim("a", 2, "a-new"))
    await store.put(claim("b", 1, "b-1"))
    assert (await store.freshest("a")).claim == "a-new"
    assert (await store.freshest("b")).claim == "b-1"
    assert await store.owner_of_claim("a-old") == ClaimOwner("a", "u")
    assert await store.owner_of_claim("b-1") == ClaimOwner("b", "u")
    assert await store.owner_of_claim("nobody's") is None


async def test_entries_outlive_the_ttl_to_report_expiry_then_leave():
    clock = Clock()
    store = MemoryStore(ttl=60, max_entries=10, timer=clock)
    await store.put(claim(timestamp=0))
    clock.now += 61
    assert await store.freshest("c1") is not None
    clock.now += 60 * RETENTION_FACTOR
    assert await store.freshest("c1") is None
    assert len(store) == 0


async def test_size_is_bounded():
    store = MemoryStore(ttl=60, max_entries=100)
    for i in range(1000):
        await store.put(claim(f"c{i}"))
    assert len(store) == 100
    assert await store.freshest("c999") is not None


async def test_tokens_are_learned_without_being_kept_in_clear():
    store = MemoryStore(ttl=60, max_entries=10)
    await store.learn_token("the-token", "c1")
    assert await store.customer_of_token("the-token") == "c1"
    assert await store.customer_of_token("other") is None
    assert "the-token" not in repr(vars(store)) + repr(list(store._token_owners))


async def test_forget():
    store = MemoryStore(ttl=60, max_entries=10)
    await store.put(claim())
    assert await store.forget("c1")
    assert not await store.forget("c1")
    assert await store.freshest("c1") is None


async def test_concurrent_tasks_keep_the_newest():
    store = MemoryStore(ttl=600, max_entries=10)
    timestamps = list(range(500))
    random.Random(7).shuffle(timestamps)
    await asyncio.gather(*(store.put(claim(timestamp=t)) for t in timestamps))
    assert (await store.freshest("c1")).timestamp == T0 + 499


def test_concurrent_threads_keep_the_newest():
    store = MemoryStore(ttl=600, max_entries=10)
    timestamps = list(range(2000))
    random.Random(3).shuffle(timestamps)

    def writer(chunk: list[int]) -> None:
        for t in chunk:
            asyncio.run(store.put(claim(timestamp=t)))

    threads = [threading.Thread(target=writer, args=(timestamps[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert asyncio.run(store.freshest("c1")).timestamp == T0 + 1999


def test_claim_repr_shows_a_fingerprint_not_the_claim():
    assert "secret-claim" not in repr(Claim("c", "u", "secret-claim", 1))


async def test_claims_lists_each_customers_freshest_and_ping_answers():
    store = MemoryStore(ttl=60, max_entries=10)
    await store.put(claim("a", 1))
    await store.put(claim("a", 2))
    await store.put(claim("b", 5))
    assert sorted((c.customer_web_id, c.timestamp - T0) for c in await store.claims()) == [
        ("a", 2),
        ("b", 5),
    ]
    await store.ping()


async def test_retention_counts_from_the_calls_own_timestamp():
    clock = Clock()
    store = MemoryStore(ttl=60, max_entries=10, timer=clock)
    assert not await store.put(claim(timestamp=-60 * RETENTION_FACTOR - 1))
    assert await store.put(claim(timestamp=-60 * RETENTION_FACTOR + 5))
    clock.now += 6
    assert await store.freshest("c1") is None


def filled(fill: Callable[[], Coroutine[Any, Any, MemoryStore]]) -> tuple[MemoryStore, int]:
    """The store ``fill`` makes, and the bytes allocated meanwhile (tracemalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = asyncio.run(fill())
        return store, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def onoffice_claim() -> str:
    """256 characters, as onOffice's claims."""
    return base64.b64encode(os.urandom(191)).decode()


def test_100_000_customers_fit_in_100_mb():
    """docs/design.md 5, measured: the store's structures (tracemalloc) plus the claim and customer
    strings it holds."""
    customers = [str(100_000 + index) for index in range(100_000)]
    claims = [onoffice_claim() for _ in customers]
    tokens = [os.urandom(16).hex() for _ in customers]
    held = sum(sys.getsizeof(c) + sys.getsizeof(x) for c, x in zip(customers, claims, strict=True))

    async def fill() -> MemoryStore:
        store = MemoryStore(ttl=3600, max_entries=100_000)
        for customer, value, token in zip(customers, claims, tokens, strict=True):
            await store.put(Claim(customer, "17", value, T0))
            await store.learn_token(token, customer)
        return store

    store, structures = filled(fill)
    assert len(store) == 100_000
    used = structures + held
    assert used < 100 * 1024 * 1024, f"{used / 1024**2:.1f} MiB"


def test_each_further_user_of_a_customer_costs_under_a_kilobyte():
    """docs/design.md 2.12: what claims.max_users_per_customer costs, measured with the claims
    created inside, so their strings count too."""
    customers = [str(100_000 + index) for index in range(10_000)]

    def used(users: int) -> int:
        async def fill() -> MemoryStore:
            store = MemoryStore(ttl=3600, max_entries=len(customers), max_users=users)
            for customer in customers:
                for user in range(users):
                    await store.put(Claim(customer, str(17 + user), onoffice_claim(), T0 + user))
            return store

        store, grown = filled(fill)
        assert sum(len(asyncio.run(store.users(c))) for c in customers) == users * len(customers)
        return grown

    per_further_user = (used(3) - used(1)) / (2 * len(customers))
    assert per_further_user < 1024, f"{per_further_user:.0f} bytes"
