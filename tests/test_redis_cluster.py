"""The cluster harness (tests/redis_cluster.py) itself: the store's cluster tests rely on its
cluster being what it claims (all slots served by three replicated primaries, password- and
ACL-protected, failing over on a crash, taking the crashed node back as a replica) and on it
leaving no process behind."""

import secrets
import subprocess

import pytest
import redis

from tests.redis_cluster import SLOTS, ClusterNode, ClusterTopology


def _keys_on_every_primary(topology: ClusterTopology) -> dict[ClusterNode, str]:
    """A fresh key for each primary: keys in different slots, on different nodes."""
    keys: dict[ClusterNode, str] = {}
    while len(keys) < len(topology.primaries()):
        key = f"harness:{secrets.token_hex(4)}"
        keys.setdefault(topology.primary_for(key), key)
    return keys


def _write_and_replicate(topology: ClusterTopology, key: str) -> str:
    """A fresh value for ``key``, written as the ACL user on the primary of its slot and
    acknowledged by that primary's replica (WAIT, bounded)."""
    value = secrets.token_hex(8)
    with topology.client(
        topology.primary_for(key), username=topology.username, password=topology.user_password
    ) as client:
        assert client.set(key, value)
        assert client.wait(1, 10_000) == 1
    return value


def _running(topology: ClusterTopology) -> list[str]:
    """The processes pgrep finds listening on any of the topology's ports (Redis puts its
    address in its process title)."""
    found = []
    for node in topology.nodes:
        pattern = rf"redis-server 127\.0\.0\.1:{node.port}( |$)"
        result = subprocess.run(["pgrep", "-a", "-f", pattern], capture_output=True, text=True)
        found += result.stdout.splitlines()
    return found


def test_three_replicated_primaries_serve_every_slot(cluster_topology: ClusterTopology):
    for node in cluster_topology.nodes:
        info = cluster_topology.info(node)
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == info["cluster_slots_ok"] == str(SLOTS)
        assert (info["cluster_size"], info["cluster_known_nodes"]) == ("3", "6")
    primaries = cluster_topology.primaries()
    assert len(primaries) == 3
    replicas = {cluster_topology.replica_of(primary) for primary in primaries}
    assert replicas == set(cluster_topology.nodes) - set(primaries)
    for primary in primaries:
        with cluster_topology.client(cluster_topology.replica_of(primary)) as client:
            info = client.info("replication")
        assert (info["role"], info["master_port"], info["master_link_status"]) == (
            "slave",
            primary.port,
            "up",
        )
    with cluster_topology.client(primaries[0], decode_responses=True) as client:
        ranges = sorted(
            (first, last) for first, last, *_ in client.execute_command("CLUSTER", "SLOTS")
        )
    assert [first for first, _ in ranges] == [0, *(last + 1 for _, last in ranges[:-1])]
    assert ranges[-1][1] == SLOTS - 1


def test_every_node_requires_its_password(cluster_topology: ClusterTopology):
    for node in cluster_topology.nodes:
        for options in (
            {"password": None},
            {"password": "wrong"},
            {"username": cluster_topology.username, "password": cluster_topology.data_password},
        ):
            with node.probe(**options) as client, pytest.raises(redis.AuthenticationError):
                client.ping()
    with pytest.raises(redis.RedisClusterException, match="invalid username-password pair"):
        cluster_topology.cluster_client(password="wrong")


def test_the_acl_user_writes_and_reads_keys_in_every_slot_range(
    cluster_topology: ClusterTopology,
):
    keys = _keys_on_every_primary(cluster_topology)
    assert len({cluster_topology.slot(key) for key in keys.values()}) == 3
    values = {key: secrets.token_hex(8) for key in keys.values()}
    with cluster_topology.cluster_client(decode_responses=True) as client:
        for key, value in values.items():
            assert client.set(key, value)
        assert {key: client.get(key) for key in values} == values
    for primary, key in keys.items():
        with cluster_topology.client(
            primary,
            username=cluster_topology.username,
            password=cluster_topology.user_password,
            decode_responses=True,
        ) as client:
            assert client.acl_whoami() == cluster_topology.username
            assert client.get(key) == values[key]


