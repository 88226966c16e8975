"""claimgate's own HTTP/1.1 listeners (the admin port, the oversize sink), on asyncio and h11.

mitmproxy loads both anyway, so these listeners import nothing of their own; tornado, which
served them before, cost the sidecar 3 MiB and 20-30 ms of every start (docs/performance.md,
"Footprint"). Whoever reaches the port controls what arrives, so each request head is held
to ``limits.Limits`` as on every listener (414, 431, 408 and the connection closed; a
connection that sends nothing, or stays idle after an answer, is closed once the header
timeout has passed; past ``limits.connections`` open, one idle makes room or the new one is
closed as it arrives), a body is kept up to ``body_limit`` bytes (413 beyond, the rest
unread) or, for a sink, read and dropped as it arrives. A handler's exception is logged by
its type and answered 500. Every answer the listener makes itself is the listeners' short
JSON error.
"""

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11

from claimgate.limits import (
    Limits,
    OpenConnections,
    Refusal,
    error_body,
    head_refusal,
    reason_phrase,
    refusal_response,
)
from claimgate.telemetry import get_logger

READ_SIZE = 64 * 1024
"""Bytes read from a connection at a time: all a head or body chunk may add at once."""
LINGER_BYTES = 1024 * 1024
LINGER_SECONDS = 2.0
"""After a refusal, what the client still sends is read and dropped, up to these bounds,
before the connection is closed: closing on unread bytes would reset the connection, and a
client still sending would lose the answer."""
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    """The request target as sent: the path and its query."""
    headers: tuple[tuple[bytes, bytes], ...]
    """Names lower-cased (h11 does that)."""
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def header(self, name: str) -> str:
        """The first value of the field ``name`` (lower-case), or ``""``."""
        wanted = name.encode()
        return next((v.decode("latin-1") for n, v in self.headers if n == wanted), "")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


type Handler = Callable[[Request], Awaitable[Response]]


def reason(status: int) -> str:
    """The standard reason phrase, lower-cased: the ``error`` of an answer that has no other."""
    return reason_phrase(status).lower()


def json_error(status: int, message: str, *headers: tuple[str, str]) -> Response:
    """The listeners' error answer: ``{"error": message}``."""
    return Response(status, error_body(message), (("Content-Type", "application/json"), *headers))


type OnRefusal = Callable[[Refusal, str], None]
"""Told of each head refused on a bound, with the client's address."""
type OnIdleClosed = Callable[[str], None]
"""Told of each idle connection closed to make room, with its client's address."""


class _Closed(Exception):
    """The peer went away, or sent what ends the connection without an answer."""


