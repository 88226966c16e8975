"""The addon's hooks, driven with mitmproxy's own test helpers (no sockets)."""

import gzip
import json
import ssl
import sys
import time
import zlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import connection, http, tls
from mitmproxy import flow as flow_module
from mitmproxy.proxy import context
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow, tutils
from structlog.testing import capture_logs

from claimgate import addon as addon_module
from claimgate import onoffice
from claimgate.activity import Activity
from claimgate.addon import VIOLATION_HEADER, Claimgate, Role, listener_modes
from claimgate.flow_state import METADATA_KEY
from claimgate.metrics import Metrics
from claimgate.monitor import Monitor
from claimgate.policy import Mode
from claimgate.settings import (
    CaptureSettings,
    Customer,
    ListenAddress,
    PolicySettings,
    ProxySettings,
    Secret,
    Settings,
)
from claimgate.signature import sign_url
from claimgate.store import Claim
from claimgate.store.memory import MemoryStore

PROVIDER_SECRET = "provider-secret"
TOKEN = "customer-api-token"
READ = onoffice.ACTION_PREFIX + "read"


def settings(mode: Mode = Mode.INJECT, **customer) -> Settings:
    return Settings(
        capture=CaptureSettings(
            upstream="http://127.0.0.1:9000",
            listen=ListenAddress("127.0.0.1", 8081),
            provider_secret=(Secret(PROVIDER_SECRET),),
        ),
        policy=PolicySettings(mode=mode),
        customers=(Customer("21312", Secret(TOKEN), **customer),),
    )


def new_addon(settings_: Settings, store: MemoryStore) -> Claimgate:
    monitor = Monitor(Metrics(), Activity())
    monitor.metrics.count_claims_with(store.__len__)
    return Claimgate(settings_, store, monitor)


def make_addon(mode: Mode = Mode.INJECT, store=None, **customer) -> Claimgate:
    return new_addon(settings(mode, **customer), MemoryStore(3600, 100) if store is None else store)


def spec(addon: Claimgate, role: Role) -> ProxyMode:
    return ProxyMode.parse(next(s for s, r in listener_modes(addon.settings).items() if r is role))


def api_flow(addon: Claimgate, body: bytes, host: str = "api.onoffice.de", **headers: str):
    request = tutils.treq(
        host=host,
        port=443,
        scheme=b"https",
        method=b"POST",
        path=b"/api/stable/api.php",
        headers=http.Headers(**headers) if headers else http.Headers(),
        content=body,
    )
    flow = tflow.tflow(req=request)
    flow.client_conn.proxy_mode = spec(addon, Role.FORWARD)
    return flow


async def send(addon: Claimgate, flow: http.HTTPFlow) -> None:
    """The request hooks as mitmproxy calls them: the head first, then the body."""
    addon.requestheaders(flow)
    await addon.request(flow)


def api_body(params: str = "{}", version: str = "2", token: str = TOKEN) -> bytes:
    return (
        '{"token":"%s","request":{"actions":[{"actionid":"%s","resourcetype":"estate",'
        '"timestamp":1,"hmac":"h","hmac_version":%s,"parameters":%s}]}}'
        % (token, READ, version, params)
    ).encode()


def capture_flow(addon: Claimgate, url: str, role: Role = Role.CAPTURE):
    path = url.split("://", 1)[1].split("/", 1)[1]
    request = tutils.treq(
        host="127.0.0.1",
        port=9000,
        method=b"GET",
        path=("/" + path).encode(),
        headers=http.Headers(host="provider.example"),
        content=b"",
    )
    flow = tflow.tflow(req=request)
    flow.client_conn.proxy_mode = spec(addon, role)
    flow.client_conn.timestamp_tls_setup = None  # plain HTTP on the capture listener
    return flow


def service_call(claim: str, timestamp: int | None = None) -> str:
    timestamp = timestamp or int(time.time())
    url = (
        f"http://provider.example/service?apiClaim={claim}&customerWebId=21312&userId=17"
        f"&customerName=Muster&timestamp={timestamp}"
    )
    return sign_url(url, PROVIDER_SECRET)


