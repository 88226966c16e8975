"""End to end, from the internet's side: strangers who try to grow, stall or blind claimgate.

Each case attacks the real ``claimgate run`` (on its default ``[limits]`` and
``proxy.max_body_size``) with the kit in ``tests/hostile.py`` and asserts what the edge
promises: an oversized or slow request is refused (answered 414, 431 or 408, or its
connection closed) and never forwarded; a forged link leaves no customer behind; a body is
as large as it inflates; a claim never travels in clear. While each attack runs, ``/healthz``
must keep answering. Memory and log bounds are the issue's; time bounds are generous, for a
loaded machine (``./dev hostile`` reports the tight figures).

The long cases (tens of seconds each, more against an edge that does not defend itself) have
names ending in ``_long``: ``-k 'hostile and not _long'`` leaves them out.
"""

import contextlib
import hashlib
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from claimgate.testing import ApiDouble, make_claim, make_secret, service_call_url
from tests.hostile import (
    ADMIN_TOKEN_ENV,
    BODIES_HELD,
    HELD,
    HELD_BODY,
    KIB,
    LINK_HOST,
    MIB,
    PROVIDER_SECRET_ENV,
    Address,
    Answer,
    HealthProber,
    Observed,
    Slow,
    address_of,
    body_head,
    bomb,
    events_since,
    exchange,
    flood,
    forged_huge_links,
    forged_id,
    forged_links,
    hostile_config,
    http2_held,
    huge_headers,
    huge_url,
    observe,
    post_raw,
    request_bytes,
    status_document,
    strings_in,
    trickle,
)
from tests.support import (
    PROVIDER_SECRET,
    App,
    Customer,
    SocketServer,
    World,
    api_request,
    run_world,
    scrape,
    service_call_link,
)

ADMIN_TOKEN = make_secret()
ENV = {PROVIDER_SECRET_ENV: PROVIDER_SECRET, ADMIN_TOKEN_ENV: ADMIN_TOKEN}
LISTENERS = ("forward", "capture", "mirror", "api", "admin")
UPSTREAM_SERVERS = ("BaseHTTP", "claimgate-api-double")
"""How the ``Server`` header of the app and of the API double starts: an answer carrying it
came from upstream, so the request was forwarded."""
ENCODED = {"Content-Encoding": "gzip", "Content-Type": "application/json"}

RSS_MB, LOG_BYTES, HWM_MB = 30, 1_000_000, 100
STATUS_BYTES = 100_000
SLOWEST_PROBE = 5.0
TRICKLE_BOUND = 40.0


