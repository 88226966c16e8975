"""Logging for operators: one JSON stream, claimgate's events and mitmproxy's lines alike.

claimgate's own events go through structlog's native pipeline, kept short because one line
per API request is on the hot path: a cached second for the timestamp, orjson for the JSON
(structlog's recommendation for speed). They are built from ids and fingerprints only.
mitmproxy logs through stdlib ``logging``; those lines are rendered into the same stream and
scrubbed of anything that looks like a claim, token or signature, because their text is not
ours to control (a URL with ``apiClaim=`` in an error message, say).

While ``claimgate run`` serves, lines logged on the event loop's thread are gathered and
written once at the end of the loop's pass (``batch_on``): one system call for every line of
the pass instead of one per line, which cost as much as rendering the line. No line waits
beyond the pass it was logged in.
"""

import asyncio
import atexit
import logging
import re
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

_SECRET_PARAMETER = re.compile(
    r"""(?ix)
    ( (?:apiClaim|extendedclaim|apiToken|signature|token|secret|hmac)
      (?:=|"\s*:\s*"|'\s*:\s*') )      # query/form 'name=' or JSON '"name":"'
    [^&\s"']+
    """
)


FIELD_LIMIT = 200
"""Characters of a field from the network (a path, an error text) that reach a log line."""
FOREIGN_LIMIT = 2000
"""Characters of a mitmproxy log line: some quote what a client sent."""
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def redact(text: str) -> str:
    """Replace the value of every claim/token/signature-like parameter in free text."""
    return _SECRET_PARAMETER.sub(r"\1<redacted>", text)


def printable(text: str, limit: int = FIELD_LIMIT) -> str:
    """Text from the network, fit for a log line: printable ASCII, at most ``limit`` chars.

    Anything else is shown as ``?``, so no control character or terminal escape reaches a
    console, and a cut is marked with the length it had.
    """
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} chars)"
    return _UNPRINTABLE.sub("?", text)


def _redact_foreign(_logger: Any, _name: str, event_dict: EventDict) -> EventDict:
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = printable(redact(event), FOREIGN_LIMIT)
    return event_dict


def _summarise_exception(_logger: Any, _name: str, event_dict: EventDict) -> EventDict:
    """An exception as its type and where it was raised, never its message.

    Exception messages can carry request data (a token used as a dictionary key, a URL
    with a claim in it); the type and the innermost frames are enough to find the bug.
    """
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not exc_info or exc_info[1] is None:
        return event_dict
    _, error, trace = exc_info
    event_dict["error"] = type(error).__name__
    event_dict["stack"] = [
        f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
        for frame in traceback.extract_tb(trace)[-6:]
    ]
    return event_dict


class _UtcTimestamp:
    """``timestamp`` as ISO 8601 in UTC with microseconds, like structlog's ``TimeStamper``
    at a fraction of its cost: the date and time are formatted once per second.

    The second and its text are kept as one tuple, replaced whole, so a line logged from
    another thread never pairs one second's text with another's.
    """

    __slots__ = ("_formatted",)

    def __init__(self) -> None:
        self._formatted: tuple[int, str] = (-1, "")

    def __call__(self, _logger: Any, _name: str, event_dict: EventDict) -> EventDict:
        event_dict["timestamp"] = self.now()
        return event_dict

    def now(self) -> str:
        second, micros = divmod(round(time.time() * 1_000_000), 1_000_000)
        formatted_second, prefix = self._formatted
        if second != formatted_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._formatted = (second, prefix)
        return f"{prefix}.{micros:06d}Z"


def _json(value: Any, **kwargs: Any) -> str:
    return orjson.dumps(
        value, default=kwargs.get("default"), option=orjson.OPT_NON_STR_KEYS
    ).decode()


def _renderer(log_format: str) -> Processor:
    if log_format == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer(serializer=_json)


class _LevelledLogger(structlog.BoundLoggerBase):
    """The one wrapper class of every claimgate logger, filtering at a level that can move.

    structlog's ``make_filtering_bound_logger`` bakes the level into a class, and a logger
    cached on first use keeps that class for good. This class instead carries the methods of
    the filtering class for the current level, copied onto it (see ``_filter_at``), so a
    cached logger follows a new level while a disabled ``log.debug`` stays structlog's bare
    ``return None``.
    """


def _filter_at(level: int) -> None:
    """Give ``_LevelledLogger`` the methods structlog's filtering class for ``level`` has."""
    for name, method in vars(structlog.make_filtering_bound_logger(level)).items():
        if callable(method) and not name.startswith("__"):
            setattr(_LevelledLogger, name, method)


_filter_at(logging.INFO)


class _CurrentRenderer:
    """The last processor of both chains: renders with whichever renderer is current, so a
    cached logger and the stdlib handler change format together."""

    __slots__ = ("log_format", "render")

    def __init__(self) -> None:
        self.log_format = ""
        self.render: Processor = _renderer("json")

    def use(self, log_format: str) -> None:
        if log_format != self.log_format:
            self.render = _renderer(log_format)
            self.log_format = log_format

    def __call__(self, logger: Any, name: str, event_dict: EventDict) -> Any:
        return self.render(logger, name, event_dict)


