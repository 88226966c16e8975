"""claimgate.testing.api_double: the onOffice API double, over real HTTPS.

How it answers each action and each whole request (docs/onoffice-protocol.md 1, 2, 4), what
it records, and that stopping it leaves nothing behind.
"""

import gzip
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from claimgate import onoffice
from claimgate.testing import ApiDouble, ReceivedRequest, make_claim
from tests.support import SDK_BODY

TOKEN = "a" * 32
SECRET = "s" * 64
READ = onoffice.ACTION_PREFIX + "read"
DO = onoffice.ACTION_PREFIX + "do"
CLAIM = make_claim("test")


def v2_action(
    *,
    claim: str | None = CLAIM,
    resourcetype: str = "estate",
    actionid: str = READ,
    secret: str = SECRET,
    hmac_version: Any = 2,
) -> dict[str, Any]:
    timestamp = int(time.time())
    action: dict[str, Any] = {
        "actionid": actionid,
        "resourceid": "",
        "resourcetype": resourcetype,
        "identifier": "",
        "timestamp": timestamp,
        "hmac_version": hmac_version,
        "hmac": onoffice.hmac_v2(secret, timestamp, TOKEN, resourcetype, actionid),
        "parameters": {"data": ["Id"], "listlimit": 10},
    }
    if claim is not None:
        action["parameters"]["extendedclaim"] = claim
    return action


def v1_action(*, claim: str | None = CLAIM, identifier: str = "") -> dict[str, Any]:
    action: dict[str, Any] = {
        "actionid": READ,
        "resourceid": "",
        "resourcetype": "address",
        "identifier": identifier,
        "timestamp": int(time.time()),
        "parameters": {"listlimit": 5, "data": ["Name/Vorname"], "extendedclaim": claim},
    }
    action["hmac"] = onoffice.hmac_v1(SECRET, TOKEN, action)
    return action


def request_body(*actions: dict[str, Any], token: str = TOKEN) -> dict[str, Any]:
    return {"token": token, "request": {"actions": list(actions)}}


@pytest.fixture
def api() -> Iterator[ApiDouble]:
    with ApiDouble({TOKEN: SECRET}) as double:
        yield double


@pytest.fixture
def client(api: ApiDouble) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(api.ca_path))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default; the CA passes it
    with httpx.Client(verify=context, trust_env=False) as http:
        yield http


def results(response: httpx.Response) -> list[int]:
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return [r["status"]["errorcode"] for r in response.json()["response"]["results"]]


def raw_exchange(api: ApiDouble, data: bytes) -> bytes:
    """Send ``data`` as-is over TLS and return the raw HTTP response."""
    context = ssl.create_default_context(cafile=str(api.ca_path))
    with (
        socket.create_connection(("127.0.0.1", api.port), timeout=5) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as tls,
    ):
        tls.sendall(data)
        response = b""
        while b"\r\n\r\n" not in response:
            response += tls.recv(65536)
        head, _, body = response.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += tls.recv(65536)
        return head + b"\r\n\r\n" + body


# --- per-action answers ------------------------------------------------------------------


def test_v2_action_with_claim_is_accepted(api: ApiDouble, client: httpx.Client) -> None:
    response = client.post(api.url, json=request_body(v2_action()))

    assert results(response) == [0]
    document = response.json()
    assert document["status"] == {"code": 200, "errorcode": 0, "message": "OK"}
    result = document["response"]["results"][0]
    assert result["actionid"] == READ
    assert result["resourcetype"] == "estate"
    assert result["cacheable"] is True
    assert result["data"] == {
        "meta": {"cntabsolute": 1},
        "records": [{"id": 1, "type": "estate", "elements": {}}],
    }
    (received,) = api.wait_for_requests(1)
    assert received.method == "POST"
    assert received.path == "/api/stable/api.php"
    assert received.host == f"localhost:{api.port}"
    assert received.header("content-type") == "application/json"
    assert received.results == (0,)
    assert received.claims() == [CLAIM]
    assert received.json() == json.loads(received.raw_body)
    assert received.response == response.content


def test_hmac_version_as_string_is_version_2(api: ApiDouble, client: httpx.Client) -> None:
    response = client.post(api.url, json=request_body(v2_action(hmac_version="2")))

    assert results(response) == [0]


