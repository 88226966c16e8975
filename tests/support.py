"""Test harness: the real ``claimgate run`` as a subprocess, and a small real app behind it.

Every server binds to loopback on a free port, and everything a test starts is stopped by
that test (fixtures in ``conftest.py`` own the lifetimes).
"""

import json
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
from prometheus_client.parser import text_string_to_metric_families

from claimgate import onoffice
from claimgate.testing import (
    ApiDouble,
    ClaimgateProcess,
    activation_url,
    make_claim,
    make_secret,
    make_token,
    service_call_url,
    signed_request,
)

PROVIDER_SECRET = make_secret()
ADMIN_TOKEN = make_secret()
SECRETS_ENV = {"TEST_PS": PROVIDER_SECRET, "TEST_ADMIN_TOKEN": ADMIN_TOKEN}
"""What a world's claimgate reads its secrets from (``env:TEST_PS``, ``env:TEST_ADMIN_TOKEN``)."""
READ = onoffice.ACTION_PREFIX + "read"

# The official PHP SDK's request, byte for byte (docs/onoffice-protocol.md 1.4): token
# "testtoken", secret "testsecret", sent as raw JSON labelled form-urlencoded.
SDK_TOKEN, SDK_SECRET = "testtoken", "testsecret"
SDK_BODY = (
    b'{"token":"testtoken","request":{"actions":[{"actionid":"urn:onoffice-de-ns:smart:2.5:'
    b'smartml:action:read","identifier":null,"parameters":{"allusers":false,"dateend":'
    b'"25-03-2022 02:17:53","datestart":"25-03-2022 02:17:53","showcancelled":true},'
    b'"resourceid":"","resourcetype":"calendar","timestamp":1646228220,"hmac_version":2,'
    b'"hmac":"w6ifKMmAdJoKhu0vl2twvfP+ltyOTQ7LqLpvsZkOnlg="}]}}'
)
SDK_HEADERS = {
    "Accept": "*/*",
    "Accept-Encoding": "deflate, gzip",
    "Content-Type": "application/x-www-form-urlencoded",
}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def toml_document(config: Mapping[str, Any]) -> str:
    """A TOML file from ``{section: {key: value}}`` and ``customers: [{...}]``."""
    lines = []
    for section, keys in config.items():
        if isinstance(keys, list):
            for table in keys:
                lines.append(f"[[{section}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
        else:
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in keys.items())
    return "\n".join(lines) + "\n"


class Sidecar(ClaimgateProcess):
    """A test world's ``claimgate run``, with the CA its forward listener signs with."""

    def __init__(
        self, config: Path, env: Mapping[str, str], ca_path: Path, arguments: Sequence[str] = ()
    ) -> None:
        super().__init__(config, env, arguments=arguments)
        self.ca_path = ca_path

    @property
    def proxy_url(self) -> str:
        return f"http://{self.listeners['forward']}"

    @property
    def capture_url(self) -> str:
        return f"http://{self.listeners['capture']}"


class SocketServer:
    """A loopback TCP server for upstreams that misbehave on purpose: each connection, one
    at a time, goes to ``handle``, which must close it; an ``OSError`` there is the client's."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.handle = handle
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                self.handle(connection)
            except OSError:
                continue

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.listener.close()
        self.thread.join(5)


def forward_proxy(tmp: Path, api: ApiDouble, **keys: Any) -> dict[str, Any]:
    """The ``[proxy]`` section of a test world: the forward listener on loopback, the API
    double as the one API host (its CA trusted upstream), claimgate's CA under ``tmp``."""
    return {
        "listen": "127.0.0.1:0",
        "api_hosts": [f"localhost:{api.port}"],
        "upstream_ca": str(api.ca_path),
        "ca_dir": str(tmp / "ca"),
        **keys,
    }


VIOLATION_KINDS = (
    "missing_claim",
    "expired_claim",
    "rejected_claim",
    "unknown_token",
    "stale_claim",
    "foreign_claim",
    "hmac_v1",
    "malformed_request",
    "bad_signature",
    "stale_service_call",
    "api_rejected_claim",
    "store_unavailable",
)
"""docs/design.md 3.4's violation kinds in its order: written out, not taken from the code, because
the tests check the code against the contract."""


