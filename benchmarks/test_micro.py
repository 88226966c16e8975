"""Microbenchmarks of the per-request work claimgate adds (pytest-benchmark).

``./dev microbench``. Not part of ``./dev test``: numbers, not verdicts. Recorded in
docs/performance.md.
"""

import asyncio
import json
import os
import time

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from benchmarks.bench import SPELLINGS, body_of_size
from claimgate import onoffice, policy, rewrite, signature
from claimgate.activity import Activity
from claimgate.addon import Claimgate, Role, listener_modes
from claimgate.capture import LinkRequest, examine
from claimgate.metrics import Metrics
from claimgate.monitor import Monitor
from claimgate.settings import (
    CaptureSettings,
    Customer,
    ListenAddress,
    Mode,
    Secret,
    Settings,
)
from claimgate.store import Claim
from claimgate.store.memory import MemoryStore
from claimgate.telemetry import configure_logging
from claimgate.testing import make_claim, make_secret, make_token, service_call_url

READ = onoffice.ACTION_PREFIX + "read"
CLAIM = make_claim("bench")


def request_of_size(size: int, spelling: str = "sdk") -> bytes:
    return body_of_size(size, make_token(), make_secret(), spelling)


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("size", [1024, 65536])
def test_parse_and_rewrite(benchmark, size, spelling):
    """The SDK's spelling takes parse's shortcut, the spaced one the walker."""
    body = request_of_size(size, spelling)

    def run() -> bytes:
        parsed = rewrite.parse(body)
        return rewrite.rewrite(parsed, CLAIM, range(len(parsed.actions)))

    assert b"extendedclaim" in benchmark(run)


@pytest.mark.parametrize("size", [1024, 65536])
def test_json_loads_for_comparison(benchmark, size):
    body = request_of_size(size)
    benchmark(json.loads, body)


def test_decide(benchmark):
    request = rewrite.parse(request_of_size(1024))
    facts = policy.Facts(
        Mode.INJECT,
        "21312",
        False,
        Claim("21312", "17", CLAIM, int(time.time())),
        time.time(),
        3600,
    )
    assert benchmark(policy.decide, request, facts).decision is policy.Decision.INJECTED


def test_link_verification(benchmark):
    url = service_call_url(
        "https://provider.example/service",
        "secret",
        customer_web_id="21312",
        user_id="17",
        claim=CLAIM,
    )
    base, path, query = signature.split_url(url)
    link = LinkRequest(base, path, query)
    result = benchmark(examine, link, "secret", 600, time.time())
    assert result is not None and not hasattr(result, "violation")


def test_store_lookup(benchmark):
    store = MemoryStore(3600, 100_000)
    loop = asyncio.new_event_loop()
    for index in range(100_000):
        loop.run_until_complete(store.put(Claim(str(index), "17", f"c{index}", int(time.time()))))

    def lookup() -> Claim | None:
        coroutine = store.freshest("54321")
        try:
            coroutine.send(None)
        except StopIteration as done:  # completes at once: no event loop round trip measured
            return done.value
        raise AssertionError("the memory store never waits")

    assert benchmark(lookup) is not None
    loop.close()


def test_hooks_per_api_request(benchmark):
    """requestheaders + request + response of one injected 1 KB request, on mitmproxy's own
    test flows: claimgate's whole in-process work per request, decision line included."""
    token, secret = make_token(), make_secret()
    settings = Settings(
        capture=CaptureSettings(
            upstream="http://127.0.0.1:9000",
            listen=ListenAddress("127.0.0.1", 8081),
            provider_secret=(Secret(secret),),
        ),
        customers=(Customer("21312", Secret(token)),),
    )
    store = MemoryStore(3600, 1000)
    addon = Claimgate(settings, store, Monitor(Metrics(), Activity()))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(store.put(Claim("21312", "17", CLAIM, int(time.time()))))
    body = body_of_size(1024, token, secret)
    forward = ProxyMode.parse(
        next(s for s, r in listener_modes(settings).items() if r is Role.FORWARD)
    )
    answer = http.Response.make(200, b'{"status":{"code":200,"errorcode":0}}')

    def new_flow() -> tuple[tuple[http.HTTPFlow], dict[str, object]]:
        request = tutils.treq(
            host="api.onoffice.de",
            port=443,
            scheme=b"https",
            method=b"POST",
            path=b"/api/stable/api.php",
            content=body,
        )
        flow = tflow.tflow(req=request)
        flow.client_conn.proxy_mode = forward
        return (flow,), {}

    def hooks(flow: http.HTTPFlow) -> http.HTTPFlow:
        addon.requestheaders(flow)
        loop.run_until_complete(addon.request(flow))
        flow.response = answer
        loop.run_until_complete(addon.response(flow))
        return flow

    with open(os.devnull, "w") as devnull:
        configure_logging("json", stream=devnull)
        flow = benchmark.pedantic(hooks, setup=new_flow, rounds=2000)
    assert b"extendedclaim" in flow.request.content
    loop.close()
