"""claimgate's own HTTP/1.1 listener, served for real on a loopback port and spoken to in raw
bytes: what a client can make it hold (heads, bodies, time), what it answers, and that a
handler's failure is an answer, not a lost connection."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from claimgate.http_listener import HttpListener, Request, Response
from claimgate.limits import Limits, Refusal

TIMEOUT = 0.5
"""The header timeout here: short, so the time cases take about a second."""
LIMITS = Limits(request_line=1024, header_size=4096, header_count=10, header_timeout=TIMEOUT)
BODY_LIMIT = 1000
WAIT = 30.0
"""Longest any read here waits: a listener that never answers fails the test, not CI."""


class Recorder:
    """The handler: echoes what it got, keeps every request, fails on ``/fail``."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.refusals: list[tuple[Refusal, str]] = []

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if request.path == "/fail":
            raise RuntimeError("the handler failed")
        if request.path == "/empty":
            return Response(204)
        body = json.dumps({"path": request.path, "size": len(request.body)}).encode()
        return Response(200, body, (("Content-Type", "application/json"),))


@asynccontextmanager
async def serving(
    limits: Limits, body_limit: int | None, body_timeout: float | None
) -> AsyncIterator[tuple[Recorder, HttpListener, tuple[str, int]]]:
    """A listener on a free loopback port, answered by a ``Recorder``, stopped at the end."""
    recorder = Recorder()
    listener = HttpListener(
        recorder,
        limits,
        name="test",
        body_limit=body_limit,
        body_timeout=body_timeout,
        on_refusal=lambda refusal, peer: recorder.refusals.append((refusal, peer)),
    )
    address = await listener.start("127.0.0.1", 0)
    try:
        yield recorder, listener, address
    finally:
        await listener.stop()


@asynccontextmanager
async def listening(
    body_limit: int | None = BODY_LIMIT, body_timeout: float | None = TIMEOUT
) -> AsyncIterator[tuple[Recorder, tuple[str, int]]]:
    async with serving(LIMITS, body_limit, body_timeout) as (recorder, _, address):
        yield recorder, address


async def exchange(address: tuple[str, int], *parts: bytes, pause: float = 0.0) -> bytes:
    """Send ``parts`` on one connection, then read until the listener closes it."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        async with asyncio.timeout(WAIT):
            return await reader.read(-1)
    finally:
        writer.close()


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Each answer in ``raw``: status, headers (lower-case names), body by Content-Length."""
    found = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        size = int(headers.get("content-length", "0"))
        found.append((int(status_line.split(" ")[1]), headers, raw[:size]))
        raw = raw[size:]
    return found