class _PassBatchedStream:
    """The stream every line goes through: written straight on, or, on the thread of a loop
    given to ``batch_on``, gathered and written with one call when the loop's pass ends.

    Lines from other threads, and every line while no loop batches, are written at once,
    after whatever was gathered, so the stream keeps the order lines were logged in.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def batch_on(self, loop: asyncio.AbstractEventLoop | None) -> None:
        with self._lock:
            self._write_pending()
            self._loop = loop
            self._loop_thread = threading.get_ident() if loop is not None else None

    def write(self, text: str) -> None:
        self._put(text, flush=False)

    def write_line(self, line: str) -> None:
        """``write`` and ``flush`` of one whole line, in one go."""
        self._put(line, flush=True)

    def _put(self, text: str, *, flush: bool) -> None:
        with self._lock:
            if self._batching():
                if not self._pending:
                    self._loop.call_soon(self._flush_pending)
                self._pending.append(text)
                return
            self._write_pending()
            self.stream.write(text)
            if flush:
                self.stream.flush()

    def flush(self) -> None:
        """What loggers call after each line: deferred to the pass's end while batching."""
        if self._batching():
            return
        with self._lock:
            self._write_pending()
            self.stream.flush()

    def _flush_pending(self) -> None:
        """At the pass's end. A stream that cannot take them (closed, a broken pipe) loses
        the lines, as a failed write would have; raising here would only log the failure
        into the same stream from the loop's error handler, again on every pass."""
        with self._lock:
            try:
                self._write_pending()
                self.stream.flush()
            except (OSError, ValueError):
                self._pending.clear()

    def _batching(self) -> bool:
        """On the loop's thread, while the loop can still run what it is given."""
        loop = self._loop
        return (
            loop is not None and threading.get_ident() == self._loop_thread and not loop.is_closed()
        )

    def _write_pending(self) -> None:
        if self._pending:
            self.stream.write("".join(self._pending))
            self._pending.clear()


_render = _CurrentRenderer()
_stream: TextIO | None = None
"""The stream of the last ``configure_logging``: where an unset format is decided."""
_batched: _PassBatchedStream | None = None
_timestamp = _UtcTimestamp()
_PROCESSORS: list[Processor] = [
    structlog.processors.add_log_level,
    _timestamp,
    _summarise_exception,
    _render,
]
"""The chain of claimgate's own events, as ``configure_logging`` gives it to structlog."""
_level = logging.INFO
"""The level of the last ``configure_logging`` or ``reconfigure_logging``."""


def batch_on(loop: asyncio.AbstractEventLoop | None) -> None:
    """Gather the lines logged on ``loop``'s thread (the calling thread) and write them once
    per pass of ``loop``; None writes what was gathered and every line at once again. Call
    it with None before the loop stops, or its last pass's lines wait for the exit."""
    if _batched is not None:
        _batched.batch_on(loop)


atexit.register(batch_on, None)  # should the loop not get to say so itself


def resolve_format(log_format: str | None, stream: TextIO) -> str:
    """``json`` unless the stream is a terminal, where people read ``console``."""
    if log_format:
        return log_format
    return "console" if stream.isatty() else "json"


def _apply(log_format: str | None, level: str, stream: TextIO) -> None:
    global _level
    numeric_level = LEVELS[level]  # an unknown level fails here, before anything changed
    _level = numeric_level
    _render.use(resolve_format(log_format, stream))
    _filter_at(numeric_level)
    logging.getLogger().setLevel(numeric_level)
    # mitmproxy says "client connect" at INFO for every connection: noise for operators
    # unless they asked for debug output.
    logging.getLogger("mitmproxy").setLevel(
        logging.DEBUG if numeric_level <= logging.DEBUG else logging.WARNING
    )


def configure_logging(
    log_format: str | None, level: str = "info", stream: TextIO | None = None
) -> None:
    """Send claimgate's events and mitmproxy's log records to ``stream`` (stderr).

    Replaces the root logger's handlers: call it once at start-up (mitmproxy adds handlers
    of its own later); change level and format afterwards with ``reconfigure_logging``.
    """
    global _stream, _batched
    stream = stream or sys.stderr
    _apply(log_format, level, stream)
    _stream = stream
    _batched = _PassBatchedStream(stream)

    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=_LevelledLogger,
        logger_factory=structlog.WriteLoggerFactory(file=_batched),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )

    handler = logging.StreamHandler(_batched)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                _timestamp,
                _summarise_exception,
                _redact_foreign,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _render,
            ],
        )
    )
    logging.getLogger().handlers = [handler]


def reconfigure_logging(log_format: str | None, level: str) -> None:
    """Change level and format of the running process, for a configuration reload.

    Every logger follows: claimgate's, cached ones included, and the stdlib ones (mitmproxy,
    asyncio). The stream and the root logger's handlers stay as they are, mitmproxy's own
    among them. An unset format is decided against the stream given to ``configure_logging``.
    """
    if _stream is None:
        raise RuntimeError("reconfigure_logging before configure_logging")
    _apply(log_format, level, _stream)


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("claimgate")


def info_line(event: str, fields: dict[str, Any]) -> None:
    """``get_logger().info(event, **fields)`` for the line of every API request: the same
    line, without structlog's bound logger or its chain of processors: the level and the
    timestamp are put in directly, and a JSON line is one ``orjson.dumps``. ``fields`` hold
    JSON values and no ``exc_info``; it is taken over."""
    processors = structlog.get_config()["processors"]
    if _batched is None or processors is not _PROCESSORS or processors[-1] is not _render:
        # structlog configured otherwise: its testing kit, say, which swaps the chain's items
        get_logger().info(event, **fields)
        return
    if _level > logging.INFO:
        return
    fields["event"] = event
    fields["level"] = "info"
    fields["timestamp"] = _timestamp.now()
    if _render.log_format == "json":  # the renderer's serializer, without its call layers
        line = _json(fields, default=repr)
    else:
        line = _render(None, "info", fields)
    _batched.write_line(line + "\n")
