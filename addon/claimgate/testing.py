"""Test helpers for integrations that run behind claimgate.

This module is shipped so that you can test your own onOffice integration, with claimgate in
front of it, without the real API and without a Marketplace account:

* :class:`ApiDouble` is a local stand-in for ``https://api.onoffice.de/api/stable/api.php``.
  It serves HTTPS with a certificate from a throw-away CA (:attr:`ApiDouble.ca_path`), checks
  every action's HMAC (versions 1 and 2) against the credentials you give it, checks
  ``parameters.extendedclaim``, answers the way the API does (error 137 for a bad HMAC, 193
  for a missing claim, 201 for one you marked outdated) and records each request byte for byte
  (:class:`ReceivedRequest`).
* :func:`service_call_url`, :func:`webhook_url` and :func:`activation_url` build the signed
  links onOffice opens on the provider side; feed them to claimgate's capture listener (or
  ``POST /claims``) so that it learns a claim.
* :func:`make_claim`, :func:`make_token` and :func:`make_secret` make realistic values.

A typical test::

    from claimgate.testing import ApiDouble, make_claim, make_secret, make_token

    token, secret = make_token(), make_secret()
    with ApiDouble({token: secret}) as api:
        # Point claimgate at the double: proxy.api_hosts = [f"localhost:{api.port}"] (forward
        # listener) or api.upstream = f"https://localhost:{api.port}" (API listener), with
        # proxy.upstream_ca = api.ca_path; send your integration's request through it, then:
        (request,) = api.wait_for_requests(1)
        assert request.results == (0,)  # every action accepted
        assert request.claims() == [expected_claim]

What the double does not model: data (every accepted action returns one empty record), the
±120 s action timestamp window (error 136), whether a claim belongs to the token's customer
(error 248), rate limits and HTTP/2. The rules it does model are cited in
``docs/onoffice-protocol.md`` (sections 1 to 4).

Besides claimgate's own pure modules, only the standard library and ``cryptography`` are
used, so this module can be imported in any test process, with or without mitmproxy.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import shutil
import socket
import socketserver
import ssl
import string
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from claimgate import decoding, onoffice

__all__ = [
    "ApiDouble",
    "ReceivedRequest",
    "activation_url",
    "make_certificates",
    "make_claim",
    "make_secret",
    "make_token",
    "service_call_url",
    "signed_request",
    "webhook_url",
]

logger = logging.getLogger(__name__)

_API_PATH = "/api/stable/api.php"
_HANDSHAKE_TIMEOUT = 5.0  # seconds a new connection may take to finish its TLS handshake
_IDLE_TIMEOUT = 30.0  # seconds a keep-alive connection may stay silent before it is closed
_POLL_INTERVAL = 0.05  # how often serve_forever looks for a shutdown request
_MAX_LINE = 65536
_MAX_DECODED = 16 * 1024 * 1024
"""Bytes a compressed request body may inflate to: a gzip bomb must not fill the test process."""


# --- recorded requests -------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request as the :class:`ApiDouble` received it, and how it was answered.

    ``raw_body`` holds the bytes of the message body exactly as sent (for a chunked request:
    the chunks' data joined, without the chunk framing); ``body`` is ``raw_body`` after
    undoing its ``Content-Encoding`` (gzip, deflate, br, zstd; ``raw_body`` again when there is
    none, it cannot be decoded or it inflates past 16 MiB). ``results`` has the
    ``errorcode`` the double answered for each action, in order (``0`` = accepted); it is
    empty when the request as a whole was refused (not JSON, unknown token, too large, ...).
    ``response`` is the body sent back.
    """

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    raw_body: bytes
    body: bytes
    host: str
    results: tuple[int, ...]
    response: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def json(self) -> Any:
        """The decoded body parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.body)

    def claims(self) -> list[str | None]:
        """``parameters.extendedclaim`` of each action, in order; None where absent.

        A value that is not a string counts as absent. A body that is not an onOffice
        request gives an empty list.
        """
        try:
            actions = self.json()["request"]["actions"]
        except (ValueError, KeyError, TypeError):
            return []
        if not isinstance(actions, list):
            return []
        claims: list[str | None] = []
        for action in actions:
            parameters = action.get("parameters") if isinstance(action, dict) else None
            claim = parameters.get("extendedclaim") if isinstance(parameters, dict) else None
            claims.append(claim if isinstance(claim, str) else None)
        return claims


# --- the API double ----------------------------------------------------------------------


class ApiDouble:
    """A local onOffice API over HTTPS, for tests.

    ``credentials`` maps each API token the double knows to its API secret; each action's
    HMAC is checked with the secret of the request's root ``token``. The server binds a free
    port on ``host`` (loopback by default) and presents a certificate for ``hostname``,
    ``localhost`` and ``host``, signed by a CA generated for this instance
    (:attr:`ca_path`). Any method on any path is answered the same way (onOffice wants POST
    on ``/api/<version>/api.php``; one unofficial client sends GET with a body).

    How requests are answered (HTTP 200, ``Content-Type: application/json``, a body shaped
    like the API's; clients read the JSON status, and the API's HTTP status line for errors is
    not documented):

    * empty body: top-level ``status`` code 400, errorcode 9; not JSON: errorcode 4; no
      string ``token``: 13; no ``request`` object: 14; no ``request.actions`` list: 15;
      a token not in ``credentials``: 22 "Not authenticated". ``response.results`` is empty.
    * otherwise one result per action, in order: an action that is not an object gets 247;
      a wrong or missing HMAC 137 (version 2 when ``hmac_version`` is ``2`` or ``"2"``,
      else version 1); a missing, empty or non-string ``parameters.extendedclaim`` 193; a
      claim passed to :meth:`mark_outdated` 201; anything else is accepted (errorcode 0)
      with one empty record (``unlockProvider``: the documented success record).
      Top-level errorcode is 97 when any action failed, as the API does.
    * a compressed body that inflates past 16 MiB: HTTP 413, errorcode 1, nothing decoded
      beyond that bound.
    * :meth:`answer_next` replaces the answer of the next requests with given bytes (they
      are still recorded and evaluated).

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        hostname: str = "localhost",
    ) -> None:
        self.host = host
        self.hostname = hostname
        # Copied once and never changed afterwards, so handler threads read it without a lock.
        self._credentials: dict[str, str] = dict(credentials)
        # Guards _requests and _outdated (handler threads write, the test thread reads);
        # a Condition so that wait_for_requests can sleep until a handler records a request.
        self._state = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._outdated: set[str] = set()
        self._canned: list[_Reply] = []
        self.delay = 0.0
        """Seconds to wait before answering each request: a slow API, for timeout and
        shutdown tests. The request is recorded when it arrives, before the wait."""
        # Set by start() and cleared by stop(); only the thread that owns the double
        # starts and stops it.
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tempdir: Path | None = None
        self._ca_path: Path | None = None

    # lifecycle

    def start(self) -> ApiDouble:
        """Generate the certificates, bind a free port and serve on a daemon thread."""
        if self._server is not None:
            raise RuntimeError("ApiDouble is already running")
        tempdir = Path(tempfile.mkdtemp(prefix="claimgate-testing-"))
        try:
            ca_path, cert_path, key_path = make_certificates(
                tempdir, [self.hostname, "localhost", self.host]
            )
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.set_alpn_protocols(["http/1.1"])
            context.load_cert_chain(cert_path, key_path)
            server = _Server(self, context)
        except BaseException:
            shutil.rmtree(tempdir, ignore_errors=True)
            raise
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"claimgate-api-double:{server.server_address[1]}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        self._tempdir, self._ca_path = tempdir, ca_path
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection, join all threads, remove the certificates.

        Recorded requests stay available. Calling it again (or before start) does nothing.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        try:
            server.shutdown()  # serve_forever returns: no new connections are accepted
            thread.join()
            server.close_connections()  # wakes handler threads waiting on keep-alive reads
            server.server_close()  # closes the listening socket
            server.join_threads()
        finally:
            self._server = self._thread = None
            if self._tempdir is not None:
                shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = self._ca_path = None

    def __enter__(self) -> ApiDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # where to reach it

    @property
    def port(self) -> int:
        """The TCP port the double listens on (only while it runs)."""
        return int(self._running().server_address[1])

    @property
    def url(self) -> str:
        """The API endpoint, ``https://<hostname>:<port>/api/stable/api.php``."""
        return f"https://{_netloc(self.hostname, self.port)}{_API_PATH}"

    @property
    def ca_path(self) -> Path:
        """PEM file of the CA that signed the server certificate (removed by :meth:`stop`)."""
        self._running()
        assert self._ca_path is not None
        return self._ca_path

    def _running(self) -> _Server:
        if self._server is None:
            raise RuntimeError("ApiDouble is not running; call start() or use it in a with block")
        return self._server

    # behaviour and observations

    def answer_next(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        status: int = 200,
        count: int = 1,
    ) -> None:
        """Answer the next ``count`` requests with exactly ``body`` and ``headers``.

        For answers the API could send but the double would not build, such as a gzip bomb;
        ``Content-Length`` is set by the double.
        """
        reply = _Reply(status, tuple(headers.items()), body)
        with self._state:
            self._canned.extend([reply] * count)

    def mark_outdated(self, claim: str) -> None:
        """Answer error 201 from now on for every action that carries ``claim``."""
        with self._state:
            self._outdated.add(claim)

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._state:
            return list(self._requests)

    def clear(self) -> None:
        """Forget the recorded requests (outdated claims stay marked)."""
        with self._state:
            self._requests.clear()

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests were recorded and return all of them.

        Raises ``TimeoutError`` if fewer have arrived after ``timeout`` seconds.
        """
        with self._state:
            if not self._state.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} request(s) within {timeout} s, got {len(self._requests)}"
                )
            return list(self._requests)

    # answering (called on handler threads)

    def _answer(
        self, method: str, path: str, headers: tuple[tuple[str, str], ...], raw_body: bytes
    ) -> _Reply:
        """Evaluate one request, record it, and return the answer to send."""
        encoding = next((v for k, v in headers if k.lower() == "content-encoding"), "")
        host = next((v for k, v in headers if k.lower() == "host"), "")
        try:
            body = _decode_content(raw_body, encoding)
        except decoding.BodyTooLarge:
            body, results = raw_body, ()
            reply = _Reply(413, _JSON, onoffice.request_error_body(onoffice.UNKNOWN_ERROR, 413))
        else:
            results, response = self._evaluate(body)
            reply = _Reply(200, _JSON, response)
        with self._state:
            if self._canned:
                reply = self._canned.pop(0)
            self._requests.append(
                ReceivedRequest(
                    method=method,
                    path=path,
                    headers=headers,
                    raw_body=raw_body,
                    body=body,
                    host=host,
                    results=results,
                    response=reply.body,
                )
            )
            self._state.notify_all()
        if self.delay > 0:
            time.sleep(self.delay)
        return reply

    def _evaluate(self, body: bytes) -> tuple[tuple[int, ...], bytes]:
        if not body.strip():
            return (), onoffice.request_error_body(onoffice.EMPTY_REQUEST)
        try:
            document = json.loads(body)
        except ValueError:  # includes UnicodeDecodeError
            return (), onoffice.request_error_body(onoffice.INVALID_JSON)
        if not isinstance(document, dict):
            return (), onoffice.request_error_body(onoffice.INVALID_JSON)
        token = document.get("token")
        if not isinstance(token, str) or not token:
            return (), onoffice.request_error_body(onoffice.INVALID_TOKEN_ELEMENT)
        request = document.get("request")
        if not isinstance(request, dict):
            return (), onoffice.request_error_body(onoffice.INVALID_REQUEST_ELEMENT)
        actions = request.get("actions")
        if not isinstance(actions, list):
            return (), onoffice.request_error_body(onoffice.INVALID_ACTIONS_ELEMENT)
        secret = self._credentials.get(token)
        if secret is None:
            return (), onoffice.request_error_body(onoffice.NOT_AUTHENTICATED)
        with self._state:
            outdated = frozenset(self._outdated)
        results = [_evaluate_action(action, token, secret, outdated) for action in actions]
        codes = tuple(int(result["status"]["errorcode"]) for result in results)
        return codes, onoffice.response_body(results)


def _evaluate_action(
    action: object, token: str, secret: str, outdated: frozenset[str]
) -> dict[str, Any]:
    if not isinstance(action, dict):
        return onoffice.action_error_result({}, onoffice.INVALID_ACTION_ELEMENT)
    if not _hmac_matches(action, token, secret):
        return onoffice.action_error_result(action, onoffice.HMAC_INVALID)
    parameters = action.get("parameters")
    claim = parameters.get("extendedclaim") if isinstance(parameters, dict) else None
    if not isinstance(claim, str) or not claim:
        return onoffice.action_error_result(action, onoffice.CLAIM_REQUIRED)
    if claim in outdated:
        return onoffice.action_error_result(action, onoffice.CLAIM_OUTDATED)
    return _action_success(action)


def _hmac_matches(action: Mapping[str, Any], token: str, secret: str) -> bool:
    given = action.get("hmac")
    if not isinstance(given, str):
        return False
    if onoffice.is_hmac_v2(action.get("hmac_version")):
        expected = onoffice.hmac_v2(
            secret,
            onoffice.php_string(action.get("timestamp")),
            token,
            onoffice.php_string(action.get("resourcetype")),
            onoffice.php_string(action.get("actionid")),
        )
    else:
        expected = onoffice.hmac_v1(secret, token, action)
    return hmac.compare_digest(given.encode(), expected.encode())


def _action_success(action: Mapping[str, Any]) -> dict[str, Any]:
    actionid = action.get("actionid", "")
    resourcetype = action.get("resourcetype", "")
    if resourcetype == onoffice.UNLOCK_PROVIDER:
        # The documented unlockProvider answer, exactly (docs/onoffice-protocol.md 1.3).
        meta: dict[str, Any] = {"cntabsolute": None}
        record: dict[str, Any] = {"id": 0, "type": "", "elements": {"success": "success"}}
    else:
        meta = {"cntabsolute": 1}
        record = {"id": 1, "type": resourcetype, "elements": {}}
    return {
        "actionid": actionid,
        "resourceid": action.get("resourceid", ""),
        "resourcetype": resourcetype,
        "cacheable": isinstance(actionid, str) and actionid.endswith((":read", ":get")),
        "identifier": action.get("identifier", ""),
        "data": {"meta": meta, "records": [record]},
        "status": {"errorcode": 0, "message": "OK"},
    }


class _Reply(NamedTuple):
    """What the double sends back for one request."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


