"""The bounds on what anyone who can reach a listener controls before a request exists (pure).

Every listener reads a request line and a header block before any of claimgate's hooks can
look at the request, and mitmproxy's HTTP/1 server bounds neither their size nor the time
they take to arrive. ``head_refusal`` judges the bytes received so far, so a head that can
only end badly is refused as soon as it crosses a bound, never buffered to its end. The
answer is a short JSON error with the status that fits (414, 431, 408); the connection is
closed after it, because the rest of what such a client sends is of no use.

Nor does mitmproxy bound how many connections a listener holds open, each a file descriptor
and some tens of KiB: ``OpenConnections`` holds each listener to ``Limits.connections``, so a
flood on one listener can neither exhaust the process nor take the others' connections.
"""

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus


class Refusal(StrEnum):
    """Why a request head was refused; the label of ``claimgate_requests_refused_total``."""

    REQUEST_LINE = "request_line_too_long"
    HEADER_SIZE = "headers_too_large"
    HEADER_COUNT = "too_many_headers"
    HEADER_TIMEOUT = "header_timeout"
    CONNECTIONS = "too_many_connections"
    """Not a head: a connection past ``Limits.connections``, closed as it was accepted."""

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
    Refusal.CONNECTIONS: 503,
}
_MESSAGE = {
    Refusal.REQUEST_LINE: "request line longer than limits.request_line",
    Refusal.HEADER_SIZE: "header block larger than limits.header_size",
    Refusal.HEADER_COUNT: "more header fields than limits.header_count",
    Refusal.HEADER_TIMEOUT: "request headers not received within limits.header_timeout",
    Refusal.CONNECTIONS: "more connections open on this listener than limits.connections",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request head may take, and how many connections one listener holds open;
    ``header_size`` is at least ``request_line``."""

    request_line: int = 16 * 1024
    """Bytes of the request line (method, URL with its query, version)."""
    header_size: int = 64 * 1024
    """Bytes of the whole head: request line and every header line."""
    header_count: int = 100
    header_timeout: float = 10.0
    """Seconds from a connection's start (or a later request's first byte) to its blank line."""
    connections: int = 500
    """Connections open at once on each listener, counted apart; one more is closed at once."""


class OpenConnections:
    """The connections open on each listener, each listener held to its own ``limit``.

    ``admit`` counts a new connection in, or refuses it when its listener is full;
    ``release`` counts it out, and ignores one never admitted, so a refused connection's
    end, or a second end, cannot free another's place.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, set[str]] = {}

    def admit(self, listener: str, connection: str) -> bool:
        held = self._open.setdefault(listener, set())
        if len(held) >= self.limit:
            return False
        held.add(connection)
        return True

    def release(self, listener: str, connection: str) -> None:
        held = self._open.get(listener)
        if held is not None:
            held.discard(connection)

    def count(self, listener: str) -> int:
        return len(self._open.get(listener, ()))


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
