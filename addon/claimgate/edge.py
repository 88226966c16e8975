"""Every listener's HTTP/1 and HTTP/2 servers, with bounds on each request (``claimgate.limits``).

mitmproxy's HTTP/1 server buffers a request head until its blank line arrives, however large
it grows and however slowly it comes, and answers nothing before then. ``BoundedHttp1Server``
is that server with the bounds of ``limits.Limits``: the bytes received are judged as
they arrive, the head's line count as mitmproxy takes it, and a timer (mitmproxy's own
``RequestWakeup``) measures the time to the blank line. A head that breaks a bound gets its
JSON error and the connection is closed: it never becomes a flow, so no hook, log line or
upstream ever sees it. The same timer holds a body, once its head is in, to
``limits.body_rate`` on average; a body too slow gets a 408, and its flow ends in the error
hook as mitmproxy ends one whose body it cannot read. Each body's bytes are held against its
listener's ``limits.bodies`` as they arrive, from the buffer mitmproxy reads them from, until
its answer (a body mitmproxy streams is not held); one that would go past it gets a 503 the
same way.

HTTP/2 heads are bounded by the h2 library itself (64 KiB of decoded header list, at most 64
CONTINUATION frames), but not by ``limits``, and nothing bounds the bodies of the streams:
``BoundedHttp2Server`` judges each stream's head as the HTTP/1 head it stands for, holds
each body against ``limits.bodies`` as well, and answers a stream past either alone.

``install`` has mitmproxy's HTTP layers build one of these for every client on every
listener. Before a connection has such a server, it has ``FirstRequestDeadlines``: a client
that sends nothing, trickles a TLS ClientHello, or opens HTTP/2 and asks nothing is closed
once the header timeout has passed without a request.

mitmproxy's layers are not its public API; the exact version pin in ``pyproject.toml`` and
the end-to-end tests are what keep this in step with it (docs/design.md 6.1, 6.3).
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import h2.errors
import h2.events
from h11._receivebuffer import ReceiveBuffer
from mitmproxy import connection, ctx, http
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    HttpEvent,
    RequestHeaders,
    RequestProtocolError,
    ResponseEndOfMessage,
    ResponseProtocolError,
)
from mitmproxy.proxy.layers.http._http1 import Http1Server
from mitmproxy.proxy.layers.http._http2 import Http2Server
from mitmproxy.utils import asyncio_utils

from claimgate.limits import (
    Limits,
    Refusal,
    body_deadline,
    error_body,
    head_refusal,
    header_list_refusal,
    refusal_response,
)

type OnRefusal = Callable[[Refusal, connection.Client], None]
type Hold = Callable[[int], bool]
"""Hold so many more body bytes for this connection, unless its listener is full."""


class Free(Protocol):
    def __call__(self, size: int | None = None) -> None:
        """Give back ``size`` of the body bytes this connection holds, or all of them."""


CONNECT_REFUSED = "CONNECT is only accepted on the forward listener"


@dataclass(frozen=True, slots=True)
class Bounds:
    """What one client connection's server holds it to, and whom it tells."""

    limits: Limits
    on_refusal: OnRefusal
    hold: Hold
    free: Free
    streamed_past: int
    """mitmproxy streams a body larger than this (``stream_large_bodies``), so no body holds
    more."""

    def held_after(self, held: int, arrived: int) -> int | None:
        """What a body holding ``held`` bytes holds once ``arrived`` more came (never past
        ``streamed_past``); None, and nothing more held, if its listener cannot hold them."""
        more = min(arrived, self.streamed_past - held)
        if more <= 0:
            return held
        return held + more if self.hold(more) else None


class _HeadBuffer(ReceiveBuffer):
    """mitmproxy's receive buffer, withholding a head with more lines than allowed.

    The server sees the flag after mitmproxy's attempt to take the head and refuses it;
    mitmproxy itself only sees a head that is not complete yet.
    """

    def __init__(self, max_lines: int) -> None:
        super().__init__()
        self.max_lines = max_lines
        self.too_many_lines = False

    def maybe_extract_lines(self) -> list[bytearray] | None:
        lines = super().maybe_extract_lines()
        if lines is not None and len(lines) > self.max_lines:
            self.too_many_lines = True
            return None
        return lines


