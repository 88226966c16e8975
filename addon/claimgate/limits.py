"""What anyone who can reach a listener controls, bounded: heads, body pace, connections (pure).

Every listener reads a request line and a header block before any of claimgate's hooks can
look at the request, and mitmproxy's HTTP/1 server bounds neither their size nor the time
they take to arrive. ``head_refusal`` judges the bytes received so far, so a head that can
only end badly is refused as soon as it crosses a bound, never buffered to its end. The
answer is a short JSON error with the status that fits (414, 431, 408); the connection is
closed after it, because the rest of what such a client sends is of no use.

A body, once its head is in, must keep coming at ``Limits.body_rate`` on average
(``body_deadline``): mitmproxy would wait on a trickling body for as long as bytes come.

Nor does mitmproxy bound how many connections a listener holds open, each a file descriptor
and some tens of KiB: ``OpenConnections`` holds each listener to ``Limits.connections``, so a
flood on one listener can neither exhaust the process nor take the others' places, and
idle connections make room for new ones.

mitmproxy holds each request body whole (up to ``proxy.max_body_size``) until its answer, so
a listener's connections together could hold ``connections`` times that: ``HeldBodies`` holds
each listener's request bodies to ``Limits.bodies`` bytes together.
"""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus


class Refusal(StrEnum):
    """Why a request head was refused; the label of ``claimgate_requests_refused_total``."""

    REQUEST_LINE = "request_line_too_long"
    HEADER_SIZE = "headers_too_large"
    HEADER_COUNT = "too_many_headers"
    HEADER_TIMEOUT = "header_timeout"
    BODY_RATE = "body_too_slow"
    """Not a head either: a request body arriving slower than ``Limits.body_rate``."""
    CONNECTIONS = "too_many_connections"
    """Not a head: a connection past ``Limits.connections`` with every place busy, closed
    as it was accepted."""
    BODIES = "too_many_body_bytes"
    """Not a head: a request body that would take its listener past ``Limits.bodies``."""

    @property
    def status(self) -> int:
        return _STATUS[self]

    @property
    def message(self) -> str:
        return _MESSAGE[self]


_STATUS = {
    Refusal.REQUEST_LINE: 414,
    Refusal.HEADER_SIZE: 431,
    Refusal.HEADER_COUNT: 431,
    Refusal.HEADER_TIMEOUT: 408,
    Refusal.BODY_RATE: 408,
    Refusal.CONNECTIONS: 503,
    Refusal.BODIES: 503,
}
_MESSAGE = {
    Refusal.REQUEST_LINE: "request line longer than limits.request_line",
    Refusal.HEADER_SIZE: "header block larger than limits.header_size",
    Refusal.HEADER_COUNT: "more header fields than limits.header_count",
    Refusal.HEADER_TIMEOUT: "request headers not received within limits.header_timeout",
    Refusal.BODY_RATE: "request body arriving slower than limits.body_rate",
    Refusal.CONNECTIONS: "limits.connections connections busy on this listener",
    Refusal.BODIES: "limits.bodies bytes of request bodies held on this listener",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request head may take, how fast its body must come, how many connections
    and body bytes one listener holds; ``header_size`` is at least ``request_line``."""

    request_line: int = 16 * 1024
    """Bytes of the request line (method, URL with its query, version)."""
    header_size: int = 64 * 1024
    """Bytes of the whole head: request line and every header line."""
    header_count: int = 100
    header_timeout: float = 10.0
    """Seconds from a connection's start (or a later request's first byte) to its blank line."""
    body_rate: int = 1024
    """Bytes a second a request body must average from its head's end, after a grace of
    ``header_timeout``: holding a connection busy costs the sender this much."""
    connections: int = 500
    """Connections open at once on each listener, counted apart. Past it the connection
    idle longest is closed to make room; with none idle, the new one is closed at once."""
    bodies: int = 64 * 1024 * 1024
    """Bytes of request bodies each listener holds at once, counted apart (at least
    ``proxy.max_body_size``): a body that would take it past them is refused."""


def body_deadline(since: float, received: int, limits: Limits) -> float:
    """When a request body whose head ended at ``since`` falls below ``limits.body_rate``,
    ``received`` bytes of it in: each byte buys ``1 / body_rate`` seconds beyond the grace."""
    return since + limits.header_timeout + received / limits.body_rate


class OpenConnections:
    """The connections open on each listener, each listener held to its own ``limit``.

    A connection is busy while it carries a request (from its head to its answer), a tunnel
    or a WebSocket (``busy`` and ``done`` count those), idle otherwise: before its first
    request, between two, or mid-head. A full listener makes room for a new connection by
    giving up the one idle longest, as nginx reuses idle keep-alive connections, so
    connections that ask nothing hold no place for long; the new one is refused only when
    every place is busy. ``release`` forgets a connection, and ignores one it no longer
    holds, so a refused or given-up connection's end cannot free another's place.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, dict[str, int]] = {}
        """Per listener, each connection's busy count, the idle longest first."""

    def admit(self, listener: str, connection: str) -> tuple[bool, str | None]:
        """Whether ``connection`` has a place, and the idle connection that gave it up (for
        the caller to close), if one had to."""
        held = self._open.setdefault(listener, {})
        given_up = None
        if len(held) >= self.limit:
            given_up = next((c for c, busy in held.items() if not busy), None)
            if given_up is None:
                return False, None
            del held[given_up]
        held[connection] = 0
        return True, given_up

    def busy(self, listener: str, connection: str) -> None:
        held = self._open.get(listener, {})
        if connection in held:
            held[connection] += 1

    def done(self, listener: str, connection: str) -> None:
        """One request, tunnel or WebSocket of ``connection`` ended; idle since now if it
        was the last."""
        held = self._open.get(listener, {})
        if held.get(connection, 0) > 0:
            held[connection] = held.pop(connection) - 1  # to the end: the latest active

    def release(self, listener: str, connection: str) -> None:
        self._open.get(listener, {}).pop(connection, None)

    def count(self, listener: str) -> int:
        return len(self._open.get(listener, ()))


