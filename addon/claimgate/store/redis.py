"""The shared claim store: Redis (or Valkey), for several replicas and across restarts.

Each replica keeps a local copy (a ``MemoryStore``) and answers every lookup from it, so the
hot path never waits on the network. Redis is the shared truth:

- A capture is written with a server-side script that keeps newest-wins atomic, for the
  customer and for its user, even when two replicas write at once, and publishes the claim
  on a channel; every replica applies what it hears to its local copy (a capture on replica
  A is used by replica B within milliseconds). Refusals and forgetting travel the same way.
  In a Redis Cluster each script's keys share one slot (store/keys.py) and the channel is
  classic pub/sub, which every node relays to its subscribers: one subscription, on any node,
  hears every shard.
- A supervisor task subscribes, loads everything under the key prefix into the local copy,
  and then listens. Any failed operation marks the store unavailable: lookups keep being
  served from the local copy, nothing waits on Redis, ``store_unavailable`` is reported
  once, and the supervisor reconnects. On its return, each replica loads what Redis has and
  writes back its whole local copy, every user's claim, newest-wins: captures made during
  the outage reach Redis, and a Redis that came back empty (no persistence) is filled again.

Keys (``prefix`` lets one server hold several environments; in a cluster ``<customer>`` is
written ``{<customer>}``, its hash tag, see store/keys.py):

- ``claim:<customer>``: a hash (ts, user, claim, source, refused) of the customer's freshest
  claim (docs/design.md 2.4), expiring at the call's timestamp plus the retention (the claim
  TTL twice, as in the memory store).
- ``users:<customer>``: a hash of each user's freshest claim (docs/design.md 2.12), one field
  per user id, valued ``{"ts", "claim", "source", "refused"}`` as JSON; at most
  ``max_users`` fields (the user whose claim is oldest leaves first, never the customer's
  freshest), expiring with the newest. Read only beside ``claim:<customer>``.
- ``token:<secret_key(token)>``: the customer (no expiry: activation happens once).
- ``owner:<secret_key(claim)>``: the customer, a tab and the user a claim was issued to
  (an older claimgate wrote the customer alone), expiring with the claim's retention; written
  just before the claim's script, as a command of its own (another slot in a cluster).

Claims are secrets: the Redis server must be private to the provider. It is still not
trusted to be well-formed: whatever is read from it is bounded and a malformed entry is
skipped.
"""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from claimgate.store import (
    DEFAULT_MAX_USERS,
    Claim,
    ClaimOwner,
    Operation,
    StoreEvents,
    secret_key,
)
from claimgate.store.address import StoreAddress, parse_store_url
from claimgate.store.keys import KeyLayout
from claimgate.store.memory import RETENTION_FACTOR, MemoryStore

RECONNECT_DELAY = 1.0
"""Seconds between attempts to reach Redis while it is away."""
LISTEN_TIMEOUT = 1.0
"""Seconds the supervisor waits for a message before checking the store's health again."""
SCAN_BATCH = 500
MAX_CONNECTIONS = 100
"""Per server (per node, in a cluster)."""
MAX_OPERATIONS = MAX_CONNECTIONS - 4
"""Operations in flight at once, waiting (within the timeout) beyond that: the cluster client
fails rather than wait for a free connection, and the supervisor needs one of its own."""
WRITE_BACK_AT_ONCE = 64
"""Customers written back at once after an outage (a cluster pipeline cannot carry scripts)."""
USERS_READ = 1000
"""Users' claims read from one customer's hash at most (more only if ``max_users`` is
larger): a well-formed hash holds ``max_users``, so only a corrupt one is cut."""
ENTRY_CHARS = 16384
"""A user's entry longer than this is skipped unread: far above any real claim."""
MAX_TIMESTAMP = 10**12
"""Unix seconds beyond any real call (as the scripts' ``valid``): a larger one is corrupt."""