def capture_section(app: "App") -> dict[str, Any]:
    """A world's ``[capture]``: the listener on 127.0.0.2, in front of ``app``."""
    return {"listen": "127.0.0.2:0", "upstream": app.url, "provider_secret": "env:TEST_PS"}


def admin_get(world: "World", path: str, timeout: float = 5.0) -> httpx.Response:
    """GET on a world's admin listener, with the admin token."""
    return httpx.get(
        f"http://{world.sidecar.listeners['admin']}{path}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        trust_env=False,
        timeout=timeout,
    )


class Scrape:
    """One GET of a sidecar's ``/metrics``, read by prometheus-client's own parser.

    A series that is not there fails the lookup rather than reading as zero: claimgate
    declares every labelled series when it starts, so an absent one is a misspelt name.
    """

    def __init__(self, text: str) -> None:
        self._samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly ``labels``."""
        series = (name, tuple(sorted(labels.items())))
        if series not in self._samples:
            raise AssertionError(f"no sample {name} with labels {labels}")
        return self._samples[series]

    def by(self, name: str, label: str) -> Counter[str]:
        """The samples ``name`` (whole counts), by the value of their one ``label``."""
        counts = Counter(
            {
                dict(labels)[label]: int(value)
                for (sample, labels), value in self._samples.items()
                if sample == name
            }
        )
        if not counts:
            raise AssertionError(f"no sample {name}")
        return counts

    def labels(self) -> set[str]:
        """Every label value in the scrape."""
        return {value for _, labels in self._samples for _, value in labels}


def scrape(world: "World") -> Scrape:
    """The world's sidecar's metrics, as a Prometheus server reads them (no token)."""
    address = world.sidecar.listeners["admin"]
    return Scrape(httpx.get(f"http://{address}/metrics", trust_env=False, timeout=5.0).text)


def wait_until(condition: Callable[[], object], timeout: float) -> float:
    """The monotonic time ``condition()`` first held; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.01)
    return time.monotonic()


def claimgate_command() -> list[str]:
    return [sys.executable, "-m", "claimgate"]


def start_sidecar(
    workdir: Path,
    config: Mapping[str, Any],
    env: Mapping[str, str],
    arguments: Sequence[str] = (),
    config_path: Path | None = None,
) -> Sidecar:
    """Write ``config`` (to ``config_path``, else ``workdir/claimgate.toml``), start
    ``claimgate run`` on it with ``arguments`` and wait until it is listening."""
    config_path = config_path or workdir / "claimgate.toml"
    write_config(config_path, config)
    ca_path = Path(config["proxy"]["ca_dir"]) / "mitmproxy-ca-cert.pem"
    return Sidecar(config_path, env, ca_path, arguments).start()


def write_config(path: Path, config: Mapping[str, Any]) -> None:
    """A world's configuration file: ``config``, the admin listener on a free port unless it
    says otherwise (written the same way again, a reload sees no listener change)."""
    config = {**config, "admin": {"listen": "127.0.0.1:0", **config.get("admin", {})}}
    path.write_text(toml_document(config))


@dataclass(frozen=True)
class AppRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


class App:
    """The provider's web app: answers 200 and records exactly what reached it."""

    def __init__(self) -> None:
        self.received: list[AppRequest] = []
        self.connections = 0
        """Connections accepted, including those whose request the app refused unread (a
        request line or headers too long for it): whether anything reached it at all."""
        self._lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                with app._lock:
                    app.connections += 1
                super().setup()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                app.received.append(
                    AppRequest(self.command, self.path, list(self.headers.items()), body)
                )
                payload = b"app says hello"
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "App":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Customer:
    """One onOffice customer: its API user and the claims its users receive."""

    def __init__(self, web_id: str) -> None:
        self.web_id = web_id
        self.token = make_token()
        self.secret = make_secret()