async def stored(addon: Claimgate, claim: str = "the-claim") -> None:
    await addon.store.put(Claim("21312", "17", claim, int(time.time())))


def sent_claim(flow) -> str | None:
    return json.loads(flow.request.get_content())["request"]["actions"][0]["parameters"].get(
        "extendedclaim"
    )


async def test_capture_stores_the_claim_and_leaves_the_request_alone():
    addon = make_addon()
    with taddons.context(addon):
        flow = capture_flow(addon, service_call("abc"))
        before = flow.request.copy()
        await send(addon, flow)
        assert flow.response is None
        assert flow.request.data == before.data
        assert (await addon.store.freshest("21312")).claim == "abc"


async def test_forged_capture_stores_nothing_and_is_reported():
    addon = make_addon()
    with taddons.context(addon), capture_logs() as logs:
        flow = capture_flow(addon, service_call("abc").replace("userId=17", "userId=18"))
        await send(addon, flow)
    assert await addon.store.freshest("21312") is None
    assert [e["kind"] for e in logs if e["event"] == "violation"] == ["bad_signature"]


async def test_claim_is_injected_on_the_api_host():
    addon = make_addon()
    with taddons.context(addon):
        await stored(addon)
        flow = api_flow(addon, api_body())
        await send(addon, flow)
        assert sent_claim(flow) == "the-claim"
        assert flow.response is None


async def test_other_hosts_are_not_touched():
    addon = make_addon()
    with taddons.context(addon):
        await stored(addon)
        flow = api_flow(addon, api_body(), host="example.org")
        await send(addon, flow)
        assert flow.request.content == api_body()


async def test_gzip_body_is_decoded_and_re_encoded():
    addon = make_addon()
    with taddons.context(addon):
        await stored(addon)
        flow = api_flow(addon, gzip.compress(api_body()), content_encoding="gzip")
        await send(addon, flow)
        assert flow.request.headers["content-encoding"] == "gzip"
        assert gzip.decompress(flow.request.raw_content).count(b'"extendedclaim":"the-claim"') == 1


async def test_enforce_answers_without_a_claim():
    addon = make_addon(Mode.ENFORCE)
    with taddons.context(addon), capture_logs() as logs:
        flow = api_flow(addon, api_body())
        await send(addon, flow)
        await addon.response(flow)
    assert flow.response.headers[VIOLATION_HEADER] == "missing_claim"
    assert json.loads(flow.response.content)["response"]["results"][0]["status"]["errorcode"] == 193
    decision = next(e for e in logs if e["event"] == "api_request")
    assert decision["decision"] == "blocked" and decision["upstream_status"] is None


async def test_enforce_answers_a_malformed_body_with_400():
    addon = make_addon(Mode.ENFORCE)
    with taddons.context(addon):
        flow = api_flow(addon, b"not json")
        await send(addon, flow)
    assert flow.response.status_code == 400
    assert flow.response.headers[VIOLATION_HEADER] == "malformed_request"


async def test_observe_changes_nothing_but_logs_what_enforce_would_do():
    addon = make_addon(Mode.OBSERVE)
    with taddons.context(addon), capture_logs() as logs:
        flow = api_flow(addon, api_body())
        await send(addon, flow)
        await addon.response(flow)
    assert flow.request.content == api_body() and flow.response is None
    decision = next(e for e in logs if e["event"] == "api_request")
    assert (decision["decision"], decision["would"]) == ("observed", "blocked")


class BrokenStore(MemoryStore):
    """A store that fails: the addon must decide, not let the exception escape."""

    async def freshest(self, customer_web_id: str) -> Claim | None:
        raise RuntimeError("store exploded")