# KEYS: claim key, users key (one slot in a cluster). ARGV: ts, user, claim, source, expiry
# (Unix ms: the call's timestamp plus the retention), channel, message, refused (1 or 0), max
# users. Newest wins by the call's own timestamp, for the user and for the customer; an equal
# one replaces (the later arrival). A claim the API refused stays refused when it is written
# again. Returns 1 if the claim is now the customer's freshest.
_PUT = """
local ts = tonumber(ARGV[1])
local function valid(t)  -- a usable timestamp: not NaN, not beyond MAX_TIMESTAMP
  return t ~= nil and t == t and math.abs(t) < 1e12
end
local function entry_of(value)  -- a user's entry, or nil when it is malformed
  local ok, entry = pcall(cjson.decode, value)
  if ok and type(entry) == 'table' and type(entry.ts) == 'number' and valid(entry.ts) then
    return entry
  end
  return nil
end

local value = redis.call('HGET', KEYS[2], ARGV[2])
local mine = value and entry_of(value) or nil  -- HGET answers false for none
local current = redis.call('HMGET', KEYS[1], 'ts', 'claim', 'refused')
local current_ts = tonumber(current[1])
local for_user = not mine or mine.ts <= ts
local for_customer = not valid(current_ts) or current_ts <= ts
if not for_user and not for_customer then
  return 0
end
local refused = ARGV[8] == '1' or (current[2] == ARGV[3] and current[3] == '1')
  or (mine ~= nil and mine.claim == ARGV[3] and mine.refused == true)

if for_customer then
  redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'user', ARGV[2], 'claim', ARGV[3],
    'source', ARGV[4], 'refused', refused and '1' or '0')
  redis.call('PEXPIREAT', KEYS[1], ARGV[5])
end
local kept = true
if for_user then
  redis.call('HSET', KEYS[2], ARGV[2],
    cjson.encode({ts = ts, claim = ARGV[3], source = ARGV[4], refused = refused}))
  local ttl = redis.call('PTTL', KEYS[2])
  local now = redis.call('TIME')
  if ttl < 0 or now[1] * 1000 + math.floor(now[2] / 1000) + ttl < tonumber(ARGV[5]) then
    redis.call('PEXPIREAT', KEYS[2], ARGV[5])  -- the latest expiry of its entries
  end
  local excess = redis.call('HLEN', KEYS[2]) - tonumber(ARGV[9])
  if excess > 0 then
    local spared = redis.call('HGET', KEYS[1], 'user')  -- the customer's freshest
    local fields, candidates = redis.call('HGETALL', KEYS[2]), {}
    for i = 1, #fields, 2 do
      if fields[i] ~= spared then
        local entry = entry_of(fields[i + 1])
        table.insert(candidates, {fields[i], entry and entry.ts or -math.huge})
      end
    end
    -- Oldest first; on an equal timestamp the later arrival stays, then by user id.
    table.sort(candidates, function(a, b)
      if a[2] ~= b[2] then return a[2] < b[2] end
      if (a[1] == ARGV[2]) ~= (b[1] == ARGV[2]) then return b[1] == ARGV[2] end
      return a[1] < b[1]
    end)
    for i = 1, math.min(excess, #candidates) do
      redis.call('HDEL', KEYS[2], candidates[i][1])
      if candidates[i][1] == ARGV[2] then kept = false end
    end
  end
end
if for_customer or kept then
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
return for_customer and 1 or 0
"""

# KEYS: claim key, users key. ARGV: claim, user, channel, message. Marks the claim refused
# where it is still held (a newer capture may have replaced it meanwhile) and is not yet.
_REFUSE = """
local marked = 0
local current = redis.call('HMGET', KEYS[1], 'claim', 'refused')
if current[1] == ARGV[1] and current[2] ~= '1' then
  redis.call('HSET', KEYS[1], 'refused', '1')
  marked = 1
end
local value = redis.call('HGET', KEYS[2], ARGV[2])
if value then
  local ok, entry = pcall(cjson.decode, value)
  if ok and type(entry) == 'table' and entry.claim == ARGV[1] and entry.refused ~= true then
    redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(
      {ts = entry.ts, claim = entry.claim, source = entry.source, refused = true}))
    marked = 1
  end
end
if marked == 1 then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return marked
"""

# KEYS: claim key, users key. ARGV: channel, message. Forgets the customer: a script, not
# MULTI, so that it runs alike on one server and in a cluster. Returns the keys deleted.
_FORGET = """
local deleted = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return deleted
"""

_FAILURES = (RedisError, OSError, TimeoutError)


class StoreUnavailable(Exception):
    """Redis did not answer; the local copy is serving."""


