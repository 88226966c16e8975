"""End to end, adoption by configuration alone: the API listener and mirror capture.

The integration points its API base URL at claimgate (no CA to trust), and the ingress
mirrors inbound service calls to claimgate (no change to the inbound path). Both run against
the real ``claimgate run``; the API double and the requests are real.
"""

import time
from collections.abc import Iterator

import httpx
import pytest

from claimgate.testing import ApiDouble, make_claim, make_secret, service_call_url
from tests.support import PROVIDER_SECRET, App, Customer, World, api_request, run_world

TRUSTED_PROXY = "127.0.0.1"  # the ingress that mirrors requests
UNTRUSTED_SOURCE = "127.0.0.4"  # any other machine that can reach the mirror port


@pytest.fixture(scope="module")
def customers() -> list[Customer]:
    return [Customer(str(31000 + i)) for i in range(4)]


@pytest.fixture(scope="module")
def world(tmp_path_factory, customers) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("adoption")
    with App() as app, ApiDouble({c.token: c.secret for c in customers}) as api:
        config = {
            "proxy": {
                "listen": "127.0.0.1:0",
                "upstream_ca": str(api.ca_path),
                "ca_dir": str(tmp / "ca"),
            },
            "api": {"listen": "127.0.0.2:0", "upstream": f"https://localhost:{api.port}"},
            "capture": {
                "mirror_listen": "127.0.0.3:0",
                "provider_secret": "env:TEST_PS",
                "trusted_proxies": [f"{TRUSTED_PROXY}/32"],
            },
            "customers": [
                {"customer_web_id": c.web_id, "token": f"env:TEST_TOKEN_{i}"}
                for i, c in enumerate(customers)
            ],
        }
        env = {"TEST_PS": PROVIDER_SECRET} | {
            f"TEST_TOKEN_{i}": c.token for i, c in enumerate(customers)
        }
        yield from run_world(tmp, config, env, app, api, customers)


def mirrored(
    world: World,
    customer: Customer,
    claim: str,
    secret: str = PROVIDER_SECRET,
    source: str = TRUSTED_PROXY,
) -> httpx.Response:
    """A service call copied the way nginx's ``mirror`` sends it.

    nginx passes the request line and headers on to the mirror location, where
    ``proxy_set_header`` gives the original host and scheme; the copy reaches claimgate over
    plain HTTP from the ingress's own address.
    """
    world.secrets.add(claim)
    url = service_call_url(
        "https://provider.example/service",
        secret,
        customer_web_id=customer.web_id,
        user_id="17",
        claim=claim,
    )
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, trust_env=False) as client:
        world.secrets.add(url.rsplit("signature=", 1)[-1])
        path = url.split("/", 3)[3]
        return client.get(
            f"http://{world.sidecar.listeners['mirror']}/{path}",
            headers={
                "Host": "app-backend:9000",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "provider.example",
                "X-Original-URI": "/" + path,
            },
        )


def api_listener_url(world: World) -> str:
    return f"http://{world.sidecar.listeners['api']}/api/stable/api.php"


def test_api_listener_injects_with_no_ca_and_the_api_sees_its_own_host(world, customers):
    customer = customers[0]
    claim = make_claim()
    assert mirrored(world, customer, claim).status_code == 204
    received, response = world.call_api(api_request(customer), url=api_listener_url(world))
    assert received.claims() == [claim]
    assert received.results == (0,)
    assert received.host == f"localhost:{world.api.port}"
    assert received.path == "/api/stable/api.php"
    assert response.json()["status"]["errorcode"] == 0


def test_api_listener_forwards_only_to_its_upstream(world):
    before = len(world.api.requests)
    with httpx.Client(proxy=f"http://{world.sidecar.listeners['api']}", trust_env=False) as c:
        absolute = c.post("http://elsewhere.example/steal", content=b"{}")
        with pytest.raises(httpx.ProxyError):
            c.get("https://elsewhere.example/")
    assert absolute.status_code == 421
    assert "only forwards to" in absolute.json()["error"]
    time.sleep(0.2)
    assert len(world.api.requests) == before


def test_a_mirrored_service_call_is_captured_and_answered_204(world, customers):
    customer = customers[1]
    claim = make_claim()
    response = mirrored(world, customer, claim)
    assert response.status_code == 204 and response.content == b""
    world.sidecar.wait_for("claim_captured", lambda e: e["customer"] == customer.web_id)
    received, _ = world.call_api(api_request(customer), url=api_listener_url(world))
    assert received.claims() == [claim]


def test_forwarded_headers_from_an_untrusted_address_are_ignored(world, customers):
    customer = customers[2]
    response = mirrored(world, customer, make_claim(), source=UNTRUSTED_SOURCE)
    assert response.status_code == 204
    world.sidecar.wait_for(
        "violation", lambda e: e["kind"] == "bad_signature" and e["customer"] == customer.web_id
    )
    received, _ = world.call_api(api_request(customer), url=api_listener_url(world))
    assert received.claims() == [None]


def test_a_forged_mirrored_call_stores_nothing(world, customers):
    customer = customers[3]
    response = mirrored(world, customer, make_claim(), secret=make_secret())
    assert response.status_code == 204
    world.sidecar.wait_for(
        "violation", lambda e: e["kind"] == "bad_signature" and e["customer"] == customer.web_id
    )
    received, _ = world.call_api(api_request(customer), url=api_listener_url(world))
    assert received.claims() == [None]


def test_without_an_admin_token_claims_are_off_and_the_loopback_page_is_served(world):
    base = f"http://{world.sidecar.listeners['admin']}"
    off = httpx.post(f"{base}/claims", json={"url": "https://p.example/x"}, trust_env=False)
    assert off.status_code == 404 and "admin.token" in off.json()["error"]
    assert httpx.get(f"{base}/", trust_env=False).status_code == 200
