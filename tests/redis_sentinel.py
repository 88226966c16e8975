"""A real Redis Sentinel topology for tests: a primary, a replica and three sentinels.

The store's failover (issue 14) is only proven against Debian's own ``redis-server`` and
``redis-sentinel``, so :class:`SentinelTopology` starts them on loopback and free ports, with
passwords everywhere a deployment would set them, and lets a test crash the primary
(SIGKILL), wait for the sentinels' election and bring the old primary back. Every wait is
bounded and, when it runs out, quotes the processes' logs. Missing ``redis-sentinel`` fails
the test naming ``./dev setup`` rather than skipping it, as for ``redis-server``.

The repository's conftest.py registers the ``sentinel_topology`` fixture for every module.
"""

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.redis_server import (
    RedisProcess,
    RedisServer,
    Topology,
    config_value,
    ensure_redis_server,
)
from tests.system import ensure_executable

READY_TIMEOUT = 30.0
"""Seconds for the sentinels to find the replica and each other (hello messages: every 2 s)."""
DOWN_AFTER_MS = 3000
"""How long a primary may be silent before a sentinel suspects it. Not less: on a loaded
2-core machine a healthy primary can pause for over a second, and a second, spurious
failover then promotes the node a test just restarted."""
FAILOVER_TIMEOUT = 30.0
"""Seconds from a crash to a new primary: down-after (3 s), the vote, the promotion; a second
failover of the same service may wait out twice the failover-timeout (10 s) first."""
REJOIN_TIMEOUT = 60.0
"""Seconds for a restarted node to become a replica: a sentinel lets a node that reports
itself primary alone for 8 s, and may look at it only every 10 s, before it reconfigures it."""
QUORUM = 2
SENTINELS = 3


class SentinelProcess(RedisProcess):
    """One ``redis-sentinel``: it must have a config file of its own, which it rewrites."""

    program = "redis-sentinel"

    def defaults(self) -> list[str]:
        return [*super().defaults(), "loglevel notice"]  # notice: its +sdown, +switch-master...