class RedisStore:
    """Freshest claims per customer and user, shared through Redis, served from a local copy."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None,
        prefix: str,
        ttl: float,
        max_entries: int,
        max_users: int = DEFAULT_MAX_USERS,
        events: StoreEvents,
        timeout: float = 0.5,
        username: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        address = parse_store_url(url)
        self._local = MemoryStore(ttl, max_entries, max_users=max_users)
        self._client = _client(address, password, username, sentinel_password, timeout)
        self._cluster = address.cluster
        self._origin = uuid.uuid4().hex
        """Marks this replica's own messages, which its local copy already reflects."""
        self._put_script = self._client.register_script(_PUT)
        self._refuse_script = self._client.register_script(_REFUSE)
        self._forget_script = self._client.register_script(_FORGET)
        self._keys = KeyLayout(prefix, tagged=address.cluster)
        self._in_flight = asyncio.Semaphore(MAX_OPERATIONS)
        self._retention = ttl * RETENTION_FACTOR
        self._max_users = max_users
        self._users_read = max(max_users, USERS_READ)
        self._timeout = timeout
        self._events = events
        self._available = False
        self._broken = asyncio.Event()
        """Set by a failed operation: tells the supervisor to reconnect and catch up."""
        self._connected_once = False
        self._supervisor: asyncio.Task[None] | None = None
        self._unavailable_reported = False

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervisor and give it a moment to connect; never fails if Redis is away."""
        self._supervisor = asyncio.create_task(self._supervise(), name="claimgate-redis")
        deadline = asyncio.get_running_loop().time() + self._timeout * 4
        while not self._available and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._client.aclose()

    # --- the protocol ---------------------------------------------------------------

    def retain(self, ttl: float) -> None:
        """Here and, for what is written from now on, in Redis (a key's expiry is set when
        it is written)."""
        self._local.retain(ttl)
        self._retention = ttl * RETENTION_FACTOR

    async def put(self, claim: Claim) -> bool:
        if claim.timestamp + self._retention <= time.time():
            return False  # past its retention already: nothing to keep, here or there
        kept_locally = await self._local.put(claim)
        stored = await self._shared(Operation.PUT, lambda: self._write(claim))
        if stored is _UNANSWERED:
            return kept_locally  # written back when Redis returns
        if not stored:
            await self._adopt_shared(claim.customer_web_id)
        return bool(stored)

    async def refuse(self, claim: Claim) -> bool:
        refused_locally = await self._local.refuse(claim)
        message = json.dumps({"op": "refuse", "origin": self._origin, **_claim_fields(claim)})
        keys = [self._keys.claim(claim.customer_web_id), self._keys.users(claim.customer_web_id)]
        args = [claim.claim, claim.user_id, self._keys.channel, message]
        refused = await self._shared(
            Operation.REFUSE, lambda: self._refuse_script(keys=keys, args=args)
        )
        return refused_locally or (refused is not _UNANSWERED and bool(refused))

    async def freshest(self, customer_web_id: str, user_id: str | None = None) -> Claim | None:
        await self._known(customer_web_id)
        return await self._local.freshest(customer_web_id, user_id)

    async def users(self, customer_web_id: str) -> list[Claim]:
        await self._known(customer_web_id)
        return await self._local.users(customer_web_id)

    async def owner_of_claim(self, claim: str) -> ClaimOwner | None:
        owner = await self._local.owner_of_claim(claim)
        if owner is None:
            key = self._keys.owner(secret_key(claim))
            shared = await self._shared(Operation.OWNER, lambda: self._client.get(key))
            owner = _owner_from(shared)
        return owner

    async def learn_token(self, token: str, customer_web_id: str) -> None:
        await self._local.learn_token(token, customer_web_id)
        key = self._keys.token(secret_key(token))
        await self._shared(Operation.TOKEN, lambda: self._client.set(key, customer_web_id))

    async def customer_of_token(self, token: str) -> str | None:
        customer = await self._local.customer_of_token(token)
        if customer is None:
            key = self._keys.token(secret_key(token))
            shared = await self._shared(Operation.TOKEN, lambda: self._client.get(key))
            if shared is not _UNANSWERED and shared is not None:
                customer = shared
                await self._local.learn_token(token, customer)
        return customer

    async def forget(self, customer_web_id: str) -> bool:
        forgotten = await self._local.forget(customer_web_id)
        message = json.dumps({"op": "forget", "customer": customer_web_id, "origin": self._origin})
        keys = [self._keys.claim(customer_web_id), self._keys.users(customer_web_id)]
        args = [self._keys.channel, message]
        deleted = await self._shared(
            Operation.FORGET, lambda: self._forget_script(keys=keys, args=args)
        )
        return forgotten or (deleted is not _UNANSWERED and int(deleted) > 0)

    async def claims(self) -> list[Claim]:
        return await self._local.claims()

    def held(self) -> list[Claim]:
        return self._local.held()

    async def ping(self) -> None:
        if not self._available:
            raise StoreUnavailable("redis is not answering")
        answered = await self._shared(Operation.PING, self._ping)
        if answered is _UNANSWERED:
            raise StoreUnavailable("redis is not answering")

    def __len__(self) -> int:
        return len(self._local)

    # --- talking to Redis -----------------------------------------------------------

    async def _ping(self) -> Any:
        """The primary; in a cluster every primary, since any customer may live on any."""
        if self._cluster:
            return await self._client.ping(target_nodes=RedisCluster.PRIMARIES)
        return await self._client.ping()

    async def _write(self, claim: Claim) -> Any:
        """Who the claim was issued to, then newest-wins for its customer and user."""
        customer = claim.customer_web_id
        expire_at_ms = int((claim.timestamp + self._retention) * 1000)
        owner = f"{customer}\t{claim.user_id}"
        await self._client.set(self._keys.owner(secret_key(claim.claim)), owner, pxat=expire_at_ms)
        message = json.dumps({"op": "put", "origin": self._origin, **_claim_fields(claim)})
        keys = [self._keys.claim(customer), self._keys.users(customer)]
        args = [
            claim.timestamp,
            claim.user_id,
            claim.claim,
            claim.source,
            expire_at_ms,
            self._keys.channel,
            message,
            int(claim.refused),
            self._max_users,
        ]
        return await self._put_script(keys=keys, args=args)

    async def _shared(self, operation: Operation, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis operation within the timeout; ``_UNANSWERED`` when it cannot be had.

        While Redis is known to be away nothing is attempted: lookups must not each wait
        for a timeout. The supervisor finds out when it is back.
        """
        if not self._available:
            return _UNANSWERED
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self._timeout), self._in_flight:
                return await call()
        except _FAILURES as error:
            self._events.store_error(operation, error)
            self._mark_unavailable(f"{operation} failed ({type(error).__name__})")
            return _UNANSWERED
        finally:
            self._events.store_timed(operation, loop.time() - started)

    async def _known(self, customer_web_id: str) -> None:
        """Adopt a customer the local copy does not hold from Redis.

        One the local copy holds is kept current by the channel (and by catching up after
        an outage), so a user missing there is missing in Redis too: not worth a round trip.
        """
        if await self._local.freshest(customer_web_id) is None:
            await self._adopt_shared(customer_web_id)

    async def _adopt_shared(self, customer_web_id: str) -> None:
        """Read a customer's claims from Redis into the local copy (a miss, or a lost race)."""

        async def read() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                self._read_customer(pipe, customer_web_id)
                return list(await pipe.execute(raise_on_error=False))

        read_back = await self._shared(Operation.GET, read)
        if read_back is not _UNANSWERED:
            await self._adopt(customer_web_id, *read_back)

    def _read_customer(self, pipe: Any, customer_web_id: str) -> None:
        """Queue the reads of one customer's claims: its users' (bounded), then its own."""
        pipe.hrandfield(self._keys.users(customer_web_id), self._users_read, withvalues=True)
        pipe.hgetall(self._keys.claim(customer_web_id))

    async def _adopt(self, customer_web_id: str, users: Any, fields: Any) -> None:
        """Put what Redis holds for a customer into the local copy: the users' claims first,
        then the customer's freshest, so that it wins an equal timestamp here as there.

        Users without the customer's claim were forgotten (by an older claimgate, which
        deletes only that): they are not adopted.
        """
        freshest = _claim_from(customer_web_id, fields) if isinstance(fields, dict) else None
        if freshest is None:
            return
        for claim in _user_claims_from(customer_web_id, users):
            await self._local.put(claim)
        await self._local.put(freshest)

    def _mark_unavailable(self, reason: str) -> None:
        self._available = False
        self._broken.set()
        if not self._unavailable_reported:
            self._unavailable_reported = True
            self._events.store_unavailable(reason)

    # --- the supervisor -------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, catch up, listen; on any failure start over after a pause."""
        while True:
            pubsub = None
            try:
                async with asyncio.timeout(self._timeout * 4):
                    pubsub = await self._subscribe()
                written = await self._catch_up()
                self._broken.clear()
                self._available = True
                if self._unavailable_reported:
                    self._unavailable_reported = False
                    self._events.store_recovered(written)
                await self._listen(pubsub)
            except _FAILURES as error:
                self._events.store_error("connect", error)
                self._mark_unavailable(f"connection failed ({type(error).__name__})")
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*_FAILURES):
                        await pubsub.aclose()
            await asyncio.sleep(RECONNECT_DELAY)

    async def _subscribe(self) -> Any:
        """Listen on the channel. A cluster client first asks the nodes where the slots are
        now: after a failover the map it holds names a primary that is gone."""
        if self._cluster:
            await self._client.aclose()
            await self._client.initialize()
            pubsub = self._client.pubsub(node=self._client.get_default_node())
        else:
            pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._keys.channel)
        except BaseException:
            with contextlib.suppress(*_FAILURES):
                await pubsub.aclose()
            raise
        return pubsub

    async def _listen(self, pubsub: Any) -> None:
        while not self._broken.is_set():
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=LISTEN_TIMEOUT
            )
            if message is not None:
                await self._apply(message.get("data"))
        raise ConnectionError("an operation failed; reconnecting")

    async def _apply(self, data: Any) -> None:
        """A message from another replica: update the local copy.

        Our own messages are skipped: applying one late could put back a claim that an
        equally fresh, later capture has already replaced locally.
        """
        try:
            event = json.loads(data)
        except (TypeError, ValueError):
            return
        if not isinstance(event, dict) or event.get("origin") == self._origin:
            return
        customer = event.get("customer")
        if not isinstance(customer, str):
            return
        if event.get("op") == "forget":
            await self._local.forget(customer)
        elif event.get("op") == "refuse":
            # An older claimgate names only the customer's freshest claim, not its user.
            refused = (
                _claim_from(customer, event)
                if "user" in event
                else await self._local.freshest(customer)
            )
            if refused is not None and refused.claim == event.get("claim"):
                await self._local.refuse(refused)
        elif event.get("op") == "put":
            claim = _claim_from(customer, event)
            if claim is not None:
                await self._local.put(claim)

    async def _catch_up(self) -> int:
        """Load every shared claim; after an outage also write the local copy back.

        Returns how many claims and tokens were written back. Newest-wins runs on the
        server, so writing back an older claim changes nothing there.
        """
        async with asyncio.timeout(max(self._timeout * 40, 10.0)):
            async for keys in _batches(
                self._client.scan_iter(match=self._keys.claim_pattern, count=SCAN_BATCH)
            ):
                customers = [c for c in map(self._keys.customer_of, keys) if c is not None]
                async with self._client.pipeline(transaction=False) as pipe:
                    for customer in customers:
                        self._read_customer(pipe, customer)
                    values = await pipe.execute(raise_on_error=False)  # a wrong type: skipped
                for index, customer in enumerate(customers):
                    await self._adopt(customer, *values[2 * index : 2 * index + 2])
            if not self._connected_once:
                self._connected_once = True
                return 0
            return await self._write_back()

    async def _write_back(self) -> int:
        """Every user's claim, customers ``WRITE_BACK_AT_ONCE`` at a time, each customer's in
        order: its freshest comes first in its users' list, so reversed it is written last
        and wins an equal timestamp on the server as it does here."""
        by_customer: dict[str, list[Claim]] = {}
        for claim in self._local.every_user_claim():
            by_customer.setdefault(claim.customer_web_id, []).append(claim)
        groups = list(by_customer.values())
        for start in range(0, len(groups), WRITE_BACK_AT_ONCE):
            batch = groups[start : start + WRITE_BACK_AT_ONCE]
            # Every write of the batch ends before a failure is raised: none is left running.
            failed = await asyncio.gather(*map(self._write_each, batch), return_exceptions=True)
            for failure in failed:
                if failure is not None:
                    raise failure
        tokens = self._local.token_entries()
        async with self._client.pipeline(transaction=False) as pipe:
            for digest, customer in tokens:  # digest.hex() is secret_key(token)
                pipe.set(self._keys.token(digest.hex()), customer)
            await pipe.execute()
        return sum(map(len, groups)) + len(tokens)

    async def _write_each(self, claims: list[Claim]) -> None:
        for claim in reversed(claims):
            with contextlib.suppress(ResponseError):  # a corrupt key must not stop the rest
                await self._write(claim)


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The primary's connections, found through the sentinels, and a burst waits for one."""


