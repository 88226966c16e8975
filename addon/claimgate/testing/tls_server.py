"""The API double's transport: HTTP/1.1 over TLS, each connection on a thread of its own.

Built on ``http.server`` rather than a framework because the double must see a request as
it was sent (the body byte for byte, any method, chunked framing undone and nothing else)
and must stop completely: no connection left open, no thread left running. Not part of the
kit's public surface; :class:`~claimgate.testing.ApiDouble` is.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple, cast

logger = logging.getLogger(__name__)

_HANDSHAKE_TIMEOUT = 5.0  # seconds a new connection may take to finish its TLS handshake
_IDLE_TIMEOUT = 30.0  # seconds a keep-alive connection may stay silent before it is closed
_POLL_INTERVAL = 0.05  # how often serve_forever looks for a shutdown request
_MAX_LINE = 65536

Headers = tuple[tuple[str, str], ...]


class Reply(NamedTuple):
    """What the server sends back for one request (``Content-Length`` is set for it)."""

    status: int
    headers: Headers
    body: bytes


Answer = Callable[[str, str, Headers, bytes], Reply]
"""Called on a connection's thread with (method, path, headers, raw body) of each request."""


def is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def netloc(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets as URLs want it."""
    return f"[{host}]:{port}" if is_ipv6(host) else f"{host}:{port}"


class TLSServer(ThreadingHTTPServer):
    """Serves HTTPS on ``host`` (a free port) until :meth:`stop`, answering with ``answer``.

    Handshakes run in ``finish_request`` (the per-connection thread), not at ``accept``,
    so that a slow or silent client cannot stall the accept loop. Open connections are kept
    so that :meth:`stop` can wake handler threads that wait for the next request on an idle
    keep-alive connection; ``_closing`` (set under the same lock) turns away connections
    whose handshake finishes after that.

    Connection threads are daemons, so that a server nobody stopped cannot keep the test
    process alive, and are kept so that :meth:`stop` can join them (``socketserver`` itself
    joins only non-daemon threads).
    """

    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self, host: str, hostname: str, cert_path: Path, key_path: Path, answer: Answer
    ) -> None:
        self.answer = answer
        self._hostname = hostname
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._context.set_alpn_protocols(["http/1.1"])
        self._context.load_cert_chain(cert_path, key_path)
        # All three guarded by _connections_lock: handler threads add and remove
        # themselves, stop() reads them.
        self._connections: set[socket.socket] = set()
        self._closing = False
        self._connection_threads: list[threading.Thread] = []
        self._connections_lock = threading.Lock()
        if is_ipv6(host):
            self.address_family = socket.AF_INET6
        super().__init__((host, 0), _Handler)
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"claimgate-api-double:{self.server_port}",
            daemon=True,
        )

    def start(self) -> None:
        """Serve on a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close every connection and the socket, join every thread."""
        self.shutdown()  # serve_forever returns: no new connections are accepted
        self._thread.join()
        with self._connections_lock:
            self._closing = True
            for connection in self._connections:
                # The plain socket method: ssl.SSLSocket.shutdown would also drop the
                # TLS state under the feet of the thread that is reading.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(connection, socket.SHUT_RDWR)
            threads = list(self._connection_threads)
        self.server_close()
        for thread in threads:
            thread.join()

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (socket.getfqdn), which can
        # take seconds on machines without reverse DNS; it is not needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = self._hostname
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"claimgate-api-double:{self.server_port}:connection",
            daemon=True,
        )
        with self._connections_lock:
            self._connection_threads = [t for t in self._connection_threads if t.is_alive()]
            self._connection_threads.append(thread)
        thread.start()

    def finish_request(self, request: Any, client_address: Any) -> None:
        plain = cast(socket.socket, request)
        if not self._track(plain):
            return
        try:
            plain.settimeout(_HANDSHAKE_TIMEOUT)
            try:
                connection = self._context.wrap_socket(plain, server_side=True)
            except OSError as error:  # includes ssl.SSLError: e.g. the client distrusts us
                logger.debug("TLS handshake with %s failed: %s", client_address, error)
                return
        finally:
            self._untrack(plain)
        if not self._track(connection):
            connection.close()
            return
        try:
            super().finish_request(connection, client_address)
        finally:
            self._untrack(connection)
            connection.close()

    def _track(self, connection: socket.socket) -> bool:
        with self._connections_lock:
            if self._closing:
                return False
            self._connections.add(connection)
            return True

    def _untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def shutdown_request(self, request: Any) -> None:
        # The plain socket was handed to (and detached by) the TLS wrapper, which
        # finish_request closes itself.
        with contextlib.suppress(OSError):
            cast(socket.socket, request).close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-request is normal in tests; keep stderr quiet.
        logger.debug("error while serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Serves every method the same way (see ``__getattr__``) with HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    server_version = "claimgate-api-double"
    sys_version = ""
    timeout = _IDLE_TIMEOUT
    disable_nagle_algorithm = True

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler dispatches to do_<METHOD>; accept any method.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        try:
            raw_body = self._read_body()
        except ValueError as error:
            self.send_error(400, f"Bad request framing: {error}")
            return
        headers = tuple((str(k), str(v)) for k, v in self.headers.items())
        reply = cast(TLSServer, self.server).answer(self.command, self.path, headers, raw_body)
        self.send_response(reply.status)
        for name, value in reply.headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _read_body(self) -> bytes:
        transfer_encoding = self.headers.get("Transfer-Encoding", "")
        if transfer_encoding.split(",")[-1].strip().lower() == "chunked":
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        length = int(length_header)  # ValueError on garbage, answered with 400
        if length < 0:
            raise ValueError("negative Content-Length")
        body = self.rfile.read(length)
        if len(body) != length:
            raise ValueError("body shorter than Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            line = self.rfile.readline(_MAX_LINE)
            if not line.endswith(b"\n"):
                raise ValueError("truncated chunk size line")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(_MAX_LINE).strip():
                raise ValueError("malformed chunk")
            chunks.append(chunk)
        while True:  # trailer section, ended by an empty line
            line = self.rfile.readline(_MAX_LINE)
            if line in (b"\r\n", b"\n", b""):
                return b"".join(chunks)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)