@pytest.mark.parametrize("mode", [Mode.INJECT, Mode.OBSERVE])
async def test_internal_error_forwards_the_original_bytes(mode):
    addon = make_addon(mode, store=BrokenStore(3600, 10))
    with taddons.context(addon), capture_logs() as logs:
        flow = api_flow(addon, api_body())
        await send(addon, flow)
        assert flow.request.content == api_body() and flow.response is None
        await addon.response(flow)
    decision = next(e for e in logs if e["event"] == "api_request")
    assert (decision["decision"], decision["error"]) == ("passed", "internal_error")


LIFECYCLE = {"load", "configure", "running", "done", "update"}
"""Start and stop: an error there must stop claimgate, not be met with a fail-safe."""


def test_every_flow_hook_goes_through_the_guard():
    import mitmproxy.proxy.layers
    import mitmproxy.proxy.server_hooks  # noqa: F401  (both register their hooks)
    from mitmproxy import hooks

    defined = [name for name in hooks.all_hooks if hasattr(Claimgate, name)]
    assert {"request", "requestheaders", "response", "error", "tls_clienthello"} <= set(defined)
    unguarded = [
        name
        for name in defined
        if name not in LIFECYCLE and not hasattr(getattr(Claimgate, name), "__wrapped__")
    ]
    assert unguarded == []


class BrokenCapture(MemoryStore):
    async def put(self, claim: Claim) -> bool:
        raise RuntimeError("store exploded")


@pytest.mark.parametrize(("role", "status"), [(Role.CAPTURE, None), (Role.MIRROR, 204)])
async def test_a_failed_capture_is_logged_and_the_request_still_answered(role, status):
    both = settings()
    both = replace(both, capture=replace(both.capture, mirror_listen=ListenAddress("::1", 8084)))
    addon = new_addon(both, BrokenCapture(3600, 10))
    with taddons.context(addon), capture_logs() as logs:
        flow = capture_flow(addon, service_call("abc"), role)
        await send(addon, flow)
        assert (flow.response.status_code if flow.response else None) == status
        assert flow.request.path.startswith("/service?apiClaim=abc")  # unchanged
    (failure,) = [e for e in logs if e["event"] == "internal_error"]
    assert (failure["hook"], failure["listener"]) == ("request", role.value)
    assert "abc" not in json.dumps(failure, default=str)


def explode(*_args: object) -> None:
    raise RuntimeError("exploded")


async def test_an_error_at_the_head_is_logged_and_the_body_still_decided(monkeypatch):
    addon = make_addon()
    monkeypatch.setattr(addon.oversize, "at_head", explode)
    with taddons.context(addon), capture_logs() as logs:
        await stored(addon)
        flow = api_flow(addon, api_body())
        await send(addon, flow)
        assert sent_claim(flow) == "the-claim"
        await addon.response(flow)
    assert [e["hook"] for e in logs if e["event"] == "internal_error"] == ["requestheaders"]
    assert addon.in_flight == 0


async def test_an_error_while_meeting_an_error_is_still_caught(monkeypatch):
    addon = make_addon(Mode.ENFORCE)
    monkeypatch.setattr(addon.generation.pipeline, "run", explode)
    monkeypatch.setattr(addon.generation.pipeline, "failed", explode)
    with taddons.context(addon), capture_logs() as logs:
        await send(addon, api_flow(addon, api_body()))
    assert [e["hook"] for e in logs if e["event"] == "internal_error"] == ["request", "request"]


async def test_internal_error_in_enforce_is_answered():
    addon = make_addon(Mode.ENFORCE, store=BrokenStore(3600, 10))
    with taddons.context(addon):
        flow = api_flow(addon, api_body())
        await send(addon, flow)
        assert flow.response.status_code == 502
        assert flow.response.headers[VIOLATION_HEADER] == "internal_error"