def api_request(
    customer: Customer, *resourcetypes: str, version: int | None = 2, claim: str | None = None
) -> bytes:
    """A request as a legacy integration sends it: signed, without a claim unless ``claim``."""
    return signed_request(
        customer.token, customer.secret, *resourcetypes, version=version, claim=claim
    )


def service_call_link(
    customer: Customer,
    claim: str,
    timestamp: int | None = None,
    secret: str = PROVIDER_SECRET,
    user: str = "17",
) -> str:
    """The signed service call onOffice would open for ``user`` of ``customer`` with ``claim``."""
    return service_call_url(
        "http://provider.example/service",
        secret,
        customer_web_id=customer.web_id,
        user_id=user,
        claim=claim,
        timestamp=timestamp,
    )


class World:
    """Everything one sidecar talks to, and every secret that must stay out of its logs."""

    def __init__(self, sidecar: Sidecar, app: App, api: ApiDouble, customers: list[Customer]):
        self.sidecar, self.app, self.api = sidecar, app, api
        self.customers = customers
        self.secrets: set[str] = {PROVIDER_SECRET, SDK_SECRET}
        for customer in customers:
            self.secrets |= {customer.token, customer.secret}
        ctx = ssl.create_default_context(cafile=str(sidecar.ca_path))
        self.client = httpx.Client(proxy=sidecar.proxy_url, verify=ctx, trust_env=False)

    def link(self, url: str, listener: str = "capture", **options: Any) -> httpx.Response:
        """Send a Marketplace link to a capture listener, as onOffice's iframe would.

        ``options`` go to ``httpx.get``; the default Host is the one onOffice signed.
        """
        self.secrets.add(url.rsplit("signature=", 1)[-1])
        path = url.split("/", 3)[3]
        options.setdefault("headers", {"Host": "provider.example"})
        return httpx.get(f"http://{self.sidecar.listeners[listener]}/{path}", **options)

    def service_call(
        self,
        customer: Customer,
        claim: str,
        timestamp: int | None = None,
        secret: str = PROVIDER_SECRET,
        user: str = "17",
    ) -> httpx.Response:
        self.secrets.add(claim)
        return self.link(service_call_link(customer, claim, timestamp, secret, user))

    def activate(self, customer: Customer) -> None:
        claim = make_claim()
        self.secrets.add(claim)
        response = self.link(
            activation_url(
                "http://provider.example/activate",
                PROVIDER_SECRET,
                customer_web_id=customer.web_id,
                user_id="1",
                claim=claim,
                api_token=customer.token,
            )
        )
        assert response.status_code == 200
        self.sidecar.wait_for("token_learned", lambda e: e["customer"] == customer.web_id)

    def call_api(self, body: bytes, headers: dict[str, str] | None = None, url: str = ""):
        """POST through the forward listener (or to ``url``); return what the double received."""
        before = len(self.api.requests)
        if url:
            response = httpx.post(url, content=body, headers=headers or {}, trust_env=False)
        else:
            response = self.client.post(self.api.url, content=body, headers=headers or {})
        assert response.status_code == 200
        received = self.api.wait_for_requests(before + 1)[before]
        return received, response

    def assert_no_secret_logged(self) -> None:
        output = "".join(self.sidecar.lines)
        leaked = [s for s in self.secrets if s and s in output]
        assert not leaked, f"{len(leaked)} secret value(s) appear in claimgate's output"


def run_world(
    workdir: Path,
    config: Mapping[str, Any],
    env: Mapping[str, str],
    app: App,
    api: ApiDouble,
    customers: list[Customer],
    arguments: Sequence[str] = (),
    config_path: Path | None = None,
) -> Iterator[World]:
    """Start claimgate on ``config`` (``start_sidecar``) and yield its world; on the way out,
    stop it and check that it exited 0 on SIGTERM and logged none of the world's secrets."""
    sidecar = start_sidecar(workdir, config, env, arguments, config_path)
    world = World(sidecar, app, api, customers)
    try:
        yield world
    finally:
        world.client.close()
        code = sidecar.stop()
        world.assert_no_secret_logged()
        shutdown = [e for e in sidecar.events() if e.get("event", "").startswith("shutdown")]
        # Lines that are not JSON come from below Python (a fatal error's stack): no secrets.
        raw = [e["line"] for e in sidecar.events("unparsed")][-40:]
        assert code == 0, (
            f"claimgate exited {code} on SIGTERM; shutdown events: {shutdown}; "
            f"other output: {''.join(raw)}"
        )