class PlainServer(SocketServer):
    """A plain TCP server: records the first bytes each connection sends, then closes it."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        super().__init__(self._record)

    def _record(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(1.0)
            data = b""
            try:
                while len(data) < 64 * KIB and (chunk := connection.recv(64 * KIB)):
                    data += chunk
            except OSError:  # a TLS client waits for our hello: a second of silence
                pass
            self.received.append(data)


@dataclass
class Edge:
    """A running claimgate, and the one customer whose claim it holds."""

    world: World
    customer: Customer
    claim: str = field(repr=False)

    @property
    def pid(self) -> int:
        return self.world.sidecar.process.pid

    def at(self, listener: str) -> Address:
        return address_of(self.world.sidecar.listeners[listener])

    def observe[T](self, attack: Callable[[], T]) -> Observed[T]:
        return observe(self.pid, self.world.sidecar.lines, self.at("admin"), attack)

    def status(self) -> tuple[int, Any]:
        return status_document(self.at("admin"), ADMIN_TOKEN)

    def request(
        self, listener: str, query: str = "", headers: Sequence[tuple[str, str]] = ()
    ) -> bytes:
        """A request the listener forwards (or answers itself, for mirror and admin): to the
        app through the forward listener, a signed API request on the API listener."""
        if listener == "forward":
            app = self.world.app.url
            return request_bytes(f"{app}/limits{query}", headers, app.split("//")[1])
        if listener == "api":
            body = api_request(self.customer)
            return request_bytes(f"/api/stable/api.php{query}", headers, body=body)
        return request_bytes(("/healthz" if listener == "admin" else "/limits") + query, headers)

    def api_url(self, listener: str) -> str:
        if listener == "forward":
            return self.world.api.url
        return f"http://{self.world.sidecar.listeners['api']}/api/stable/api.php"


@pytest.fixture(scope="module")
def plain() -> Iterator[PlainServer]:
    server = PlainServer()
    yield server
    server.close()


def edge_in(tmp_path_factory, mode: str, *api_hosts: str) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp(f"hostile-{mode}")
    customer = Customer("71001")
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        config = hostile_config(tmp, app.url, api, mode, *api_hosts)
        for world in run_world(tmp, config, ENV, app, api, [customer]):
            world.secrets.add(ADMIN_TOKEN)
            world.activate(customer)
            claim = make_claim()
            assert world.service_call(customer, claim).status_code == 200
            yield Edge(world, customer, claim)


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory, plain) -> Iterator[Edge]:
    yield from edge_in(tmp_path_factory, "enforce", f"127.0.0.1:{plain.port}")


@pytest.fixture(scope="module")
def injecting(tmp_path_factory) -> Iterator[Edge]:
    yield from edge_in(tmp_path_factory, "inject")


def assert_probes_answered(probes: HealthProber) -> None:
    assert probes.latencies, "no /healthz probe ran"
    assert not probes.failures, f"/healthz probes failed: {Counter(probes.failures)}"
    assert probes.slowest < SLOWEST_PROBE, f"slowest /healthz probe: {probes.slowest:.1f} s"


def unexpected(answers: list[Answer], status: int) -> Counter[str]:
    """The outcomes that are neither ``status`` nor a closed connection, counted."""
    return Counter(a.outcome for a in answers if a.outcome not in (str(status), "closed"))


def from_upstream(answer: Answer) -> bool:
    return answer.server.startswith(UPSTREAM_SERVERS)


def violations(edge: Edge) -> Counter[str]:
    """``claimgate_violations_total`` by kind."""
    return scrape(edge.world).by("claimgate_violations_total", "kind")


def refused_total(edge: Edge, listener: str, reason: str) -> float:
    """``claimgate_requests_refused_total`` of ``listener`` and ``reason``."""
    return scrape(edge.world).value(
        "claimgate_requests_refused_total", listener=listener, reason=reason
    )


def customers_listed(status: Any) -> set[str]:
    return {row["customer"] for row in status["customers"]}


# --- limits of a request head, on every listener ---------------------------------------

OVER_LIMITS = {
    "request_line": (414, 20 * KIB, 0, 0),
    "header_size": (431, 0, 70, KIB),
    "header_count": (431, 0, 120, 8),
}
"""Past ``[limits]``: (status, bytes of padding in the URL, headers, bytes per header)."""


def padded_request(edge: Edge, listener: str, url_pad: int, count: int, each: int) -> bytes:
    headers = [(f"X-Pad-{i:03d}", "h" * each) for i in range(count)]
    return edge.request(listener, f"?pad={'p' * url_pad}" if url_pad else "", headers)


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("limit", OVER_LIMITS)
def test_a_request_head_past_the_limits_is_refused_and_not_forwarded(enforcing, listener, limit):
    status, url_pad, count, each = OVER_LIMITS[limit]
    app, api = enforcing.world.app, enforcing.world.api
    connections, requests = app.connections, len(api.requests)
    request = padded_request(enforcing, listener, url_pad, count, each)
    answer = exchange(enforcing.at(listener), [request])
    assert answer.outcome in (str(status), "closed")
    assert not from_upstream(answer), f"answered by upstream: {answer.server}"
    assert app.connections == connections, "the app was reached"
    assert len(api.requests) == requests, "the API was reached"


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_request_head_within_the_limits_is_served(enforcing, listener):
    """8 KiB of URL and 80 headers in 40 KiB: large, but what real clients may send."""
    request = padded_request(enforcing, listener, 8 * KIB, 80, 500)
    answer = exchange(enforcing.at(listener), [request])
    assert answer.outcome == ("204" if listener == "mirror" else "200")


# --- huge request heads: refused early, at no cost -----------------------------------


def test_forged_service_calls_with_huge_ids_are_refused_cheaply_long(enforcing):
    marker = f"hostile{secrets.token_hex(6)}"
    connections = enforcing.world.app.connections
    seen = enforcing.observe(lambda: forged_huge_links(enforcing.at("capture"), marker))
    assert len(seen.result) == 200
    assert not unexpected(seen.result, 414), "answers other than 414 or a close"
    assert enforcing.world.app.connections == connections, "forwarded to the app"
    assert seen.rss_growth_mb < RSS_MB, f"RSS grew {seen.rss_growth_mb:.0f} MB"
    assert seen.log_growth_bytes < LOG_BYTES, f"{seen.log_growth_bytes} bytes logged"
    assert_probes_answered(seen.probes)
    size, status = enforcing.status()
    assert size < STATUS_BYTES, f"/status.json is {size} bytes"
    listed = sum(1 for s in strings_in(status) if s.startswith(marker))
    assert listed == 0, f"{listed} forged ids are listed"


@pytest.mark.parametrize(("attack", "status"), [(huge_url, 414), (huge_headers, 431)])
def test_a_huge_request_head_is_refused_cheaply_long(enforcing, attack, status):
    """One 32 MiB URL, or 64 MiB of headers, on one connection."""
    connections = enforcing.world.app.connections
    marker = f"hostile{secrets.token_hex(6)}"
    seen = enforcing.observe(lambda: attack(enforcing.at("capture"), marker))
    assert not unexpected([seen.result], status)
    assert enforcing.world.app.connections == connections, "forwarded to the app"
    assert seen.rss_growth_mb < RSS_MB, f"RSS grew {seen.rss_growth_mb:.0f} MB"
    assert seen.log_growth_bytes < LOG_BYTES, f"{seen.log_growth_bytes} bytes logged"
    assert_probes_answered(seen.probes)


# --- forged and malformed links: no per-customer state --------------------------------


def test_forged_links_leave_no_customer_behind(enforcing):
    ids = [forged_id() for _ in range(200)]
    counted = violations(enforcing)["bad_signature"]
    shown = enforcing.status()[1]["violations_last_hour"]["bad_signature"]
    start = len(enforcing.world.sidecar.lines)

    def attack() -> list[int | None]:
        statuses = forged_links(enforcing.at("capture"), ids)
        time.sleep(1.2)  # one more after a quiet second: a rate limiter reports what it held
        return statuses + forged_links(enforcing.at("capture"), [forged_id()])

    seen = enforcing.observe(attack)
    assert Counter(seen.result) == {200: 201}  # a link reaches the app whatever it is
    size, status = enforcing.status()
    assert size < STATUS_BYTES, f"/status.json is {size} bytes"
    listed = len(set(ids) & set(strings_in(status)))
    assert listed == 0, f"{listed} forged customer ids are listed"
    assert violations(enforcing)["bad_signature"] - counted == 201
    assert status["violations_last_hour"]["bad_signature"] - shown == 201
    assert seen.log_growth_bytes < LOG_BYTES, f"{seen.log_growth_bytes} bytes logged"
    assert_probes_answered(seen.probes)

    events = events_since(enforcing.world.sidecar.lines, start)
    logged = [e for e in events if e.get("kind") == "bad_signature"]
    assert len(logged) <= 15 * (seen.seconds + 1), f"{len(logged)} refusals logged"
    deadline = time.monotonic() + 5
    while not any(
        isinstance(e.get("suppressed"), int) and e["suppressed"] > 0
        for e in events_since(enforcing.world.sidecar.lines, start)
    ):
        assert time.monotonic() < deadline, "no line reports the suppressed refusals"
        time.sleep(0.1)


BAD_IDS = [
    ("x" * 65, "17"),
    ("", "17"),
    ("12 34", "17"),
    ("kunde/1", "17"),
    ("k\u00fcnde", "17"),
    ("1;2", "17"),
    ("71101", "u" * 65),
    ("71102", ""),
    ("71103", "1 7"),
]
"""(customerWebId, userId) pairs outside 1-64 characters of ``[A-Za-z0-9_-]``."""


def test_genuine_links_with_ids_outside_the_alphabet_are_refused(enforcing):
    world = enforcing.world
    before = violations(enforcing)
    for customer_web_id, user_id in BAD_IDS:
        link = service_call_url(
            f"http://{LINK_HOST}/service",
            PROVIDER_SECRET,
            customer_web_id=customer_web_id,
            user_id=user_id,
            claim=make_claim(),
        )
        world.link(link)
    stale = Customer("71104")
    world.link(service_call_link(stale, make_claim(), int(time.time()) - 3600))
    widest = Customer("A-_9" * 16)  # 64 characters: the longest id allowed
    world.service_call(widest, make_claim())

    status = enforcing.status()[1]
    refused_ids = {c for c, _ in BAD_IDS} | {stale.web_id}
    listed = customers_listed(status) & refused_ids
    listed |= {c for c in refused_ids if c} & set(strings_in(status))
    assert not listed, f"refused ids are listed: {sorted(listed)}"
    assert widest.web_id in customers_listed(status)
    after = violations(enforcing)
    assert sum((after - before).values()) >= len(BAD_IDS) + 1, "refusals were not counted"
    claims = f"http://{world.sidecar.listeners['admin']}/claims"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.get(f"{claims}/{'x' * 65}", headers=auth, trust_env=False).status_code == 400
    assert httpx.get(f"{claims}/{widest.web_id}", headers=auth, trust_env=False).status_code == 200


# --- slow headers ----------------------------------------------------------------------


def test_slow_heads_and_bodies_are_cut_off_on_every_listener_while_others_are_served_long(
    enforcing,
):
    """200 connections trickle a request head to the capture listener, a byte a second; on
    each listener one new connection and one kept alive after a first request do the same,
    and one more sends a head at once and trickles its body."""
    targets = [Slow(enforcing.at("capture"), label="capture")] * 200
    for listener in LISTENERS:
        primer = enforcing.request(listener)
        app = enforcing.world.app.url
        slow_body = (
            body_head(f"{app}/slow", app.split("//")[1])
            if listener == "forward"
            else body_head("/slow")
        )
        targets += [
            Slow(enforcing.at(listener), label=f"{listener} new"),
            Slow(enforcing.at(listener), primer, label=f"{listener} kept alive"),
            Slow(
                enforcing.at(listener), label=f"{listener} body", lead=slow_body, trickled=b"b" * 60
            ),
        ]
    served: list[tuple[int, float]] = []
    stop = threading.Event()

    def serve_others() -> None:
        for _ in range(20):
            if stop.wait(1.0):
                return
            started = time.monotonic()
            answer = httpx.get(
                f"{enforcing.world.sidecar.capture_url}/normal",
                headers={"Host": LINK_HOST},
                timeout=SLOWEST_PROBE,
                trust_env=False,
            )
            served.append((answer.status_code, time.monotonic() - started))

    others = threading.Thread(target=serve_others)
    others.start()
    try:
        seen = enforcing.observe(lambda: trickle(targets, timeout=TRICKLE_BOUND))
    finally:
        stop.set()
        others.join(SLOWEST_PROBE + 2)
    left = Counter(
        f"{t.target.label}: {t.outcome}" for t in seen.result if t.outcome not in ("408", "closed")
    )
    assert not left, f"not refused within {TRICKLE_BOUND:.0f} s: {left}"
    assert served and all(status == 200 for status, _ in served), served
    assert_probes_answered(seen.probes)


# --- compressed bodies: the size is the decoded size ----------------------------------


def fresh_bomb() -> bytes:
    """A 1 GiB gzip bomb whose bytes no earlier case sent (mitmproxy would not decode those
    again, and the case would pass without testing anything)."""
    return bomb("gzip", tag=secrets.randbits(32) | 1)


@pytest.mark.parametrize("listener", ["forward", "api"])
@pytest.mark.parametrize("mode", ["enforce", "inject"])
def test_a_gzip_bomb_request_is_judged_by_its_decoded_size(request, mode, listener):
    """1 GiB of zeros in about 1 MB: answered 413 in enforce, forwarded untouched in inject."""
    edge: Edge = request.getfixturevalue("enforcing" if mode == "enforce" else "injecting")
    api, body = edge.world.api, fresh_bomb()
    before = len(api.requests)
    with httpx.Client(trust_env=False) as direct:
        client = edge.world.client if listener == "forward" else direct
        seen = edge.observe(lambda: post_raw(client, edge.api_url(listener), body, ENCODED))
    assert seen.hwm_growth_mb < HWM_MB, f"peak RSS grew {seen.hwm_growth_mb:.0f} MB"
    assert_probes_answered(seen.probes)
    if mode == "enforce":
        assert seen.result.status == 413
        assert seen.result.headers.get("X-Claimgate-Violation") == "malformed_request"
        assert len(api.requests) == before, "the API was reached"
    else:
        received = api.wait_for_requests(before + 1)[before].raw_body
        untouched = received == body
        assert untouched, f"the API received {len(received)} bytes, not the {len(body)} sent"


@pytest.mark.parametrize("encoding", ["deflate", "br", "zstd"])
def test_every_encoding_is_judged_by_its_decoded_size(enforcing, encoding):
    api, body = enforcing.world.api, bomb(encoding)
    before = len(api.requests)
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    seen = enforcing.observe(lambda: post_raw(enforcing.world.client, api.url, body, headers))
    assert (seen.result.status, seen.result.headers.get("X-Claimgate-Violation")) == (
        413,
        "malformed_request",
    )
    assert len(api.requests) == before, "the API was reached"
    assert seen.hwm_growth_mb < HWM_MB, f"peak RSS grew {seen.hwm_growth_mb:.0f} MB"


@pytest.mark.parametrize("listener", ["forward", "api"])
def test_a_gzip_bomb_answer_reaches_the_client_untouched(injecting, listener):
    """The API's answer is read for claim rejections; one that inflates to 1 GiB is passed on
    as it came, and claimgate's memory stays bounded."""
    api, body = injecting.world.api, fresh_bomb()
    before = len(api.requests)
    api.answer_next(body, ENCODED)
    with httpx.Client(trust_env=False) as direct:
        client = injecting.world.client if listener == "forward" else direct
        request = api_request(injecting.customer)
        seen = injecting.observe(lambda: post_raw(client, injecting.api_url(listener), request, {}))
    sent = api.wait_for_requests(before + 1)[before]
    assert sent.claims() == [injecting.claim], "the claim was not injected, so not inspected"
    answer, expected = seen.result, hashlib.sha256(body).hexdigest()
    assert answer.status == 200 and answer.headers.get("Content-Encoding") == "gzip"
    assert (answer.length, answer.sha256) == (len(body), expected), "the answer was changed"
    assert seen.hwm_growth_mb < HWM_MB, f"peak RSS grew {seen.hwm_growth_mb:.0f} MB"
    assert_probes_answered(seen.probes)