def _client(
    address: StoreAddress,
    password: str | None,
    username: str | None,
    sentinel_password: str | None,
    timeout: float,
) -> aioredis.Redis | RedisCluster:
    """A client of the store's primary, or of a cluster's primaries (docs/design.md 2.4, 3.2).

    A server's pool is blocking: a burst of lookups waits for a free connection (within the
    operation timeout) instead of failing at once when the pool is exhausted. Behind
    Sentinel every new connection asks the sentinels for the current primary, and one that
    finds its server demoted (READONLY) fails, so the supervisor reconnects to the new one.
    A cluster client follows MOVED and ASK itself and, when a node fails, asks the others
    for the slots again.
    """
    options: dict[str, Any] = {
        "password": password,
        "max_connections": MAX_CONNECTIONS,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
    }
    if username is not None:
        options["username"] = username
    if address.cluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
            ssl=address.tls,
            **options,
        )
    options["timeout"] = timeout  # how long a burst waits for a connection of the pool
    if not address.sentinel:
        return aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(address.url, **options)
        )
    sentinels = Sentinel(
        list(address.nodes),
        sentinel_kwargs={
            # One try per sentinel: the next sentinel is the retry. redis-py's default
            # backoff would spend seconds on one that is down before asking another.
            "retry": Retry(NoBackoff(), 0),
            "password": sentinel_password,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "ssl": address.tls,
            "decode_responses": True,
        },
    )
    assert address.service is not None
    return sentinels.master_for(
        address.service,
        connection_pool_class=_BlockingSentinelPool,
        db=address.db,
        ssl=address.tls,
        **options,
    )


