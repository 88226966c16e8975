"""End to end, the edge of every listener: bounded request heads, CONNECT where it belongs,
and no claim in clear, through the real ``claimgate run`` over real sockets.

The hostile-input suite (``test_e2e_hostile.py``) measures memory, log volume and probe
answers under attack; this file pins each answer and what the operator sees of it.
"""

import contextlib
import http.client
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import h2.errors
import h2.events
import httpx
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection
from wsproto.events import Request as WebSocketRequest

from claimgate.limits import Refusal
from claimgate.testing import ApiDouble, make_claim
from tests.support import (
    PROVIDER_SECRET,
    App,
    Customer,
    Http2Client,
    Scrape,
    World,
    api_request,
    forward_proxy,
    run_world,
    scrape,
    wait_until,
)

HEADER_TIMEOUT = 1.0
"""Short, so the timeout cases take seconds; the default (10 s) is the settings tests' job."""
BODY_RATE = 100
"""Bytes a second a body must average here (after HEADER_TIMEOUT of grace)."""
LISTENERS = ("forward", "capture", "mirror", "api", "admin")
PROXY_LISTENERS = LISTENERS[:-1]


@pytest.fixture(scope="module")
def customer() -> Customer:
    return Customer("52000")


@pytest.fixture(scope="module")
def world(tmp_path_factory, customer) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("edge")
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        config = {
            "proxy": forward_proxy(tmp, api),
            "capture": {
                "listen": "127.0.0.2:0",
                "upstream": app.url,
                "mirror_listen": "127.0.0.3:0",
                "provider_secret": "env:TEST_PS",
            },
            "api": {"listen": "127.0.0.4:0", "upstream": f"https://localhost:{api.port}"},
            "admin": {"listen": "127.0.0.5:0"},
            "limits": {
                "header_timeout": f"{HEADER_TIMEOUT}s",
                "header_count": 30,
                "body_rate": BODY_RATE,
            },
            "customers": [{"customer_web_id": customer.web_id, "token": "env:TEST_TOKEN"}],
        }
        env = {"TEST_PS": PROVIDER_SECRET, "TEST_TOKEN": customer.token}
        yield from run_world(tmp, config, env, app, api, [customer])


def address(world: World, listener: str) -> tuple[str, int]:
    host, port = world.sidecar.listeners[listener].rsplit(":", 1)
    return host, int(port)