# --- request bodies held at once ---------------------------------------------------------


def test_bodies_past_what_a_listener_holds_are_refused_and_memory_stays_near_it(enforcing):
    """Twice as many bodies as ``limits.bodies`` holds, each sent but for its last byte and
    kept: a body's worth of them are held, unanswered; the rest are refused (503, or closed
    while still sending); memory grows by about what is held, not by all that was sent."""
    count = 2 * BODIES_HELD
    refused = refused_total(enforcing, "capture", "too_many_body_bytes")
    seen = enforcing.observe(lambda: flood(enforcing.at("capture"), count, HELD, 0.5))
    try:
        assert set(seen.result.outcomes) <= {"timeout", "503", "closed"}
        assert (
            refused_total(enforcing, "capture", "too_many_body_bytes")
            == refused + count - BODIES_HELD
        )
        deadline = time.monotonic() + 30  # a bound on waiting for the last closes, not a time
        while (still_open := seen.result.still_open()) != BODIES_HELD:
            assert time.monotonic() < deadline, f"{still_open} open, not {BODIES_HELD}"
            time.sleep(0.1)
        held_mib = BODIES_HELD * (HELD_BODY - 1) / MIB
        assert seen.rss_growth_mb < 1.5 * held_mib, f"RSS grew {seen.rss_growth_mb:.0f} MB"
        assert_probes_answered(seen.probes)
    finally:
        seen.result.close()


