"""A real Redis Cluster for tests: three primaries, each with one replica.

The store's cluster mode (issue 14) is only proven against Debian's own ``redis-server``, so
:class:`ClusterTopology` starts six of them on loopback and free ports, with the passwords a
deployment would set, forms the cluster and lets a test crash the primary holding a key's
slot (SIGKILL), wait for its replica's election and bring the old primary back as a replica.
Every wait is bounded and, when it runs out, quotes the nodes' logs.

The cluster is formed from Python (ADDSLOTSRANGE, MEET, REPLICATE) rather than with
``redis-cli --cluster create``: which node replicates which is then fixed (node ``i + 3``
replicates node ``i``), the password stays off command lines, and the wait for the cluster
to settle is this module's own, bounded and quoting logs. The conftest.py of the repository
registers the ``cluster_topology`` fixture for every module.
"""

import contextlib
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.cluster

from claimgate.testing import free_port
from tests.redis_server import RedisServer, Topology, config_value, ensure_redis_server

SLOTS = 16384
PRIMARIES = 3
NODE_TIMEOUT_MS = 3000
"""cluster-node-timeout: a silent primary is suspected after 3 s, so a failover takes seconds.
Not less: on a loaded 2-core machine a healthy node can pause for over a second."""
FORM_TIMEOUT = 30.0
"""Seconds for six fresh nodes to meet through gossip, sync the replicas and agree."""
FAILOVER_TIMEOUT = 30.0
"""Seconds from a crash to a new primary everywhere: the node timeout (1 s), the primaries'
FAIL verdict, the replica's election delay (0.5-1 s), the vote, the gossip of the result."""
MIGRATE_TIMEOUT = 30.0
"""Seconds for every primary to name a migrated slot's new owner (gossip of a bumped epoch)."""
REJOIN_TIMEOUT = 30.0
"""Seconds for a restarted node to learn that its slots moved, become a replica, full-sync
and be seen as healthy by every other node."""
BAD_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})


class ClusterNode(RedisServer):
    """One cluster node: its bus on a free port of its own (the default, port + 10000, may be
    taken or above 65535), its state in ``nodes.conf`` in its directory, which it rewrites
    and which a restart reads, so that a killed node comes back as the same node."""

    def __init__(
        self, executable: str, password: str | None = None, settings: Sequence[str] = ()
    ) -> None:
        super().__init__(executable, password, settings)
        self.bus_port = free_port()

    @property
    def nodes_file(self) -> str:
        return str(self.directory / "nodes.conf")

    def choose_ports(self) -> None:
        super().choose_ports()
        self.bus_port = free_port()

    def arguments(self) -> list[str]:
        return [*super().arguments(), "--cluster-port", str(self.bus_port)]

    def defaults(self) -> list[str]:
        return [
            *super().defaults(),
            "cluster-enabled yes",
            f"cluster-config-file {config_value(self.nodes_file)}",
            "cluster-announce-ip 127.0.0.1",  # its own address in CLUSTER SLOTS from the start
        ]


@dataclass(frozen=True)
class Entry:
    """One line of CLUSTER NODES: a node as another node (or itself) sees it."""

    id: str
    address: tuple[str, int]
    flags: frozenset[str]
    primary_id: str | None
    connected: bool
    slots: int

    @classmethod
    def parse(cls, line: str) -> "Entry":
        node_id, address, flags, primary_id, _, _, _, link, *ranges = line.split()
        host, _, port = address.split("@")[0].rpartition(":")
        slots = 0
        for item in ranges:
            if not item.startswith("["):  # "[slot->-id]": a slot being migrated, not owned
                first, _, last = item.partition("-")
                slots += int(last or first) - int(first) + 1
        return cls(
            node_id,
            (host, int(port)),
            frozenset(flags.split(",")),
            None if primary_id == "-" else primary_id,
            link == "connected",
            slots,
        )

    @property
    def primary(self) -> bool:
        return "master" in self.flags


