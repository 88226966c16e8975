"""End to end, when things go wrong: bodies too large to hold, an API that refuses, stalls or
resets, a provider app that is down. Each time the client gets a clear answer (or its own
timeout), nothing is buffered without bound, and claimgate serves the next request.
"""

import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from claimgate.fingerprint import fingerprint
from claimgate.testing import ApiDouble, free_port, make_certificates, make_claim
from tests.support import (
    ADMIN_TOKEN,
    SECRETS_ENV,
    App,
    Customer,
    SocketServer,
    World,
    api_request,
    forward_proxy,
    run_world,
)

LIMIT = 64 * 1024
BIG = 100 * 1024


class Resetter(SocketServer):
    """A TLS server that sends half a response and then resets the connection."""

    def __init__(self, workdir: Path) -> None:
        self.ca, cert, key = make_certificates(workdir, ["localhost", "127.0.0.1"])
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        super().__init__(self._reset)

    def _reset(self, raw: socket.socket) -> None:
        with self.context.wrap_socket(raw, server_side=True) as conn:
            conn.recv(65536)
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"status":')
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def config_for(tmp: Path, app_url: str, api: ApiDouble, mode: str, *hosts: str) -> dict:
    return {
        "proxy": forward_proxy(
            tmp, api, api_hosts=[f"localhost:{api.port}", *hosts], max_body_size=LIMIT
        ),
        "capture": {"listen": "127.0.0.2:0", "upstream": app_url, "provider_secret": "env:TEST_PS"},
        "policy": {"mode": mode},
        "admin": {"listen": "127.0.0.1:0", "token": "env:TEST_ADMIN_TOKEN"},
    }


@pytest.fixture(scope="module")
def customers() -> list[Customer]:
    return [Customer(str(61000 + i)) for i in range(10)]


def world_in(tmp_path_factory, customers, mode: str) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(mode)
    with App() as app, ApiDouble({c.token: c.secret for c in customers}) as api:
        yield from run_world(
            tmp, config_for(tmp, app.url, api, mode), SECRETS_ENV, app, api, customers
        )


@pytest.fixture(scope="module")
def injecting(tmp_path_factory, customers) -> Iterator[World]:
    yield from world_in(tmp_path_factory, customers, "inject")


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory, customers) -> Iterator[World]:
    yield from world_in(tmp_path_factory, customers, "enforce")