_JSON = (("Content-Type", "application/json"),)


def _decode_content(raw: bytes, content_encoding: str) -> bytes:
    """Undo every ``Content-Encoding`` with claimgate's bounded decoder; ``raw`` if that is
    impossible. Raises ``decoding.BodyTooLarge`` rather than inflate past ``_MAX_DECODED``."""
    data = raw
    for coding in reversed([c for c in content_encoding.split(",") if c.strip()]):
        try:
            data = decoding.decode(data, coding, _MAX_DECODED)
        except decoding.UndecodableBody:
            return raw
    return data


# --- HTTP and TLS plumbing -----------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that does the TLS handshake on each connection's own thread.

    Handshakes run in ``finish_request`` (the per-connection thread), not at ``accept``,
    so that a slow or silent client cannot stall the accept loop. Open connections are kept
    in ``_connections`` so that :meth:`close_connections` can wake handler threads that wait
    for the next request on an idle keep-alive connection; ``_closing`` (set under the same
    lock) turns away connections whose handshake finishes after that.

    Connection threads are daemons, so that a double nobody stopped cannot keep the test
    process alive, and are kept in ``_connection_threads`` so that :meth:`join_threads` can wait for
    them (``socketserver`` itself joins only non-daemon threads).
    """

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, double: ApiDouble, context: ssl.SSLContext) -> None:
        self.double = double
        self._context = context
        # All three guarded by _connections_lock: handler threads add and remove
        # themselves, stop() reads them.
        self._connections: set[socket.socket] = set()
        self._closing = False
        self._connection_threads: list[threading.Thread] = []
        self._connections_lock = threading.Lock()
        if _is_ipv6(double.host):
            self.address_family = socket.AF_INET6
        super().__init__((double.host, 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (socket.getfqdn), which can
        # take seconds on machines without reverse DNS; it is not needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.double.hostname
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

    def join_threads(self) -> None:
        """Wait for every connection thread to end (call after :meth:`close_connections`)."""
        with self._connections_lock:
            threads = list(self._connection_threads)
        for thread in threads:
            thread.join()

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

    def close_connections(self) -> None:
        """Refuse further connections and shut down the open ones."""
        with self._connections_lock:
            self._closing = True
            for connection in self._connections:
                # The plain socket method: ssl.SSLSocket.shutdown would also drop the
                # TLS state under the feet of the thread that is reading.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(connection, socket.SHUT_RDWR)

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
        server = cast(_Server, self.server)
        reply = server.double._answer(self.command, self.path, headers, raw_body)
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


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _netloc(hostname: str, port: int) -> str:
    return f"[{hostname}]:{port}" if _is_ipv6(hostname) else f"{hostname}:{port}"


def make_certificates(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """Write a new CA and a server certificate for ``names`` into ``directory``.

    Returns the paths of the CA certificate, the server certificate and its key. The
    certificates carry the extensions strict verifiers require (Python 3.13's default
    ``VERIFY_X509_STRICT``, OpenSSL in mitmproxy).
    """
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "claimgate testing"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"claimgate testing CA {secrets.token_hex(4)}"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    alt_names: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):  # unique, in order
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_path = directory / "ca.pem"
    cert_path = directory / "server.pem"
    key_path = directory / "server-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


# --- signed Marketplace links --------------------------------------------------------------

DEFAULT_CUSTOMER_NAME = "Muster Immobilien"
DEFAULT_PARAMETER_CACHE_ID = "3f1c2b7a-9d4e-4c1a-8b6f-0e5d2a7c9b41"


def service_call_url(
    base_url: str,
    secret: str,
    *,
    customer_web_id: str,
    user_id: str,
    claim: str,
    timestamp: int | None = None,
    customer_name: str = DEFAULT_CUSTOMER_NAME,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The signed URL onOffice opens for a service call (the provider's iframe).

    ``base_url`` is the service URL registered with onOffice, ``secret`` the provider
    secret. The query holds ``customerName``, ``customerWebId``, ``userId``, ``apiClaim``
    (= ``claim``), ``timestamp`` (default: now) and ``extra`` (macro parameters such as
    ``estateId``, or ``groupId``, ``parameterCacheId``, ``imageIds``), sorted by name and
    encoded like PHP's ``http_build_query``, followed by ``signature``.
    """
    parameters = {
        "customerName": customer_name,
        "customerWebId": customer_web_id,
        "userId": user_id,
        "apiClaim": claim,
        "timestamp": str(_timestamp(timestamp)),
    }
    return _signed_link(base_url, secret, parameters, extra)