def exchange(world: World, listener: str, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send ``parts`` on one connection (``pause`` seconds apart); all that comes back
    until claimgate closes it (a connection still open after 30 s fails the test)."""
    with socket.create_connection(address(world, listener), timeout=30) as connection:
        try:
            for part in parts:
                connection.sendall(part)
                time.sleep(pause)
        except OSError:
            pass  # refused mid-send: the answer, if any, is what counts
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def status_of(answer: bytes) -> int | None:
    """The status of the first answer; None when the connection closed without one."""
    if not answer:
        return None
    return int(answer.split(b" ", 2)[1])


def refused_total(world: World, listener: str, reason: str) -> float:
    return scrape(world).value("claimgate_requests_refused_total", listener=listener, reason=reason)


def long_line(length: int) -> bytes:
    return b"GET /service?q=" + b"a" * length + b" HTTP/1.1\r\nHost: provider.example\r\n\r\n"


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_request_line_past_the_bound_is_refused_and_goes_nowhere(world, listener):
    before = len(world.app.received), len(world.api.requests)
    answer = exchange(world, listener, long_line(17 * 1024))
    assert status_of(answer) == 414
    assert (len(world.app.received), len(world.api.requests)) == before


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_header_block_past_the_bound_is_refused(world, listener):
    head = b"GET / HTTP/1.1\r\nHost: provider.example\r\n" + b"X-Pad: " + b"p" * 70_000
    answer = exchange(world, listener, head + b"\r\n\r\n")
    assert status_of(answer) == 431
    assert b"limits.header_size" in answer


@pytest.mark.parametrize("listener", LISTENERS)
def test_too_many_header_fields_are_refused(world, listener):
    fields = b"".join(b"X-Field-%d: 1\r\n" % i for i in range(31))
    answer = exchange(world, listener, b"GET /healthz HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n")
    assert status_of(answer) == 431


def test_a_head_that_ends_within_the_bounds_is_served(world):
    fields = b"".join(b"X-Field-%d: 1\r\n" % i for i in range(27))
    head = b"GET /ok HTTP/1.1\r\nHost: h\r\nConnection: close\r\n" + fields + b"\r\n"
    answer = exchange(world, "capture", head)
    assert status_of(answer) == 200


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_head_trickling_in_is_answered_408_once_its_time_is_up(world, listener):
    before = refused_total(world, listener, "header_timeout")
    started = time.monotonic()
    answer = exchange(world, listener, *(bytes([b]) for b in b"GET / HTTP/1.1\r\nHo"), pause=0.1)
    assert status_of(answer) == 408
    assert time.monotonic() - started >= HEADER_TIMEOUT  # never before the bound
    assert refused_total(world, listener, "header_timeout") == before + 1


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(world, listener):
    before = refused_total(world, listener, "header_timeout")
    assert exchange(world, listener) == b""  # closed, with nothing to answer
    assert refused_total(world, listener, "header_timeout") == before + 1


def post_head(world: World, listener: str, length: int, *, last: bool = False) -> bytes:
    """A POST head for ``listener``: to the app through the forward listener, else as sent;
    ``last`` asks for the connection to be closed after the answer."""
    target = f"{world.app.url}/upload" if listener == "forward" else "/upload"
    closing = "Connection: close\r\n" if last else ""
    return (
        f"POST {target} HTTP/1.1\r\nHost: provider.example\r\nContent-Length: {length}\r\n"
        f"Content-Type: application/octet-stream\r\n{closing}\r\n"
    ).encode()


def trickle_body(world: World, listener: str, interval: float, most: int = 200) -> bytes:
    """A head, then its body one byte every ``interval`` seconds until claimgate answers
    (at most ``most`` bytes); what it answered."""
    with socket.create_connection(address(world, listener), timeout=30) as connection:
        connection.sendall(post_head(world, listener, 10_000))
        for _ in range(most):
            connection.sendall(b"b")
            if select.select([connection], [], [], interval)[0]:
                break  # answered: nothing more is sent onto a closing connection
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                answer += chunk
        return answer


@pytest.mark.parametrize("listener", PROXY_LISTENERS)
def test_a_body_trickling_in_is_answered_408_once_below_the_rate(world, listener):
    before = refused_total(world, listener, "body_too_slow"), len(world.app.received)
    requests, errors = len(world.api.requests), len(world.sidecar.events("internal_error"))
    started = time.monotonic()
    answer = trickle_body(world, listener, interval=0.1)  # 10 bytes a second, of 100
    assert status_of(answer) == 408
    assert b"limits.body_rate" in answer
    assert time.monotonic() - started >= HEADER_TIMEOUT  # never within the grace
    assert (refused_total(world, listener, "body_too_slow"), len(world.app.received)) == (
        before[0] + 1,
        before[1],
    )
    assert len(world.api.requests) == requests
    line = world.sidecar.wait_for(
        "request_refused", lambda e: e["reason"] == "body_too_slow" and e["listener"] == listener
    )
    assert (line["status"], line["client"]) == (408, "127.0.0.1")
    assert len(world.sidecar.events("internal_error")) == errors  # the flow ended cleanly


def test_a_body_keeping_the_rate_is_served_however_long_it_takes(world):
    """Three parts 0.7 s apart, past the grace: each part buys four seconds (400 bytes at 100
    a second), so only a stall of seconds could cut it."""
    parts = [bytes([65 + i]) * 400 for i in range(3)]
    with socket.create_connection(address(world, "capture"), timeout=30) as connection:
        connection.sendall(post_head(world, "capture", 1200))
        for part in parts:
            connection.sendall(part)
            time.sleep(0.7)
        assert status_of(answer_head(connection)) == 200
    assert world.app.received[-1].body == b"".join(parts)


def test_a_tunnel_passed_through_is_never_timed(world):
    """No head or body is read in a tunnel to a host that is not the API's: it outlives both
    the header timeout and the body's grace, idle, and still carries TLS end to end."""
    host = f"127.0.0.1:{world.api.port}"  # the API double, by an address not in api_hosts
    with socket.create_connection(address(world, "forward"), timeout=30) as tunnel:
        tunnel.sendall(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status_of(answer_head(tunnel)) == 200
        time.sleep(HEADER_TIMEOUT * 2.5)
        context = ssl.create_default_context(cafile=str(world.api.ca_path))
        with context.wrap_socket(tunnel, server_hostname="127.0.0.1") as inside:
            inside.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = answer_head(inside)
    assert status_of(answer) is not None
    assert b"claimgate-api-double" in answer  # the double's own TLS: passed through


def test_a_tls_client_hello_trickling_in_is_cut_off(world):
    """The record header says TLS at once; the rest of the hello never completes."""
    record, rest = b"\x16\x03\x01\x02\x00", b"\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40
    answer = exchange(world, "capture", record, *(bytes([b]) for b in rest), pause=0.1)
    assert answer == b""  # no HTTP was ever spoken: closed, without an answer


def test_an_idle_keep_alive_connection_is_not_cut_by_the_header_timeout(world):
    connection = http.client.HTTPConnection(*address(world, "capture"), timeout=30)
    try:
        statuses, sockets = [], []
        for _ in range(2):
            connection.request("GET", "/again", headers={"Host": "provider.example"})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            sockets.append(connection.sock)
            time.sleep(HEADER_TIMEOUT * 2)
    finally:
        connection.close()
    assert statuses == [200, 200]
    assert sockets[0] is sockets[1]  # the same connection, still open after the idle time


@pytest.mark.parametrize("listener", ("capture", "admin"))
def test_a_refused_head_is_logged_with_listener_and_reason(world, listener):
    before = refused_total(world, listener, "request_line_too_long")
    exchange(world, listener, long_line(20 * 1024))
    line = world.sidecar.wait_for(
        "request_refused",
        lambda e: e["reason"] == "request_line_too_long" and e["listener"] == listener,
    )
    assert (line["status"], line["client"]) == (414, "127.0.0.1")
    assert refused_total(world, listener, "request_line_too_long") == before + 1


@pytest.mark.parametrize("listener", ("capture", "mirror", "api"))
def test_connect_is_refused_with_405_except_on_the_forward_listener(world, listener):
    connect = b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"
    answer = exchange(world, listener, connect)
    assert status_of(answer) == 405
    assert b"only accepted on the forward listener" in answer


def test_a_plain_http_api_request_reaches_the_api_over_tls_with_its_claim(world, customer):
    claim = make_claim()
    world.service_call(customer, claim)
    world.sidecar.wait_for("claim_captured", lambda e: e["customer"] == customer.web_id)
    before = len(world.api.requests)
    with httpx.Client(proxy=world.sidecar.proxy_url, trust_env=False) as plain:
        response = plain.post(
            f"http://localhost:{world.api.port}/api/stable/api.php", content=api_request(customer)
        )
    assert response.status_code == 200
    (received,) = world.api.wait_for_requests(before + 1)[before:]
    assert received.claims() == [claim]  # the double speaks only TLS: it came over TLS
    decision = world.sidecar.wait_for("api_request", lambda e: e.get("upgraded_to_https"))
    assert decision["decision"] == "injected"


PLACES = 3
"""``limits.connections`` of the crowded world: few, so a test can fill a listener."""
HELD_BODY = 16 * 1024
"""``proxy.max_body_size`` of the crowded world: a body declared larger is streamed."""
BODIES = HELD_BODY + HELD_BODY // 2
"""``limits.bodies`` of the crowded world: one body held most of the way leaves no room
for another."""


@pytest.fixture(scope="module")
def crowded(tmp_path_factory) -> Iterator[World]:
    """A sidecar whose every listener holds at most ``PLACES`` connections and ``BODIES``
    bytes of request bodies."""
    tmp = tmp_path_factory.mktemp("crowded")
    with App() as app, ApiDouble({}) as api:
        config = {
            "proxy": forward_proxy(tmp, api, max_body_size=HELD_BODY),
            "capture": {"listen": "127.0.0.2:0", "upstream": app.url, "provider_secret": "ps"},
            "admin": {"listen": "127.0.0.5:0"},
            "limits": {
                "connections": PLACES,
                "header_timeout": "60s",  # held, not timed out
                "bodies": BODIES,
            },
        }
        yield from run_world(tmp, config, {}, app, api, [])


def scrape_once_admitted(world: World) -> tuple[Scrape, int]:
    """A scrape, tried again while the admin listener is full; and how many tries it refused
    (each counted as a refused connection too)."""
    deadline = time.monotonic() + 30  # a bound on waiting, not a measured time
    for refused in range(1000):
        try:
            return scrape(world), refused
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the admin listener never freed a place"
            time.sleep(0.05)
    raise AssertionError("the admin listener never freed a place")


def answer_head(connection: socket.socket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := connection.recv(65536)):
        answer += chunk
    return answer


def idle_connection(world: World, listener: str, path: str) -> socket.socket:
    """A connection answered once, read to the end of its answer, and kept open: idle."""
    connection = socket.create_connection(address(world, listener), timeout=30)
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: provider.example\r\n\r\n".encode())
    answer = http.client.HTTPResponse(connection)
    answer.begin()
    answer.read()
    assert (answer.status, answer.will_close) == (200, False)
    return connection


def busy_connection(world: World, listener: str) -> socket.socket:
    """A connection whose request head was taken (the listener says so: 100 Continue) and
    whose body is still coming: busy."""
    connection = socket.create_connection(address(world, listener), timeout=30)
    connection.sendall(
        b"POST /busy HTTP/1.1\r\nHost: provider.example\r\nContent-Length: 100\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    assert status_of(answer_head(connection)) == 100
    connection.sendall(b"x")
    return connection


def closed_by_claimgate(connection: socket.socket) -> bool:
    try:
        return connection.recv(65536) == b""
    except ConnectionResetError:
        return True


REFUSED = "too_many_connections"
LIMITED = ("capture", "admin")


@pytest.mark.parametrize("listener", LIMITED)
def test_with_every_place_busy_a_new_connection_is_closed_counted_and_logged(crowded, listener):
    open_now = "claimgate_connections_open"
    scraping = listener == "admin"  # a scrape takes a place of the admin listener itself
    before = refused_total(crowded, listener, REFUSED)
    busy = [busy_connection(crowded, listener) for _ in range(PLACES - 1)]
    try:
        assert scrape(crowded).value(open_now, listener=listener) == PLACES - 1 + scraping
        busy.append(busy_connection(crowded, listener))  # now every place is busy
        assert exchange(crowded, listener, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") == b""
        line = crowded.sidecar.wait_for(
            "request_refused",
            lambda e: e["reason"] == "too_many_connections" and e["listener"] == listener,
        )
        assert (line["status"], line["client"]) == (503, "127.0.0.1")
        if listener == "capture":  # the forward listener counts apart, and so do the probes
            admin = crowded.sidecar.listeners["admin"]
            assert httpx.get(f"http://{admin}/readyz", trust_env=False).status_code == 200
            forward = exchange(crowded, "forward", b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
            assert status_of(forward) is not None
            assert scrape(crowded).value(open_now, listener=listener) == PLACES
        busy.pop().close()
        metrics, refused_tries = scrape_once_admitted(crowded)
        refused = metrics.value(
            "claimgate_requests_refused_total", listener=listener, reason=REFUSED
        )
        assert refused == before + 1 + refused_tries
        deadline = time.monotonic() + 30  # a bound on waiting, not a measured time
        while metrics.value(open_now, listener=listener) > PLACES - 1 + scraping:
            assert time.monotonic() < deadline, "a closed connection kept its place"
            time.sleep(0.05)
            metrics = scrape(crowded)
        request = b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        assert status_of(exchange(crowded, listener, request)) == 200
    finally:
        for connection in busy:
            connection.close()


@pytest.mark.parametrize("listener", LIMITED)
def test_a_full_listener_closes_its_connection_idle_longest_to_serve_a_new_one(crowded, listener):
    """Counted and logged as an idle connection closed, not as a refusal."""
    closed_before = idle_closed(crowded, listener)
    logged = len(crowded.sidecar.events("idle_connection_closed"))
    before = refused_total(crowded, listener, REFUSED)
    idle = [idle_connection(crowded, listener, "/healthz") for _ in range(PLACES)]
    try:
        request = b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        assert status_of(exchange(crowded, listener, request)) == 200
        assert closed_by_claimgate(idle[0])
        wait_until(lambda: len(crowded.sidecar.events("idle_connection_closed")) > logged, 5)
        line = crowded.sidecar.events("idle_connection_closed")[logged]
        assert (line["listener"], line["client"]) == (listener, "127.0.0.1")
        idle[1].sendall(request)  # the others serve on
        assert status_of(answer_head(idle[1])) == 200
        assert refused_total(crowded, listener, REFUSED) == before
        # each scrape of the admin listener takes a place there, and may close another
        assert idle_closed(crowded, listener) >= closed_before + 1
    finally:
        for connection in idle:
            connection.close()


def idle_closed(world: World, listener: str) -> float:
    return scrape(world).value("claimgate_idle_connections_closed_total", listener=listener)


def test_a_tunnel_keeps_its_place_to_its_end(crowded):
    """What a tunnel carries is not seen, so it is never taken for idle."""
    app = crowded.app.url.removeprefix("http://")
    connect = f"CONNECT {app} HTTP/1.1\r\nHost: {app}\r\n\r\n".encode()
    fill_the_forward_listener(crowded, connect, 200)


def fill_the_forward_listener(world: World, opening: bytes, status: int) -> None:
    """Open every place of the forward listener with ``opening`` (each answered ``status``);
    with none of them taken for idle, a new connection is refused."""
    before = refused_total(world, "forward", REFUSED)
    held = []
    try:
        for _ in range(PLACES):
            connection = socket.create_connection(address(world, "forward"), timeout=30)
            connection.sendall(opening)
            assert status_of(answer_head(connection)) == status
            held.append(connection)
        assert exchange(world, "forward", opening) == b""
        assert refused_total(world, "forward", REFUSED) == before + 1
    finally:
        for connection in held:
            connection.close()


@pytest.fixture
def websocket_server() -> Iterator[tuple[str, int]]:
    """Accepts each WebSocket handshake, then holds the connection until its client leaves."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve(connection: socket.socket) -> None:
        websocket = WSConnection(ConnectionType.SERVER)
        with connection, contextlib.suppress(OSError):  # OSError: shut down by the fixture
            while data := connection.recv(65536):
                websocket.receive_data(data)
                for event in websocket.events():
                    if isinstance(event, WebSocketRequest):
                        connection.sendall(websocket.send(AcceptConnection()))

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            accepted.append(connection)
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield server.getsockname()[:2]
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept, as close does not
        server.close()
        for connection in accepted:
            with contextlib.suppress(OSError):  # already gone
                connection.shutdown(socket.SHUT_RDWR)
        acceptor.join(timeout=30)


def test_a_websocket_keeps_its_place_to_its_end(crowded, websocket_server):
    host, port = websocket_server
    upgrade = (
        f"GET http://{host}:{port}/ws HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    fill_the_forward_listener(crowded, upgrade, 101)


def held(world: World, listener: str) -> float:
    return scrape(world).value("claimgate_request_bodies_held_bytes", listener=listener)


def wait_until_held(world: World, listener: str, size: int) -> None:
    deadline = time.monotonic() + 30  # a bound on waiting, not a measured time
    while (now := held(world, listener)) != size:
        assert time.monotonic() < deadline, f"{listener} holds {now} bytes, not {size}"
        time.sleep(0.05)


def body_under_way(world: World, listener: str, length: int, sent: int) -> socket.socket:
    """A POST of ``length`` bytes of which ``sent`` were sent, the rest still to come."""
    connection = socket.create_connection(address(world, listener), timeout=30)
    connection.sendall(post_head(world, listener, length) + b"h" * sent)
    return connection


BODY_REFUSED = "too_many_body_bytes"


@pytest.mark.parametrize("listener", ["capture", "forward"])
def test_a_body_past_its_listeners_bound_is_refused_503_and_the_bound_frees_at_the_answer(
    crowded, listener
):
    """One body held most of the way takes more than half the listener's bytes: a second
    is refused once it would go past them, a body on the other listener is not, and once the
    first is answered its bytes are free for the next."""
    other = "forward" if listener == "capture" else "capture"
    length = HELD_BODY - 100
    before, received = refused_total(crowded, listener, BODY_REFUSED), len(crowded.app.received)
    before_other = refused_total(crowded, other, BODY_REFUSED)
    first = body_under_way(crowded, listener, length, length - 1000)
    try:
        wait_until_held(crowded, listener, length - 1000)
        answer = exchange(crowded, listener, post_head(crowded, listener, length), b"s" * length)
        assert status_of(answer) == 503
        assert b"limits.bodies" in answer
        line = crowded.sidecar.wait_for(
            "request_refused",
            lambda e: e["reason"] == "too_many_body_bytes" and e["listener"] == listener,
        )
        assert (line["status"], line["client"]) == (503, "127.0.0.1")
        assert refused_total(crowded, listener, BODY_REFUSED) == before + 1
        assert len(crowded.app.received) == received  # the refused body went nowhere
        wait_until_held(crowded, listener, length - 1000)  # its bytes are held no more

        beside = exchange(
            crowded, other, post_head(crowded, other, length, last=True), b"o" * length
        )
        assert status_of(beside) == 200  # counted apart
        assert refused_total(crowded, other, BODY_REFUSED) == before_other

        first.sendall(b"h" * 1000)
        assert status_of(answer_head(first)) == 200
        assert crowded.app.received[-1].body == b"h" * length
        wait_until_held(crowded, listener, 0)
        again = exchange(
            crowded, listener, post_head(crowded, listener, length, last=True), b"a" * length
        )
        assert status_of(again) == 200
    finally:
        first.close()


def test_a_body_cut_off_with_its_connection_frees_its_bytes(crowded):
    connection = body_under_way(crowded, "capture", HELD_BODY, HELD_BODY // 2)
    wait_until_held(crowded, "capture", HELD_BODY // 2)
    connection.close()
    wait_until_held(crowded, "capture", 0)


def test_a_body_mitmproxy_streams_holds_nothing_however_large(crowded):
    """Declared larger than ``proxy.max_body_size``, a body is streamed to the app, not
    held: three times the listener's bound passes in one send, head and all."""
    length = 3 * BODIES
    streamed = body_under_way(crowded, "capture", length, length - 1)
    try:
        assert held(crowded, "capture") == 0
        streamed.sendall(b"h")
        assert status_of(answer_head(streamed)) == 200
    finally:
        streamed.close()
    assert crowded.app.received[-1].body == b"h" * length


@pytest.mark.parametrize(
    ("path", "fields", "refusal"),
    [
        (b"/" + b"p" * 17 * 1024, 0, Refusal.REQUEST_LINE),
        (b"/api/stable/api.php", 30, Refusal.HEADER_COUNT),  # with content-type and -length
    ],
    ids=["request-line", "header-count"],
)
def test_an_http2_head_past_a_bound_is_refused_alone_and_never_becomes_a_flow(
    world, path, fields, refusal
):
    """Judged as the HTTP/1 head it stands for (limits.request_line 16 KiB, header_count 30
    here): the stream's own 414 or 431 and a reset, counted and logged; nothing reaches the
    API, and the next stream on the connection is served."""
    before, sent = refused_total(world, "forward", refusal.value), len(world.api.requests)
    client = Http2Client(world)
    try:
        extra = [(b"x-field-%d" % i, b"1") for i in range(fields)]
        refused = client.post(100, path=path, extra=extra)
        status, body, events = client.answer(refused)
        assert (status, json.loads(body)) == (refusal.status, {"error": refusal.message})
        resets = [e.error_code for e in events if isinstance(e, h2.events.StreamReset)]
        assert resets == [h2.errors.ErrorCodes.NO_ERROR]  # the body was never sent
        line = world.sidecar.wait_for(
            "request_refused", lambda e: e["reason"] == refusal.value and e["listener"] == "forward"
        )
        assert (line["status"], line["client"]) == (refusal.status, "127.0.0.1")
        assert refused_total(world, "forward", refusal.value) == before + 1

        served = client.post(5)
        client.send(served, b"after", end=True)
        assert client.answer(served)[0] != refusal.status
        assert [r.body for r in world.api.wait_for_requests(sent + 1)[sent:]] == [b"after"]
    finally:
        client.close()


def h2_body_under_way(client: Http2Client, world: World, length: int, sent: int) -> int:
    """A POST of ``length`` bytes on a new stream, ``sent`` of them sent and held; its id."""
    stream = client.post(length)
    client.send(stream, b"h" * sent)
    wait_until_held(world, "forward", sent)
    return stream


@pytest.mark.parametrize("whole", [False, True], ids=["still-sending", "sent-whole"])
def test_an_http2_stream_past_the_listeners_bound_is_refused_503_alone(crowded, whole):
    """HTTP/2 bodies hold the listener's bytes too: a stream that would go past them gets a
    complete 503 and, if its client is still sending, a reset asking it to stop (RFC 9113
    8.1), while the held stream on the same connection goes on to the API and frees its
    bytes at its answer."""
    length = HELD_BODY - 100
    before, received = refused_total(crowded, "forward", BODY_REFUSED), len(crowded.api.requests)
    crashes = len(crowded.sidecar.events("mitmproxy has crashed!"))
    client = Http2Client(crowded)
    try:
        kept = h2_body_under_way(client, crowded, length, length - 1000)
        refused = client.post(length)
        client.send(refused, b"s" * (length if whole else length - 1), end=whole)
        status, body, events = client.answer(refused)
        assert (status, json.loads(body)) == (503, {"error": Refusal.BODIES.message})
        resets = [e.error_code for e in events if isinstance(e, h2.events.StreamReset)]
        assert resets == ([] if whole else [h2.errors.ErrorCodes.NO_ERROR])
        line = crowded.sidecar.wait_for(
            "request_refused",
            lambda e: e["reason"] == BODY_REFUSED and e["listener"] == "forward",
        )
        assert (line["status"], line["client"]) == (503, "127.0.0.1")
        assert refused_total(crowded, "forward", BODY_REFUSED) == before + 1
        assert held(crowded, "forward") == length - 1000  # the refused stream holds none

        client.send(kept, b"h" * 1000, end=True)
        status, _, _ = client.answer(kept)
        assert status != 503
        (sent,) = crowded.api.wait_for_requests(received + 1)[received:]
        assert sent.body == b"h" * length  # unchanged, whole
        wait_until_held(crowded, "forward", 0)
    finally:
        client.close()
    assert len(crowded.sidecar.events("mitmproxy has crashed!")) == crashes


def test_an_http2_body_reset_or_cut_off_frees_its_bytes(crowded):
    client = Http2Client(crowded)
    try:
        client.reset(h2_body_under_way(client, crowded, HELD_BODY, 5000))  # the connection goes on
        wait_until_held(crowded, "forward", 0)
        h2_body_under_way(client, crowded, HELD_BODY, 7000)
    finally:
        client.close()
    wait_until_held(crowded, "forward", 0)


def test_an_http2_body_mitmproxy_streams_holds_nothing(crowded):
    """A body declared larger than ``proxy.max_body_size`` streams to the API as it comes:
    beside a body held most of the way, three times the listener's bound goes through."""
    length = 3 * BODIES
    received = len(crowded.api.requests)
    client = Http2Client(crowded)
    try:
        h2_body_under_way(client, crowded, HELD_BODY, HELD_BODY - 1000)
        streamed = client.post(length)
        client.send(streamed, b"b" * length, end=True)
        status, _, _ = client.answer(streamed)
        assert status != 503
        (sent,) = crowded.api.wait_for_requests(received + 1)[received:]
        assert sent.body == b"b" * length
        assert held(crowded, "forward") == HELD_BODY - 1000
    finally:
        client.close()
    wait_until_held(crowded, "forward", 0)
