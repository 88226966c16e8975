"""End to end: the real ``claimgate run``, real HTTPS with real certificates, real servers.

A service call goes through the capture listener to a small app; API requests go through the
forward listener (HTTPS_PROXY) to the onOffice API double over verified TLS. Assertions are
made on what the app and the double actually received.
"""

import gzip
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from claimgate import onoffice
from claimgate.testing import (
    ApiDouble,
    make_claim,
    make_secret,
    service_call_url,
)
from tests.support import (
    PROVIDER_SECRET,
    READ,
    SDK_BODY,
    SDK_HEADERS,
    SDK_SECRET,
    SDK_TOKEN,
    App,
    Customer,
    World,
    api_request,
    forward_proxy,
    run_world,
)
from tests.system import ensure_executable

SDK_CUSTOMER = "4711"


@pytest.fixture(scope="module")
def customers() -> list[Customer]:
    return [Customer(str(21300 + i)) for i in range(10)]


def sidecar_world(tmp: Path, customers: list[Customer], mode: str = "inject") -> Iterator[World]:
    credentials = {c.token: c.secret for c in customers} | {SDK_TOKEN: SDK_SECRET}
    with App() as app, ApiDouble(credentials) as api:
        config = {
            "proxy": forward_proxy(tmp, api),
            "capture": {
                "listen": "127.0.0.2:0",
                "upstream": app.url,
                "provider_secret": "env:TEST_PROVIDER_SECRET",
            },
            "policy": {"mode": mode},
            "customers": [
                {
                    "customer_web_id": SDK_CUSTOMER,
                    "token": "env:TEST_SDK_TOKEN",
                    "secret": "env:TEST_SDK_SECRET",
                }
            ],
        }
        env = {
            "TEST_PROVIDER_SECRET": PROVIDER_SECRET,
            "TEST_SDK_TOKEN": SDK_TOKEN,
            "TEST_SDK_SECRET": SDK_SECRET,
        }
        yield from run_world(tmp, config, env, app, api, customers)


@pytest.fixture(scope="module")
def world(tmp_path_factory, customers) -> Iterator[World]:
    yield from sidecar_world(tmp_path_factory.mktemp("inject"), customers)


def test_service_call_reaches_the_app_unchanged_and_its_claim_is_injected(world, customers):
    customer = customers[0]
    world.activate(customer)
    claim = make_claim()
    url = service_call_url(
        "http://provider.example/service",
        PROVIDER_SECRET,
        customer_web_id=customer.web_id,
        user_id="17",
        claim=claim,
    )
    world.secrets |= {claim, url.rsplit("=", 1)[1]}
    response = world.link(url)
    assert response.status_code == 200 and response.text == "app says hello"
    reached = world.app.received[-1]
    assert reached.path == "/" + url.split("/", 3)[3]
    assert ("Host", "provider.example") in reached.headers
    world.sidecar.wait_for("claim_captured", lambda e: e["customer"] == customer.web_id)

    received, response = world.call_api(api_request(customer, "estate", "address", "task"))
    assert received.claims() == [claim, claim, claim]
    assert received.results == (0, 0, 0)
    assert response.json()["status"]["errorcode"] == 0
    decision = world.sidecar.wait_for("api_request", lambda e: e["customer"] == customer.web_id)
    assert decision["decision"] == "injected" and decision["upstream_status"] == 200


def test_a_newer_service_call_wins_and_an_older_late_one_does_not(world, customers):
    customer = customers[1]
    world.activate(customer)
    now = int(time.time())
    first, newer, late = make_claim(), make_claim(), make_claim()
    world.service_call(customer, first, now - 20)
    world.service_call(customer, newer, now - 5)
    assert world.call_api(api_request(customer))[0].claims() == [newer]
    world.service_call(customer, late, now - 10)
    event = world.sidecar.wait_for("claim_captured", lambda e: e["call_timestamp"] == now - 10)
    assert event["stored"] is False
    assert world.call_api(api_request(customer))[0].claims() == [newer]


def test_forged_or_stale_links_store_nothing(world, customers):
    customer = customers[2]
    world.activate(customer)
    world.service_call(customer, make_claim(), secret=make_secret())
    world.service_call(customer, make_claim(), timestamp=int(time.time()) - 3600)
    world.sidecar.wait_for("violation", lambda e: e["kind"] == "bad_signature")
    world.sidecar.wait_for("violation", lambda e: e["kind"] == "stale_service_call")
    received, _ = world.call_api(api_request(customer))
    assert received.claims() == [None]
    assert received.results == (onoffice.CLAIM_REQUIRED,)
    world.sidecar.wait_for(
        "violation", lambda e: e["kind"] == "missing_claim" and e["customer"] == customer.web_id
    )
    # The app still got both links: claimgate never breaks the app's own handling.
    assert len([r for r in world.app.received if r.path.startswith("/service")]) >= 2


