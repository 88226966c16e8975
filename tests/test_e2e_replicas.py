"""End to end, several replicas on one Redis: two real ``claimgate run`` processes, a real
``redis-server`` killed and restarted mid-traffic, and a claimgate restart.

Replica A has the capture listener (the service call reached its pod); replica B only sends
API calls (the integration's request left from another pod).
"""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from claimgate.fingerprint import fingerprint
from claimgate.testing import ApiDouble, make_claim
from tests.redis_server import RedisServer, ensure_redis_server
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
    scrape,
    wait_until,
)

SHARED_WITHIN = 10.0
"""How long a claim captured on one replica may take to reach another here: a bound that
holds on a loaded machine, not a measurement (the latency is for benchmarks)."""


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer(ensure_redis_server()) as server:
        yield server


@pytest.fixture(scope="module")
def customers() -> list[Customer]:
    return [Customer(str(51000 + i)) for i in range(4)]


@pytest.fixture(scope="module")
def backends(customers) -> Iterator[tuple[App, ApiDouble]]:
    with App() as app, ApiDouble({c.token: c.secret for c in customers}) as api:
        yield app, api


def replica_config(tmp: Path, redis: RedisServer, app: App, api: ApiDouble, capture: bool):
    config = {
        "proxy": forward_proxy(tmp, api),
        "claims": {"store": redis.url, "store_prefix": "replicas:"},
        "admin": {"token": "env:TEST_ADMIN_TOKEN", "shutdown_grace": "2s"},
    }
    if capture:
        config["capture"] = capture_section(app)
    return config


def start_replica(tmp_path_factory, name, redis, backends, customers, capture):
    app, api = backends
    tmp = tmp_path_factory.mktemp(name)
    worlds = run_world(
        tmp, replica_config(tmp, redis, app, api, capture), SECRETS_ENV, app, api, customers
    )
    world = next(worlds)
    world.secrets.add(ADMIN_TOKEN)
    return worlds, world


@pytest.fixture(scope="module")
def replica_a(tmp_path_factory, redis, backends, customers) -> Iterator[World]:
    worlds, world = start_replica(tmp_path_factory, "a", redis, backends, customers, True)
    yield world
    worlds.close()


@pytest.fixture(scope="module")
def replica_b(tmp_path_factory, redis, backends, customers) -> Iterator[World]:
    worlds, world = start_replica(tmp_path_factory, "b", redis, backends, customers, False)
    yield world
    worlds.close()


def test_a_claim_captured_on_one_replica_is_used_by_another(replica_a, replica_b, customers):
    customer = customers[0]
    replica_a.activate(customer)
    first, second = make_claim(), make_claim()
    puts = stores_timed(replica_a, "put")
    replica_a.service_call(customer, first, int(time.time()) - 5)
    assert stores_timed(replica_a, "put") == puts + 1  # the capture's one write, timed
    received, _ = replica_b.call_api(api_request(customer))
    assert received.claims() == [first]
    # B now holds `first` locally: only the published update can bring it `second`.
    replica_a.service_call(customer, second)
    wait_until(
        lambda: (
            admin_get(replica_b, f"/claims/{customer.web_id}").json().get("claim_fp")
            == fingerprint(second)
        ),
        timeout=SHARED_WITHIN,
    )
    received, _ = replica_b.call_api(api_request(customer))
    assert received.claims() == [second]
    # B has no capture listener: both claims reached it through the store alone.
    assert "capture" not in replica_b.sidecar.listeners
    assert not replica_b.sidecar.events("claim_captured")


def stores_timed(world: World, operation: str) -> float:
    """How many of ``operation`` ``claimgate_store_duration_seconds`` has counted."""
    return scrape(world).value("claimgate_store_duration_seconds_count", operation=operation)


def test_redis_killed_and_restarted_mid_traffic_loses_no_request(
    redis, replica_a, replica_b, customers
):
    customer, late = customers[1], customers[2]
    replica_a.activate(customer)
    replica_a.activate(late)
    claim = make_claim()
    replica_a.service_call(customer, claim)
    wait_until(
        lambda: admin_get(replica_b, f"/claims/{customer.web_id}").status_code == 200,
        timeout=SHARED_WITHIN,
    )
    answers: list[list[str | None]] = []
    errors: list[BaseException] = []

    def traffic(count: int) -> None:
        for _ in range(count):
            try:
                received, _ = replica_b.call_api(api_request(customer))
                answers.append(received.claims())
            except BaseException as error:  # recorded, asserted below
                errors.append(error)
            time.sleep(0.02)

    sender = threading.Thread(target=traffic, args=(60,))
    sender.start()
    time.sleep(0.3)
    redis.kill()
    wait_until(lambda: admin_get(replica_b, "/readyz").status_code == 503, timeout=5)
    during = make_claim()
    replica_a.service_call(late, during)  # captured while Redis is down
    time.sleep(0.3)
    redis.restart()  # empty: it had no persistence
    sender.join(30)
    assert not errors and len(answers) == 60
    assert all(claims == [claim] for claims in answers)
    wait_until(lambda: admin_get(replica_b, "/readyz").status_code == 200, timeout=5)
    # The capture made during the outage reaches the other replica once Redis is back,
    # and so does the claim Redis lost: the replicas wrote their copies back.
    wait_until(lambda: admin_get(replica_b, f"/claims/{late.web_id}").status_code == 200, timeout=5)
    assert admin_get(replica_b, f"/claims/{late.web_id}").json()["claim_fp"] == fingerprint(during)
    with redis.client(decode_responses=True) as plain:
        assert plain.hget(f"replicas:claim:{customer.web_id}", "claim") == claim
    for replica in (replica_a, replica_b):
        replica.sidecar.wait_for("violation", lambda e: e["kind"] == "store_unavailable")
        replica.sidecar.wait_for("store_recovered")
    metrics = httpx.get(f"http://{replica_b.sidecar.listeners['admin']}/metrics").text
    errors_line = next(
        line for line in metrics.splitlines() if line.startswith("claimgate_store_errors_total")
    )
    assert float(errors_line.split()[1]) >= 1
    assert 'claimgate_violations_total{kind="store_unavailable"} 1.0' in metrics


def test_a_restarted_replica_keeps_its_customers_claims(
    tmp_path_factory, redis, backends, replica_a, customers
):
    customer = customers[3]
    replica_a.activate(customer)
    claim = make_claim()
    replica_a.service_call(customer, claim)
    for name in ("c-first-run", "c-second-run"):  # one replica, stopped and started again
        worlds, world = start_replica(tmp_path_factory, name, redis, backends, customers, False)
        try:
            received, _ = world.call_api(api_request(customer))
            assert received.claims() == [claim]
        finally:
            worlds.close()
