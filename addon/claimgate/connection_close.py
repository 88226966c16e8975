"""A connection mitmproxy closes by command has its socket closed, however the cancel lands.

mitmproxy closes a connection by cancelling the task that reads it
(``ConnectionHandler.close_connection``); that task closes the socket once its read loop
ends. But the loop hands each read to the layers with ``await self.server_event(...)``
outside its ``try``, and ``server_event`` waits for a lock that another task of the same
connection may hold: the task that replays the events a blocking hook held back (a body that
arrived with its head, during ``next_layer``), or a timer. A cancel that lands there leaves
the loop without closing anything: the socket stays open, the peer still connected, and the
bytes it sends stay in the socket's buffers until the garbage collector finds the transport.
claimgate refuses bodies from exactly such a replay (``limits.bodies``, docs/hardening.md),
so without this every refused connection lingered with megabytes of buffers.

``install`` wraps mitmproxy's ``handle_connection``: when it ends by a cancel while its
connection is still among the handler's transports, the transport is removed and its writer
closed, as the loop's own end does. A fix upstream would let this module go
(docs/design.md 6.2).
"""

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from mitmproxy.connection import Connection
from mitmproxy.proxy import server

type HandleConnection = Callable[[server.ConnectionHandler, Connection], Coroutine[Any, Any, None]]


def closing_when_cancelled(handle_connection: HandleConnection) -> HandleConnection:
    """``handle_connection`` that, cancelled before it closed its connection, closes it."""

    async def handle(handler: server.ConnectionHandler, connection: Connection) -> None:
        try:
            await handle_connection(handler, connection)
        except asyncio.CancelledError:
            io = handler.transports.pop(connection, None)  # still there: nothing closed it
            if io is not None and io.writer is not None:
                with contextlib.suppress(OSError):
                    io.writer.close()
            raise

    return handle


MITMPROXY_HANDLE_CONNECTION = server.ConnectionHandler.handle_connection


def install() -> None:
    """Wrap mitmproxy's own (again, not the wrapper, on a second call). Once per process,
    before the listeners accept."""
    server.ConnectionHandler.handle_connection = closing_when_cancelled(  # type: ignore[method-assign]
        MITMPROXY_HANDLE_CONNECTION
    )
