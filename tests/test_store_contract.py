"""The claim store contract, run against every store: the memory one and Redis (one server,
Sentinel, Cluster).

The addon only sees ``ClaimStore``, so both stores must agree on newest-wins, owners, tokens,
forgetting, listing and expiry. The Redis store runs against a real ``redis-server`` (see
``tests/redis_server.py``) and is also checked for what it really writes, for how fast other
instances hear of a new claim, for prefix isolation, and for two processes writing at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import select
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from redis.exceptions import AskError

from claimgate.store import (
    DEFAULT_MAX_USERS,
    Claim,
    ClaimOwner,
    ClaimStore,
    Operation,
    secret_key,
)
from claimgate.store.keys import KeyLayout
from claimgate.store.memory import RETENTION_FACTOR, MemoryStore
from claimgate.store.redis import RedisStore, StoreUnavailable

if TYPE_CHECKING:  # the fixtures come from conftest.py's pytest_plugins (assert rewriting)
    from tests.redis_cluster import ClusterTopology
    from tests.redis_sentinel import SentinelTopology
    from tests.redis_server import RedisServer


ROOT = Path(__file__).resolve().parent.parent
NOW = int(time.time())
"""Realistic timestamps: claims are kept for their retention from their own timestamp, so
this is reset before every test (a module is imported long before its last test runs)."""


@pytest.fixture(autouse=True)
def recent_timestamps() -> None:
    global NOW
    NOW = int(time.time())


SEEN_WITHIN = 0.1
"""A claim put on one replica is used by another within 100 ms (issue 5)."""


def claim(customer: str = "c1", at: int = 0, value: str | None = None, user: str = "u") -> Claim:
    """A claim ``at`` seconds after NOW; the value names customer and time unless given."""
    return Claim(customer, user, value or f"claim-{customer}-{at}", NOW + at)


class Clock:
    """The memory store's timer, moved by the test instead of by sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Events:
    """Records what a Redis store reports; with a healthy server nothing should arrive."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, BaseException]] = []
        self.unavailable: list[str] = []
        self.recovered: list[int] = []
        self.timed: list[tuple[Operation, float]] = []

    def store_timed(self, operation: Operation, seconds: float) -> None:
        self.timed.append((operation, seconds))

    def store_error(self, operation: str, error: BaseException) -> None:
        self.errors.append((operation, error))

    def store_unavailable(self, reason: str) -> None:
        self.unavailable.append(reason)

    def store_recovered(self, written: int) -> None:
        self.recovered.append(written)

    def assert_quiet(self) -> None:
        """A healthy local server gave no reason for trouble: any report is the store's fault."""
        assert not self.errors, f"store_error with a healthy server: {self.errors[:3]}"
        assert not self.unavailable, f"store_unavailable with a healthy server: {self.unavailable}"