async def test_version_one_action_is_resigned_only_with_a_genuine_hmac():
    addon = make_addon(secret=Secret("api-secret"))
    action = {
        "actionid": READ,
        "identifier": "",
        "resourceid": "",
        "resourcetype": "estate",
        "timestamp": 1,
        "parameters": {},
    }
    action["hmac"] = onoffice.hmac_v1("api-secret", TOKEN, action)
    genuine = json.dumps({"token": TOKEN, "request": {"actions": [action]}}).encode()
    forged = genuine.replace(action["hmac"].encode(), b"0" * 32)
    with taddons.context(addon):
        await stored(addon)
        flow = api_flow(addon, genuine)
        await send(addon, flow)
        sent = json.loads(flow.request.content)["request"]["actions"][0]
        assert sent["hmac_version"] == 2
        assert sent["hmac"] == onoffice.hmac_v2("api-secret", 1, TOKEN, "estate", READ)
        untouched = api_flow(addon, forged)
        await send(addon, untouched)
        assert untouched.request.content == forged


async def test_api_rejection_is_reported_from_the_response():
    addon = make_addon()
    with taddons.context(addon), capture_logs() as logs:
        await stored(addon)
        flow = api_flow(addon, api_body())
        await send(addon, flow)
        body = onoffice.response_body([onoffice.action_error_result({}, onoffice.CLAIM_OUTDATED)])
        flow.response = tutils.tresp(content=body)
        await addon.response(flow)
    rejected = [e for e in logs if e.get("kind") == "api_rejected_claim"]
    assert rejected and rejected[0]["errorcode"] == 201
    decision = next(e for e in logs if e["event"] == "api_request")
    assert decision["violations"] == ["api_rejected_claim"]
    assert decision["upstream_status"] == 200


@pytest.mark.parametrize("answered", [True, False])
async def test_the_flow_holds_nothing_of_claimgate_once_its_line_is_written(answered):
    """Flows form reference cycles, freed only by the cyclic collector after it has walked
    all they hold: claimgate's state leaves the flow with the decision line instead."""
    addon = make_addon()
    with taddons.context(addon), capture_logs() as logs:
        await stored(addon)
        flow = api_flow(addon, api_body())
        await send(addon, flow)
        state = flow.metadata[METADATA_KEY]
        if answered:
            flow.response = tutils.tresp()
            await addon.response(flow)
        else:
            flow.error = flow_module.Error("connection closed")
            addon.error(flow)
    assert [e["decision"] for e in logs if e["event"] == "api_request"] == ["injected"]
    assert METADATA_KEY not in flow.metadata
    assert sys.getrefcount(state) == 2  # this name and the call's argument: nothing else
    assert addon.in_flight == 0


def client_hello(sni: str) -> tls.ClientHelloData:
    tls_object = ssl.create_default_context().wrap_bio(
        ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=sni
    )
    with pytest.raises(ssl.SSLWantReadError):
        tls_object.do_handshake()
    return parse_client_hello(out.read())


@pytest.mark.parametrize(
    ("sni", "role", "ignored"),
    [
        ("api.onoffice.de", Role.FORWARD, False),
        ("example.org", Role.FORWARD, True),
        ("example.org", Role.CAPTURE, False),
    ],
)
async def test_only_api_hosts_are_intercepted(sni, role, ignored):
    addon = make_addon()
    with taddons.context(addon) as tctx:
        client = connection.Client(
            peername=("127.0.0.1", 5000),
            sockname=("127.0.0.1", 8080),
            proxy_mode=spec(addon, role),
        )
        ctx = context.Context(client, tctx.options)
        ctx.server.address = (sni, 443)
        data = tls.ClientHelloData(ctx, client_hello(sni))
        addon.tls_clienthello(data)
        assert data.ignore_connection is ignored


def capture_settings(**capture) -> Settings:
    base = {
        "upstream": "http://127.0.0.1:9000",
        "listen": ListenAddress("127.0.0.1", 8081),
        "provider_secret": (Secret(PROVIDER_SECRET),),
    }
    return Settings(capture=CaptureSettings(**(base | capture)))


def link_flow(
    addon: Claimgate,
    signed_url: str,
    host: str,
    peer: str = "127.0.0.1",
    role: Role = Role.CAPTURE,
    **headers: str,
):
    flow = capture_flow(addon, signed_url, role)
    flow.request.headers["host"] = host
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    flow.client_conn.peername = (peer, 40000)
    return flow