def webhook_url(
    base_url: str,
    secret: str,
    *,
    customer_web_id: str,
    user_id: str,
    claim: str,
    timestamp: int | None = None,
    customer_name: str = DEFAULT_CUSTOMER_NAME,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The signed URL of a webhook call: the same parameters as :func:`service_call_url`.

    onOffice calls a webhook service with GET on the registered webhook URL, carrying the
    same signed parameters as a service call, including a fresh ``apiClaim`` (protocol
    facts 3d). The separate name keeps tests readable.
    """
    return service_call_url(
        base_url,
        secret,
        customer_web_id=customer_web_id,
        user_id=user_id,
        claim=claim,
        timestamp=timestamp,
        customer_name=customer_name,
        extra=extra,
    )


def activation_url(
    base_url: str,
    secret: str,
    *,
    customer_web_id: str,
    user_id: str,
    claim: str,
    api_token: str,
    parameter_cache_id: str = DEFAULT_PARAMETER_CACHE_ID,
    timestamp: int | None = None,
    customer_name: str = DEFAULT_CUSTOMER_NAME,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The signed activation (unlock) URL onOffice opens when a customer activates you.

    Besides the service-call parameters it carries ``apiToken`` (the token of the
    customer's Marketplace API user) and ``parameterCacheId``; its ``apiClaim`` is good
    only for ``unlockProvider`` (docs/onoffice-protocol.md 3a).
    """
    parameters = {
        "customerName": customer_name,
        "customerWebId": customer_web_id,
        "userId": user_id,
        "apiToken": api_token,
        "parameterCacheId": parameter_cache_id,
        "apiClaim": claim,
        "timestamp": str(_timestamp(timestamp)),
    }
    return _signed_link(base_url, secret, parameters, extra)


def _timestamp(timestamp: int | None) -> int:
    return int(time.time()) if timestamp is None else int(timestamp)


def _signed_link(
    base_url: str,
    secret: str,
    parameters: Mapping[str, str],
    extra: Mapping[str, str] | None,
) -> str:
    """``base_url`` with the parameters in ``http_build_query`` form, sorted, then signed.

    Parameters already in ``base_url``'s query are kept and sorted in with the others.
    """
    # Imported here, not at module level: the link builders are the only users.
    from claimgate.signature import build_query, parse_query, sign_url

    parts = urlsplit(base_url)
    if parts.fragment:
        raise ValueError("base_url must not have a fragment")
    merged = parse_query(parts.query)
    for source in (parameters, extra or {}):
        for name, value in source.items():
            if name == "signature" or name in merged:
                raise ValueError(f"parameter {name!r} is given twice or reserved")
            merged[name] = str(value)
    # Byte order of the names, as PHP's ksort sorts them (numeric names aside); the
    # signature is computed over the canonical order whatever the order here.
    ordered = dict(sorted(merged.items(), key=lambda item: item[0].encode()))
    query = build_query(ordered)
    return sign_url(urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")), secret)


# --- realistic values ----------------------------------------------------------------------

_CLAIM_BYTES = 191  # encodes to 256 base64 characters, the last one "="
_TOKEN_ALPHABET = string.ascii_letters + string.digits


def make_claim(seed: str | None = None) -> str:
    """A realistic opaque ``apiClaim``: 256 characters of standard base64.

    It always contains ``+``, ``/`` and ``=``, the characters that trip up URL and JSON
    handling. The same ``seed`` gives the same claim; without one it is random.
    """
    counter = 0
    while True:
        if seed is None:
            raw = secrets.token_bytes(_CLAIM_BYTES)
        else:
            raw = hashlib.shake_256(f"claimgate-claim:{seed}:{counter}".encode()).digest(
                _CLAIM_BYTES
            )
        claim = base64.b64encode(raw).decode("ascii")
        if "+" in claim and "/" in claim:
            return claim
        counter += 1


def make_token() -> str:
    """A random API token: 32 letters and digits, like onOffice's."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(32))


def make_secret() -> str:
    """A random API secret: 64 letters and digits, like onOffice's."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(64))


# --- API requests, as legacy integrations send them ---------------------------------------

DEFAULT_PARAMETERS: Mapping[str, Any] = {"data": ["Id", "ort"], "listlimit": 10}


def signed_request(
    token: str,
    secret: str,
    *resourcetypes: str,
    parameters: Mapping[str, Any] | None = None,
    version: int | None = 2,
    claim: str | None = None,
    timestamp: int | None = None,
) -> bytes:
    """A correctly signed read request, one action per resource type (default ``estate``).

    Without ``claim`` it carries no ``extendedclaim``: what legacy code sends and claimgate
    completes. ``version=None`` signs with the old HMAC (version 1), which covers the
    parameters.
    """
    timestamp = _timestamp(timestamp)
    actionid = onoffice.ACTION_PREFIX + "read"
    actions = []
    for resourcetype in resourcetypes or ("estate",):
        action: dict[str, Any] = {
            "actionid": actionid,
            "identifier": "",
            "resourceid": "",
            "resourcetype": resourcetype,
            "timestamp": timestamp,
            "parameters": dict(DEFAULT_PARAMETERS if parameters is None else parameters),
        }
        if claim is not None:
            action["parameters"]["extendedclaim"] = claim
        if version == 2:
            action["hmac_version"] = 2
            action["hmac"] = onoffice.hmac_v2(secret, timestamp, token, resourcetype, actionid)
        else:
            action["hmac"] = onoffice.hmac_v1(secret, token, action)
        actions.append(action)
    return json.dumps({"token": token, "request": {"actions": actions}}).encode()
