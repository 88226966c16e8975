"""Undo ``Content-Encoding`` without ever holding more than ``limit`` decoded bytes.

mitmproxy's ``get_content`` inflates a body whole: 1 MB of gzip on the wire that inflates to
1 GiB cost 2.2 GB of RSS and blocked the event loop for 8.7 s. Here the decoded size is the
size: every decompressor is fed at most ``_INPUT_STEP`` bytes and asked for at most
``_OUTPUT_STEP`` bytes per call, and decoding stops as soon as the output passes the limit.
Besides that output, a decoder holds only its window: 32 KiB for zlib, at most 16 MiB for
brotli (the format's largest, which its decoder fills), at most 8 MiB for zstd (RFC 9659).

The codings are mitmproxy's (``mitmproxy.net.encoding``), with ``x-gzip`` added, and without
its fallback to Python's codecs (``bz2``, ``base64``, ...: not HTTP content codings). It is
stricter than mitmproxy where mitmproxy silently loses data: a gzip body is every one of its
members (mitmproxy decodes the first and drops the rest), and a truncated stream or bytes
after the end of one are undecodable, for every coding (only NUL padding may follow a gzip
member, as ``gzip.decompress`` allows). What the proxy checks is then all that the API reads.
"""

import io
import re
import sys
import zlib
from collections.abc import Callable

import brotli

if sys.version_info >= (3, 14):  # pragma: no cover
    from compression import zstd
else:
    from backports import zstd

_INPUT_STEP = 16 * 1024
"""Compressed bytes given to a decompressor per call (bounds what it copies or buffers)."""
_OUTPUT_STEP = 64 * 1024
"""Decoded bytes asked of a decompressor per call."""
_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS
"""zlib detects the header, as mitmproxy does for ``gzip``."""
_ZSTD_WINDOW = {zstd.DecompressionParameter.window_log_max: 23}
"""RFC 9659: a zstd frame in HTTP needs at most an 8 MiB window; a larger one is refused."""
_NOT_NUL = re.compile(rb"[^\0]")
_MAX_GZIP_MEMBERS = 16
"""Clients send one member; each costs a decompressor, so thousands of empty ones in a body
would hold the event loop for a second."""


class BodyTooLarge(Exception):
    """The decoded body would be longer than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"decoded body larger than {limit} bytes")
        self.limit = limit


class UndecodableBody(ValueError):
    """Corrupt or truncated data, or an unknown coding. The message never quotes the body."""


class _Sink:
    """The decoded bytes, refused past ``limit``: at most ``limit`` are ever kept."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = io.BytesIO()

    def room(self) -> int:
        """How much to ask for next: one step, or one byte past the limit (to see it passed)."""
        return min(_OUTPUT_STEP, self._limit - self._buffer.tell() + 1)

    def add(self, data: bytes) -> None:
        if self._buffer.tell() + len(data) > self._limit:
            raise BodyTooLarge(self._limit)
        self._buffer.write(data)

    def clear(self) -> None:
        self._buffer = io.BytesIO()

    def value(self) -> bytes:
        return self._buffer.getvalue()  # the buffer itself, not a copy (CPython)


def decode(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """``raw`` decoded as ``content_encoding`` says (``raw`` itself for identity).

    Raises ``BodyTooLarge`` if the decoded body is longer than ``limit`` bytes, and
    ``UndecodableBody`` for an unknown coding or data that is not in that coding.
    """
    coding = (content_encoding or "").strip().lower()
    if coding in _IDENTITY:
        if len(raw) > limit:
            raise BodyTooLarge(limit)
        return raw
    decoder = _DECODERS.get(coding)
    if decoder is None:
        raise UndecodableBody(f"unknown content encoding {coding[:40]!r}")
    if not raw:  # as mitmproxy: an empty body is empty in every coding
        return raw
    sink = _Sink(limit)
    try:
        decoder(memoryview(raw), sink)
    except (UndecodableBody, zlib.error, brotli.error, zstd.ZstdError) as error:
        raise UndecodableBody(f"undecodable {coding} body: {error}") from error
    return sink.value()


def _inflate(raw: memoryview, start: int, wbits: int, sink: _Sink) -> int:
    """Decode the zlib, gzip or raw deflate stream at ``start``; where it ends."""
    inflater = zlib.decompressobj(wbits)
    pos = start
    data: bytes | memoryview = b""
    while not inflater.eof:
        if not data:
            data = raw[pos : pos + _INPUT_STEP]
            pos += len(data)
        chunk = inflater.decompress(data, sink.room())
        if not chunk and not data and not inflater.eof:
            raise UndecodableBody("the stream ends early")
        sink.add(chunk)
        data = inflater.unconsumed_tail
    return pos - len(inflater.unused_data)


def _gzip(raw: memoryview, sink: _Sink) -> None:
    pos = 0
    for _ in range(_MAX_GZIP_MEMBERS):
        if pos >= len(raw):
            return
        pos = _inflate(raw, pos, _GZIP_OR_ZLIB, sink)
        member = _NOT_NUL.search(raw, pos)  # NUL padding may follow a member
        pos = member.start() if member else len(raw)
    if pos < len(raw):
        raise UndecodableBody(f"more than {_MAX_GZIP_MEMBERS} gzip members")


def _deflate(raw: memoryview, sink: _Sink) -> None:
    """zlib-wrapped, or else raw deflate (which some servers send), as mitmproxy tries."""
    try:
        end = _inflate(raw, 0, zlib.MAX_WBITS, sink)
    except (zlib.error, UndecodableBody):
        sink.clear()
        end = _inflate(raw, 0, -zlib.MAX_WBITS, sink)
    _ends_at(raw, end)


def _brotli(raw: memoryview, sink: _Sink) -> None:
    """``output_buffer_limit`` stops the output buffer once it reaches the limit asked for."""
    decompressor = brotli.Decompressor()
    pos = 0
    while not decompressor.is_finished():
        data = raw[pos : pos + _INPUT_STEP] if decompressor.can_accept_more_data() else b""
        pos += len(data)
        chunk = decompressor.process(data, output_buffer_limit=sink.room())
        if not chunk and not data and pos >= len(raw) and not decompressor.is_finished():
            raise UndecodableBody("the stream ends early")
        sink.add(chunk)
    _ends_at(raw, pos)


def _zstd(raw: memoryview, sink: _Sink) -> None:
    """Every frame, one after another, as ``zstd.decompress`` (mitmproxy's) reads them."""
    pos = 0
    while pos < len(raw):
        decompressor = zstd.ZstdDecompressor(options=_ZSTD_WINDOW)
        while not decompressor.eof:
            data = b""
            if decompressor.needs_input:
                if pos >= len(raw):
                    raise UndecodableBody("the stream ends early")
                data = raw[pos : pos + _INPUT_STEP]
                pos += len(data)
            sink.add(decompressor.decompress(data, sink.room()))
        pos -= len(decompressor.unused_data)


def _ends_at(raw: memoryview, end: int) -> None:
    if end < len(raw):
        raise UndecodableBody(f"{len(raw) - end} bytes after the end of the stream")


_IDENTITY = frozenset(("", "identity", "none"))
_DECODERS: dict[str, Callable[[memoryview, _Sink], None]] = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "deflateraw": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}