class Backend:
    """Makes stores of one kind for a test, and lets time pass for them."""

    async def open(
        self, ttl: float = 60, max_entries: int = 1000, max_users: int = DEFAULT_MAX_USERS
    ) -> ClaimStore:
        raise NotImplementedError

    async def wait(self, seconds: float) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Release every store opened."""


class MemoryBackend(Backend):
    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.now = NOW  # claims are stamped relative to NOW

    async def open(
        self, ttl: float = 60, max_entries: int = 1000, max_users: int = DEFAULT_MAX_USERS
    ) -> ClaimStore:
        return MemoryStore(ttl, max_entries, max_users=max_users, timer=self.clock)

    async def wait(self, seconds: float) -> None:
        self.clock.now += seconds


class SharedBackend(Backend):
    """Redis stores under one prefix unique to the test; all closed at the end."""

    TIMEOUT = 2.0
    """A healthy server on a loaded CI machine: 300 concurrent puts from a cold pool have
    outlasted the production 0.5 s; outages are tested elsewhere."""

    def __init__(self) -> None:
        self.prefix = f"cgtest-{uuid.uuid4().hex[:8]}:"
        self.events = Events()
        self.stores: list[RedisStore] = []

    def reach(self) -> dict[str, Any]:
        """The URL and credentials of the server."""
        raise NotImplementedError

    async def open(
        self,
        ttl: float = 60,
        max_entries: int = 1000,
        max_users: int = DEFAULT_MAX_USERS,
        prefix: str | None = None,
    ) -> RedisStore:
        store = RedisStore(
            **self.reach(),
            prefix=self.prefix if prefix is None else prefix,
            ttl=ttl,
            max_entries=max_entries,
            max_users=max_users,
            events=self.events,
            timeout=self.TIMEOUT,
        )
        self.stores.append(store)
        await store.start()
        return store

    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def close(self) -> None:
        for store in self.stores:
            await store.close()


class RedisBackend(SharedBackend):
    """One real server."""

    def __init__(self, server: RedisServer) -> None:
        super().__init__()
        self.server = server

    def reach(self) -> dict[str, Any]:
        return {"url": self.server.url, "password": self.server.password}


class TopologyBackend(SharedBackend):
    """Redis behind three sentinels, or a cluster of three replicated primaries: as the ACL
    user, every password set."""

    def __init__(self, topology: SentinelTopology | ClusterTopology) -> None:
        super().__init__()
        self.topology = topology

    def reach(self) -> dict[str, Any]:
        topology = self.topology
        return {
            "url": topology.url,
            "password": topology.user_password,
            "username": topology.username,
            "sentinel_password": getattr(topology, "sentinel_password", None),
        }


def shared(request: pytest.FixtureRequest, kind: str) -> SharedBackend:
    if kind == "redis":
        return RedisBackend(request.getfixturevalue("redis_server"))
    return TopologyBackend(request.getfixturevalue(f"{kind}_topology"))


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    made = MemoryBackend() if request.param == "memory" else shared(request, request.param)
    try:
        yield made
    finally:
        await made.close()
    if isinstance(made, SharedBackend):
        made.events.assert_quiet()


@pytest.fixture
async def store(backend: Backend) -> ClaimStore:
    return await backend.open()


@pytest.fixture(params=["redis", "sentinel", "cluster"])
async def shared_backend(request: pytest.FixtureRequest) -> AsyncIterator[SharedBackend]:
    """Replicas on one server, on a Sentinel-managed primary, and on a cluster."""
    made = shared(request, request.param)
    try:
        yield made
    finally:
        await made.close()
    made.events.assert_quiet()


@pytest.fixture
async def redis_backend(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    made = RedisBackend(redis_server)
    try:
        yield made
    finally:
        await made.close()
    made.events.assert_quiet()


# --- the contract, for every store ----------------------------------------------------


async def test_newer_claim_replaces_older(store: ClaimStore):
    assert await store.put(claim(at=0))
    assert await store.put(claim(at=1, user="other"))
    found = await store.freshest("c1")
    assert found == claim(at=1, user="other")


async def test_late_older_claim_never_wins_but_its_owner_is_recorded(store: ClaimStore):
    assert await store.put(claim(at=100))
    assert not await store.put(claim(at=50, value="late"))
    assert await store.freshest("c1") == claim(at=100)
    assert await store.owner_of_claim("late") == ClaimOwner("c1", "u")


async def test_equal_timestamp_later_arrival_wins(store: ClaimStore):
    assert await store.put(claim(value="first"))
    assert await store.put(claim(value="second"))
    assert (await store.freshest("c1")).claim == "second"


async def test_customers_are_independent(store: ClaimStore):
    await store.put(claim("a", 5))
    await store.put(claim("b", 1))
    assert not await store.put(claim("a", 3))
    assert await store.put(claim("b", 2))
    assert await store.freshest("a") == claim("a", 5)
    assert await store.freshest("b") == claim("b", 2)
    assert await store.freshest("nobody") is None


async def test_replaced_claims_keep_their_owner(store: ClaimStore):
    await store.put(claim("a", 1, "a-old"))
    await store.put(claim("a", 2, "a-new"))
    await store.put(claim("b", 1, "b-1"))
    assert await store.owner_of_claim("a-old") == ClaimOwner("a", "u")
    assert await store.owner_of_claim("a-new") == ClaimOwner("a", "u")
    assert await store.owner_of_claim("b-1") == ClaimOwner("b", "u")
    assert await store.owner_of_claim("nobody's") is None


async def test_tokens_map_to_their_customer(store: ClaimStore):
    await store.learn_token("token-1", "c1")
    await store.learn_token("token-2", "c2")
    assert await store.customer_of_token("token-1") == "c1"
    assert await store.customer_of_token("token-2") == "c2"
    assert await store.customer_of_token("unknown") is None


async def test_forget(store: ClaimStore):
    await store.put(claim())
    assert await store.forget("c1")
    assert not await store.forget("c1")
    assert await store.freshest("c1") is None
    assert await store.claims() == []


async def test_claims_lists_each_customers_freshest_and_ping_answers(store: ClaimStore):
    await store.put(claim("a", 1))
    await store.put(claim("a", 2))
    await store.put(claim("b", 5))
    assert sorted(await store.claims(), key=lambda c: c.customer_web_id) == [
        claim("a", 2),
        claim("b", 5),
    ]
    assert len(store) == 2
    await store.ping()


async def test_a_refused_claim_stays_refused_until_a_newer_one_replaces_it(store: ClaimStore):
    await store.put(claim(at=0))
    assert await store.refuse(claim(at=0))
    assert (await store.freshest("c1")).refused
    assert not await store.refuse(claim(at=0))  # once
    assert await store.put(claim(at=1, value=claim(at=0).claim))  # the same claim, again
    assert (await store.freshest("c1")).refused
    assert [c.refused for c in store.held()] == [True]
    assert await store.put(claim(at=2))
    assert not (await store.freshest("c1")).refused
    assert not await store.refuse(claim(at=0))  # no longer held: the same user's newer one is
    assert not await store.refuse(claim("nobody", 2))
    assert not (await store.freshest("c1")).refused


async def test_each_user_s_freshest_claim_is_kept_beside_the_customer_s(store: ClaimStore):
    a1, b1 = claim(at=1, user="a"), claim(at=2, user="b")
    assert await store.put(a1)
    assert await store.put(b1)
    assert not await store.put(claim(at=0, user="a"))  # older than a's: kept for nobody
    assert not await store.put(claim(at=1, user="c", value="c-late"))  # only c's freshest
    assert await store.freshest("c1") == b1
    assert await store.freshest("c1", "a") == a1
    assert (await store.freshest("c1", "c")).claim == "c-late"
    assert await store.freshest("c1", "nobody") is None
    assert [c.claim for c in await store.users("c1")] == [b1.claim, a1.claim, "c-late"]
    a3 = claim(at=3, user="a")
    assert await store.put(a3)
    assert await store.freshest("c1") == a3
    assert [c.user_id for c in await store.users("c1")] == ["a", "b", "c"]
    assert await store.owner_of_claim(a1.claim) == ClaimOwner("c1", "a")  # after its user's newer
    assert await store.users("nobody") == []


async def test_a_customer_s_users_are_bounded_the_oldest_claim_leaving_first(backend: Backend):
    store = await backend.open(max_users=3)
    for at, user in enumerate(["w", "x", "y", "z"]):
        await store.put(claim(at=at, user=user))
    assert [c.user_id for c in await store.users("c1")] == ["z", "y", "x"]
    assert await store.freshest("c1", "w") is None
    assert await store.owner_of_claim(claim(at=0, user="w").claim) == ClaimOwner("c1", "w")
    assert not await store.put(claim(at=-1, user="v"))  # older than every user's: not kept
    assert [c.user_id for c in await store.users("c1")] == ["z", "y", "x"]


async def test_a_refusal_marks_the_claim_wherever_it_is_held(store: ClaimStore):
    a1, b2 = claim(at=1, user="a"), claim(at=2, user="b")
    await store.put(a1)
    assert await store.refuse(a1)
    assert (await store.freshest("c1")).refused and (await store.freshest("c1", "a")).refused
    await store.put(b2)
    assert not (await store.freshest("c1")).refused  # a newer claim of the customer
    assert (await store.freshest("c1", "a")).refused  # a's freshest is still the refused one
    assert await store.refuse(b2)
    assert [c.refused for c in await store.users("c1")] == [True, True]
    assert await store.put(claim(at=3, user="a"))
    assert [c.refused for c in await store.users("c1")] == [False, True]


async def test_forgetting_a_customer_forgets_its_users(store: ClaimStore):
    await store.put(claim(at=1, user="a"))
    await store.put(claim(at=2, user="b"))
    assert await store.forget("c1")
    assert await store.users("c1") == [] and await store.freshest("c1", "a") is None


async def test_concurrent_puts_keep_the_newest(store: ClaimStore):
    offsets = list(range(300))
    random.Random(7).shuffle(offsets)
    kept = await asyncio.gather(*(store.put(claim(at=at)) for at in offsets))
    assert await store.freshest("c1") == claim(at=299)
    assert kept[offsets.index(299)]


async def test_a_claim_outlives_its_ttl_then_leaves_after_the_retention(backend: Backend):
    """Kept past the TTL so the caller can say ``expired_claim``; gone after twice the TTL,
    counted from the service call's own timestamp."""
    store = await backend.open(ttl=2)
    now = backend.clock.now if isinstance(backend, MemoryBackend) else time.time()
    fresh = Claim("c1", "u", "claim-now", int(now))
    await store.put(fresh)
    await store.learn_token("token", "c1")
    await backend.wait(2.2)
    assert await store.freshest("c1") == fresh
    await backend.wait(2.0 * RETENTION_FACTOR - 2.2 + 1.0)
    assert await store.freshest("c1") is None
    assert await store.claims() == []
    assert len(store) == 0
    assert await store.customer_of_token("token") == "c1"  # tokens never expire