def test_missing_claim_is_193(api: ApiDouble, client: httpx.Client) -> None:
    response = client.post(api.url, json=request_body(v2_action(claim=None)))

    assert results(response) == [onoffice.CLAIM_REQUIRED]
    document = response.json()
    assert document["status"]["errorcode"] == onoffice.ERROR_IN_ACTION
    assert (
        document["response"]["results"][0]["status"]["message"]
        == (onoffice.ERROR_MESSAGES[onoffice.CLAIM_REQUIRED])
    )
    assert api.requests[0].claims() == [None]


@pytest.mark.parametrize("claim", ["", 42])
def test_empty_or_non_string_claim_is_193(
    api: ApiDouble, client: httpx.Client, claim: object
) -> None:
    action = v2_action()
    action["parameters"]["extendedclaim"] = claim

    assert results(client.post(api.url, json=request_body(action))) == [onoffice.CLAIM_REQUIRED]


def test_outdated_claim_is_201(api: ApiDouble, client: httpx.Client) -> None:
    fresh = make_claim("fresh")
    api.mark_outdated(CLAIM)

    response = client.post(api.url, json=request_body(v2_action(), v2_action(claim=fresh)))

    assert results(response) == [onoffice.CLAIM_OUTDATED, 0]


def test_a_claim_issued_longer_ago_than_the_lifetime_is_201(
    api: ApiDouble, client: httpx.Client
) -> None:
    young, old, unknown = make_claim("young"), make_claim("old"), make_claim("unknown")
    now = time.time()
    api.issued(young, now - 30)
    api.issued(old, now - 90)
    body = request_body(v2_action(claim=young), v2_action(claim=old), v2_action(claim=unknown))
    assert results(client.post(api.url, json=body)) == [0, 0, 0]  # no lifetime: forever
    api.claim_lifetime = 60
    assert results(client.post(api.url, json=body)) == [0, onoffice.CLAIM_OUTDATED, 0]


def test_wrong_hmac_is_137(api: ApiDouble, client: httpx.Client) -> None:
    wrong_secret = client.post(api.url, json=request_body(v2_action(secret="other")))
    no_hmac = v2_action()
    del no_hmac["hmac"]
    missing = client.post(api.url, json=request_body(no_hmac))

    assert results(wrong_secret) == [onoffice.HMAC_INVALID]
    assert results(missing) == [onoffice.HMAC_INVALID]


def test_v1_action_with_correct_hmac_is_accepted(api: ApiDouble, client: httpx.Client) -> None:
    response = client.post(api.url, json=request_body(v1_action()))

    assert results(response) == [0]


def test_v1_action_changed_after_signing_is_137(api: ApiDouble, client: httpx.Client) -> None:
    action = v1_action(claim=None)
    action["parameters"]["extendedclaim"] = CLAIM  # what a naive proxy would do

    assert results(client.post(api.url, json=request_body(action))) == [onoffice.HMAC_INVALID]


def test_actions_are_answered_in_order(api: ApiDouble, client: httpx.Client) -> None:
    api.mark_outdated("old")
    actions = [
        v2_action(),
        v2_action(claim=None),
        v2_action(secret="other"),
        v2_action(claim="old"),
    ]
    for index, action in enumerate(actions):
        action["identifier"] = f"action-{index}"  # not covered by a version-2 HMAC
    actions.append(v1_action(identifier="action-4"))  # covered by version 1

    response = client.post(api.url, json=request_body(*actions))

    expected = [0, 193, 137, 201, 0]
    assert results(response) == expected
    returned = response.json()["response"]["results"]
    assert [r["identifier"] for r in returned] == [f"action-{i}" for i in range(5)]
    assert api.requests[0].results == tuple(expected)
    assert api.requests[0].claims() == [CLAIM, None, CLAIM, "old", CLAIM]


def test_action_that_is_not_an_object_is_247(api: ApiDouble, client: httpx.Client) -> None:
    response = client.post(api.url, json={"token": TOKEN, "request": {"actions": ["x"]}})

    assert results(response) == [247]
    assert response.json()["response"]["results"][0]["status"]["message"]


def test_unlock_provider_success_record(api: ApiDouble, client: httpx.Client) -> None:
    action = v2_action(resourcetype=onoffice.UNLOCK_PROVIDER, actionid=DO)
    action["parameters"] = {"parameterCacheId": "cache", "extendedclaim": CLAIM}

    response = client.post(api.url, json=request_body(action))

    assert results(response) == [0]
    result = response.json()["response"]["results"][0]
    assert result["cacheable"] is False
    assert result["data"]["records"][0]["elements"] == {"success": "success"}