class HeldBodies:
    """The request body bytes held on each listener, each listener held to its own ``limit``.

    A connection holds the bodies of the requests it carries, as they arrive, until their
    answers (HTTP/1 carries one at a time, HTTP/2 several); ``free`` gives back one body's
    bytes or all the connection holds, and may be called again when nothing is held, so the
    end of a request and of its connection can both call it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, dict[str, int]] = {}
        """Per listener, the bytes each connection holds (none: no entry)."""
        self._total: dict[str, int] = {}

    def hold(self, listener: str, connection: str, size: int) -> bool:
        """Hold ``size`` more bytes for ``connection``, unless its listener would go past
        ``limit``; then nothing is held and the answer is False."""
        total = self._total.get(listener, 0) + size
        if total > self.limit:
            return False
        held = self._held.setdefault(listener, {})
        held[connection] = held.get(connection, 0) + size
        self._total[listener] = total
        return True

    def free(self, listener: str, connection: str, size: int | None = None) -> None:
        """Give back ``size`` of the bytes ``connection`` holds (at most all), or all."""
        held = self._held.get(listener, {})
        holding = held.get(connection, 0)
        given = holding if size is None else min(size, holding)
        if not given:
            return
        if given == holding:
            del held[connection]
        else:
            held[connection] = holding - given
        self._total[listener] -= given

    def held(self, listener: str) -> int:
        return self._total.get(listener, 0)


_END_OF_HEAD = re.compile(rb"\n\r?\n")


def head_refusal(received: bytes, limits: Limits) -> Refusal | None:
    """Whether the bytes received of a head so far already break a bound.

    ``received`` starts at the head and may run on into the body. A head below
    ``limits.request_line`` bytes breaks neither size bound, so callers may skip the check
    for shorter input; the search never looks further than the bound it checks.
    """
    line_end = received.find(b"\n", 0, limits.request_line + 2)
    if line_end < 0:  # unfinished so far; a last CR may be the start of its CRLF
        line_length = len(received) - received.endswith(b"\r")
    else:
        line_length = line_end - (received[line_end - 1 : line_end] == b"\r")
    if line_length > limits.request_line:
        return Refusal.REQUEST_LINE
    head_end = _END_OF_HEAD.search(received, 0, limits.header_size + 3)
    if head_end is None:
        return Refusal.HEADER_SIZE if len(received) > limits.header_size else None
    return Refusal.HEADER_SIZE if head_end.start() > limits.header_size else None


def header_list_refusal(headers: Sequence[tuple[bytes, bytes]], limits: Limits) -> Refusal | None:
    """Whether an HTTP/2 request's decoded header list breaks a bound of ``limits``, judged
    as the HTTP/1 head it stands for: ``:method :path HTTP/1.1``, then ``:authority`` as
    ``Host`` and each other field as a line of its own. So one limit means the same on
    both protocols."""
    pseudo: dict[bytes, bytes] = {}
    fields: list[bytes] = []
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        else:
            fields.append(name + b": " + value)
    if b":authority" in pseudo:
        fields.insert(0, b"host: " + pseudo[b":authority"])
    line = pseudo.get(b":method", b"") + b" " + pseudo.get(b":path", b"") + b" HTTP/1.1"
    refusal = head_refusal(b"\r\n".join([line, *fields]) + b"\r\n\r\n", limits)
    if refusal is None and len(fields) > limits.header_count:
        return Refusal.HEADER_COUNT
    return refusal


def error_body(message: str) -> bytes:
    """The body of every error claimgate's listeners answer themselves."""
    return json.dumps({"error": message}).encode()


def reason_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` ("Error" for one without)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def refusal_response(status: int, reason: str) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection: the listeners' JSON error."""
    body = error_body(reason)
    head = (
        f"HTTP/1.1 {status} {reason_phrase(status)}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body