# --- the Redis store, beyond the contract ----------------------------------------------


async def test_redis_holds_the_claim_the_token_and_the_owner_without_a_raw_token(
    redis_backend: RedisBackend,
):
    ttl = 60
    store = await redis_backend.open(ttl=ttl)
    token = f"token-{uuid.uuid4().hex}"
    the_claim = Claim("c1", "u7", f"claim-{uuid.uuid4().hex}", NOW, "admin")
    await store.put(the_claim)
    await store.learn_token(token, "c1")
    prefix = redis_backend.prefix

    with redis_backend.server.client(decode_responses=True) as client:
        assert client.hgetall(f"{prefix}claim:c1") == {
            "ts": str(NOW),
            "user": "u7",
            "claim": the_claim.claim,
            "source": "admin",
            "refused": "0",
        }
        assert 0 < client.pttl(f"{prefix}claim:c1") <= ttl * RETENTION_FACTOR * 1000
        token_key = f"{prefix}token:{secret_key(token)}"
        assert client.get(token_key) == "c1"
        assert client.ttl(token_key) == -1
        assert client.get(f"{prefix}owner:{secret_key(the_claim.claim)}") == "c1\tu7"
        users = client.hgetall(f"{prefix}users:c1")
        assert {user: json.loads(entry) for user, entry in users.items()} == {
            "u7": {"ts": NOW, "claim": the_claim.claim, "source": "admin", "refused": False}
        }
        assert 0 < client.pttl(f"{prefix}users:c1") <= ttl * RETENTION_FACTOR * 1000

        everything = []
        for key in client.scan_iter("*"):
            everything.append(key)
            kind = client.type(key)
            if kind == "hash":
                everything += [text for pair in client.hgetall(key).items() for text in pair]
            elif kind == "string":
                everything.append(client.get(key))
            else:
                pytest.fail(f"unexpected {kind} key {key}")
        assert all(key.startswith(prefix) for key in client.scan_iter("*"))
        assert not [text for text in everything if token in text]