class BoundedHttp1Server(Http1Server):
    """mitmproxy's HTTP/1 server that refuses heads breaking ``limits`` (414, 431, 408),
    bodies slower than ``limits.body_rate`` (408), and bodies its listener cannot hold (503)."""

    def __init__(self, context: Context, bounds: Bounds, *, connect_allowed: bool) -> None:
        super().__init__(context)
        self.bounds = bounds
        self.buf = _HeadBuffer(bounds.limits.header_count + 1)  # the request line, the fields
        self.connect_allowed = connect_allowed
        self._head_since: float | None = None
        """When the head being read began: the connection's start, or its first byte."""
        self._body_since: float | None = None
        """When the head of the request whose body is being read ended."""
        self._body_stream: int | None = None
        """The request whose body the counts below are of."""
        self._body_received = 0
        """Its bytes received: those passed on, and those in the buffer."""
        self._body_passed = 0
        self._body_held = 0
        """Of them, those held for it."""
        self._timer: commands.RequestWakeup | None = None

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Wakeup):
            yield from self._on_timer()  # mitmproxy's HTTP/1 server asks for no timer itself
            return
        if isinstance(event, events.DataReceived) and (yield from self._refused(event.data)):
            return
        yield from super()._handle_event(event)
        if self.buf.too_many_lines:
            yield from self._refuse(Refusal.HEADER_COUNT)
            return
        if self.state != self.read_headers:
            self._head_since = None
        elif self._head_since is None and (isinstance(event, events.Start) or self.buf):
            yield from self._start_clock()
        if self.state != self.read_body:
            self._body_since = None
        elif self._body_since is None:  # a head just ended, its body follows
            self._body_since = time.monotonic()
            if self._timer is None:
                yield from self._arm(self.bounds.limits.header_timeout)

    def read_body(self, event: events.Event) -> layer.CommandGenerator[None]:
        """mitmproxy's, counting the body's bytes first: all in the buffer were received."""
        if self._body_stream != self.stream_id:  # the first call for this request's body
            self._free()  # nothing: the last request's bytes went back at its answer
            self._body_stream, self._body_since = self.stream_id, None
            self._body_received = self._body_passed = 0
        if isinstance(event, events.DataReceived) and not (yield from self._received()):
            return
        before = len(self.buf)
        yield from super().read_body(event)
        self._body_passed += before - len(self.buf)

    def _received(self) -> layer.CommandGenerator[bool]:
        """Hold the bytes that arrived, to ``streamed_past`` for one body; none once
        mitmproxy streams it (a hook decides that after its first bytes may have come).
        False, once refused, if its listener cannot hold them."""
        received = self._body_passed + len(self.buf)
        arrived, self._body_received = received - self._body_received, received
        assert self.request is not None  # a body is read for a request
        if self.request.stream:
            self._free()
        elif (held := self.bounds.held_after(self._body_held, arrived)) is None:
            yield from self._refuse_body(Refusal.BODIES)
            return False
        else:
            self._body_held = held
        return True

    def _free(self) -> None:
        if self._body_held:
            self.bounds.free()
            self._body_held = 0

    def _refused(self, data: bytes) -> layer.CommandGenerator[bool]:
        """Judge bytes before mitmproxy buffers them; True when the head was refused."""
        if self.state == self.read_headers:
            if self._head_since is None:
                yield from self._start_clock()
            if len(self.buf) + len(data) > self.bounds.limits.request_line:
                received = bytes(self.buf) + data if self.buf else data
                refusal = head_refusal(received, self.bounds.limits)
                if refusal is not None:
                    yield from self._refuse(refusal)
                    return True
        elif self.state == self.wait and len(self.buf) + len(data) > self.bounds.limits.header_size:
            # A pipelined request waits here for the current answer; no answer can be put
            # in front of that one, so an oversized pipelined head only closes the connection.
            self.bounds.on_refusal(Refusal.HEADER_SIZE, self.conn)
            yield commands.CloseConnection(self.conn)
            self.state = self.done
            return True
        return False

    def _start_clock(self) -> layer.CommandGenerator[None]:
        self._head_since = time.monotonic()
        if self._timer is None:  # one timer at a time; it re-arms for the head it finds
            yield from self._arm(self.bounds.limits.header_timeout)

    def _arm(self, delay: float) -> layer.CommandGenerator[None]:
        self._timer = commands.RequestWakeup(delay)
        yield self._timer

    def _on_timer(self) -> layer.CommandGenerator[None]:
        """Refuse the head or body being read if its time is up, else wait for when it is."""
        self._timer = None
        limits = self.bounds.limits
        if self.state == self.read_headers and self._head_since is not None:
            refusal, due = Refusal.HEADER_TIMEOUT, self._head_since + limits.header_timeout
        elif self.state == self.read_body and self._body_since is not None:
            due = body_deadline(self._body_since, self._body_received, limits)
            refusal = Refusal.BODY_RATE
        else:
            return
        if (remaining := due - time.monotonic()) > 0:
            yield from self._arm(remaining)
        elif refusal is Refusal.BODY_RATE:
            yield from self._refuse_body(refusal)
        else:
            yield from self._refuse(refusal)

    def _refuse(self, refusal: Refusal) -> layer.CommandGenerator[None]:
        self.bounds.on_refusal(refusal, self.conn)
        yield from self._answer_and_close(refusal.status, refusal.message)
        self._head_since = None

    def _refuse_body(self, refusal: Refusal) -> layer.CommandGenerator[None]:
        """As mitmproxy meets a body it cannot read: the connection closed, then the stream
        told, so the flow ends in the error hook (and a body streaming upstream is cut)."""
        assert self.stream_id is not None  # a body is read for a request
        self.bounds.on_refusal(refusal, self.conn)
        yield from self._answer_and_close(refusal.status, refusal.message)
        error = RequestProtocolError(
            self.stream_id, refusal.message, ErrorCode.GENERIC_CLIENT_ERROR
        )
        yield ReceiveHttp(error)
        self._body_since = None

    def _answer_and_close(self, status: int, reason: str) -> layer.CommandGenerator[None]:
        if self.conn.state & connection.ConnectionState.CAN_WRITE:
            yield commands.SendData(self.conn, refusal_response(status, reason))
        yield commands.CloseConnection(self.conn)
        self.state = self.done
        self._free()

    def send(self, event: HttpEvent) -> layer.CommandGenerator[None]:
        """The request's body is given back at its answer's end. mitmproxy refuses CONNECT
        on a reverse listener with an HTML 400: ours is a 405."""
        if isinstance(event, ResponseEndOfMessage | ResponseProtocolError):
            self._free()
        if (
            isinstance(event, ResponseProtocolError)
            and not self.connect_allowed
            and self.response is None
            and self.request is not None
            and self.request.method == "CONNECT"
        ):
            yield from self._answer_and_close(405, CONNECT_REFUSED)
            return
        yield from super().send(event)


