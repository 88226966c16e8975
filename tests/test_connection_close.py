"""``claimgate.connection_close``: a connection mitmproxy closes by command while its reading
task waits for the event lock has its socket closed, on mitmproxy's own connection handler
and a real loopback connection."""

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from mitmproxy import options
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import mode_specs, server

from claimgate import connection_close

GUARD = 30.0
"""Seconds after which a wait is a failure, not a measure: what is awaited comes at once."""


@pytest.fixture
def installed() -> Iterator[None]:
    connection_close.install()
    yield
    server.ConnectionHandler.handle_connection = connection_close.MITMPROXY_HANDLE_CONNECTION  # type: ignore[method-assign]


type Handled = tuple[server.ConnectionHandler, asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def handled() -> AsyncIterator[Handled]:
    """mitmproxy handling one loopback client (no hooks), and that client's ends."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    listener = await asyncio.start_server(lambda r, w: accepted.put_nowait((r, w)), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*listener.sockets[0].getsockname()[:2])
    opts = options.Options()
    Proxyserver().load(opts)
    server_reader, server_writer = await accepted.get()
    handler = server.SimpleConnectionHandler(
        server_reader, server_writer, opts, mode_specs.ProxyMode.parse("regular"), {}
    )
    serving = asyncio.create_task(handler.handle_client())
    try:
        while handler.transports[handler.client].handler is None:
            await asyncio.sleep(0)
        yield handler, reader, writer
        writer.close()
        await asyncio.wait_for(serving, GUARD)
    finally:
        serving.cancel()
        server_writer.close()  # what mitmproxy left open, closed here
        listener.close()
        await listener.wait_closed()


async def _close_while_reading_waits_for_the_lock(handled: Handled) -> None:
    """Hold the event lock as a task replaying held-back events does, have the reading task
    wait for it with bytes it read, close the client by command, and let the task end."""
    handler, _, client = handled
    reading = handler.transports[handler.client].handler
    assert reading is not None
    lock = handler._server_event_lock  # the lock mitmproxy's race is about
    async with lock:
        client.write(b"GET / HTTP/1.1\r\n")
        while not lock._waiters:  # the reading task waits for the lock now
            await asyncio.sleep(0.001)
        handler.close_connection(handler.client)
    await asyncio.wait([reading], timeout=GUARD)
    assert reading.cancelled(), "the cancel did not land on the lock"


async def test_the_socket_is_closed_when_the_cancel_lands_on_the_lock(installed, handled):
    await _close_while_reading_waits_for_the_lock(handled)
    handler, client, _ = handled
    assert handler.client not in handler.transports
    assert await asyncio.wait_for(client.read(), GUARD) == b"", "the client is still connected"


async def test_without_it_mitmproxy_leaves_that_socket_open(handled):
    """The race this module exists for, on mitmproxy's own handler: still there."""
    await _close_while_reading_waits_for_the_lock(handled)
    handler, _, _ = handled
    io = handler.transports[handler.client]
    assert io.writer is not None and not io.writer.is_closing()