async def test_in_a_cluster_a_customer_s_keys_share_its_slot_and_customers_spread(
    cluster_topology: ClusterTopology,
):
    backend = TopologyBackend(cluster_topology)
    try:
        store = await backend.open()
        customers = [f"c{index}" for index in range(12)]
        for customer in customers:
            await store.put(claim(customer, user="u1"))
        layout = KeyLayout(backend.prefix, tagged=True)
        with cluster_topology.cluster_client(decode_responses=True) as client:
            homes = set()
            for customer in customers:
                home = client.get_node_from_key(layout.claim(customer))
                assert client.get_node_from_key(layout.users(customer)) == home
                assert client.hget(layout.claim(customer), "claim") == claim(customer).claim
                assert set(client.hgetall(layout.users(customer))) == {"u1"}
                homes.add(home.name)
            assert len(homes) > 1, "every customer on one primary: the cluster was not tested"
    finally:
        await backend.close()
    backend.events.assert_quiet()


async def test_in_a_cluster_a_customer_s_slot_moving_is_followed_through_ask_and_moved(
    cluster_topology: ClusterTopology,
):
    """The slot moves to another primary while two stores use it: a write halfway (the keys
    moved, the slot still migrating) follows ASK, one after it MOVED; nothing fails."""
    backend = TopologyBackend(cluster_topology)
    layout = KeyLayout(backend.prefix, tagged=True)
    slot = cluster_topology.slot(layout.claim("moving"))
    source = cluster_topology.primary_for_slot(slot)
    target = next(node for node in cluster_topology.primaries() if node is not source)
    try:
        writer, reader = await backend.open(), await backend.open()
        await writer.put(claim("moving", at=0))
        await first_seen(reader, claim("moving", at=0), deadline=time.monotonic() + 10)
        loop = asyncio.get_running_loop()

        def halfway() -> None:
            put = asyncio.run_coroutine_threadsafe(writer.put(claim("moving", at=1)), loop)
            assert put.result(timeout=10)
            with cluster_topology.client(source) as client, pytest.raises(AskError):
                client.hget(layout.claim("moving"), "claim")  # not here: it sends us on

        await asyncio.to_thread(cluster_topology.migrate, slot, target, halfway)
        assert await writer.put(claim("moving", at=2))
        await first_seen(reader, claim("moving", at=2), deadline=time.monotonic() + 10)
        late = await backend.open()
        assert await late.freshest("moving") == claim("moving", at=2)
        with cluster_topology.client(target, decode_responses=True) as client:
            assert client.hget(layout.claim("moving"), "claim") == claim("moving", at=2).claim
    finally:
        await backend.close()
    backend.events.assert_quiet()