def test_a_killed_primary_is_replaced_by_its_replica(cluster_topology: ClusterTopology):
    key = f"harness:{secrets.token_hex(4)}"
    old = cluster_topology.primary_for(key)
    replica = cluster_topology.replica_of(old)
    value = _write_and_replicate(cluster_topology, key)
    cluster_topology.kill(old)
    assert not old.running
    cluster_topology.wait_for_failover(old, cluster_topology.slot(key))
    assert cluster_topology.primary_for(key) is replica
    with cluster_topology.client(
        replica,
        username=cluster_topology.username,
        password=cluster_topology.user_password,
        decode_responses=True,
    ) as client:
        assert client.execute_command("ROLE")[0] == "master"
        assert client.get(key) == value
    with cluster_topology.cluster_client(decode_responses=True) as client:
        assert client.get(key) == value
        assert client.set(key, "after the failover")
    cluster_topology.restart(old)  # the next test finds three replicated primaries again


def test_the_restarted_old_primary_becomes_a_replica_of_the_new(
    cluster_topology: ClusterTopology,
):
    key = f"harness:{secrets.token_hex(4)}"
    old = cluster_topology.primary_for(key)
    cluster_topology.kill(old)
    cluster_topology.wait_for_failover(old, cluster_topology.slot(key))
    new = cluster_topology.primary_for(key)
    cluster_topology.restart(old)
    assert cluster_topology.replica_of(new) is old
    with cluster_topology.client(old, decode_responses=True) as client:
        info = client.info("replication")
        assert (info["role"], info["master_port"], info["master_link_status"]) == (
            "slave",
            new.port,
            "up",
        )
        with pytest.raises(redis.exceptions.MovedError, match=str(new.port)):
            client.set(key, "refused")
    value = _write_and_replicate(cluster_topology, key)
    with cluster_topology.client(old, decode_responses=True) as client:
        assert client.readonly()  # a replica answers reads of its primary's slots, if asked
        assert client.get(key) == value
    with cluster_topology.cluster_client(decode_responses=True) as client:
        assert client.set(key, "after the rejoin")  # routed to the new primary: no READONLY
        assert client.get(key) == "after the rejoin"


def test_a_migrated_slot_answers_ask_halfway_then_moved_and_keeps_its_keys(
    cluster_topology: ClusterTopology,
):
    key = f"harness:{secrets.token_hex(4)}"
    source = cluster_topology.primary_for(key)
    target = next(node for node in cluster_topology.primaries() if node is not source)
    value = _write_and_replicate(cluster_topology, key)
    redirects: list[type[Exception]] = []

    def write_to(node: ClusterNode) -> None:
        with cluster_topology.client(node) as client:
            try:
                client.set(key, "at the old owner")
            except (redis.exceptions.AskError, redis.exceptions.MovedError) as redirect:
                redirects.append(type(redirect))

    cluster_topology.migrate(cluster_topology.slot(key), target, lambda: write_to(source))
    write_to(source)
    assert redirects == [redis.exceptions.AskError, redis.exceptions.MovedError]
    assert cluster_topology.primary_for(key) is target
    with cluster_topology.cluster_client(decode_responses=True) as client:
        assert client.get(key) == value


def test_stop_leaves_no_process_or_directory_behind(redis_server_executable: str):
    with ClusterTopology(redis_server_executable) as topology:
        assert len(_running(topology)) == 6
    assert _running(topology) == []
    assert not any(node.directory.exists() for node in topology.nodes)


def test_a_failed_start_stops_what_it_had_started(
    redis_server_executable: str, monkeypatch: pytest.MonkeyPatch
):
    topology = ClusterTopology(redis_server_executable)

    def fail() -> None:
        raise RuntimeError("the cluster did not form")

    monkeypatch.setattr(topology, "_form", fail)
    with pytest.raises(RuntimeError, match="did not form"):
        topology.start()
    assert len(topology.nodes) == 6
    assert _running(topology) == []
    assert not any(node.directory.exists() for node in topology.nodes)
