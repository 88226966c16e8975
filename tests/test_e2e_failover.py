"""End to end, the shared store fails over (docs/design.md 2.4, 3.2): two real ``claimgate
run`` replicas, while API traffic flows and the primary holding the customer's keys is
SIGKILLed, on Redis managed by three real sentinels (passwords on the data nodes and the
sentinels, an ACL user) and on a six-node Redis Cluster (passwords, an ACL user).

Replica A has the capture listener; replica B only sends API calls. Each request is tagged
with its replica and a sequence number, so what the API double received can be matched
with what had been captured before it was sent.
"""

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from claimgate.fingerprint import fingerprint
from claimgate.store.keys import KeyLayout
from claimgate.testing import ApiDouble, free_port, make_claim
from tests.redis_cluster import ClusterNode, ClusterTopology
from tests.redis_sentinel import SentinelTopology
from tests.redis_server import RedisServer
from tests.support import (
    ADMIN_TOKEN,
    SECRETS_ENV,
    App,
    Customer,
    World,
    admin_get,
    api_request,
    capture_section,
    forward_proxy,
    run_world,
    wait_until,
)

ANSWER_WITHIN = 5.0
"""Seconds every API request may take through a failover (issue 14)."""
RECOVERED_WITHIN = 10.0
"""Seconds after the new primary is known by which both replicas are ready again."""
TRAFFIC_PAUSE = 0.02
"""Between two requests of one replica's traffic: steady, not a load test."""
PREFIX = "failover:"


class SentinelStore:
    """The store behind Sentinel: what claimgate is told, and the failover the test causes."""

    scheme = "redis+sentinel://"

    def __init__(self, topology: SentinelTopology) -> None:
        self.topology = topology

    def settings(self) -> dict[str, str]:
        return {"sentinel_password": "env:TEST_SENTINEL_PASSWORD"}

    def env(self) -> dict[str, str]:
        return {"TEST_SENTINEL_PASSWORD": self.topology.sentinel_password}

    def secrets(self) -> set[str]:
        return {self.topology.sentinel_password}

    def crash(self, customer: Customer) -> RedisServer:
        return self.topology.kill_primary()

    def wait_for_new_primary(self, old: RedisServer, customer: Customer) -> float:
        """When a sentinel names the new primary (SENTINEL get-master-addr-by-name)."""
        return self.topology.wait_for_new_primary(old)

    def stored_claim(self, customer: Customer) -> str | None:
        """The customer's freshest claim as the primary holds it."""
        primary = self.topology.node_at(self.topology.primary())
        with self.topology.client(primary, decode_responses=True) as client:
            return client.hget(KeyLayout(PREFIX, tagged=False).claim(customer.web_id), "claim")


class ClusterStore:
    """The store in a cluster: the primary killed is the one holding the customer's slot."""

    scheme = "redis+cluster://"

    def __init__(self, topology: ClusterTopology) -> None:
        self.topology = topology

    def settings(self) -> dict[str, str]:
        return {}

    def env(self) -> dict[str, str]:
        return {}

    def secrets(self) -> set[str]:
        return set()

    def crash(self, customer: Customer) -> ClusterNode:
        node = self.topology.primary_for(self._key(customer))
        self.topology.kill(node)
        return node

    def wait_for_new_primary(self, old: ClusterNode, customer: Customer) -> float:
        """When every surviving primary reports cluster_state:ok and names the new one in
        CLUSTER SLOTS."""
        return self.topology.wait_for_failover(old, self.topology.slot(self._key(customer)))

    def stored_claim(self, customer: Customer) -> str | None:
        with self.topology.cluster_client(decode_responses=True) as client:
            return client.hget(self._key(customer), "claim")

    @staticmethod
    def _key(customer: Customer) -> str:
        return KeyLayout(PREFIX, tagged=True).claim(customer.web_id)


Store = SentinelStore | ClusterStore