async def test_a_second_instance_uses_a_new_claim_within_100ms(shared_backend: SharedBackend):
    replica_a = await shared_backend.open()
    replica_b = await shared_backend.open()
    # B holds an older claim locally: only the update it hears can make it return the new one.
    await replica_b.put(claim(at=0))
    assert await replica_b.freshest("c1") == claim(at=0)

    started = time.monotonic()
    assert await replica_a.put(claim(at=1))
    seen = await first_seen(replica_b, claim(at=1), deadline=started + 1.0)
    assert seen - started <= SEEN_WITHIN, f"seen after {seen - started:.3f} s"


async def test_a_second_instance_stops_using_a_refused_claim_within_100ms(
    shared_backend: SharedBackend,
):
    replica_a = await shared_backend.open()
    replica_b = await shared_backend.open()
    await replica_a.put(claim(at=0))
    await first_seen(replica_b, claim(at=0), deadline=time.monotonic() + 1.0)
    started = time.monotonic()
    assert await replica_a.refuse(claim(at=0))
    refused = replace(claim(at=0), refused=True)
    seen = await first_seen(replica_b, refused, deadline=started + 1.0)
    assert seen - started <= SEEN_WITHIN, f"seen after {seen - started:.3f} s"
    replica_c = await shared_backend.open()  # one that starts later loads it refused
    assert await replica_c.freshest("c1") == refused


async def test_a_new_instance_finds_what_an_earlier_one_stored(redis_backend: RedisBackend):
    """A restarted replica keeps its customers' claims, tokens and owners."""
    first = await redis_backend.open()
    await first.put(claim("a", 1, "a-old"))
    await first.put(claim("a", 2))
    await first.put(claim("b", 3))
    await first.learn_token("token-a", "a")
    await first.close()

    second = await redis_backend.open()
    assert await second.freshest("a") == claim("a", 2)
    assert sorted(await second.claims(), key=lambda c: c.customer_web_id) == [
        claim("a", 2),
        claim("b", 3),
    ]
    assert await second.customer_of_token("token-a") == "a"
    assert await second.owner_of_claim("a-old") == ClaimOwner("a", "u")