def tunnel(world: World, host: str, port: int, alpn: Sequence[str] = ()) -> ssl.SSLSocket:
    """A TLS connection through the forward listener to ``host:port``, as an HTTPS_PROXY
    client makes it (offering the protocols ``alpn``, if any)."""
    proxy_host, proxy_port = world.sidecar.listeners["forward"].rsplit(":", 1)
    raw = socket.create_connection((proxy_host, int(proxy_port)), timeout=5)
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(world.sidecar.ca_path))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context.wrap_socket(raw, server_hostname=host)


class Http2Client:
    """An HTTP/2 connection to the API double through the forward listener, frame by frame,
    so that a test can leave a stream's body unfinished."""

    def __init__(self, world: World) -> None:
        self.tls = tunnel(world, "localhost", world.api.port, alpn=["h2"])
        assert self.tls.selected_alpn_protocol() == "h2"
        self.authority = f"localhost:{world.api.port}".encode()
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.events: list[h2.events.Event] = []
        self._flush()
        # mitmproxy opens its windows at once; until then 64 KiB would hold the body up.
        self.read_until(lambda: self.h2.outbound_flow_control_window > 2**20)

    def post(
        self,
        length: int,
        path: bytes = b"/api/stable/api.php",
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        """A new stream: the head of a POST of ``length`` bytes to ``path``, with the fields
        ``extra`` too; its id."""
        stream = self.h2.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", self.authority),
            (b":path", path),
            (b"content-type", b"application/octet-stream"),
            (b"content-length", b"%d" % length),
            *extra,
        ]
        self.h2.send_headers(stream, headers)
        self._flush()
        return stream

    def send(self, stream: int, data: bytes, end: bool = False) -> None:
        size = self.h2.max_outbound_frame_size
        for start in range(0, len(data), size):
            self.h2.send_data(stream, data[start : start + size])
        if end:
            self.h2.end_stream(stream)
        self._flush()

    def reset(self, stream: int) -> None:
        self.h2.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        self._flush()

    def answer(self, stream: int) -> tuple[int, bytes, list[h2.events.Event]]:
        """The status and body claimgate answered on ``stream``, and the stream's events
        (read until it ended and, if claimgate ends it so, was reset)."""

        def mine() -> list[h2.events.Event]:
            return [e for e in self.events if getattr(e, "stream_id", None) == stream]

        def over() -> bool:
            kinds = {type(e) for e in mine()}
            return h2.events.StreamReset in kinds or (
                h2.events.StreamEnded in kinds and self.h2.streams[stream].closed
            )

        self.read_until(over)
        status, body = 0, b""
        for event in mine():
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
        return status, body, mine()

    def statuses(self) -> dict[int, int]:
        """The status of each stream answered so far."""
        return {
            event.stream_id: int(dict(event.headers)[b":status"])
            for event in self.events
            if isinstance(event, h2.events.ResponseReceived)
        }

    def close(self) -> None:
        self.tls.close()

    def _flush(self) -> None:
        self.tls.sendall(self.h2.data_to_send())

    def read_until(self, condition: Callable[[], bool]) -> None:
        """Read what claimgate sends until ``condition()`` holds (at most 30 s)."""
        deadline = time.monotonic() + 30  # a bound on waiting, not a measured time
        while not condition():
            assert time.monotonic() < deadline, "claimgate never answered"
            data = self.tls.recv(65536)
            assert data, "claimgate closed the connection"
            for event in self.h2.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self.events.append(event)
            self._flush()