class BoundedHttp2Server(Http2Server):
    """mitmproxy's HTTP/2 server that judges each stream's head by ``limits`` as the HTTP/1
    head it stands for (414, 431) and holds each stream's request body against its
    listener's ``limits.bodies`` as ``BoundedHttp1Server`` does (503). A refused stream is
    answered alone: its connection and the other streams go on. A refused head never becomes
    a flow.

    mitmproxy opens every stream's flow-control window to 2 GiB and acknowledges data as it
    comes, so flow control bounds nothing here; h2 allows 100 streams at once. A stream
    gives its bytes back at its answer, its refusal or its reset by the client, and the
    connection's end all of them (the addon's ``client_disconnected``).
    """

    def __init__(self, context: Context, bounds: Bounds) -> None:
        super().__init__(context)
        self.bounds = bounds
        self._requests: dict[int, http.Request] = {}
        """The streams whose bodies may be held: from their heads to their answers."""
        self._held: dict[int, int] = {}
        """The bytes each of them holds (none: no entry)."""

    def handle_h2_event(self, event: h2.events.Event) -> layer.CommandGenerator[bool]:
        if isinstance(event, h2.events.RequestReceived):
            refusal = header_list_refusal(event.headers, self.bounds.limits)
            if refusal is not None:  # mitmproxy never learns of the stream
                self.bounds.on_refusal(refusal, self.conn)
                yield from self._answer(event.stream_id, refusal)
                return False
            return (yield from _showing(super().handle_h2_event(event), self._on_command))
        if isinstance(event, h2.events.DataReceived) and event.stream_id in self._requests:
            if not self._received(event.stream_id, len(event.data)):
                yield from self._refuse_body(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._done(event.stream_id)
        return (yield from super().handle_h2_event(event))

    def _on_command(self, command: commands.Command) -> None:
        if isinstance(command, ReceiveHttp) and isinstance(command.event, RequestHeaders):
            self._requests[command.event.stream_id] = command.event.request

    def _received(self, stream_id: int, size: int) -> bool:
        """Hold ``size`` more bytes of a stream's body, to ``streamed_past``; none once
        mitmproxy streams it. False if its listener cannot hold them."""
        if self._requests[stream_id].stream:
            self._give_back(stream_id)
        elif (held := self.bounds.held_after(self._held.get(stream_id, 0), size)) is None:
            return False
        elif held:
            self._held[stream_id] = held
        return True

    def _refuse_body(self, stream_id: int) -> layer.CommandGenerator[None]:
        """Answer the stream 503 and ask its client to stop sending (RFC 9113 8.1: a
        complete answer, then RST_STREAM NO_ERROR); its flow ends in the error hook, as
        mitmproxy ends one whose body it cannot read."""
        refusal = Refusal.BODIES
        self.bounds.on_refusal(refusal, self.conn)
        self._done(stream_id)
        yield from self._answer(stream_id, refusal)
        if self.streams.pop(stream_id, None) is not None:
            error = RequestProtocolError(stream_id, refusal.message, ErrorCode.GENERIC_CLIENT_ERROR)
            yield ReceiveHttp(error)

    def _answer(self, stream_id: int, refusal: Refusal) -> layer.CommandGenerator[None]:
        """The refusal's JSON error as the stream's complete answer (unless one began), then
        a reset asking a client still sending to stop (RFC 9113 8.1)."""
        stream = self.h2_conn.streams.get(stream_id)
        if stream is None or not self.is_open_for_us(stream_id):
            return
        if not stream.state_machine.headers_sent:
            body = error_body(refusal.message)
            headers = [
                (b":status", b"%d" % refusal.status),
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ]
            self.h2_conn.send_headers(stream_id, headers)
            self.h2_conn.send_data(stream_id, body, end_stream=True)
        # A client that sent all of its request has closed the stream with our answer; one
        # still sending is asked to stop, unless the answer still waits for its window.
        if not self.is_closed(stream_id) and not self.h2_conn.stream_buffers.get(stream_id):
            self.h2_conn.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        yield commands.SendData(self.conn, self.h2_conn.data_to_send())

    def _give_back(self, stream_id: int) -> None:
        if held := self._held.pop(stream_id, 0):
            self.bounds.free(held)

    def _done(self, stream_id: int) -> None:
        """A stream answered, refused or reset: its bytes are free, and no more are held."""
        self._give_back(stream_id)
        self._requests.pop(stream_id, None)

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, ResponseEndOfMessage | ResponseProtocolError):
            self._done(event.stream_id)
        yield from super()._handle_event(event)