async def test_prefixes_do_not_see_each_other(redis_backend: RedisBackend):
    prod = await redis_backend.open(prefix="prod:")
    prod_sibling = await redis_backend.open(prefix="prod:")
    staging = await redis_backend.open(prefix="staging:")
    await staging.put(claim(at=0, value="staging-claim"))

    await prod.put(claim(at=1))
    await prod.learn_token("token", "c1")
    await first_seen(prod_sibling, claim(at=1), deadline=time.monotonic() + 1.0)

    assert await staging.freshest("c1") == claim(at=0, value="staging-claim")
    assert await staging.owner_of_claim(claim(at=1).claim) is None
    assert await staging.customer_of_token("token") is None
    assert await staging.claims() == [claim(at=0, value="staging-claim")]
    with redis_backend.server.client(decode_responses=True) as client:
        assert client.hget("staging:claim:c1", "claim") == "staging-claim"


def test_a_prefix_s_scan_finds_its_own_claim_keys_only_glob_characters_and_all(
    redis_server: RedisServer,
):
    prefixes = ["env*:", "env?:", "env[ab]:", "envX:", "enva:", "env\\:"]
    with redis_server.client(decode_responses=True) as client:
        for prefix in prefixes:
            client.hset(KeyLayout(prefix, tagged=False).claim("c1"), "claim", prefix)
        for prefix in prefixes:
            layout = KeyLayout(prefix, tagged=False)
            found = list(client.scan_iter(match=layout.claim_pattern, count=1000))
            assert found == [layout.claim("c1")]


async def test_replicas_share_each_user_s_claim_and_its_refusal(redis_backend: RedisBackend):
    replica_a = await redis_backend.open()
    replica_b = await redis_backend.open()
    a1, b2 = claim(at=1, user="a"), claim(at=2, user="b")
    await replica_b.put(claim(at=0, user="a"))  # B's own, older: only A's news replaces it
    started = time.monotonic()
    await replica_a.put(a1)
    await replica_a.put(b2)
    seen = await first_seen(replica_b, a1, deadline=started + 1.0, user="a")
    assert seen - started <= SEEN_WITHIN, f"seen after {seen - started:.3f} s"
    await first_seen(replica_b, b2, deadline=started + 1.0)

    started = time.monotonic()
    assert await replica_a.refuse(a1)  # a's freshest, no longer the customer's
    seen = await first_seen(replica_b, replace(a1, refused=True), started + 1.0, user="a")
    assert seen - started <= SEEN_WITHIN, f"seen after {seen - started:.3f} s"
    replica_c = await redis_backend.open()  # one that starts later loads every user
    assert await replica_c.users("c1") == [b2, replace(a1, refused=True)]


async def test_the_server_bounds_each_customer_s_users(redis_backend: RedisBackend):
    store = await redis_backend.open(max_users=2)
    for at, user in enumerate(["w", "x", "y"]):
        await store.put(claim(at=at, user=user))
    assert not await store.put(claim(at=-1, user="v"))  # older than both kept: trimmed at once
    for user in ("p", "q", "r"):  # equal timestamps: the later arrival stays
        await store.put(claim(at=5, user=user))
    with redis_backend.server.client(decode_responses=True) as client:
        users = client.hgetall(f"{redis_backend.prefix}users:c1")
        assert sorted(users) == ["q", "r"]
        assert client.hget(f"{redis_backend.prefix}claim:c1", "user") == "r"
    other = await redis_backend.open(max_users=2)
    assert [c.user_id for c in await other.users("c1")] == ["r", "q"]