# --- whole-request errors ----------------------------------------------------------------


def test_unknown_token_is_not_authenticated(api: ApiDouble, client: httpx.Client) -> None:
    response = client.post(api.url, json=request_body(v2_action(), token="b" * 32))

    assert response.status_code == 200
    assert response.json() == {
        "status": {"code": 400, "errorcode": 22, "message": "Not authenticated"},
        "response": {"results": []},
    }
    assert api.requests[0].results == ()


@pytest.mark.parametrize(
    ("body", "errorcode"),
    [
        (b"", 9),
        (b"{not json", onoffice.INVALID_JSON),
        (b"[1, 2]", onoffice.INVALID_JSON),
        (b"\xff\xfe\x00garbage", onoffice.INVALID_JSON),
        (b'{"request": {"actions": []}}', 13),
        (b'{"token": "t"}', 14),
        (b'{"token": "t", "request": {"actions": {}}}', 15),
    ],
)
def test_malformed_request_is_a_top_level_error(
    api: ApiDouble, client: httpx.Client, body: bytes, errorcode: int
) -> None:
    response = client.post(api.url, content=body)

    assert response.status_code == 200
    status = response.json()["status"]
    assert (status["code"], status["errorcode"]) == (400, errorcode)
    assert status["message"]
    assert response.json()["response"]["results"] == []
    (received,) = api.wait_for_requests(1)
    assert received.raw_body == body
    assert received.results == ()
    assert received.claims() == []


# --- transport ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
    ],
)
def test_compressed_request_body_is_decoded(
    api: ApiDouble, client: httpx.Client, encoding: str, compress: Any
) -> None:
    plain = json.dumps(request_body(v2_action())).encode()
    compressed = compress(plain)

    response = client.post(
        api.url,
        content=compressed,
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )

    assert results(response) == [0]
    received = api.requests[0]
    assert received.raw_body == compressed
    assert received.body == plain