@pytest.fixture(scope="module", params=["sentinel", "cluster"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "sentinel":
        return SentinelStore(request.getfixturevalue("sentinel_topology"))
    return ClusterStore(request.getfixturevalue("cluster_topology"))


@dataclass
class Sent:
    replica: str
    seq: int
    started: float
    status: int | None
    seconds: float


@pytest.fixture(scope="module")
def customer() -> Customer:
    return Customer("81000")


@pytest.fixture(scope="module")
def backends(customer) -> Iterator[tuple[App, ApiDouble]]:
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        yield app, api


def config(tmp: Path, store: Store, app: App, api: ApiDouble, capture: bool, url: str) -> dict:
    sections = {
        "proxy": forward_proxy(tmp, api),
        "claims": {
            "store": url or store.topology.url,
            "store_username": store.topology.username,
            "store_password": "env:TEST_STORE_PASSWORD",
            "store_prefix": PREFIX,
            **store.settings(),
        },
        "admin": {"token": "env:TEST_ADMIN_TOKEN", "shutdown_grace": "2s"},
    }
    if capture:
        sections["capture"] = capture_section(app)
    return sections


def start(
    tmp_path_factory, name, store: Store, backends, customer, capture, url: str = ""
) -> tuple[Iterator, World]:
    app, api = backends
    topology = store.topology
    tmp = tmp_path_factory.mktemp(name)
    env = {**SECRETS_ENV, "TEST_STORE_PASSWORD": topology.user_password, **store.env()}
    sections = config(tmp, store, app, api, capture, url)
    worlds = run_world(tmp, sections, env, app, api, [customer])
    world = next(worlds)
    world.secrets |= {ADMIN_TOKEN, topology.user_password, topology.data_password}
    world.secrets |= store.secrets()
    return worlds, world


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, store, backends, customer):
    started = []
    try:
        for name, capture in (("a", True), ("b", False)):
            started.append(start(tmp_path_factory, name, store, backends, customer, capture))
        yield started[0][1], started[1][1]
    finally:
        for worlds, _ in reversed(started):
            worlds.close()


def holds(world: World, customer: Customer, claim: str) -> bool:
    shown = admin_get(world, f"/claims/{customer.web_id}")
    return shown.status_code == 200 and shown.json()["claim_fp"] == fingerprint(claim)


class Traffic:
    """One thread per replica sending the customer's API requests until stopped (bounded)."""

    def __init__(self, worlds: dict[str, World], customer: Customer, limit: int = 2000) -> None:
        self.worlds, self.customer, self.limit = worlds, customer, limit
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, args=(name,), daemon=True) for name in worlds
        ]

    def __enter__(self) -> "Traffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(ANSWER_WITHIN * 2)

    def _send(self, name: str) -> None:
        world = self.worlds[name]
        for seq in range(self.limit):
            if self._stop.is_set():
                return
            started = time.monotonic()
            headers = {"X-Test-Replica": name, "X-Test-Seq": str(seq)}
            try:
                response = world.client.post(
                    world.api.url,
                    content=api_request(self.customer),
                    headers=headers,
                    timeout=ANSWER_WITHIN * 2,
                )
                status: int | None = response.status_code
            except httpx.HTTPError:
                status = None
            self.sent.append(Sent(name, seq, started, status, time.monotonic() - started))
            time.sleep(TRAFFIC_PAUSE)