def test_php_sdk_bytes_come_out_identical_except_for_the_claim(world):
    claim = make_claim()
    world.secrets.add(claim)
    world.service_call(Customer(SDK_CUSTOMER), claim)
    received, _ = world.call_api(SDK_BODY, SDK_HEADERS)
    at = SDK_BODY.index(b'showcancelled":true') + len(b'showcancelled":true')
    expected = SDK_BODY[:at] + b',"extendedclaim":' + json.dumps(claim).encode() + SDK_BODY[at:]
    assert received.raw_body == expected
    assert received.header("Content-Type") == "application/x-www-form-urlencoded"
    assert received.results == (0,)


def test_slash_escaping_and_null_identifier_survive(world):
    """PHP's json_encode escapes '/' as '\\/'; the claim is written the same way."""
    claim = make_claim()
    world.secrets.add(claim)
    world.service_call(Customer(SDK_CUSTOMER), claim)
    timestamp = int(time.time())
    hmac = onoffice.hmac_v2(SDK_SECRET, timestamp, SDK_TOKEN, "estate", READ).replace("/", "\\/")
    body = (
        '{"token":"testtoken","request":{"actions":[{"actionid":"%s","identifier":null,'
        '"parameters":{"url":"https:\\/\\/provider.example\\/x","name":"M\\u00fcller"},'
        '"resourceid":"","resourcetype":"estate","timestamp":%d,"hmac_version":2,"hmac":"%s"}]}}'
        % (READ.replace("/", "\\/"), timestamp, hmac)
    ).encode()
    received, _ = world.call_api(body, SDK_HEADERS)
    escaped_claim = json.dumps(claim).replace("/", "\\/").encode()
    assert received.raw_body == body.replace(
        b'M\\u00fcller"}', b'M\\u00fcller","extendedclaim":' + escaped_claim + b"}"
    )
    assert received.results == (0,)


def test_gzip_request_body_gets_the_claim(world, customers):
    customer = customers[3]
    world.activate(customer)
    claim = make_claim()
    world.service_call(customer, claim)
    received, _ = world.call_api(gzip.compress(api_request(customer)), {"Content-Encoding": "gzip"})
    assert received.header("Content-Encoding") == "gzip"
    assert received.claims() == [claim]


def test_version_one_action_is_reported_and_left_alone(world, customers):
    customer = customers[4]
    world.activate(customer)
    world.service_call(customer, make_claim())
    body = api_request(customer, version=None)
    received, _ = world.call_api(body)
    assert received.raw_body == body
    world.sidecar.wait_for("violation", lambda e: e["kind"] == "hmac_v1")


def test_a_version_one_action_with_an_unwritable_resourcetype_leaves_the_others_their_claim(
    world, customers
):
    """A lone surrogate in a v1 action's resourcetype (JSON can spell it, no encoder writes
    it, and the API refuses it) is reported printable, and the v2 action beside it still
    gets the claim."""
    customer = customers[4]
    world.activate(customer)
    claim = make_claim()
    world.service_call(customer, claim)
    body = json.loads(api_request(customer))
    odd = {**body["request"]["actions"][0], "resourcetype": "x\ud800", "hmac_version": 1}
    body["request"]["actions"].append(odd)
    errors = len(world.sidecar.events("internal_error"))
    received, _ = world.call_api(json.dumps(body).encode())  # ensure_ascii: \ud800
    assert received.claims() == [claim, None]
    line = world.sidecar.wait_for(
        "violation", lambda e: e["kind"] == "hmac_v1" and e["resourcetype"] == "x?"
    )
    assert line["action"] == 1
    assert len(world.sidecar.events("internal_error")) == errors


def test_version_one_action_is_resigned_when_its_secret_is_configured(world):
    sdk = Customer(SDK_CUSTOMER)
    sdk.token, sdk.secret = SDK_TOKEN, SDK_SECRET
    claim = make_claim()
    world.service_call(sdk, claim)
    received, _ = world.call_api(api_request(sdk, version=None))
    (action,) = received.json()["request"]["actions"]
    assert action["hmac_version"] == 2
    assert received.claims() == [claim]
    assert received.results == (0,)


def test_other_https_hosts_are_tunnelled_untouched(world):
    with ApiDouble({}) as elsewhere:
        only_its_own_ca = ssl.create_default_context(cafile=str(elsewhere.ca_path))
        with httpx.Client(
            proxy=world.sidecar.proxy_url, verify=only_its_own_ca, trust_env=False
        ) as client:
            body = b'{"token":"x","request":{"actions":[]}}'
            response = client.post(elsewhere.url, content=body)
        assert response.status_code == 200
        assert elsewhere.requests[0].raw_body == body