async def captured_claims(addon: Claimgate, flow) -> str | None:
    with taddons.context(addon):
        await send(addon, flow)
    found = await addon.store.freshest("21312")
    return found.claim if found else None


def signed(base: str, claim: str = "abc") -> str:
    return sign_url(
        f"{base}/service?apiClaim={claim}&customerWebId=21312&userId=17&timestamp={int(time.time())}",
        PROVIDER_SECRET,
    )


async def test_explicit_port_in_the_host_is_part_of_the_signed_url():
    addon = new_addon(capture_settings(), MemoryStore(3600, 10))
    flow = link_flow(addon, signed("http://provider.example:8081"), "provider.example:8081")
    assert await captured_claims(addon, flow) == "abc"
    addon = new_addon(capture_settings(), MemoryStore(3600, 10))
    flow = link_flow(addon, signed("http://provider.example"), "provider.example:8081")
    assert await captured_claims(addon, flow) is None


async def test_public_base_url_wins_when_tls_ends_in_front():
    settings_ = capture_settings(public_base_url="https://app.example.com")
    addon = new_addon(settings_, MemoryStore(3600, 10))
    flow = link_flow(addon, signed("https://app.example.com"), "10.0.0.5:8081")
    assert await captured_claims(addon, flow) == "abc"


@pytest.mark.parametrize(("peer", "expected"), [("10.1.2.3", "abc"), ("192.0.2.7", None)])
async def test_forwarded_headers_count_only_from_trusted_proxies(peer, expected):
    from ipaddress import ip_network

    settings_ = capture_settings(trusted_proxies=(ip_network("10.0.0.0/8"),))
    addon = new_addon(settings_, MemoryStore(3600, 10))
    flow = link_flow(
        addon,
        signed("https://app.example.com"),
        "claimgate:8081",
        peer=peer,
        x_forwarded_proto="https",
        x_forwarded_host="app.example.com",
    )
    assert await captured_claims(addon, flow) == expected


def adoption_addon() -> Claimgate:
    from ipaddress import ip_network

    from claimgate.settings import ApiSettings

    settings_ = Settings(
        capture=CaptureSettings(
            mirror_listen=ListenAddress("127.0.0.1", 8084),
            provider_secret=(Secret(PROVIDER_SECRET),),
            trusted_proxies=(ip_network("10.0.0.0/8"),),
        ),
        api=ApiSettings(listen=ListenAddress("127.0.0.1", 8083)),
        customers=(Customer("21312", Secret(TOKEN)),),
    )
    return new_addon(settings_, MemoryStore(3600, 10))


def on(addon: Claimgate, role: Role, flow):
    flow.client_conn.proxy_mode = spec(addon, role)
    return flow


async def test_api_listener_injects_and_presents_the_real_api_host():
    addon = adoption_addon()
    with taddons.context(addon):
        await stored(addon)
        flow = on(addon, Role.API, api_flow(addon, api_body(), host="api.onoffice.de"))
        flow.request.headers["host"] = "127.0.0.1:8083"
        await send(addon, flow)
    assert flow.request.headers["host"] == "api.onoffice.de"
    assert sent_claim(flow) == "the-claim"


async def test_api_listener_refuses_requests_naming_another_host():
    addon = adoption_addon()
    with taddons.context(addon):
        flow = on(addon, Role.API, api_flow(addon, api_body()))
        flow.request.authority = "evil.example:80"
        await send(addon, flow)
        assert flow.response.status_code == 421
        same = on(addon, Role.API, api_flow(addon, api_body()))
        same.request.authority = "api.onoffice.de"
        await send(addon, same)
        assert same.response is None


