"""End to end, the day claims expire (docs/design.md 2.11): two real ``claimgate run``
replicas on one real ``redis-server``, in front of an API double that refuses claims older
than a set age with error 201, as onOffice will.

Replica A has the capture listener and sends the request the API refuses; replica B only
sends API calls and learns of the refusal through the store.
"""

import time
from collections.abc import Iterator
from pathlib import Path

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

LIFETIME = 60
"""Seconds the API double accepts a claim for, counted from its service call."""
TTL, WARN_BEFORE = 600, 590
"""claimgate's guess (longer than the API's lifetime), and its warning window."""
SHARED_WITHIN = 10.0
"""A bound for what one replica tells another through Redis that holds on a loaded machine;
the latency itself (within 100 ms) is measured in tests/test_store_contract.py."""


@pytest.fixture(scope="module")
def customers() -> list[Customer]:
    return [Customer("71000"), Customer("71001")]


@pytest.fixture(scope="module")
def customer(customers) -> Customer:
    return customers[0]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer(ensure_redis_server()) as server:
        yield server


@pytest.fixture(scope="module")
def backends(customers) -> Iterator[tuple[App, ApiDouble]]:
    with App() as app, ApiDouble({c.token: c.secret for c in customers}) as api:
        api.claim_lifetime = LIFETIME
        yield app, api


def config(tmp: Path, redis: RedisServer, app: App, api: ApiDouble, capture: bool) -> dict:
    sections = {
        "proxy": forward_proxy(tmp, api),
        "claims": {
            "store": redis.url,
            "store_prefix": "lifetime:",
            "ttl": f"{TTL}s",
            "warn_before": f"{WARN_BEFORE}s",
        },
        "admin": {"token": "env:TEST_ADMIN_TOKEN", "shutdown_grace": "2s"},
    }
    if capture:
        sections["capture"] = capture_section(app)
    return sections


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, redis, backends, customers) -> Iterator[tuple[World, World]]:
    app, api = backends
    started = []
    for name, capture in (("a", True), ("b", False)):
        tmp = tmp_path_factory.mktemp(name)
        sections = config(tmp, redis, app, api, capture)
        worlds = run_world(tmp, sections, SECRETS_ENV, app, api, customers)
        world = next(worlds)
        world.secrets.add(ADMIN_TOKEN)
        started.append((worlds, world))
    try:
        yield started[0][1], started[1][1]
    finally:
        for worlds, _ in reversed(started):
            worlds.close()


def rejected(world: World) -> float:
    return scrape(world).value("claimgate_violations_total", kind="rejected_claim")


def service_call(world: World, customer: Customer, age: int) -> str:
    """A service call ``age`` seconds ago, told to the API double as the claim's issue."""
    claim, issued = make_claim(), int(time.time()) - age
    world.api.issued(claim, issued)
    assert world.service_call(customer, claim, issued).status_code == 200
    world.sidecar.wait_for("claim_captured", lambda e: e["claim_fp"] == fingerprint(claim))
    return claim


def test_a_refused_claim_is_retired_everywhere_until_a_newer_service_call(replicas, customer):
    a, b = replicas
    a.activate(customer)
    old = service_call(a, customer, age=LIFETIME + 60)
    wait_until(lambda: admin_get(b, f"/claims/{customer.web_id}").status_code == 200, SHARED_WITHIN)

    refused, _ = a.call_api(api_request(customer))  # the API refuses it: 201
    assert refused.claims() == [old] and refused.results == (201,)
    before_a, before_b = rejected(a), rejected(b)

    after, _ = a.call_api(api_request(customer))  # A's very next request
    assert after.claims() == [None]
    assert rejected(a) == before_a + 1
    line = a.sidecar.wait_for("api_request", lambda e: "rejected_claim" in e["violations"])
    assert line["claim_fp"] == fingerprint(old)

    wait_until(lambda: admin_get(b, f"/claims/{customer.web_id}").json()["refused"], SHARED_WITHIN)
    elsewhere, _ = b.call_api(api_request(customer))
    assert elsewhere.claims() == [None]
    assert rejected(b) == before_b + 1

    new = service_call(a, customer, age=LIFETIME - 30)  # a user opened the service again
    again, _ = a.call_api(api_request(customer))
    assert again.claims() == [new] and again.results == (0,)
    wait_until(
        lambda: admin_get(b, f"/claims/{customer.web_id}").json()["claim_fp"] == fingerprint(new),
        SHARED_WITHIN,
    )
    again, _ = b.call_api(api_request(customer))
    assert again.claims() == [new]