def test_http2_bodies_past_what_a_listener_holds_are_refused_and_memory_stays_near_it(
    enforcing,
):
    """The same on one HTTP/2 connection of the app's: a body's worth of streams held, the
    rest answered 503 alone, memory near what is held."""
    count = 2 * BODIES_HELD
    refused = refused_total(enforcing, "forward", "too_many_body_bytes")
    seen = enforcing.observe(lambda: http2_held(enforcing.world, count))
    client, statuses = seen.result
    try:
        assert list(statuses.values()) == [503] * (count - BODIES_HELD)
        assert (
            refused_total(enforcing, "forward", "too_many_body_bytes")
            == refused + count - BODIES_HELD
        )
        held_bytes = BODIES_HELD * (HELD_BODY - 1)
        held_now = scrape(enforcing.world).value(
            "claimgate_request_bodies_held_bytes", listener="forward"
        )
        assert held_now == held_bytes
        assert seen.rss_growth_mb < 1.5 * held_bytes / MIB, f"RSS grew {seen.rss_growth_mb:.0f} MB"
        assert_probes_answered(seen.probes)
    finally:
        client.close()


# --- a claim never travels in clear ---------------------------------------------------


def test_a_plain_http_request_to_an_api_host_is_upgraded_to_https(enforcing, plain):
    """The API host is reached over TLS on the same host and port: a plain-HTTP server there
    sees a ClientHello, never the token or the claim."""
    before = len(plain.received)
    url = f"http://127.0.0.1:{plain.port}/api/stable/api.php"
    with contextlib.suppress(httpx.HTTPError):  # how a failed handshake is answered: not the point
        enforcing.world.client.post(url, content=api_request(enforcing.customer), timeout=15)
    deadline = time.monotonic() + 10
    while len(plain.received) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(plain.received) > before, "nothing reached the API host"
    first = plain.received[before]
    secrets_seen = [
        name
        for name, value in (
            ("token", enforcing.customer.token),
            ("claim", enforcing.claim),
            ("secret", enforcing.customer.secret),
        )
        if value.encode() in first
    ]
    assert not secrets_seen, f"sent in clear: {secrets_seen}"
    assert first[:1] == b"\x16", "the API host received no TLS handshake"