class _Unanswered:
    """Marks an operation that Redis did not answer (None is a real answer)."""


_UNANSWERED = _Unanswered()


def _claim_fields(claim: Claim) -> dict[str, Any]:
    return {
        "customer": claim.customer_web_id,
        "user": claim.user_id,
        "claim": claim.claim,
        "ts": claim.timestamp,
        "source": claim.source,
        "refused": claim.refused,
    }


def _claim_from(customer: str, fields: Mapping[str, Any]) -> Claim | None:
    """A claim from a hash or a message; None when anything is missing or of the wrong kind."""
    user, value, ts = fields.get("user"), fields.get("claim"), fields.get("ts")
    source = fields.get("source") or "link"
    if not (isinstance(user, str) and isinstance(value, str) and isinstance(source, str)):
        return None
    if isinstance(ts, bool) or not isinstance(ts, int | str):
        return None
    try:
        timestamp = int(ts)
    except ValueError:
        return None
    if abs(timestamp) >= MAX_TIMESTAMP:
        return None
    return Claim(
        customer, user, value, timestamp, source, refused=fields.get("refused") in (True, "1")
    )


def _user_claims_from(customer: str, users: Any) -> list[Claim]:
    """The users' claims of an ``HRANDFIELD ... WITHVALUES`` answer; malformed ones skipped."""
    if not isinstance(users, list):
        return []
    found = []
    for user, value in zip(users[::2], users[1::2], strict=False):
        if not isinstance(value, str) or len(value) > ENTRY_CHARS:
            continue
        try:
            entry = json.loads(value)
        except ValueError:
            continue
        claim = _claim_from(customer, {**entry, "user": user}) if isinstance(entry, dict) else None
        if claim is not None:
            found.append(claim)
    return found


def _owner_from(value: Any) -> ClaimOwner | None:
    """``customer TAB user``; the customer alone is an older claimgate's owner, of no user."""
    if not isinstance(value, str) or not value:
        return None
    customer, tab, user = value.partition("\t")
    return ClaimOwner(customer, user if tab else None)


async def _batches(keys: Any, size: int = SCAN_BATCH) -> Any:
    batch: list[str] = []
    async for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