async def test_mirror_listener_captures_and_answers_204():
    addon = adoption_addon()
    with taddons.context(addon):
        flow = link_flow(
            addon,
            signed("https://app.example.com"),
            "app-internal",
            peer="10.0.0.9",
            role=Role.MIRROR,
            x_forwarded_proto="https",
            x_forwarded_host="app.example.com",
        )
        await send(addon, flow)
        assert flow.response.status_code == 204
        assert (await addon.store.freshest("21312")).claim == "abc"
        other = on(addon, Role.MIRROR, api_flow(addon, b"anything"))
        await send(addon, other)
        assert other.response.status_code == 204


async def test_a_body_too_large_to_hold_passes_untouched_with_a_violation():
    addon = make_addon()
    with taddons.context(addon), capture_logs() as logs:
        flow = api_flow(addon, api_body())
        flow.request.stream = True  # what mitmproxy does above proxy.max_body_size
        await send(addon, flow)
        assert flow.request.host == "api.onoffice.de" and flow.response is None
    (violation,) = [e for e in logs if e["event"] == "violation"]
    assert violation["kind"] == "malformed_request"
    assert "max_body_size" in violation["reason"]


async def test_enforce_sends_a_body_too_large_to_the_sink():
    addon = make_addon(Mode.ENFORCE)
    with taddons.context(addon):
        addon.oversize.sink_address = ("127.0.0.1", 4242)
        flow = api_flow(addon, api_body())
        flow.request.stream = True
        addon.requestheaders(flow)
        assert (flow.request.host, flow.request.port, flow.request.scheme) == (
            "127.0.0.1",
            4242,
            "http",
        )


async def test_enforce_holds_a_chunked_body_at_the_sink_until_it_is_read_whole():
    addon = make_addon(Mode.ENFORCE)
    with taddons.context(addon):
        await stored(addon)
        addon.oversize.sink_address = ("127.0.0.1", 4242)
        flow = api_flow(addon, api_body())
        flow.request.headers.pop("content-length", None)
        flow.request.headers["transfer-encoding"] = "chunked"
        addon.requestheaders(flow)
        assert flow.request.port == 4242
        await addon.request(flow)  # read whole: back to the API, with the claim
        assert (flow.request.host, flow.request.port) == ("api.onoffice.de", 443)
        assert sent_claim(flow) == "the-claim"


async def test_a_request_sent_without_a_claim_is_not_reported_twice():
    addon = make_addon()
    with taddons.context(addon), capture_logs() as logs:
        flow = api_flow(addon, api_body())  # no claim stored: forwarded without one
        await send(addon, flow)
        body = onoffice.response_body([onoffice.action_error_result({}, onoffice.CLAIM_REQUIRED)])
        flow.response = tutils.tresp(content=body)
        await addon.response(flow)
    assert [e["kind"] for e in logs if e["event"] == "violation"] == ["missing_claim"]


