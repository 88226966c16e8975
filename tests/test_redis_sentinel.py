"""The Sentinel harness (tests/redis_sentinel.py) itself: the store's failover tests rely on
its topology being what it claims (replicating, password-protected, failing over, rejoining)
and on it leaving no process behind."""

import secrets
import subprocess

import pytest
import redis

from tests.redis_sentinel import SentinelTopology
from tests.redis_server import RedisServer


def _replica_of(topology: SentinelTopology, primary: RedisServer) -> RedisServer:
    (replica,) = (node for node in topology.nodes if node is not primary)
    return replica


def _write_and_replicate(topology: SentinelTopology, primary: RedisServer) -> tuple[str, str]:
    """A fresh key written as the ACL user, acknowledged by the replica (WAIT, bounded)."""
    key, value = f"harness:{secrets.token_hex(4)}", secrets.token_hex(8)
    with topology.client(
        primary, username=topology.username, password=topology.user_password
    ) as client:
        assert client.set(key, value)
        assert client.wait(1, 10_000) == 1
    return key, value


def _running(topology: SentinelTopology) -> list[str]:
    """The processes pgrep finds listening on any of the topology's ports (Redis puts its
    address in its process title)."""
    found = []
    for process in topology.processes:
        pattern = rf"redis-(server|sentinel) 127\.0\.0\.1:{process.port}( |$)"
        result = subprocess.run(["pgrep", "-a", "-f", pattern], capture_output=True, text=True)
        found += result.stdout.splitlines()
    return found


def test_the_replica_holds_what_is_written_on_the_primary(sentinel_topology: SentinelTopology):
    primary = sentinel_topology.node_at(sentinel_topology.primary())
    replica = _replica_of(sentinel_topology, primary)
    key, value = _write_and_replicate(sentinel_topology, primary)
    with sentinel_topology.client(replica, decode_responses=True) as client:
        assert client.get(key) == value
        assert client.info("replication")["role"] == "slave"


def test_every_process_requires_its_password(sentinel_topology: SentinelTopology):
    for process in sentinel_topology.processes:
        with process.probe(password=None) as client, pytest.raises(redis.AuthenticationError):
            client.ping()
        with process.probe(password="wrong") as client, pytest.raises(redis.AuthenticationError):
            client.ping()
    for sentinel in sentinel_topology.sentinels:
        with (
            sentinel.probe(password=sentinel_topology.data_password) as client,
            pytest.raises(redis.AuthenticationError),
        ):
            client.ping()
    primary = sentinel_topology.node_at(sentinel_topology.primary())
    key, value = _write_and_replicate(sentinel_topology, primary)
    for node in sentinel_topology.nodes:
        with sentinel_topology.client(
            node,
            username=sentinel_topology.username,
            password=sentinel_topology.user_password,
            decode_responses=True,
        ) as client:
            assert client.get(key) == value
            assert client.acl_whoami() == sentinel_topology.username


def test_a_killed_primary_is_replaced_by_the_replica(sentinel_topology: SentinelTopology):
    old = sentinel_topology.kill_primary()
    assert not old.running
    sentinel_topology.wait_for_new_primary(old)
    new = sentinel_topology.node_at(sentinel_topology.primary())
    assert new is _replica_of(sentinel_topology, old)
    with sentinel_topology.client(
        new,
        username=sentinel_topology.username,
        password=sentinel_topology.user_password,
        decode_responses=True,
    ) as client:
        assert client.execute_command("ROLE")[0] == "master"
        assert client.set("harness:after-failover", "written")
        assert client.get("harness:after-failover") == "written"
    sentinel_topology.restart(old)  # the next test finds a primary and a replica again


def test_the_restarted_old_primary_becomes_a_replica_of_the_new(
    sentinel_topology: SentinelTopology,
):
    old = sentinel_topology.kill_primary()
    sentinel_topology.wait_for_new_primary(old)
    sentinel_topology.restart(old)
    # Named once the old primary is back: right after the first election a later one (its
    # winner not yet known to every sentinel) may still move the primary elsewhere.
    new = sentinel_topology.node_at(sentinel_topology.primary())
    assert new is not old
    with sentinel_topology.client(old, decode_responses=True) as client:
        info = client.info("replication")
        assert (info["role"], info["master_port"], info["master_link_status"]) == (
            "slave",
            new.port,
            "up",
        )
        with pytest.raises(redis.ReadOnlyError):
            client.set("harness:on-the-replica", "refused")
    key, value = _write_and_replicate(sentinel_topology, new)
    with sentinel_topology.client(old, decode_responses=True) as client:
        assert client.get(key) == value
    for sentinel in sentinel_topology.sentinels:
        with sentinel_topology.sentinel_client(sentinel) as client:
            (replica,) = client.sentinel_slaves(sentinel_topology.service)
        assert (replica["port"], replica["flags"]) == (old.port, "slave")


def test_stop_leaves_no_process_or_directory_behind(
    redis_server_executable: str, redis_sentinel_executable: str
):
    with SentinelTopology(redis_server_executable, redis_sentinel_executable) as topology:
        assert len(_running(topology)) == 5
    assert _running(topology) == []
    assert not any(process.directory.exists() for process in topology.processes)


def test_a_failed_start_stops_what_it_had_started(redis_server_executable: str):
    topology = SentinelTopology(redis_server_executable, sentinel_executable="/bin/false")
    with pytest.raises(RuntimeError, match="redis-sentinel exited 1"):
        topology.start()
    assert len(topology.nodes) == 2
    assert _running(topology) == []
    assert not any(node.directory.exists() for node in topology.nodes)