class ClusterTopology(Topology):
    """Six nodes on 127.0.0.1 formed into a cluster of three primaries with a replica each.

    Every node requires ``data_password`` (also its ``masterauth``, so any node can replicate
    from any other) and knows the ACL user ``username``/``user_password``. Nodes are
    :class:`ClusterNode` objects (``nodes``); which is a primary changes with failovers, so
    ask :meth:`primary_for`. Use it as a context manager: :meth:`stop` ends every process,
    also when start fails.
    """

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or ensure_redis_server()
        self.data_password = secrets.token_hex(16)
        self.username = "claimgate"
        self.user_password = secrets.token_hex(16)
        self.nodes: tuple[ClusterNode, ...] = ()
        self._stack = contextlib.ExitStack()

    @property
    def url(self) -> str:
        """``claims.store`` for claimgate; the passwords go in their own settings."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/"

    @property
    def processes(self) -> tuple[ClusterNode, ...]:
        return self.nodes

    def start(self) -> None:
        """Start the six nodes, form the cluster and return once every node agrees on it."""
        try:
            self.nodes = tuple(self._node() for _ in range(2 * PRIMARIES))
            self._form()
        except BaseException:
            self.stop()
            raise

    def _node(self) -> ClusterNode:
        node = ClusterNode(
            self.executable,
            self.data_password,
            [
                f"masterauth {config_value(self.data_password)}",
                f"user {self.username} on {config_value('>' + self.user_password)} ~* &* +@all",
                f"cluster-node-timeout {NODE_TIMEOUT_MS}",
                "loglevel notice",  # the cluster's and replication's steps, for the log tails
                "repl-diskless-sync-delay 0",  # a full sync at once, not after 5 s
            ],
        )
        return self._stack.enter_context(node)

    def _form(self) -> None:
        """Slots in three equal ranges, distinct config epochs (as redis-cli sets them, so no
        epoch collision has to be resolved), one MEET per node (gossip does the rest), then
        node ``i + 3`` replicates node ``i``."""
        primaries, replicas = self.nodes[:PRIMARIES], self.nodes[PRIMARIES:]
        for index, node in enumerate(primaries):
            with node.probe() as client:
                first, last = index * SLOTS // PRIMARIES, (index + 1) * SLOTS // PRIMARIES - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
        with self.nodes[0].probe() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        self._poll(self._all_met, FORM_TIMEOUT, "the nodes did not all meet")
        for replica, primary in zip(replicas, primaries, strict=True):
            with replica.probe() as client:
                client.execute_command("CLUSTER", "REPLICATE", self.node_id(primary))
        self._poll(self._healthy, FORM_TIMEOUT, "the cluster did not form")

    def stop(self) -> None:
        """Every node this topology started, and their directories; each is stopped even
        when another fails to."""
        self._stack.close()

    def client(self, node: ClusterNode, **options: Any) -> redis.Redis:
        """A client of one node as the default user; pass ``username``/``password`` (e.g.
        ``self.username``, ``self.user_password``) to be the ACL user."""
        return node.client(**options)

    def cluster_client(self, **options: Any) -> redis.cluster.RedisCluster:
        """A cluster-aware client, as the ACL user unless ``username``/``password`` say
        otherwise, starting from every running node."""
        options = {"username": self.username, "password": self.user_password, **options}
        startup = [redis.cluster.ClusterNode(*node.address) for node in self.running]
        return redis.cluster.RedisCluster(startup_nodes=startup, **options)

    @property
    def running(self) -> tuple[ClusterNode, ...]:
        return tuple(node for node in self.nodes if node.running)

    def node_at(self, address: Sequence[str | int]) -> ClusterNode:
        for node in self.nodes:
            if node.address == (str(address[0]), int(address[1])):
                return node
        raise LookupError(f"no node of this topology is at {address}")

    def node_id(self, node: ClusterNode) -> str:
        with node.probe(decode_responses=True) as client:
            return str(client.execute_command("CLUSTER", "MYID"))

    def view(self, node: ClusterNode) -> list[Entry]:
        """The cluster as ``node`` sees it (CLUSTER NODES)."""
        with node.probe(decode_responses=True) as client:
            text = client.execute_command("CLUSTER", "NODES")
        return [Entry.parse(line) for line in text.splitlines() if line.strip()]

    def info(self, node: ClusterNode) -> dict[str, str]:
        """CLUSTER INFO of ``node``: ``cluster_state``, ``cluster_known_nodes``..."""
        with node.probe(decode_responses=True) as client:
            text = client.execute_command("CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def slot(self, key: str) -> int:
        with self.running[0].probe() as client:
            return int(client.execute_command("CLUSTER", "KEYSLOT", key))

    def primaries(self) -> tuple[ClusterNode, ...]:
        """The running nodes that report themselves primary (ROLE)."""
        return tuple(node for node in self.running if self._role(node) == "master")

    def primary_for(self, key: str) -> ClusterNode:
        """The node holding ``key``'s slot, as every running primary's CLUSTER SLOTS names it
        (it may be a killed node until the failover is known: see :meth:`wait_for_failover`)."""
        return self.primary_for_slot(self.slot(key))

    def replica_of(self, primary: ClusterNode) -> ClusterNode:
        """The one replica of ``primary``, as ``primary`` sees the cluster."""
        entries = self.view(primary)
        (own,) = (entry for entry in entries if "myself" in entry.flags)
        (replica,) = (entry for entry in entries if entry.primary_id == own.id)
        return self.node_at(replica.address)

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL, as in a crash: no goodbye to the other nodes, which must notice."""
        if not node.running:
            raise RuntimeError(f"port {node.port} is not running")
        node.kill()

    def wait_for_failover(
        self, old: ClusterNode, slot: int, timeout: float = FAILOVER_TIMEOUT
    ) -> float:
        """Returns the monotonic time at which every surviving primary (three of them: the
        promoted replica among them) reports ``cluster_state:ok`` and names in CLUSTER SLOTS
        one and the same new primary for ``slot``, itself a primary."""

        def failed_over() -> bool:
            primaries = self.primaries()
            if len(primaries) != PRIMARIES:
                return False
            if any(self.info(node)["cluster_state"] != "ok" for node in primaries):
                return False
            named = {self._owner(node, slot) for node in primaries}
            return len(named) == 1 and self.node_at(named.pop()) in primaries

        return self._poll(failed_over, timeout, f"no primary replaced port {old.port}")

    def restart(self, node: ClusterNode, timeout: float = REJOIN_TIMEOUT) -> float:
        """Start a killed node again on its ports from its own ``nodes.conf``, after the
        failover that replaced it (before it, it would come back as the slots' primary,
        empty); returns the monotonic time at which it is a replica with its link up and the
        whole cluster is healthy again (so that the next failover can happen)."""
        if node.running:
            raise RuntimeError(f"port {node.port} is still running: kill it first")
        node.start()

        def rejoined() -> bool:
            with node.probe(decode_responses=True) as client:
                replication = client.info("replication")
            return (
                replication["role"] == "slave"
                and replication["master_link_status"] == "up"
                and self._healthy()
            )

        return self._poll(rejoined, timeout, f"port {node.port} did not rejoin as a replica")

    def migrate(
        self,
        slot: int,
        target: ClusterNode,
        halfway: Callable[[], object] = lambda: None,
        timeout: float = MIGRATE_TIMEOUT,
    ) -> float:
        """Move ``slot`` and its keys to the primary ``target``, the steps ``redis-cli
        --cluster reshard`` takes: IMPORTING on the target, MIGRATING on the source, MIGRATE
        of the keys, then SETSLOT NODE on the target, the source and every other primary.
        ``halfway`` runs once the keys have moved while the slot is still migrating: the
        source answers ASK for them then, and MOVED once the move is done. Returns the
        monotonic time at which every primary's CLUSTER SLOTS names ``target``."""
        source = self.primary_for_slot(slot)
        if source is target:
            raise RuntimeError(f"slot {slot} is on port {target.port} already")
        source_id, target_id = self.node_id(source), self.node_id(target)
        with target.probe(decode_responses=True) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        with source.probe(decode_responses=True) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                client.execute_command(
                    "MIGRATE", *target.address, "", 0, 5000,
                    "AUTH", self.data_password, "KEYS", *keys,
                )  # fmt: skip
        halfway()
        others = [node for node in self.primaries() if node not in (target, source)]
        for node in (target, source, *others):
            with node.probe() as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

        def moved() -> bool:
            return all(self._owner(node, slot) == target.address for node in self.primaries())

        return self._poll(moved, timeout, f"slot {slot} did not move to port {target.port}")

    def primary_for_slot(self, slot: int) -> ClusterNode:
        """The node every running primary's CLUSTER SLOTS names for ``slot``."""
        named = {self._owner(node, slot) for node in self.primaries()}
        if len(named) != 1 or None in named:
            raise RuntimeError(f"the primaries disagree on the owner of slot {slot}: {named}")
        return self.node_at(named.pop())

    def _role(self, node: ClusterNode) -> str:
        with node.probe(decode_responses=True) as client:
            return str(client.execute_command("ROLE")[0])

    def _owner(self, node: ClusterNode, slot: int) -> tuple[str, int] | None:
        """The primary that ``node``'s CLUSTER SLOTS names for ``slot``, if any."""
        with node.probe(decode_responses=True) as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        for first, last, primary, *_ in ranges:
            if int(first) <= slot <= int(last):
                return (str(primary[0]), int(primary[1]))
        return None

    def _all_met(self) -> bool:
        return all(
            len(entries) == len(self.nodes)
            and all(entry.connected and not entry.flags & BAD_FLAGS for entry in entries)
            for entries in map(self.view, self.nodes)
        )

    def _healthy(self) -> bool:
        """Every node runs, reports ``cluster_state:ok`` with all slots served, and sees three
        primaries with one connected replica each and no node failing; every replica's link
        to its primary is up."""
        if len(self.running) != len(self.nodes):
            return False
        for node in self.nodes:
            info = self.info(node)
            if (info["cluster_state"], info["cluster_slots_ok"]) != ("ok", str(SLOTS)):
                return False
            if not self._sound(self.view(node)):
                return False
        for node in self.nodes:
            with node.probe(decode_responses=True) as client:
                replication = client.info("replication")
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
        return True

    def _sound(self, entries: list[Entry]) -> bool:
        """Three primaries own all slots, each has exactly one replica, nothing is failing."""
        if len(entries) != len(self.nodes) or any(
            not entry.connected or entry.flags & BAD_FLAGS for entry in entries
        ):
            return False
        primaries = [entry for entry in entries if entry.primary]
        if len(primaries) != PRIMARIES or sum(entry.slots for entry in primaries) != SLOTS:
            return False
        followers = sorted(entry.primary_id or "" for entry in entries if not entry.primary)
        return followers == sorted(entry.id for entry in primaries)


@pytest.fixture(scope="module")
def cluster_topology(redis_server_executable: str) -> Iterator[ClusterTopology]:
    """One cluster per module (forming one takes seconds); a test that kills a node
    restarts it, so that the next one finds three primaries with a replica each again."""
    with ClusterTopology(redis_server_executable) as topology:
        yield topology