def gzip_bomb(decoded_size: int) -> bytes:
    """Zeros that inflate to ``decoded_size`` bytes, built without holding them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(decoded_size // len(block))]
    return b"".join([*parts, compressor.flush()])


def small_limit(mode: Mode) -> Claimgate:
    limited = replace(settings(mode), proxy=ProxySettings(max_body_size=64 * 1024))
    return new_addon(limited, MemoryStore(3600, 100))


@pytest.mark.parametrize("mode", [Mode.INJECT, Mode.OBSERVE])
async def test_a_body_too_large_once_decoded_passes_untouched(mode):
    addon = small_limit(mode)
    bomb = gzip_bomb(8 * 1024 * 1024)
    with taddons.context(addon), capture_logs() as logs:
        await stored(addon)
        flow = api_flow(addon, bomb, content_encoding="gzip")
        await send(addon, flow)
        assert flow.response is None and flow.request.raw_content == bomb
    (violation,) = [e for e in logs if e["event"] == "violation"]
    assert violation["kind"] == "malformed_request"
    assert "once decoded" in violation["reason"]


async def test_enforce_answers_a_body_too_large_once_decoded_with_413():
    addon = small_limit(Mode.ENFORCE)
    with taddons.context(addon):
        await stored(addon)
        flow = api_flow(addon, gzip_bomb(8 * 1024 * 1024), content_encoding="gzip")
        await send(addon, flow)
        assert flow.response.status_code == 413
        assert flow.response.headers[VIOLATION_HEADER] == "malformed_request"


async def test_an_api_answer_too_large_once_decoded_goes_on_unread():
    addon = small_limit(Mode.INJECT)
    rejection = onoffice.response_body([onoffice.action_error_result({}, onoffice.CLAIM_OUTDATED)])
    padded = rejection + b" " * (128 * 1024)  # whitespace after the JSON: still a rejection
    with taddons.context(addon), capture_logs() as logs:
        await stored(addon)
        for body in (gzip.compress(rejection), gzip.compress(padded)):
            flow = api_flow(addon, api_body())
            await send(addon, flow)
            flow.response = tutils.tresp(content=b"", headers=http.Headers(content_encoding="gzip"))
            flow.response.raw_content = body
            await addon.response(flow)
    rejected = [e for e in logs if e.get("kind") == "api_rejected_claim"]
    assert len(rejected) == 1  # the small answer's; the large one was not inflated


async def test_a_malformed_request_is_not_reported_as_a_rejected_claim():
    addon = make_addon()
    with taddons.context(addon), capture_logs() as logs:
        await stored(addon)
        flow = api_flow(addon, b'{"token": "t", "request": {"actions": "not a list"}}')
        await send(addon, flow)
        body = onoffice.response_body([onoffice.action_error_result({}, onoffice.CLAIM_REQUIRED)])
        flow.response = tutils.tresp(content=body)
        await addon.response(flow)
    assert [e["kind"] for e in logs if e["event"] == "violation"] == ["malformed_request"]


@pytest.mark.parametrize(
    ("api_hosts", "port", "expected_port"),
    [(("api.onoffice.de",), 80, 443), (("api.onoffice.de:8080",), 8080, 8080)],
)
async def test_a_plain_http_api_request_is_sent_over_tls(api_hosts, port, expected_port):
    addon = new_addon(
        replace(settings(), proxy=ProxySettings(api_hosts=api_hosts)), MemoryStore(3600, 100)
    )
    with taddons.context(addon), capture_logs() as logs:
        await stored(addon)
        flow = api_flow(addon, api_body())
        flow.request.scheme, flow.request.port = "http", port
        await send(addon, flow)
        assert (flow.request.scheme, flow.request.port) == ("https", expected_port)
        assert sent_claim(flow) == "the-claim"
        flow.response = tutils.tresp()
        await addon.response(flow)
    decision = next(e for e in logs if e["event"] == "api_request")
    assert decision["upgraded_to_https"] is True


# --- the header helpers of the hot path agree with mitmproxy's own API -------------------

header_names = st.sampled_from(
    [
        b"Content-Encoding",
        b"content-encoding",
        b"Content-Length",
        b"CONTENT-LENGTH",
        b"Transfer-Encoding",
        b"Host",
        b"X-Other",
    ]
)
header_values = st.sampled_from([b"gzip", b"identity", b"12", b"chunked", b"a, b", b"\xff"])
header_fields = st.lists(st.tuples(header_names, header_values), max_size=6).map(tuple)


def request_with(fields: tuple[tuple[bytes, bytes], ...]) -> http.Request:
    request = tutils.treq(content=b"old body")
    request.headers.fields = fields
    return request


@given(header_fields, st.sampled_from(["content-encoding", "content-length", "host"]))
def test_header_reads_what_mitmproxy_reads(fields, name):
    request = request_with(fields)
    assert addon_module._header(request, name.encode()) == request.headers.get(name)


@given(header_fields, st.binary(max_size=40))
def test_set_content_edits_what_mitmproxy_s_setter_edits(fields, content):
    ours, theirs = request_with(fields), request_with(fields)
    theirs.content = content
    addon_module._set_content(ours, content)
    assert (ours.raw_content, ours.headers.fields) == (theirs.raw_content, theirs.headers.fields)