def _showing[T](
    inner: layer.CommandGenerator[T], seen: Callable[[commands.Command], None]
) -> layer.CommandGenerator[T]:
    """``yield from inner``, each command shown to ``seen`` before it is yielded."""
    try:
        command = next(inner)
        while True:
            seen(command)
            command = inner.send((yield command))
    except StopIteration as end:
        return end.value


class FirstRequestDeadlines:
    """Each connection must start a request within ``timeout`` seconds of connecting.

    ``connected`` starts the clock; ``met`` stops it, at the first request or CONNECT, or
    when the connection gets a ``BoundedHttp1Server``, which keeps its own clock. A
    connection still waiting when its time is up is closed as mitmproxy closes an idle one.
    """

    def __init__(self, timeout: float, on_expiry: Callable[[connection.Client], None]) -> None:
        self.timeout = timeout
        self.on_expiry = on_expiry
        self._pending: dict[str, asyncio.TimerHandle] = {}

    def connected(self, client: connection.Client) -> None:
        loop = asyncio.get_running_loop()
        self._pending[client.id] = loop.call_later(self.timeout, self._expire, client)

    def met(self, client: connection.Client) -> None:
        timer = self._pending.pop(client.id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, client: connection.Client) -> None:
        if self._pending.pop(client.id, None) is not None and close(client.id) is not None:
            self.on_expiry(client)


def close(client_id: str) -> connection.Client | None:
    """Close a client connection as mitmproxy closes an idle one; the client closed, None
    if it is gone."""
    handler = ctx.master.addons.get("proxyserver").connections.get(client_id)
    if handler is None:
        return None
    asyncio_utils.create_task(handler.on_timeout(), name="claimgate close", keep_ref=True)
    return handler.client


def install(
    make_http1: Callable[[Context], Http1Server], make_http2: Callable[[Context], Http2Server]
) -> None:
    """Have mitmproxy's HTTP layers build every client's HTTP/1 and HTTP/2 servers with
    ``make_http1`` and ``make_http2``.

    ``HttpLayer`` picks its client connection's server when it starts, after any TLS
    handshake, by the module names ``Http1Server`` and ``Http2Server`` (HTTP/3 by its own):
    pointing those names at ours keeps mitmproxy's own choice of protocol. Once per
    process, before the listeners accept.
    """
    http_layers.Http1Server = make_http1  # type: ignore[misc, assignment]
    http_layers.Http2Server = make_http2  # type: ignore[misc, assignment]