def test_a_failover_loses_no_request_and_no_capture(replicas, store, customer):
    a, b = replicas
    topology = store.topology
    a.activate(customer)
    captured: list[tuple[float, str]] = []  # (monotonic time it was captured on A, claim)

    def capture(age: int = 0) -> str:
        claim = make_claim()
        assert a.service_call(customer, claim, int(time.time()) - age).status_code == 200
        a.sidecar.wait_for("claim_captured", lambda e: e["claim_fp"] == fingerprint(claim))
        captured.append((time.monotonic(), claim))
        return claim

    first = capture(age=30)
    steady_before = wait_until(lambda: holds(b, customer, first), RECOVERED_WITHIN)
    steady_before -= captured[-1][0]
    probes: list[tuple[float, float, int]] = []  # (sent, seconds to answer, status)
    with Traffic({"a": a, "b": b}, customer) as traffic:
        time.sleep(0.5)
        old = store.crash(customer)
        killed = time.monotonic()
        during = capture(age=20)  # while no primary is known: kept locally, written later
        probing = threading.Event()

        def probe() -> None:
            while not probing.is_set():
                sent = time.monotonic()
                status = admin_get(a, "/readyz", timeout=ANSWER_WITHIN).status_code
                probes.append((sent, time.monotonic() - sent, status))
                time.sleep(0.1)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        known = store.wait_for_new_primary(old, customer)
        ready_again = wait_until(
            lambda: all(admin_get(w, "/readyz").status_code == 200 for w in (a, b)),
            RECOVERED_WITHIN,
        )
        probing.set()
        prober.join(ANSWER_WITHIN * 2)
        on_b = wait_until(lambda: holds(b, customer, during), RECOVERED_WITHIN)
        time.sleep(0.5)
    assert ready_again - known <= RECOVERED_WITHIN
    assert all(seconds <= 2.0 for _, seconds, _ in probes), "a readiness probe took over 2 s"

    # Every request answered, each within the bound; none went back to an older claim.
    assert traffic.sent and all(s.status == 200 for s in traffic.sent)
    assert max(s.seconds for s in traffic.sent) <= ANSWER_WITHIN
    by_tag = {
        (r.header("x-test-replica"), int(r.header("x-test-seq") or -1)): r
        for r in a.api.requests
        if r.header("x-test-replica")
    }
    order = {claim: index for index, (_, claim) in enumerate(captured)}
    for name in ("a", "b"):
        mine = sorted((s for s in traffic.sent if s.replica == name), key=lambda s: s.seq)
        newest_sent = -1
        for sent in mine:
            (claim,) = by_tag[(name, sent.seq)].claims()
            assert claim in order, "a request went out with a claim nobody captured"
            assert order[claim] >= newest_sent, f"{name} went back to an older claim"
            newest_sent = order[claim]
            if name == "a":  # A captured them itself: never older than what it had
                before = [i for i, (at, _) in enumerate(captured) if at < sent.started]
                assert order[claim] >= max(before, default=0)

    # Once B holds the capture A made during the failover, B's traffic carries it (or newer).
    after = [s for s in traffic.sent if s.replica == "b" and s.started > on_b]
    assert after, "B sent nothing after it held the failover's capture"
    for sent in after:
        (claim,) = by_tag[("b", sent.seq)].claims()
        assert order[claim] >= order[during]

    # The old primary back, now a replica: no store error anywhere (READONLY would be one),
    # and the newer claim stays.
    errors_before = {name: len(w.sidecar.events("store_error")) for name, w in (("a", a), ("b", b))}
    topology.restart(old)
    capture(age=10)
    steady_after = wait_until(lambda: holds(b, customer, captured[-1][1]), RECOVERED_WITHIN)
    steady_after -= captured[-1][0]
    assert a.service_call(customer, make_claim(), int(time.time()) - 60).status_code == 200
    received, _ = b.call_api(api_request(customer))
    assert received.claims() == [captured[-1][1]]  # the older call replaced nothing
    assert holds(a, customer, captured[-1][1])  # on the replica that captured it neither
    assert store.stored_claim(customer) == captured[-1][1]  # nor in the store
    for name, world in (("a", a), ("b", b)):
        assert world.sidecar.events("store_error")[errors_before[name] :] == []
    measured = {
        "new_primary_known_s": known - killed,
        "requests": len(traffic.sent),
        "slowest_request_s": max(s.seconds for s in traffic.sent),
        "not_ready_probes": sum(1 for *_, status in probes if status != 200),
        "ready_again_s": ready_again - known,
        "capture_on_b_s": on_b - known,
        "a_to_b_before_s": steady_before,  # from A's claim_captured line to B's /claims
        "a_to_b_after_s": steady_after,
    }
    print(f"failover measured ({store.scheme}): {measured}")


def test_a_replica_started_after_the_failover_injects_the_newest_claim(
    replicas, tmp_path_factory, store, backends, customer
):
    """It starts while the first sentinel or node it lists does not answer: any one will do."""
    a, _ = replicas
    newest = make_claim()
    assert a.service_call(customer, newest).status_code == 200
    a.sidecar.wait_for("claim_captured", lambda e: e["claim_fp"] == fingerprint(newest))
    nobody = f"127.0.0.1:{free_port()}"
    url = store.topology.url.replace(store.scheme, f"{store.scheme}{nobody},", 1)
    worlds, late = start(tmp_path_factory, "late", store, backends, customer, False, url)
    try:
        wait_until(lambda: admin_get(late, "/readyz").status_code == 200, RECOVERED_WITHIN)
        received, _ = late.call_api(api_request(customer))
        assert received.claims() == [newest]
    finally:
        worlds.close()