def get(path: str, *extra: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: h", *extra, "", ""]).encode()


def post(path: str, body: bytes, *extra: str) -> bytes:
    return post_head(path, f"Content-Length: {len(body)}", *extra) + body


def post_head(path: str, *extra: str) -> bytes:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: h", *extra, "", ""]).encode()


def chunked(path: str, *chunks: bytes) -> bytes:
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return (
        post_head(path, "Transfer-Encoding: chunked", "Connection: close") + encoded + b"0\r\n\r\n"
    )


async def test_requests_on_one_connection_are_answered_in_turn_and_it_stays_open():
    async with listening() as (recorder, address):
        raw = await exchange(
            address, get("/a"), post("/b", b"x" * 10), get("/c", "Connection: close")
        )
    assert [(status, json.loads(body)) for status, _, body in answers(raw)] == [
        (200, {"path": "/a", "size": 0}),
        (200, {"path": "/b", "size": 10}),
        (200, {"path": "/c", "size": 0}),
    ]
    assert [r.method for r in recorder.requests] == ["GET", "POST", "GET"]


async def test_pipelined_requests_are_answered_in_order():
    async with listening() as (_, address):
        raw = await exchange(
            address, get("/one") + get("/two") + get("/three", "Connection: close")
        )
    assert [json.loads(body)["path"] for _, _, body in answers(raw)] == ["/one", "/two", "/three"]


async def test_a_request_reaches_the_handler_as_sent():
    async with listening() as (recorder, address):
        await exchange(address, post("/p?q=1&r=%20", b"{}", "X-Thing: A b", "Connection: close"))
    (request,) = recorder.requests
    assert (request.method, request.target, request.path) == ("POST", "/p?q=1&r=%20", "/p")
    assert (request.header("x-thing"), request.header("missing"), request.body) == (
        "A b",
        "",
        b"{}",
    )


@pytest.mark.parametrize(
    ("head", "refusal"),
    [
        (b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\nHost: h\r\n\r\n", Refusal.REQUEST_LINE),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"p" * 5000 + b"\r\n\r\n", Refusal.HEADER_SIZE),
        (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: 1\r\n" * 10 + b"\r\n", Refusal.HEADER_COUNT),
    ],
)
async def test_a_head_past_a_bound_is_refused_counted_and_never_handled(head, refusal):
    async with listening() as (recorder, address):
        raw = await exchange(address, head)
    ((status, headers, body),) = answers(raw)
    assert (status, headers["connection"]) == (refusal.status, "close")
    assert json.loads(body) == {"error": refusal.message}
    assert recorder.requests == []
    assert recorder.refusals == [(refusal, "127.0.0.1")]


async def test_a_head_that_never_ends_is_refused_once_it_passes_the_bound_not_at_its_end():
    """The listener answers while the client is still sending: it holds no more than the bound."""
    async with listening() as (_, address):
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"p" * 5000)  # no end of line yet
        async with asyncio.timeout(WAIT):
            answer = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_a_head_trickling_in_gets_408_and_silence_is_closed_without_an_answer():
    async with listening() as (recorder, address):
        trickled = await exchange(
            address, *(bytes([b]) for b in b"GET / HTTP/1.1\r\nHo"), pause=0.1
        )
        silent = await exchange(address)
    assert answers(trickled)[0][0] == 408
    assert silent == b""
    assert [refusal for refusal, _ in recorder.refusals] == [Refusal.HEADER_TIMEOUT] * 2


async def test_an_idle_connection_after_an_answer_is_closed_without_counting_a_refusal():
    async with listening() as (recorder, address):
        raw = await exchange(address, get("/a"))  # then nothing: closed after TIMEOUT
    assert [status for status, _, _ in answers(raw)] == [200]
    assert recorder.refusals == []


async def test_a_malformed_head_is_answered_400():
    async with listening() as (recorder, address):
        raw = await exchange(address, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    ((status, _, body),) = answers(raw)
    assert status == 400 and set(json.loads(body)) == {"error"}
    assert recorder.requests == []


@pytest.mark.parametrize("size", [0, 1, BODY_LIMIT])
async def test_a_body_up_to_the_limit_is_kept_whole(size):
    body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    async with listening() as (recorder, address):
        await exchange(address, post("/p", body, "Connection: close"))
    assert recorder.requests[0].body == body


async def test_a_chunked_body_is_kept_whole():
    async with listening() as (recorder, address):
        await exchange(address, chunked("/p", b"hello", b" world"))
    assert recorder.requests[0].body == b"hello world"


@pytest.mark.parametrize(
    "request_bytes",
    [
        post("/p", b"x" * (BODY_LIMIT + 1)),  # declared too large: refused before it is read
        chunked("/p", b"x" * 600, b"y" * 600),  # grows past it as it is read
    ],
    ids=["declared", "chunked"],
)
async def test_a_body_past_the_limit_is_answered_413_and_never_handled(request_bytes):
    async with listening() as (recorder, address):
        raw = await exchange(address, request_bytes)
    ((status, headers, body),) = answers(raw)
    assert (status, headers["connection"]) == (413, "close")
    assert json.loads(body) == {"error": f"body larger than {BODY_LIMIT} bytes"}
    assert recorder.requests == []


async def test_the_413_reaches_a_client_that_sends_a_large_body_before_it_reads():
    """Closing on unread bytes would reset the connection and lose the answer: the listener
    reads on and drops what arrives, up to its linger bounds."""
    async with listening() as (_, address):
        raw = await exchange(address, post("/p", b"z" * 600_000))
    assert answers(raw)[0][0] == 413


async def test_a_body_that_stalls_is_answered_408():
    async with listening() as (recorder, address):
        raw = await exchange(address, post_head("/p", "Content-Length: 10") + b"abc")
    assert answers(raw)[0][0] == 408
    assert recorder.requests == []


async def test_a_client_waiting_for_100_continue_gets_it_then_the_answer():
    async with listening() as (recorder, address):
        reader, writer = await asyncio.open_connection(*address)
        writer.write(
            post_head("/p", "Content-Length: 4", "Expect: 100-continue", "Connection: close")
        )
        async with asyncio.timeout(WAIT):
            interim = await reader.readuntil(b"\r\n\r\n")
            writer.write(b"body")
            final = await reader.read(-1)
        writer.close()
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert answers(final)[0][0] == 200 and recorder.requests[0].body == b"body"


async def test_a_sink_reads_any_body_and_keeps_none_of_it():
    async with listening(body_limit=None, body_timeout=None) as (recorder, address):
        raw = await exchange(address, post("/p", b"s" * 3_000_000, "Connection: close"))
    assert json.loads(answers(raw)[0][2]) == {"path": "/p", "size": 0}
    assert recorder.requests[0].body == b""


async def test_a_failing_handler_is_answered_500_and_the_connection_serves_on(capsys):
    async with listening() as (_, address):
        raw = await exchange(address, get("/fail"), get("/after", "Connection: close"))
    (failed, _, body), (after, _, _) = answers(raw)
    assert (failed, json.loads(body), after) == (500, {"error": "internal server error"}, 200)
    assert "internal_error" in capsys.readouterr().out


async def test_head_requests_and_204_answers_carry_no_body():
    async with listening() as (_, address):
        head = get("/a").replace(b"GET", b"HEAD", 1)
        raw = await exchange(address, head + get("/empty", "Connection: close"))
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    heads = rest.split(b"\r\n\r\n")
    assert heads[1].startswith(b"HTTP/1.1 204 No Content") and heads[2] == b""
    assert b"content-length" not in heads[1].lower()


async def test_stop_closes_open_connections_and_the_port():
    recorder = Recorder()
    listener = HttpListener(recorder, LIMITS, name="test", body_limit=0, body_timeout=None)
    address = await listener.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"GET / HTTP/1.1\r\n")  # a head begun, never finished
    await writer.drain()
    await listener.stop()
    try:
        async with asyncio.timeout(WAIT):
            assert await reader.read(-1) == b""
    except ConnectionResetError:
        pass  # closed before it read the bytes sent: closed all the same
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection(*address)


type Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def crowded(places: int) -> AsyncIterator[tuple[Recorder, HttpListener, tuple[str, int]]]:
    """A listener with ``places`` places; its held connections are never timed out."""
    limits = Limits(header_timeout=WAIT, connections=places)
    async with serving(limits, BODY_LIMIT, WAIT) as served:
        yield served


async def answered_and_kept(address: tuple[str, int]) -> Connection:
    """A connection answered once and kept open: idle."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(get("/idle"))
    async with asyncio.timeout(WAIT):
        head = await reader.readuntil(b"\r\n\r\n")
        [(status, headers, _)] = answers(head)
        await reader.readexactly(int(headers["content-length"]))  # all of it: none left
    assert status == 200
    return reader, writer


async def sending_a_body(address: tuple[str, int]) -> Connection:
    """A connection whose request head was read (the listener said so: 100 Continue) and
    whose body is still coming: busy."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(post_head("/busy", "Content-Length: 100", "Expect: 100-continue"))
    async with asyncio.timeout(WAIT):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
    writer.write(b"x")
    return reader, writer


async def refused(address: tuple[str, int]) -> bool:
    """Whether a new connection was closed without an answer."""
    try:
        return await exchange(address, get("/new")) == b""
    except ConnectionResetError:
        return True  # closed on the bytes it sent, unread: closed all the same


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.01)


async def test_with_every_place_busy_a_new_connection_is_closed_unread_and_counted():
    async with crowded(2) as (recorder, listener, address):
        busy = [await sending_a_body(address) for _ in range(2)]
        assert await refused(address)
        assert recorder.refusals == [(Refusal.CONNECTIONS, "127.0.0.1")]
        busy.pop()[1].close()  # a place frees once its end is seen
        await until(lambda: listener.open_connections() == 1)
        raw = await exchange(address, get("/after", "Connection: close"))
        assert [status for status, _, _ in answers(raw)] == [200]
        assert len(recorder.refusals) == 1
        for _, writer in busy:
            writer.close()


async def test_a_full_listener_gives_up_the_connection_idle_longest_for_a_new_one():
    async with crowded(2) as (recorder, _, address):
        oldest, newer = [await answered_and_kept(address) for _ in range(2)]
        raw = await exchange(address, get("/new", "Connection: close"))
        assert [status for status, _, _ in answers(raw)] == [200]
        async with asyncio.timeout(WAIT):
            assert await oldest[0].read() == b""  # closed to make room
        newer[1].write(get("/still", "Connection: close"))  # the other serves on
        async with asyncio.timeout(WAIT):
            assert (await newer[0].read()).startswith(b"HTTP/1.1 200")
        assert recorder.refusals == []
        assert [r.path for r in recorder.requests] == ["/idle", "/idle", "/new", "/still"]
        for _, writer in (oldest, newer):
            writer.close()