class SentinelTopology(Topology):
    """A primary, one replica and three sentinels on 127.0.0.1, each on a free port.

    Both data nodes require ``data_password`` (also their ``masterauth``, so either can
    replicate from the other) and know the ACL user ``username``/``user_password``, which
    the sentinels use to talk to them. The sentinels require ``sentinel_password``. Nodes
    are :class:`RedisServer` objects (``nodes``); :meth:`primary` is a sentinel's view.
    Use it as a context manager: :meth:`stop` ends every process, also when start fails.
    """

    def __init__(
        self,
        executable: str | None = None,
        sentinel_executable: str | None = None,
        service: str = "claimgate",
    ) -> None:
        self.executable = executable or ensure_redis_server()
        self.sentinel_executable = sentinel_executable or ensure_executable("redis-sentinel")
        self.service = service
        self.data_password = secrets.token_hex(16)
        self.sentinel_password = secrets.token_hex(16)
        self.username = "claimgate"
        self.user_password = secrets.token_hex(16)
        self.nodes: tuple[RedisServer, ...] = ()
        self.sentinels: tuple[SentinelProcess, ...] = ()
        self._stack = contextlib.ExitStack()

    @property
    def url(self) -> str:
        """``claims.store`` for claimgate; the passwords go in their own settings."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    @property
    def processes(self) -> tuple[RedisProcess, ...]:
        return (*self.nodes, *self.sentinels)

    def start(self) -> None:
        """Start the primary, then the replica, then the sentinels (each config names the
        port of what came before), and return once every sentinel sees the whole topology."""
        try:
            primary = self._data_node()
            replica = self._data_node(f"replicaof 127.0.0.1 {primary.port}")
            self.nodes = (primary, replica)
            self.sentinels = tuple(self._sentinel(primary) for _ in range(SENTINELS))
            self._poll(lambda: self._healthy(primary, replica), READY_TIMEOUT, "no topology")
        except BaseException:
            self.stop()
            raise

    def _data_node(self, *settings: str) -> RedisServer:
        node = RedisServer(
            self.executable,
            self.data_password,
            [
                f"masterauth {config_value(self.data_password)}",
                f"user {self.username} on {config_value('>' + self.user_password)} ~* &* +@all",
                "loglevel notice",  # replication's steps, for the tails quoted on failure
                "repl-diskless-sync-delay 0",  # a full sync at once, not after 5 s
                *settings,
            ],
        )
        return self._stack.enter_context(node)

    def _sentinel(self, primary: RedisServer) -> SentinelProcess:
        service = self.service
        sentinel = SentinelProcess(
            self.sentinel_executable,
            self.sentinel_password,  # requirepass: also what it sends to the other sentinels
            [
                "sentinel resolve-hostnames no",
                "sentinel announce-hostnames no",
                f"sentinel monitor {service} 127.0.0.1 {primary.port} {QUORUM}",
                f"sentinel down-after-milliseconds {service} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {service} 5000",
                f"sentinel parallel-syncs {service} 1",
                f"sentinel auth-user {service} {self.username}",
                f"sentinel auth-pass {service} {config_value(self.user_password)}",
            ],
        )
        return self._stack.enter_context(sentinel)

    def stop(self) -> None:
        """Every process this topology started, sentinels first (no failover while the data
        nodes go), and their directories; each is stopped even when another fails to."""
        self._stack.close()

    def sentinel_client(
        self, sentinel: SentinelProcess | None = None, **options: Any
    ) -> redis.Redis:
        """A client of ``sentinel`` (the first one by default), with the sentinel password."""
        return (sentinel or self.sentinels[0]).client(**options)

    def client(self, node: RedisServer, **options: Any) -> redis.Redis:
        """A client of a data node as the default user; pass ``username``/``password`` (e.g.
        ``self.username``, ``self.user_password``) to be the ACL user."""
        return node.client(**options)

    def node_at(self, address: tuple[str, int]) -> RedisServer:
        for node in self.nodes:
            if node.address == tuple(address):
                return node
        raise LookupError(f"no node of this topology is at {address}")

    def primary(self) -> tuple[str, int]:
        """The primary's address as the sentinels name it; where they differ, the one with the
        highest config epoch, the newest election, among the nodes that answer ``ROLE`` as
        master. During a failover the sentinel that leads it names the promoted replica
        before its epoch moves, while the others still name the dead primary at that epoch."""
        named: list[tuple[int, tuple[str, int]]] = []
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                address = self._named_by(sentinel)
                with sentinel.probe(decode_responses=True) as client:
                    epoch = client.sentinel_master(self.service)["config-epoch"]
                if address is not None:
                    named.append((epoch, address))
        acting = [(epoch, address) for epoch, address in named if self._acts_as_primary(address)]
        if not acting:
            raise RuntimeError(f"no sentinel names a running primary for {self.service}: {named}")
        return max(acting)[1]

    def _acts_as_primary(self, address: tuple[str, int]) -> bool:
        try:
            return self._role(self.node_at(address)) == "master"
        except redis.RedisError:  # down, or still loading
            return False

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary the sentinels name, as in a crash; returns that node."""
        node = self.node_at(self.primary())
        if not node.running:
            raise RuntimeError(f"the sentinels name port {node.port}, which is not running")
        node.kill()
        return node

    def wait_for_new_primary(self, old: RedisServer, timeout: float = FAILOVER_TIMEOUT) -> float:
        """Returns the monotonic time at which a sentinel named a primary other than ``old``
        and that node answered ``ROLE`` as master."""

        def elected() -> bool:
            for sentinel in self.sentinels:
                address = self._named_by(sentinel)
                if address is not None and address != old.address:
                    return self._role(self.node_at(address)) == "master"
            return False

        return self._poll(elected, timeout, f"no primary replaced port {old.port}")

    def restart(self, node: RedisServer, timeout: float = REJOIN_TIMEOUT) -> None:
        """Start a killed node again on its port, from its config file as it was at the kill
        (a node killed as primary comes back as one, empty, which no sentinel names); return
        once the sentinels have made it a replica of the primary all of them name, its link
        is up and every sentinel reaches it (it can be promoted in the next failover)."""
        if node.running:
            raise RuntimeError(f"port {node.port} is still running: kill it first")
        node.start()

        def rejoined() -> bool:
            address = self._named_by(self.sentinels[0])
            if address is None or address == node.address:
                return False
            return self._healthy(self.node_at(address), node)

        self._poll(rejoined, timeout, f"port {node.port} did not rejoin as a replica")

    def _named_by(self, sentinel: SentinelProcess) -> tuple[str, int] | None:
        with sentinel.probe(decode_responses=True) as client:
            address = client.sentinel_get_master_addr_by_name(self.service)
        return None if address is None else (str(address[0]), int(address[1]))

    def _role(self, node: RedisServer) -> str:
        with node.probe(decode_responses=True) as client:
            return str(client.execute_command("ROLE")[0])

    def _replicates(self, replica: RedisServer, primary: RedisServer) -> bool:
        with replica.probe(decode_responses=True) as client:
            info = client.info("replication")
        return (
            info["role"] == "slave"
            and info["master_port"] == primary.port
            and info["master_link_status"] == "up"
        )

    def _healthy(self, primary: RedisServer, replica: RedisServer) -> bool:
        """``replica`` syncs from ``primary``, and every sentinel names that primary, reaches
        the replica and knows the other sentinels: a failover can be voted and promote it.

        A sentinel's own view of the replica's link (``master-link-status``) is not awaited:
        it is refreshed from INFO only every 10 s, and every second once the primary is down."""
        if not self._replicates(replica, primary):
            return False
        for sentinel in self.sentinels:
            if self._named_by(sentinel) != primary.address:
                return False
            with sentinel.probe(decode_responses=True) as client:
                replicas = client.sentinel_slaves(self.service)
                others = client.sentinel_sentinels(self.service)
            if not any(
                entry["port"] == replica.port and entry["flags"] == "slave" for entry in replicas
            ):
                return False
            if len(others) != SENTINELS - 1 or any(entry["is_sdown"] for entry in others):
                return False
        return True


@pytest.fixture(scope="session")
def redis_sentinel_executable() -> str:
    """Looked up once per run; when it is missing, every test that needs a sentinel fails."""
    return ensure_executable("redis-sentinel")


@pytest.fixture(scope="module")
def sentinel_topology(
    redis_server_executable: str, redis_sentinel_executable: str
) -> Iterator[SentinelTopology]:
    """One topology per module (starting one takes seconds); a test that kills a node
    restarts it, so that the next one finds a primary and a replica again."""
    with SentinelTopology(redis_server_executable, redis_sentinel_executable) as topology:
        yield topology