async def test_an_older_claimgate_s_data_reads_as_it_did(redis_backend: RedisBackend):
    """A claim hash without ``refused`` nor users beside it, an owner without a user, and a
    refusal message naming no user: an upgrade keeps what was shared before it."""
    prefix = redis_backend.prefix
    old = Claim("c1", "u", "old-claim", NOW)
    with redis_backend.server.client(decode_responses=True) as client:
        client.hset(f"{prefix}claim:c1", mapping={"ts": NOW, "user": "u", "claim": old.claim})
        client.set(f"{prefix}owner:{secret_key('replaced-claim')}", "c1", px=60_000)
    store = await redis_backend.open()
    assert await store.freshest("c1") == old
    assert await store.freshest("c1", "u") == old
    assert await store.users("c1") == [old]
    assert await store.owner_of_claim("replaced-claim") == ClaimOwner("c1", None)

    with redis_backend.server.client(decode_responses=True) as client:
        message = {"op": "refuse", "customer": "c1", "claim": old.claim, "origin": "older"}
        client.publish(f"{prefix}events", json.dumps(message))
    await first_seen(store, replace(old, refused=True), deadline=time.monotonic() + 1.0)


async def test_malformed_shared_data_is_skipped(redis_backend: RedisBackend):
    """Redis is shared: a corrupt entry or message must cost only itself."""
    prefix = redis_backend.prefix
    good = claim(at=2, user="a")
    entry = {"ts": good.timestamp, "claim": good.claim, "source": "link", "refused": False}
    corrupt = {
        "b": "not json",
        "c": '{"ts": "NaN", "claim": "c"}',
        "d": '{"ts": 1e400, "claim": "d"}',
        "e": json.dumps({"ts": NOW - 5, "claim": ["a", "list"]}),
        "f": json.dumps({"ts": NOW - 10, "claim": "f" * 20_000}),
        "g": '{"ts": NaN, "claim": "g"}',
        "i": json.dumps({"ts": 10**13, "claim": "i"}),
    }
    with redis_backend.server.client(decode_responses=True) as client:
        client.hset(
            f"{prefix}claim:c1", mapping={"ts": good.timestamp, "user": "a", "claim": good.claim}
        )
        client.hset(f"{prefix}users:c1", mapping={"a": json.dumps(entry), **corrupt})
        client.set(f"{prefix}claim:c2", "not a hash")
        client.hset(f"{prefix}claim:c3", mapping={"ts": "soon", "user": "u", "claim": "c3"})
    store = await redis_backend.open(max_users=2)
    sibling = await redis_backend.open(max_users=2)
    assert await store.users("c1") == [good]
    assert await store.freshest("c2") is None and await store.freshest("c3") is None

    with redis_backend.server.client(decode_responses=True) as client:
        for junk in (
            "not json",
            "[]",
            '{"op": "put", "customer": 5}',
            '{"op": "put", "customer": "c1", "user": "z", "claim": "z", "ts": "later"}',
            '{"op": "put", "customer": "c1", "user": "z", "claim": "z", "ts": 1e400}',
            '{"op": "put", "customer": "c1", "user": "z", "claim": "z", "ts": 99999999999999}',
            '{"op": "refuse", "customer": "c1", "user": "a", "claim": null}',
        ):
            client.publish(f"{prefix}events", junk)
    newer = claim(at=3, user="h")
    assert await sibling.put(newer)  # the server trims the corrupt entries first
    await first_seen(store, newer, deadline=time.monotonic() + 1.0)
    assert await store.users("c1") == [newer, good]
    with redis_backend.server.client(decode_responses=True) as client:
        assert sorted(client.hgetall(f"{prefix}users:c1")) == ["a", "h"]


async def test_after_an_outage_every_user_s_claim_is_written_back(redis_server: RedisServer):
    backend = RedisBackend(redis_server)  # its events report the outage: not asserted quiet
    try:
        store = await backend.open()
        a1, b2 = claim(at=1, user="a"), claim(at=2, user="b")
        await store.put(a1)
        await store.put(b2)
        redis_server.restart()  # empty: no persistence
        deadline = time.monotonic() + 10.0
        while not backend.events.recovered and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert backend.events.recovered == [2]
        later = await backend.open()
        assert await later.users("c1") == [b2, a1]
        assert await later.freshest("c1") == b2
    finally:
        await backend.close()