def test_the_refusal_and_the_expiring_customer_show_in_metrics_and_status(replicas, customer):
    a, b = replicas
    metrics = scrape(a)
    assert metrics.value("claimgate_claim_age_at_rejection_seconds_count") >= 1
    assert metrics.value("claimgate_claim_age_seconds_count") >= 2
    # The newest claim is 30 s from the API's lifetime and inside claimgate's warning window.
    assert metrics.value("claimgate_claims_expiring") == 1
    assert scrape(b).value("claimgate_claims_expiring") == 1
    status = admin_get(a, "/status.json").json()
    (row,) = [r for r in status["customers"] if r["customer"] == customer.web_id]
    assert row["expiring"] and not row["refused"] and 0 < row["expires_in"] <= WARN_BEFORE
    shortest = status["lifetime"]["shortest_refused_age"]
    assert LIFETIME < shortest < TTL
    assert status["lifetime"]["longest_accepted_age"] < LIFETIME
    told = a.sidecar.wait_for("claim_lifetime_observed")
    assert told["suggested_ttl"] < told["claim_age"] < told["ttl"] == TTL


def test_a_customer_whose_only_claim_was_refused_counts_as_expired(replicas, customers):
    a, b = replicas
    other = customers[1]
    a.activate(other)
    service_call(a, other, age=LIFETIME + 10)
    refused, _ = a.call_api(api_request(other))
    assert refused.results == (201,)
    wait_until(lambda: scrape(a).value("claimgate_claims_expired") == 1, SHARED_WITHIN)
    wait_until(lambda: scrape(b).value("claimgate_claims_expired") == 1, SHARED_WITHIN)


@pytest.fixture(scope="module")
def by_user(tmp_path_factory, backends, customers) -> Iterator[World]:
    """One claimgate (memory store) with claims.affinity = "user"."""
    app, api = backends
    tmp = tmp_path_factory.mktemp("affinity")
    sections = {
        "proxy": forward_proxy(tmp, api),
        "capture": capture_section(app),
        "claims": {"affinity": "user"},
        "admin": {"token": "env:TEST_ADMIN_TOKEN"},
    }
    worlds = run_world(tmp, sections, SECRETS_ENV, app, api, customers)
    world = next(worlds)
    world.secrets.add(ADMIN_TOKEN)
    yield world
    worlds.close()


def test_with_user_affinity_a_user_s_old_claim_brings_that_user_s_newest(by_user, customers):
    customer, now = customers[1], int(time.time())
    by_user.activate(customer)
    a_old, a_new, b_only = make_claim(), make_claim(), make_claim()
    for user, claim, age in (("a", a_old, 30), ("a", a_new, 20), ("b", b_only, 10)):
        assert by_user.service_call(customer, claim, now - age, user=user).status_code == 200
        captured = fingerprint(claim)
        by_user.sidecar.wait_for("claim_captured", lambda e, fp=captured: e["claim_fp"] == fp)

    received, _ = by_user.call_api(api_request(customer, claim=a_old))  # legacy code kept a's
    assert received.claims() == [a_new]
    line = by_user.sidecar.wait_for("api_request", lambda e: e["claim_fp"] == fingerprint(a_new))
    assert line["user"] == "a" and "stale_claim" in line["violations"]

    received, _ = by_user.call_api(api_request(customer))  # no claim: the customer's freshest
    assert received.claims() == [b_only]

    shown = admin_get(by_user, f"/claims/{customer.web_id}").json()
    assert [(u["user"], u["claim_fp"]) for u in shown["users"]] == [
        ("b", fingerprint(b_only)),
        ("a", fingerprint(a_new)),
    ]
