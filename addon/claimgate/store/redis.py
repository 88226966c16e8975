"""The shared claim store: Redis (or Valkey), for several replicas and across restarts.

Each replica keeps a local copy (a ``MemoryStore``) and answers every lookup from it, so the
hot path never waits on the network. Redis is the shared truth:

- A capture is written with a server-side script that keeps newest-wins atomic even when
  two replicas write at once, and publishes the claim on a channel; every replica applies
  what it hears to its local copy (a capture on replica A is used by replica B within
  milliseconds).
- A supervisor task subscribes, loads everything under the key prefix into the local copy,
  and then listens. Any failed operation marks the store unavailable: lookups keep being
  served from the local copy, nothing waits on Redis, ``store_unavailable`` is reported
  once, and the supervisor reconnects. On its return, each replica loads what Redis has and
  writes back its whole local copy, newest-wins: captures made during the outage reach
  Redis, and a Redis that came back empty (no persistence) is filled again.

Keys (``prefix`` lets one server hold several environments): ``claim:<customer>`` a hash
(ts, user, claim, source, refused) expiring at the call's timestamp plus the retention (the claim
TTL twice, as in the memory store), ``token:<secret_key(token)>`` the customer (no expiry:
activation happens once), ``owner:<secret_key(claim)>`` the customer a claim was issued
to. Claims are secrets: the Redis server must be private to the provider.
"""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from claimgate.store import Claim, StoreEvents, secret_key
from claimgate.store.memory import RETENTION_FACTOR, MemoryStore

RECONNECT_DELAY = 1.0
"""Seconds between attempts to reach Redis while it is away."""
LISTEN_TIMEOUT = 1.0
"""Seconds the supervisor waits for a message before checking the store's health again."""
SCAN_BATCH = 500
MAX_CONNECTIONS = 100

# KEYS: claim key, owner key. ARGV: ts, user, claim, source, expiry (Unix ms: the call's
# timestamp plus the retention), customer, channel, message, refused (1 or 0). Newest wins by
# the call's own timestamp; an equal one replaces (the later arrival). A claim the API
# refused stays refused when it is written again.
_PUT = """
redis.call('SET', KEYS[2], ARGV[6], 'PXAT', ARGV[5])
local current = redis.call('HMGET', KEYS[1], 'ts', 'claim', 'refused')
if current[1] and tonumber(current[1]) > tonumber(ARGV[1]) then
  return 0
end
local refused = ARGV[9]
if current[2] == ARGV[3] and current[3] == '1' then
  refused = '1'
end
redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'user', ARGV[2], 'claim', ARGV[3], 'source', ARGV[4],
  'refused', refused)
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 1
"""