def padded(customer: Customer, size: int) -> bytes:
    """A valid signed request of about ``size`` bytes (a long list of fields)."""
    body = api_request(customer)
    filler = ",".join(f'"f{i:06d}"' for i in range(size // 10))
    return body.replace(b'"data": ["Id", "ort"]', f'"data": ["Id", {filler}]'.encode())


def chunks(body: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def ready(world: World, customer: Customer) -> str:
    world.activate(customer)
    claim = make_claim()
    world.service_call(customer, claim)
    return claim


@pytest.mark.parametrize("compact", [False, True])
def test_a_large_body_within_the_limit_gets_the_claim_and_nothing_else(
    injecting, customers, compact
):
    """Stepped over by its members' lengths (rewrite.LARGE), in either spelling."""
    customer = customers[3]
    claim = ready(injecting, customer)
    body = padded(customer, LIMIT // 2)
    if compact:
        body = body.replace(b'": ', b'":').replace(b", ", b",")
    received, _ = injecting.call_api(body)
    assert received.claims() == [claim]
    spliced = received.raw_body.replace(f',"extendedclaim":"{claim}"'.encode(), b"")
    assert spliced == body


def test_inject_streams_a_body_too_large_untouched_and_reports_it(injecting, customers):
    customer = customers[0]
    ready(injecting, customer)
    body = padded(customer, BIG)
    assert len(body) > LIMIT
    received, _ = injecting.call_api(body)
    assert received.raw_body == body  # untouched: no claim, not re-encoded
    injecting.sidecar.wait_for(
        "violation", lambda e: e["kind"] == "malformed_request" and "max_body_size" in e["reason"]
    )


@pytest.mark.parametrize("chunked", [False, True])
def test_enforce_answers_a_body_too_large_without_reaching_the_api(enforcing, customers, chunked):
    customer = customers[1]
    ready(enforcing, customer)
    body = padded(customer, BIG)
    before = len(enforcing.api.requests)
    answer = enforcing.client.post(enforcing.api.url, content=chunks(body) if chunked else body)
    assert answer.status_code == 413
    assert answer.headers["X-Claimgate-Violation"] == "malformed_request"
    assert answer.json()["status"]["code"] == 413
    time.sleep(0.2)
    assert len(enforcing.api.requests) == before


def test_enforce_injects_into_a_small_chunked_body(enforcing, customers):
    customer = customers[2]
    claim = ready(enforcing, customer)
    before = len(enforcing.api.requests)
    answer = enforcing.client.post(enforcing.api.url, content=chunks(api_request(customer), 64))
    assert answer.status_code == 200
    assert enforcing.api.wait_for_requests(before + 1)[before].claims() == [claim]


def test_the_apps_own_large_uploads_pass_the_capture_listener(injecting):
    upload = b"x" * BIG
    answer = httpx.post(
        f"{injecting.sidecar.capture_url}/upload",
        content=upload,
        headers={"Host": "provider.example"},
        trust_env=False,
    )
    assert answer.status_code == 200
    assert injecting.app.received[-1].body == upload


def serves_next(world: World, customer: Customer, claim: str) -> None:
    received, _ = world.call_api(api_request(customer))
    assert received.claims() == [claim]


def test_an_api_that_refuses_connections_gets_a_clear_502(tmp_path, customers):
    customer = customers[3]
    closed = free_port()
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        config = config_for(tmp_path, app.url, api, "inject", f"localhost:{closed}")
        worlds = run_world(tmp_path, config, SECRETS_ENV, app, api, [customer])
        world = next(worlds)
        try:
            claim = ready(world, customer)
            answer = world.client.post(
                f"https://localhost:{closed}/api/stable/api.php", content=api_request(customer)
            )
            assert answer.status_code == 502
            world.sidecar.wait_for("api_request", lambda e: e.get("upstream_error"))
            serves_next(world, customer, claim)
        finally:
            worlds.close()


def test_an_api_slower_than_the_clients_timeout(injecting, customers):
    customer = customers[4]
    claim = ready(injecting, customer)
    injecting.api.delay = 1.5
    try:
        with pytest.raises(httpx.ReadTimeout):
            injecting.client.post(injecting.api.url, content=api_request(customer), timeout=0.5)
    finally:
        injecting.api.delay = 0
    serves_next(injecting, customer, claim)


def test_an_api_resetting_mid_response(tmp_path, customers):
    customer = customers[5]
    resetter = Resetter(tmp_path)
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        config = config_for(tmp_path, app.url, api, "inject", f"localhost:{resetter.port}")
        bundle = tmp_path / "bundle.pem"
        bundle.write_text(api.ca_path.read_text() + resetter.ca.read_text())
        config["proxy"]["upstream_ca"] = str(bundle)
        worlds = run_world(tmp_path, config, SECRETS_ENV, app, api, [customer])
        world = next(worlds)
        try:
            claim = ready(world, customer)
            url = f"https://localhost:{resetter.port}/api/stable/api.php"
            answer = world.client.post(url, content=api_request(customer))
            assert answer.status_code == 502  # the half response was never passed on
            serves_next(world, customer, claim)
        finally:
            worlds.close()
            resetter.close()


def test_a_provider_app_that_is_down_still_has_its_claim_captured(tmp_path, customers):
    customer = customers[6]
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        dead_app = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        config = config_for(tmp_path, dead_app, api, "inject")
        worlds = run_world(tmp_path, config, SECRETS_ENV, app, api, [customer])
        world = next(worlds)
        try:
            claim = make_claim()
            answer = world.service_call(customer, claim)
            assert answer.status_code == 502
            status = httpx.get(
                f"http://{world.sidecar.listeners['admin']}/claims/{customer.web_id}",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert status.json()["claim_fp"] == fingerprint(claim)
        finally:
            worlds.close()
