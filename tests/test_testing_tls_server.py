"""claimgate.testing.tls_server: HTTP/1.1 over TLS that hands over each request as it was
sent, and stops completely."""

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from claimgate.testing import make_certificates
from claimgate.testing.tls_server import Headers, Reply, TLSServer, netloc


class Recorder:
    """An ``answer`` that records what it was handed and echoes the body back."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Headers, bytes]] = []

    def __call__(self, method: str, path: str, headers: Headers, body: bytes) -> Reply:
        self.seen.append((method, path, headers, body))
        return Reply(201, (("X-Method", method), ("Content-Length", "999")), body)


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path, ["localhost", "127.0.0.1", "::1"])


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(certificates: tuple[Path, Path, Path], recorder: Recorder) -> Iterator[TLSServer]:
    _, cert, key = certificates
    running = TLSServer("127.0.0.1", "localhost", cert, key, recorder)
    running.start()
    yield running
    running.stop()


def trust(certificates: tuple[Path, Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificates[0]))


def exchange(server: TLSServer, context: ssl.SSLContext, request: bytes) -> bytes:
    """Send ``request`` as-is and read until the server closes (send ``Connection: close``)."""
    with (
        socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as tls,
    ):
        tls.sendall(request)
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
        return response


def test_chunked_body_is_handed_over_without_its_framing(
    server: TLSServer, recorder: Recorder, certificates: tuple[Path, Path, Path]
) -> None:
    body = b'{"token": "t", "request": {"actions": []}}' * 10
    chunked = b"".join(
        b"%x;ext=1\r\n%s\r\n" % (len(body[i : i + 100]), body[i : i + 100])
        for i in range(0, len(body), 100)
    )
    request = (
        b"POST /api/stable/api.php HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\nX-Trailer: 1\r\n\r\n"
    )

    response = exchange(server, trust(certificates), request)

    assert response.startswith(b"HTTP/1.1 201 ")
    assert response.endswith(b"\r\n\r\n" + body)  # echoed, with the length the server set
    assert b"Content-Length: %d\r\n" % len(body) in response
    (seen,) = recorder.seen
    assert seen[3] == body


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "PROPFIND"])
def test_every_method_is_handed_over(
    server: TLSServer, recorder: Recorder, certificates: tuple[Path, Path, Path], method: str
) -> None:
    with httpx.Client(verify=trust(certificates), trust_env=False) as http:
        response = http.request(
            method, f"https://localhost:{server.server_port}/x?y=1", content=b"b"
        )

    assert (response.status_code, response.headers["x-method"]) == (201, method)
    assert [(m, p, b) for m, p, _, b in recorder.seen] == [(method, "/x?y=1", b"b")]


def test_head_is_answered_without_a_body(
    server: TLSServer, certificates: tuple[Path, Path, Path]
) -> None:
    request = (
        b"HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
    )

    response = exchange(server, trust(certificates), request)

    assert response.startswith(b"HTTP/1.1 201 ")
    assert response.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: abc\r\n\r\n",
        b"Content-Length: -1\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
    ],
)
def test_broken_framing_is_answered_400_and_not_handed_over(
    server: TLSServer, recorder: Recorder, certificates: tuple[Path, Path, Path], framing: bytes
) -> None:
    request = b"POST / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + framing

    response = exchange(server, trust(certificates), request)

    assert response.startswith(b"HTTP/1.1 400 ")
    assert recorder.seen == []


def test_keep_alive_serves_several_requests_on_one_connection(
    server: TLSServer, recorder: Recorder, certificates: tuple[Path, Path, Path]
) -> None:
    peers = set()
    with httpx.Client(verify=trust(certificates), trust_env=False) as http:
        for _ in range(3):
            url = f"https://localhost:{server.server_port}/"
            with http.stream("POST", url, content=b"{}") as response:
                response.read()
                peers.add(response.extensions["network_stream"].get_extra_info("client_addr"))
    assert len(recorder.seen) == 3
    assert len(peers) == 1


def test_stop_closes_idle_connections_joins_threads_and_frees_the_port(
    certificates: tuple[Path, Path, Path], recorder: Recorder
) -> None:
    threads_before = set(threading.enumerate())
    _, cert, key = certificates
    server = TLSServer("127.0.0.1", "localhost", cert, key, recorder)
    server.start()
    port = server.server_port
    context = trust(certificates)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as idle,
    ):
        idle.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 201 ")  # now idle on keep-alive

        server.stop()

        assert idle.recv(65536) == b""  # closed by the server, not by its idle timeout
    assert set(threading.enumerate()) - threads_before == set()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_serves_on_ipv6_loopback(certificates: tuple[Path, Path, Path], recorder: Recorder) -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    _, cert, key = certificates
    server = TLSServer("::1", "::1", cert, key, recorder)
    server.start()
    try:
        url = f"https://{netloc('::1', server.server_port)}/"
        with httpx.Client(verify=trust(certificates), trust_env=False) as http:
            assert http.get(url).status_code == 201
    finally:
        server.stop()


def test_netloc_brackets_ipv6_only() -> None:
    assert netloc("::1", 443) == "[::1]:443"
    assert netloc("127.0.0.1", 443) == "127.0.0.1:443"
    assert netloc("api.test", 8443) == "api.test:8443"