class _Refused(Exception):
    """A head answered with an error and its connection closed."""

    def __init__(self, status: int, message: str, refusal: Refusal | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.refusal = status, message, refusal

    @classmethod
    def by(cls, refusal: Refusal) -> "_Refused":
        return cls(refusal.status, refusal.message, refusal)


class HttpListener:
    """One listening port: ``start`` binds it (port 0 picks a free one), ``stop`` closes it and
    every connection on it.

    ``body_limit`` None reads any body and keeps none of it (a sink). ``body_timeout`` bounds
    the seconds from a request's head to its body's end (None: no bound). ``on_refusal`` is
    told of every head refused on one of ``limits``' bounds, ``on_idle_closed`` of every idle
    connection closed to make room for a new one.
    """

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        *,
        name: str,
        body_limit: int | None,
        body_timeout: float | None,
        on_refusal: OnRefusal | None = None,
        on_idle_closed: OnIdleClosed | None = None,
    ) -> None:
        self.handler = handler
        self.on_refusal = on_refusal
        self.on_idle_closed = on_idle_closed
        self.limits = limits
        self.name = name
        self.body_limit = body_limit
        self.body_timeout = body_timeout
        self._server: asyncio.Server | None = None
        self._connections: dict[str, tuple[asyncio.Task[None], str]] = {}
        """Each connection's task and client address."""
        self._places = OpenConnections(limits.connections)
        self._numbers = itertools.count()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind and serve on the running loop; returns the bound ``(host, port)``."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=READ_SIZE)
        bound_host, bound_port = self._server.sockets[0].getsockname()[:2]
        return bound_host, bound_port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        tasks = [task for task, _ in self._connections.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    def open_connections(self) -> int:
        return self._places.count(self.name)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = str(next(self._numbers))
        admitted, given_up = self._places.admit(self.name, key)
        if not admitted:  # every place busy: closed unread, as on the proxy listeners
            self._count(Refusal.CONNECTIONS, _peer(writer))
            writer.close()
            return
        if given_up is not None:
            idle, idle_peer = self._connections[given_up]
            idle.cancel()
            if self.on_idle_closed is not None:
                self.on_idle_closed(idle_peer)
        task = asyncio.current_task()
        assert task is not None  # asyncio runs every connection in a task of its own
        self._connections[key] = task, _peer(writer)
        try:
            await self._exchanges(reader, writer, key)
        except (_Closed, ConnectionError, asyncio.CancelledError):  # by ``stop``, or given up
            pass
        except Exception as error:  # a fault of this module: logged, the connection closed
            _log_internal_error(self.name, error)
        finally:
            del self._connections[key]
            self._places.release(self.name, key)
            writer.close()

    async def _exchanges(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str
    ) -> None:
        """Answer one request after another on the connection, until one side closes it."""
        # h11's own bound is a backstop: the head's bounds are judged before h11 sees it.
        conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.limits.header_size + READ_SIZE
        )
        peer = _peer(writer)
        first = True
        while True:
            try:
                head = await self._head(conn, reader, peer, first=first)
            except _Refused as refused:
                if refused.refusal is not None:
                    self._count(refused.refusal, peer)
                writer.write(refusal_response(refused.status, refused.message))
                await _linger(reader, writer)
                return
            first = False
            self._places.busy(self.name, key)  # from its head to its answer
            request = await self._request(conn, reader, writer, head)
            refused = isinstance(request, Response)  # on its body: the rest is not kept
            answer = request if isinstance(request, Response) else await self._answer(request)
            await self._send(conn, writer, head.method, answer, close=refused)
            self._places.done(self.name, key)
            if refused:
                await _linger(reader, writer)
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _head(
        self, conn: h11.Connection, reader: asyncio.StreamReader, peer: str, *, first: bool
    ) -> h11.Request:
        """The next request's head. A head that breaks a bound raises ``_Refused``; a
        connection closed, or silent for the header timeout, raises ``_Closed`` (silent
        before its first request, it counts as a refusal)."""
        received = bytearray()  # this head's bytes: at most header_size + READ_SIZE, see below
        try:
            async with asyncio.timeout(self.limits.header_timeout):
                while (event := conn.next_event()) is h11.NEED_DATA:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        raise _Closed
                    received += data
                    if (refusal := head_refusal(bytes(received), self.limits)) is not None:
                        raise _Refused.by(refusal)
                    conn.receive_data(data)
        except TimeoutError:
            if received:
                raise _Refused.by(Refusal.HEADER_TIMEOUT) from None
            if first:
                self._count(Refusal.HEADER_TIMEOUT, peer)
            raise _Closed from None
        except h11.RemoteProtocolError as error:
            status = error.error_status_hint
            raise _Refused(status, f"not an HTTP/1.1 request head ({reason(status)})") from None
        if not isinstance(event, h11.Request):  # h11.ConnectionClosed
            raise _Closed
        if len(event.headers) > self.limits.header_count:
            raise _Refused.by(Refusal.HEADER_COUNT)
        return event

    def _count(self, refusal: Refusal, peer: str) -> None:
        if self.on_refusal is not None:
            self.on_refusal(refusal, peer)

    async def _request(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: h11.Request,
    ) -> Request | Response:
        """The whole request, or the answer that refuses its body."""
        declared = dict(head.headers).get(b"content-length")
        if self.body_limit is not None and declared and int(declared) > self.body_limit:
            return self._too_large()
        if conn.they_are_waiting_for_100_continue:
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await self._body(conn, reader)
        except TimeoutError:
            return json_error(408, "request body not received within limits.header_timeout")
        except h11.RemoteProtocolError:
            return json_error(400, "malformed request body")
        if body is None:
            return self._too_large()
        return Request(
            head.method.decode("ascii"),
            head.target.decode("ascii", "replace"),
            tuple(head.headers),
            body,
        )

    async def _body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> bytes | None:
        """The body, ``b""`` for a sink, None once it has grown past ``body_limit``."""
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                if not data:
                    raise _Closed
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                if self.body_limit is None:
                    continue
                size += len(event.data)
                if size > self.body_limit:
                    return None
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise _Closed

    def _too_large(self) -> Response:
        return json_error(413, f"body larger than {self.body_limit} bytes")

    async def _answer(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except Exception as error:
            _log_internal_error(self.name, error)
            return json_error(500, reason(500))

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        method: bytes,
        response: Response,
        *,
        close: bool,
    ) -> None:
        headers = list(response.headers)
        if response.status not in _NO_BODY_STATUSES:
            headers.append(("Content-Length", str(len(response.body))))
        if close:
            headers.append(("Connection", "close"))
        status = response.status
        head = h11.Response(status_code=status, headers=headers, reason=reason_phrase(status))
        parts = [conn.send(head)]
        if response.body and method != b"HEAD" and status not in _NO_BODY_STATUSES:
            parts.append(conn.send(h11.Data(data=response.body)))
        parts.append(conn.send(h11.EndOfMessage()))
        writer.write(b"".join(part for part in parts if part))
        await writer.drain()


def _peer(writer: asyncio.StreamWriter) -> str:
    return (writer.get_extra_info("peername") or ("",))[0]


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """End our side after the answer (a client reading to the end has all of it), then read
    and drop what the client still sends until it closes or the bounds are reached."""
    await writer.drain()
    writer.write_eof()
    drained = 0
    try:
        async with asyncio.timeout(LINGER_SECONDS):
            while drained < LINGER_BYTES and (data := await reader.read(READ_SIZE)):
                drained += len(data)
    except (TimeoutError, ConnectionError):
        pass


def _log_internal_error(listener: str, error: Exception) -> None:
    get_logger().error("internal_error", hook=listener, exc_info=error)