# KEYS: claim key. ARGV: claim, channel, message. Marks the customer's claim refused only if
# it still is that claim (a newer capture may have replaced it meanwhile) and is not yet.
_REFUSE = """
local current = redis.call('HMGET', KEYS[1], 'claim', 'refused')
if current[1] == ARGV[1] and current[2] ~= '1' then
  redis.call('HSET', KEYS[1], 'refused', '1')
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""

_FAILURES = (RedisError, OSError, TimeoutError)


class StoreUnavailable(Exception):
    """Redis did not answer; the local copy is serving."""


class RedisStore:
    """Freshest claims shared through Redis, served from a local copy."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None,
        prefix: str,
        ttl: float,
        max_entries: int,
        events: StoreEvents,
        timeout: float = 0.5,
    ) -> None:
        self._local = MemoryStore(ttl, max_entries)
        # Blocking: a burst of lookups waits for a free connection (within the operation
        # timeout) instead of failing at once when the pool is exhausted.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            password=password,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )
        self._client = aioredis.Redis(connection_pool=pool)
        self._origin = uuid.uuid4().hex
        """Marks this replica's own messages, which its local copy already reflects."""
        self._put_script = self._client.register_script(_PUT)
        self._refuse_script = self._client.register_script(_REFUSE)
        self._prefix = prefix
        self._channel = f"{prefix}events"
        self._retention = ttl * RETENTION_FACTOR
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

    async def put(self, claim: Claim) -> bool:
        if claim.timestamp + self._retention <= time.time():
            return False  # past its retention already: nothing to keep, here or there
        kept_locally = await self._local.put(claim)
        keys, args = self._put_arguments(claim)
        stored = await self._shared("put", lambda: self._put_script(keys=keys, args=args))
        if stored is _UNANSWERED:
            return kept_locally  # written back when Redis returns
        if not stored:
            await self._adopt_shared(claim.customer_web_id)
        return bool(stored)

    async def refuse(self, customer_web_id: str, claim: str) -> bool:
        refused_locally = await self._local.refuse(customer_web_id, claim)
        message = json.dumps(
            {"op": "refuse", "customer": customer_web_id, "claim": claim, "origin": self._origin}
        )
        keys, args = [self._claim_key(customer_web_id)], [claim, self._channel, message]
        refused = await self._shared("refuse", lambda: self._refuse_script(keys=keys, args=args))
        return refused_locally or (refused is not _UNANSWERED and bool(refused))

    async def freshest(self, customer_web_id: str) -> Claim | None:
        found = await self._local.freshest(customer_web_id)
        if found is None:
            found = await self._adopt_shared(customer_web_id)
        return found

    async def owner_of_claim(self, claim: str) -> str | None:
        owner = await self._local.owner_of_claim(claim)
        if owner is None:
            shared = await self._shared("owner", lambda: self._client.get(self._owner_key(claim)))
            owner = None if shared is _UNANSWERED else shared
        return owner

    async def learn_token(self, token: str, customer_web_id: str) -> None:
        await self._local.learn_token(token, customer_web_id)
        key = secret_key(token)
        await self._shared(
            "token", lambda: self._client.set(self._prefix + "token:" + key, customer_web_id)
        )

    async def customer_of_token(self, token: str) -> str | None:
        customer = await self._local.customer_of_token(token)
        if customer is None:
            key = self._prefix + "token:" + secret_key(token)
            shared = await self._shared("token", lambda: self._client.get(key))
            if shared is not _UNANSWERED and shared is not None:
                customer = shared
                await self._local.learn_token(token, customer)
        return customer

    async def forget(self, customer_web_id: str) -> bool:
        forgotten = await self._local.forget(customer_web_id)
        message = json.dumps({"op": "forget", "customer": customer_web_id, "origin": self._origin})

        async def delete() -> int:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._claim_key(customer_web_id))
                pipe.publish(self._channel, message)
                deleted, _ = await pipe.execute()
                return int(deleted)

        deleted = await self._shared("forget", delete)
        return forgotten or (deleted is not _UNANSWERED and deleted > 0)

    async def claims(self) -> list[Claim]:
        return await self._local.claims()

    def held(self) -> list[Claim]:
        return self._local.held()

    async def ping(self) -> None:
        if not self._available:
            raise StoreUnavailable("redis is not answering")
        answered = await self._shared("ping", self._client.ping)
        if answered is _UNANSWERED:
            raise StoreUnavailable("redis is not answering")

    def __len__(self) -> int:
        return len(self._local)

    # --- talking to Redis -----------------------------------------------------------

    def _claim_key(self, customer_web_id: str) -> str:
        return f"{self._prefix}claim:{customer_web_id}"

    def _owner_key(self, claim: str) -> str:
        return f"{self._prefix}owner:{secret_key(claim)}"

    async def _shared(self, operation: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis operation within the timeout; ``_UNANSWERED`` when it cannot be had.

        While Redis is known to be away nothing is attempted: lookups must not each wait
        for a timeout. The supervisor finds out when it is back.
        """
        if not self._available:
            return _UNANSWERED
        try:
            async with asyncio.timeout(self._timeout):
                return await call()
        except _FAILURES as error:
            self._events.store_error(operation, error)
            self._mark_unavailable(f"{operation} failed ({type(error).__name__})")
            return _UNANSWERED

    async def _adopt_shared(self, customer_web_id: str) -> Claim | None:
        """Read a customer's claim from Redis into the local copy (a miss, or a lost race)."""
        fields = await self._shared(
            "get", lambda: self._client.hgetall(self._claim_key(customer_web_id))
        )
        if fields is _UNANSWERED or not fields:
            return None
        claim = _claim_from(customer_web_id, fields)
        if claim is not None:
            await self._local.put(claim)
        return await self._local.freshest(customer_web_id)

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
            pubsub = self._client.pubsub()
            try:
                async with asyncio.timeout(self._timeout * 4):
                    await pubsub.subscribe(self._channel)
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
                with contextlib.suppress(*_FAILURES):
                    await pubsub.aclose()
            await asyncio.sleep(RECONNECT_DELAY)

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
        if event.get("op") == "forget":
            await self._local.forget(str(event.get("customer")))
        elif event.get("op") == "refuse":
            await self._local.refuse(str(event.get("customer")), str(event.get("claim")))
        elif event.get("op") == "put":
            claim = _claim_from(str(event.get("customer")), event)
            if claim is not None:
                await self._local.put(claim)

    async def _catch_up(self) -> int:
        """Load every shared claim; after an outage also write the local copy back.

        Returns how many claims and tokens were written back. Newest-wins runs on the
        server, so writing back an older claim changes nothing there.
        """
        async with asyncio.timeout(max(self._timeout * 40, 10.0)):
            async for keys in _batches(
                self._client.scan_iter(match=f"{self._prefix}claim:*", count=SCAN_BATCH)
            ):
                async with self._client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hgetall(key)
                    values = await pipe.execute()
                for key, fields in zip(keys, values, strict=True):
                    claim = _claim_from(key.removeprefix(f"{self._prefix}claim:"), fields)
                    if claim is not None:
                        await self._local.put(claim)
            if not self._connected_once:
                self._connected_once = True
                return 0
            return await self._write_back()

    async def _write_back(self) -> int:
        claims = await self._local.claims()
        tokens = self._local.token_entries()
        for start in range(0, len(claims), SCAN_BATCH):
            async with self._client.pipeline(transaction=False) as pipe:
                for claim in claims[start : start + SCAN_BATCH]:
                    keys, args = self._put_arguments(claim)
                    await self._put_script(keys=keys, args=args, client=pipe)
                await pipe.execute()
        async with self._client.pipeline(transaction=False) as pipe:
            for digest, customer in tokens:  # digest.hex() is secret_key(token)
                pipe.set(self._prefix + "token:" + digest.hex(), customer)
            await pipe.execute()
        return len(claims) + len(tokens)

    def _put_arguments(self, claim: Claim) -> tuple[list[str], list[Any]]:
        message = json.dumps({"op": "put", "origin": self._origin, **_claim_fields(claim)})
        keys = [self._claim_key(claim.customer_web_id), self._owner_key(claim.claim)]
        expire_at_ms = int((claim.timestamp + self._retention) * 1000)
        args = [
            claim.timestamp,
            claim.user_id,
            claim.claim,
            claim.source,
            expire_at_ms,
            claim.customer_web_id,
            self._channel,
            message,
            int(claim.refused),
        ]
        return keys, args


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


def _claim_from(customer: str, fields: dict[str, Any]) -> Claim | None:
    try:
        return Claim(
            customer,
            str(fields["user"]),
            str(fields["claim"]),
            int(fields["ts"]),
            str(fields.get("source") or "link"),
            refused=fields.get("refused") in (True, "1"),
        )
    except (KeyError, TypeError, ValueError):
        return None


async def _batches(keys: Any, size: int = SCAN_BATCH) -> Any:
    batch: list[str] = []
    async for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