def test_plain_http_to_other_hosts_is_forwarded_unchanged(world):
    with httpx.Client(proxy=world.sidecar.proxy_url, trust_env=False) as client:
        response = client.post(f"{world.app.url}/plain?apiClaim=x", content=b'{"a":1}')
    assert response.text == "app says hello"
    assert world.app.received[-1].path == "/plain?apiClaim=x"
    assert world.app.received[-1].body == b'{"a":1}'


LEGACY_CLIENT = """
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=sys.stdin.buffer.read(), method="POST")
sys.stdout.write(urllib.request.urlopen(request, timeout=10).read().decode())
"""


def test_a_legacy_client_honouring_https_proxy_needs_no_code_change(world, customers):
    customer = customers[5]
    world.activate(customer)
    claim = make_claim()
    world.service_call(customer, claim)
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env |= {"HTTPS_PROXY": world.sidecar.proxy_url, "SSL_CERT_FILE": str(world.sidecar.ca_path)}
    before = len(world.api.requests)
    result = subprocess.run(
        [sys.executable, "-c", LEGACY_CLIENT, world.api.url],
        input=api_request(customer),
        env=env,
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert json.loads(result.stdout)["status"]["errorcode"] == 0
    assert world.api.wait_for_requests(before + 1)[before].claims() == [claim]


def test_curl_like_php_with_expect_100_continue(world, customers):
    """libcurl (PHP's HTTP client) honours HTTPS_PROXY and may send Expect: 100-continue."""
    customer = customers[8]
    world.activate(customer)
    claim = make_claim()
    world.service_call(customer, claim)
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env["HTTPS_PROXY"] = world.sidecar.proxy_url
    before = len(world.api.requests)
    result = subprocess.run(
        [
            ensure_executable("curl"),
            "-sS",
            "--fail",
            "--cacert",
            str(world.sidecar.ca_path),
            "--data-binary",
            "@-",
            "-H",
            "Expect: 100-continue",
            world.api.url,
        ],
        input=api_request(customer),
        env=env,
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert json.loads(result.stdout)["status"]["errorcode"] == 0
    received = world.api.wait_for_requests(before + 1)[before]
    assert received.claims() == [claim]
    assert received.header("Content-Type") == "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def observing(tmp_path_factory, customers) -> Iterator[World]:
    yield from sidecar_world(tmp_path_factory.mktemp("observe"), customers, mode="observe")


def test_observe_changes_nothing(observing, customers):
    customer = customers[6]
    observing.activate(customer)
    observing.service_call(customer, make_claim())
    body = api_request(customer)
    received, _ = observing.call_api(body)
    assert received.raw_body == body
    decision = observing.sidecar.wait_for("api_request")
    assert (decision["decision"], decision["would"]) == ("observed", "injected")


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory, customers) -> Iterator[World]:
    yield from sidecar_world(tmp_path_factory.mktemp("enforce"), customers, mode="enforce")


def test_enforce_answers_without_reaching_the_api(enforcing, customers):
    customer = customers[7]
    response = enforcing.client.post(enforcing.api.url, content=api_request(customer))
    assert response.headers["X-Claimgate-Violation"] == "unknown_token"
    assert response.json()["response"]["results"][0]["status"]["errorcode"] == 193
    assert enforcing.api.requests == []
    enforcing.activate(customer)
    claim = make_claim()
    enforcing.service_call(customer, claim)
    received, _ = enforcing.call_api(api_request(customer))
    assert received.claims() == [claim]


def test_an_http2_client_gets_the_claim_injected(world, customers):
    """Java's HttpClient, Go and curl speak HTTP/2 when TLS offers it; the API double speaks
    HTTP/1.1, so claimgate carries the request across versions and rewrites it on the way."""
    curl = ensure_executable("curl")
    customer = customers[9]
    world.activate(customer)
    claim = make_claim()
    world.service_call(customer, claim)
    world.sidecar.wait_for("claim_captured", lambda e: e["customer"] == customer.web_id)
    answer = subprocess.run(
        [
            *(curl, "--http2", "--silent", "--show-error", "--max-time", "20"),
            *("--proxy", world.sidecar.proxy_url, "--cacert", str(world.sidecar.ca_path)),
            *("--data-binary", "@-", "--write-out", "\n%{http_version} %{http_code}"),
            world.api.url,
        ],
        input=api_request(customer, "estate", "address"),
        capture_output=True,
        env={"PATH": os.environ["PATH"]},  # no proxy variables from the outside
        timeout=30,
        check=True,
    )
    body, _, version_and_status = answer.stdout.decode().rpartition("\n")
    assert version_and_status == "2 200"
    assert json.loads(body)["status"]["errorcode"] == 0
    assert world.api.requests[-1].claims() == [claim, claim]
    decision = world.sidecar.wait_for("api_request", lambda e: e["customer"] == customer.web_id)
    assert decision["decision"] == "injected"