async def test_each_operation_is_timed_answered_or_failed_and_none_while_away(
    redis_server: RedisServer,
):
    """``store_timed`` once per operation sent to Redis, a failed one with the time it took
    to fail; while Redis is known to be away nothing is sent, so nothing is timed."""
    backend = RedisBackend(redis_server)  # its events report the stall: not asserted quiet
    try:
        store = await backend.open()
        await store.learn_token("token-1", "c1")
        await store.ping()
        await store.forget("c1")
        timed = backend.events.timed
        assert [operation for operation, _ in timed] == [
            Operation.TOKEN,
            Operation.PING,
            Operation.FORGET,
        ]
        assert all(seconds >= 0 for _, seconds in timed)
        timed.clear()
        with redis_server.frozen():
            with pytest.raises(StoreUnavailable):
                await store.ping()
            ((operation, seconds),) = timed
            assert operation is Operation.PING
            assert seconds >= backend.TIMEOUT - 0.01  # failed by its timeout, not before
            assert [operation for operation, _ in backend.events.errors] == [Operation.PING]
            await store.learn_token("token-2", "c2")  # kept here, nothing sent
            assert len(timed) == 1
    finally:
        await backend.close()


async def first_seen(
    store: ClaimStore, wanted: Claim, deadline: float, user: str | None = None
) -> float:
    """The monotonic time at which ``store`` first returns ``wanted`` (as the customer's
    freshest, or as ``user``'s); fails at ``deadline``."""
    while True:
        if await store.freshest(wanted.customer_web_id, user) == wanted:
            return time.monotonic()
        if time.monotonic() > deadline:
            found = await store.freshest(wanted.customer_web_id, user)
            pytest.fail(f"never saw {wanted!r}; still {found!r}")
        await asyncio.sleep(0.002)


# --- two processes writing at once -------------------------------------------------------

WRITER = ROOT / "tests" / "store_writer.py"
WRITES = 400


@pytest.fixture
def writers(redis_server: RedisServer) -> Iterator[list[subprocess.Popen[str]]]:
    """Two writer processes on one server and prefix, waiting for ``go``; always ended."""
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                redis_server.url,
                "race:",
                str(seed),
                str(WRITES),
                str(NOW),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "addon")},
        )
        for seed in (1, 2)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        pytest.fail("a writer did not get ready in time")
    return process.stdout.readline().strip()


def test_two_processes_writing_at_once_keep_the_newest(
    redis_server: RedisServer, writers: list[subprocess.Popen[str]]
):
    for process in writers:
        assert read_line(process, timeout=20) == "ready", process.communicate(timeout=10)
    reports = []
    for process in writers:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    for process in writers:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, (out, err)
        reports.append(json.loads(out))

    newest = max(ts for report in reports for ts, _ in report["results"])
    first, second = reports
    assert first["started"] < second["ended"] and second["started"] < first["ended"], (
        "the writers did not overlap, so they did not race"
    )
    for seed, report in zip((1, 2), reports, strict=True):
        results = report["results"]
        assert len(results) == WRITES
        # Equal timestamps: the later arrival wins, so both writers' newest puts are kept.
        assert dict(results)[newest] is True
        # Puts are sequential within a process: once one was kept, the server holds at least
        # its timestamp, so every later, older put of the same process must lose.
        floor = None
        for ts, kept in results:
            if floor is not None and ts < floor:
                assert kept is False, f"writer {seed}: {ts} kept after {floor}"
            if kept:
                floor = ts if floor is None else max(floor, ts)

    with redis_server.client(decode_responses=True) as client:
        stored = client.hgetall("race:claim:shared")
    assert stored["ts"] == str(newest)
    assert stored["claim"] in {f"claim-{seed}-{newest}" for seed in (1, 2)}


async def test_a_claim_already_past_its_retention_is_not_kept(backend: Backend):
    store = await backend.open(ttl=60)
    assert not await store.put(claim(at=-60 * RETENTION_FACTOR - 5))
    assert await store.freshest("c1") is None