def test_a_body_that_inflates_past_16_mib_is_refused_unread(
    api: ApiDouble, client: httpx.Client
) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(17)) + compressor.flush()

    response = client.post(api.url, content=bomb, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 413
    assert response.json()["status"]["errorcode"] == 1
    received = api.requests[0]
    assert received.raw_body == received.body == bomb and received.results == ()


def test_answer_next_replaces_the_answer_and_still_records_the_request(
    api: ApiDouble, client: httpx.Client
) -> None:
    api.answer_next(b"canned", {"Content-Type": "text/plain", "X-Canned": "1"}, status=502)
    body = json.dumps(request_body(v2_action())).encode()

    canned, normal = client.post(api.url, content=body), client.post(api.url, content=body)

    assert (canned.status_code, canned.content, canned.headers["x-canned"]) == (502, b"canned", "1")
    assert results(normal) == [0]
    assert [r.results for r in api.requests] == [(0,), (0,)]  # both evaluated and recorded


def test_raw_body_is_recorded_byte_exact(api: ApiDouble, client: httpx.Client) -> None:
    document = request_body(v2_action(claim="a/b+c=\u00e9"))
    body = json.dumps(document, indent=1, ensure_ascii=True).replace("/", "\\/").encode() + b"\n \n"

    response = client.post(api.url, content=body)

    assert results(response) == [0]
    received = api.requests[0]
    assert received.raw_body == body
    assert received.body == body
    assert received.claims() == ["a/b+c=\u00e9"]


def test_get_with_a_body_is_answered(api: ApiDouble, client: httpx.Client) -> None:
    # PyPI "onoffice" sends GET with a JSON body and hmac_version "2".
    body = json.dumps(request_body(v2_action(hmac_version="2")))
    response = client.request("GET", api.url, content=body)

    assert results(response) == [0]
    assert api.requests[0].method == "GET"


def test_php_sdk_request_bytes(api: ApiDouble) -> None:
    # docs/onoffice-protocol.md 1.4: the official SDK's own integration test, byte for byte.
    body = SDK_BODY
    assert len(body) == 382
    head = (
        b"POST /api/latest/api.php HTTP/1.1\r\n"
        b"Host: localhost:1234\r\n"
        b"Accept: */*\r\n"
        b"Accept-Encoding: deflate, gzip\r\n"
        b"Content-Length: 382\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"\r\n"
    )
    with ApiDouble({"testtoken": "testsecret"}) as sdk_api:
        response = raw_exchange(sdk_api, head + body)
        (received,) = sdk_api.wait_for_requests(1)

    assert response.startswith(b"HTTP/1.1 200 ")
    answer = json.loads(response.partition(b"\r\n\r\n")[2])
    # The HMAC passes (no 137); the SDK sends no claim, so 193.
    assert [r["status"]["errorcode"] for r in answer["response"]["results"]] == [193]
    assert received.results == (onoffice.CLAIM_REQUIRED,)
    assert received.raw_body == body
    assert received.method == "POST"
    assert received.path == "/api/latest/api.php"
    assert received.host == "localhost:1234"
    assert received.headers == (
        ("Host", "localhost:1234"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "deflate, gzip"),
        ("Content-Length", "382"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    )


def test_certificate_covers_hostname_localhost_and_ip(api: ApiDouble) -> None:
    context = ssl.create_default_context(cafile=str(api.ca_path))
    with httpx.Client(verify=context, trust_env=False) as http:
        by_ip = http.post(f"https://127.0.0.1:{api.port}/", json=request_body(v2_action()))
    assert results(by_ip) == [0]

    with ApiDouble({TOKEN: SECRET}, hostname="api.test.invalid") as named:
        context = ssl.create_default_context(cafile=str(named.ca_path))
        context.set_alpn_protocols(["h2", "http/1.1"])
        assert named.url == f"https://api.test.invalid:{named.port}/api/stable/api.php"
        with (
            socket.create_connection(("127.0.0.1", named.port), timeout=5) as plain,
            context.wrap_socket(plain, server_hostname="api.test.invalid") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.selected_alpn_protocol() == "http/1.1"


def test_client_trusting_only_system_cas_fails(api: ApiDouble) -> None:
    with (
        httpx.Client(verify=ssl.create_default_context(), trust_env=False) as http,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        http.post(api.url, json=request_body(v2_action()))
    # The refused handshake does not disturb the server.
    context = ssl.create_default_context(cafile=str(api.ca_path))
    with httpx.Client(verify=context, trust_env=False) as http:
        assert results(http.post(api.url, json=request_body(v2_action()))) == [0]


# --- lifecycle and observation -------------------------------------------------------------


def test_stop_frees_port_threads_and_files() -> None:
    threads_before = set(threading.enumerate())
    api = ApiDouble({TOKEN: SECRET}).start()
    port, ca_path = api.port, api.ca_path
    context = ssl.create_default_context(cafile=str(ca_path))
    http = httpx.Client(verify=context, trust_env=False)
    try:
        # Leave an idle keep-alive connection open across stop().
        assert results(http.post(api.url, json=request_body(v2_action()))) == [0]
        started = time.monotonic()
        api.stop()
        assert time.monotonic() - started < 2
    finally:
        http.close()

    assert set(threading.enumerate()) - threads_before == set()
    assert not ca_path.parent.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    assert len(api.requests) == 1  # still readable after stop
    api.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = api.url


def test_wait_for_requests_times_out_and_clear_forgets(
    api: ApiDouble, client: httpx.Client
) -> None:
    with pytest.raises(TimeoutError, match="got 0"):
        api.wait_for_requests(1, timeout=0.1)
    client.post(api.url, json=request_body(v2_action()))
    assert len(api.wait_for_requests(1)) == 1

    api.clear()

    assert api.requests == []


def test_wait_for_requests_wakes_up_for_a_request_from_another_thread(
    api: ApiDouble, client: httpx.Client
) -> None:
    sender = threading.Timer(0.2, client.post, args=(api.url,), kwargs={"content": b"{}"})
    sender.start()
    try:
        (received,) = api.wait_for_requests(1, timeout=5)
    finally:
        sender.join()
    assert isinstance(received, ReceivedRequest)


def test_delay_holds_the_answer_but_records_the_request_at_once(
    api: ApiDouble, client: httpx.Client
) -> None:
    api.delay = 0.5
    started = time.monotonic()
    worker = threading.Thread(target=client.post, args=(api.url,), kwargs={"content": b"{}"})
    worker.start()
    api.wait_for_requests(1, timeout=0.45)
    worker.join(5)
    assert time.monotonic() - started >= 0.5
