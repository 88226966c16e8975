"""The mitmproxy addon: routes each flow to capture or injection, and nothing else.

Listeners are told apart by the proxy mode a connection arrived on (``Role``):

- ``forward`` (HTTPS_PROXY): TLS is intercepted only for ``proxy.api_hosts``; every other
  host is tunnelled untouched, decided per connection in ``tls_clienthello`` (never with
  mitmproxy's process-wide ``allow_hosts``, which would blind the capture listener).
- ``capture``: a reverse proxy in front of the provider's app; Marketplace links are verified
  and their claims stored, and the request always reaches the app unchanged.

API requests are decided by the mitmproxy-free ``pipeline`` (bodies too large to hold by
``oversize``); the addon carries each ``Outcome`` out. mitmproxy forwards a flow whose hook
raised, with whatever edits were made, so every hook goes through one guard (``_guarded``)
that logs the error and makes the fail-safe choice (docs/design.md 2.7). The only edits to a
request are one assignment of a fully built body, or one answer set in its place.
"""

import asyncio
import functools
import inspect
import json
import time
from collections.abc import Callable
from enum import StrEnum
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import connection, ctx, http, tls
from mitmproxy.net.http import url
from mitmproxy.proxy import mode_specs
from mitmproxy.proxy.context import Context

from claimgate import __version__, capture, collector, decoding, edge
from claimgate.admin import AdminServer
from claimgate.backend import Backend
from claimgate.flow_state import METADATA_KEY, FlowState, Generation
from claimgate.intake import Intake
from claimgate.limits import HeldBodies, OpenConnections, Refusal
from claimgate.monitor import Monitor
from claimgate.oversize import Oversize
from claimgate.pipeline import LocalAnswer, Outcome, Pipeline
from claimgate.scope import ApiHosts
from claimgate.settings import ListenAddress, Settings
from claimgate.store import ClaimStore
from claimgate.telemetry import get_logger, redact

VIOLATION_HEADER = "X-Claimgate-Violation"
DRAIN_POLL = 0.05

log = get_logger()


class Role(StrEnum):
    FORWARD = "forward"
    """HTTPS_PROXY for the legacy code: injection for the API hosts, tunnels for the rest."""
    CAPTURE = "capture"
    """Reverse proxy in front of the provider app: captures, then forwards unchanged."""
    API = "api"
    """Reverse proxy to the API: injection without any CA on the integration's side."""
    MIRROR = "mirror"
    """Receives copies of inbound requests: captures, answers 204, forwards nothing."""


MIRROR_TARGET = "http://127.0.0.1:9"
"""The mirror listener's nominal upstream: never contacted, every request is answered."""

MISDIRECTED = 421


def listener_modes(settings: Settings) -> dict[str, Role]:
    """mitmproxy ``mode`` specs for the configured listeners, and the role of each."""
    modes = {f"regular@{_at(settings.proxy.listen)}": Role.FORWARD}
    if settings.capture_enabled:
        assert settings.capture.listen is not None  # settings default it with the upstream
        modes[f"reverse:{settings.capture.upstream}@{_at(settings.capture.listen)}"] = Role.CAPTURE
    if settings.capture.mirror_listen:
        modes[f"reverse:{MIRROR_TARGET}@{_at(settings.capture.mirror_listen)}"] = Role.MIRROR
    if settings.api.listen:
        modes[f"reverse:{settings.api.upstream}@{_at(settings.api.listen)}"] = Role.API
    return modes


def _at(address: ListenAddress) -> str:
    """mitmproxy splits ``host:port`` at the last colon and keeps brackets: none for IPv6."""
    return f"{address.host}:{address.port}"


type Hook = Callable[..., Any]


def _guarded[H: Hook](hook: H) -> H:
    """The one guard of every flow hook: an error is logged and met by ``_hook_failed``.

    Without it mitmproxy would forward the flow as the failed hook left it. Should meeting
    the error fail too, that is logged as well: nothing escapes to mitmproxy.
    """
    name = hook.__name__

    def failed(self: "Claimgate", args: tuple[Any, ...]) -> None:
        try:
            self._hook_failed(name, args)
        except Exception:
            log.exception("internal_error", hook=name)

    if inspect.iscoroutinefunction(hook):

        async def guarded_async(self: "Claimgate", *args: Any) -> None:
            try:
                await hook(self, *args)
            except Exception:
                failed(self, args)

        return functools.wraps(hook)(guarded_async)  # type: ignore[return-value]

    def guarded(self: "Claimgate", *args: Any) -> None:
        try:
            hook(self, *args)
        except Exception:
            failed(self, args)

    return functools.wraps(hook)(guarded)  # type: ignore[return-value]


class Claimgate:
    """Capture claims on the capture listeners; inject them on the forward and API listeners."""

    def __init__(self, settings: Settings, store: ClaimStore, monitor: Monitor) -> None:
        self.store = store
        self.monitor = monitor
        self.generation = self._generation(settings)
        """What requests starting now run under; a reload replaces it (``reconfigure``)."""
        self.roles = listener_modes(settings)
        self.api_hosts = ApiHosts(settings.proxy.api_hosts)
        self.oversize = Oversize(settings.proxy.max_body_size, settings.limits)
        upstream = urlsplit(settings.api.upstream)
        self.api_upstream = (upstream.hostname or "", upstream.port or 443)
        self.api_upstream_host = url.hostport("https", *self.api_upstream)
        """The Host the API must see: its own name, whatever the integration called us."""
        self.listeners: dict[str, str] = {}
        self.backend = Backend(
            settings, store, monitor, self.generation.intake, self.listeners, self._proxy_problem
        )
        self.admin = AdminServer(
            settings.admin,
            self.backend,
            settings.limits,
            self._admin_head_refused,
            self._admin_idle_closed,
        )
        self.connections = OpenConnections(settings.limits.connections)
        """The client connections open on each proxy listener (the admin port counts its own)."""
        self.bodies = HeldBodies(settings.limits.bodies)
        """The request body bytes held on each proxy listener (the admin port's are small)."""
        self.in_flight = 0
        """Requests between their headers and their answer: what a graceful stop waits for."""
        self.first_requests = edge.FirstRequestDeadlines(
            settings.limits.header_timeout,
            lambda client: self._head_refused(Refusal.HEADER_TIMEOUT, client),
        )
        self.shutting_down = False

    @property
    def settings(self) -> Settings:
        return self.generation.settings

    def role_of(self, proxy_mode: mode_specs.ProxyMode) -> Role | None:
        return self.roles.get(proxy_mode.full_spec)

    def reconfigure(self, settings: Settings) -> None:
        """Apply reloaded settings (``reloading.plan`` allowed each change): what starts from
        now on runs under them; a request in flight ends under the generation it began in."""
        self.generation = self._generation(settings)
        self.backend.reconfigure(settings, self.generation.intake)
        self.admin.rotate_token(settings.admin.token)

    def _generation(self, settings: Settings) -> Generation:
        return Generation(
            settings, Pipeline(settings, self.store), Intake(settings, self.store, self.monitor)
        )

    # --- lifecycle ------------------------------------------------------------------

    async def running(self) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")
        for server in proxyserver.servers:
            role = self.role_of(server.mode)
            if role is not None and server.listen_addrs:
                host, port = server.listen_addrs[0][:2]
                self.listeners[role.value] = f"{host}:{port}"
        self.listeners["admin"] = await self.admin.start()
        metrics = self.monitor.metrics
        for role in self.roles.values():
            metrics.count_connections_with(
                role.value, functools.partial(self.connections.count, role.value)
            )
            metrics.count_bodies_with(role.value, functools.partial(self.bodies.held, role.value))
        metrics.count_connections_with("admin", self.admin.listener.open_connections)
        certstore = ctx.master.addons.get("tlsconfig").certstore
        self.monitor.ca_loaded(certstore.default_ca.notafter.timestamp(), time.time())
        await self.oversize.start()
        collector.start()  # what exists now lives as long as the process
        log.info(
            "claimgate_ready",
            listeners=self.listeners,
            mode=self.settings.policy.mode.value,
            version=__version__,
        )

    async def done(self) -> None:
        await self.admin.stop()
        await self.oversize.stop()

    async def drain_and_stop(self, grace: float) -> None:
        """Stop gracefully: not ready at once, no new connections, requests in flight finish.

        mitmproxy has no graceful stop of its own (it cancels live connections), so the
        listeners are closed first and the process ends when nothing is in flight or
        ``grace`` seconds have passed, whichever comes first.
        """
        if self.shutting_down:
            ctx.master.shutdown()  # a second signal: stop now
            return
        self.shutting_down = True
        log.info("shutdown_started", in_flight=self.in_flight, grace_seconds=grace)
        ctx.options.update(server=False)
        deadline = asyncio.get_running_loop().time() + grace
        while self.in_flight > 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        log.info("shutdown_drained", in_flight=self.in_flight)
        ctx.master.shutdown()

    # --- hooks ----------------------------------------------------------------------

    @_guarded
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """Pass every non-API host through untouched: its own certificate reaches the client."""
        if self.role_of(data.context.client.proxy_mode) is not Role.FORWARD:
            return
        server = data.context.server.address
        host = data.client_hello.sni or (server[0] if server else "")
        port = server[1] if server else 443
        if (host, port) not in self.api_hosts:
            data.ignore_connection = True

    def http1_server(self, context: Context) -> edge.BoundedHttp1Server:
        """The HTTP/1 server of a client connection on any listener (``edge.install``).

        Every request head is bounded there; only the forward listener may CONNECT. Not a
        hook: mitmproxy needs the server it returns, so there is no fail-safe to fall back to.
        """
        client = context.client
        self.first_requests.met(client)  # the server keeps the time from now on
        connect_allowed = self.role_of(client.proxy_mode) is Role.FORWARD
        return edge.BoundedHttp1Server(
            context, self._bounds(client), connect_allowed=connect_allowed
        )

    def http2_server(self, context: Context) -> edge.BoundedHttp2Server:
        """The HTTP/2 server of a client connection (``edge.install``); only the forward
        listener's TLS to an API host offers HTTP/2. Not a hook, as ``http1_server``."""
        return edge.BoundedHttp2Server(context, self._bounds(context.client))

    def _bounds(self, client: connection.Client) -> edge.Bounds:
        """What ``client``'s server holds it to: the limits running, its listener's body
        bytes (counted per connection), and where refusals go."""
        listener = self._listener_of(client)
        return edge.Bounds(
            self.settings.limits,
            self._head_refused,
            functools.partial(self.bodies.hold, listener, client.id),
            functools.partial(self.bodies.free, listener, client.id),
            self.settings.proxy.max_body_size,
        )

    @_guarded
    def _admin_head_refused(self, refusal: Refusal, peer: str) -> None:
        self.monitor.request_refused(refusal, "admin", peer)

    @_guarded
    def _admin_idle_closed(self, peer: str) -> None:
        self.monitor.idle_connection_closed("admin", peer)

    @_guarded
    def _head_refused(self, refusal: Refusal, client: connection.Client) -> None:
        self.monitor.request_refused(refusal, self._listener_of(client), _peer(client))

    @_guarded
    def client_connected(self, client: connection.Client) -> None:
        """Past its listener's ``limits.connections``, close the connection idle longest to
        make room, or with every place busy this one at once (mitmproxy closes a client
        whose ``error`` is set); start the first-request clock of every one admitted."""
        admitted, given_up = self.connections.admit(self._listener_of(client), client.id)
        if not admitted:
            client.error = Refusal.CONNECTIONS.message
            self._head_refused(Refusal.CONNECTIONS, client)
            return
        if given_up is not None and (closed := edge.close(given_up)) is not None:
            self.monitor.idle_connection_closed(self._listener_of(closed), _peer(closed))
        self.first_requests.connected(client)

    @_guarded
    def client_disconnected(self, client: connection.Client) -> None:
        listener = self._listener_of(client)
        self.connections.release(listener, client.id)
        self.bodies.free(listener, client.id)  # a body cut off with its connection
        self.first_requests.met(client)

    def _listener_of(self, client: connection.Client) -> str:
        return _name(self.role_of(client.proxy_mode))

    @_guarded
    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A tunnel: its connection stays busy to its end (what it carries is not seen)."""
        self.first_requests.met(flow.client_conn)
        self.connections.busy(self._listener_of(flow.client_conn), flow.client_conn.id)

    @_guarded
    def websocket_start(self, flow: http.HTTPFlow) -> None:
        """A WebSocket: its connection stays busy to its end, which ends the connection."""
        self.connections.busy(self._listener_of(flow.client_conn), flow.client_conn.id)

    @_guarded
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Count the request in flight (its connection busy); decide now about API bodies
        too large to hold."""
        client = flow.client_conn
        self.first_requests.met(client)
        role = self.role_of(client.proxy_mode)
        listener = _name(role)
        self.in_flight += 1
        self.connections.busy(listener, client.id)
        state = flow.metadata[METADATA_KEY] = FlowState(True, self.generation, listener)
        state.api = role is Role.API or (
            role is Role.FORWARD and (flow.request.host, flow.request.port) in self.api_hosts
        )
        if not state.api:
            return
        if role is Role.API:
            flow.request.host_header = self.api_upstream_host
        elif flow.request.scheme == "http":
            self._upgrade_to_https(flow, state)
        self._carry_out(flow, state, self.oversize.at_head(flow, state))

    @_guarded
    async def request(self, flow: http.HTTPFlow) -> None:
        role = self.role_of(flow.client_conn.proxy_mode)
        if role is Role.MIRROR:
            flow.response = http.Response.make(204)  # first: answered whatever happens next
        state = flow.metadata.get(METADATA_KEY)
        generation = state.generation if state is not None else self.generation
        if role in (Role.CAPTURE, Role.MIRROR):
            await generation.intake.ingest(_link_request(flow, generation.settings), "link")
            return
        if state is None or not state.api or state.outcome is not None:
            return  # not the API, or decided at the head (too large)
        if self._carry_out(flow, state, self.oversize.at_body(flow, state)):
            return
        if role is Role.API and _names_another_host(flow, self.api_upstream):
            flow.response = _refusal(
                MISDIRECTED, f"this listener only forwards to {self.api_upstream_host}"
            )
            return
        state.started = time.perf_counter()
        encoding = _header(flow.request, b"content-encoding")
        pipeline = state.generation.pipeline
        outcome = await pipeline.run(flow.request.raw_content or b"", encoding, state.started)
        self._carry_out(flow, state, outcome)

    @_guarded
    async def response(self, flow: http.HTTPFlow) -> None:
        state = self._settle(flow)
        if state is None or state.outcome is None:
            return
        if flow.response is not None:
            answer = flow.response
            encoding = _header(answer, b"content-encoding")
            record = state.outcome.record
            body = answer.raw_content or b""
            rejections = state.generation.pipeline.rejections
            for violation in await rejections(record, body, encoding):
                self.monitor.violation(violation)
        self._write_decision(state, flow.response.status_code if flow.response else None)

    @_guarded
    def error(self, flow: http.HTTPFlow) -> None:
        state = self._settle(flow)
        if state is None or state.outcome is None:
            return
        self._write_decision(state, None, redact(str(flow.error)) if flow.error else None)

    # --- what the hooks share -------------------------------------------------------

    def _hook_failed(self, hook: str, args: tuple[Any, ...]) -> None:
        """After claimgate's own error: an API request the pipeline began on and could not
        finish goes on untouched, or in ``enforce`` is answered 502; all else goes on as is."""
        flow = args[0] if args and isinstance(args[0], http.HTTPFlow) else None
        role = self.role_of(flow.client_conn.proxy_mode) if flow else None
        log.exception("internal_error", hook=hook, listener=role.value if role else None)
        state = flow.metadata.get(METADATA_KEY) if flow else None
        if flow and state and state.started is not None and state.outcome is None:
            self._carry_out(flow, state, state.generation.pipeline.failed(state.started))

    def _carry_out(self, flow: http.HTTPFlow, state: FlowState, outcome: Outcome | None) -> bool:
        """Carry a decision out with one edit, then report its violations.

        The decision counts as made once its edit is: were the edit to fail, the guard
        carries out the pipeline's failure instead (untouched, or 502 in ``enforce``); were
        reporting to fail, the request still goes as decided (blocked, or with its claims),
        never unedited. Returns whether there was a decision.
        """
        if outcome is None:
            return False
        if outcome.answer is not None:
            flow.response = _answer(outcome.answer)
        elif outcome.body is not None:
            _set_content(flow.request, outcome.body)
        state.outcome = outcome
        for violation in outcome.record.verdict.violations:
            self.monitor.violation(violation)
        return True

    def _write_decision(
        self, state: FlowState, status: int | None, upstream_error: str | None = None
    ) -> None:
        assert state.outcome is not None
        record = state.outcome.record
        record.upgraded_to_https = state.upgraded_to_https
        self.monitor.decision(record, status, upstream_error=upstream_error)

    def _settle(self, flow: http.HTTPFlow) -> FlowState | None:
        """The flow's state, no longer in flight, and off the flow: freed once its decision
        line is written, not with the flow (flows form reference cycles, which only the
        cyclic collector frees, after walking everything they hold)."""
        state = flow.metadata.pop(METADATA_KEY, None)
        if state is not None and state.in_flight:
            state.in_flight = False
            self.in_flight -= 1
            self.connections.done(state.listener, flow.client_conn.id)
        return state

    def _upgrade_to_https(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """A plain-HTTP request to an API host: sent over TLS, so no claim or token travels in
        clear (to the port of its ``host:port`` entry, else 443, as the API listener does)."""
        port = self.api_hosts.tls_port((flow.request.host, flow.request.port))
        flow.request.scheme = "https"
        flow.request.port = port  # after the scheme: the Host header follows both
        state.upgraded_to_https = True

    # --- for the admin listener -----------------------------------------------------

    def _proxy_problem(self) -> str | None:
        """Why the proxy cannot take requests now, if it cannot."""
        if self.shutting_down:
            return "shutting down"
        proxyserver = ctx.master.addons.get("proxyserver")
        if not proxyserver.is_running or not all(s.is_running for s in proxyserver.servers):
            return "listeners not bound"
        return None


# --- helpers outside the class: no state, testable alone -------------------------------


def _peer(client: connection.Client) -> str:
    """The client's address as the log lines name it."""
    return client.peername[0] if client.peername else ""


def _name(role: Role | None) -> str:
    """A listener's name in metrics and log lines ("" for a connection on none of ours)."""
    return role.value if role else ""


def _answer(answer: LocalAnswer) -> http.Response:
    headers = {"Content-Type": "application/json", VIOLATION_HEADER: answer.violation}
    return http.Response.make(answer.status, answer.body, headers)


def _header(message: http.Message, name: bytes) -> str | None:
    """``message.headers.get(name)`` for a lower-case ``name``, read off the raw fields.

    The same answer (repeated fields folded with ", ", as mitmproxy folds them) without the
    multidict's key conversions, which cost several microseconds per lookup on every API
    request (docs/performance.md).
    """
    values = [value for key, value in message.headers.fields if key.lower() == name]
    if not values:
        return None
    if len(values) == 1:
        return values[0].decode("utf-8", "surrogateescape")
    return ", ".join(value.decode("utf-8", "surrogateescape") for value in values)


def _set_content(message: http.Message, content: bytes) -> None:
    """``message.content = content``, for a message without Content-Encoding straight on the
    raw fields (mitmproxy's setter does four multidict operations); an encoded one the
    setter's way, which encodes ``content`` again. Content-Length as the setter sets it: the
    first field replaced, any others dropped, one appended if there was none; and none
    where Transfer-Encoding says how the body is framed. One pass over the fields."""
    fields = message.headers.fields
    lengths: list[int] = []
    framed = False
    for index, (key, _) in enumerate(fields):
        name = key.lower()
        if name == b"content-length":
            lengths.append(index)
        elif name == b"content-encoding":
            message.content = content
            return
        elif name == b"transfer-encoding":
            framed = True
    message.raw_content = content
    if framed:
        return
    length = b"%d" % len(content)
    if not lengths:
        message.headers.fields = (*fields, (b"content-length", length))
        return
    edited = list(fields)
    edited[lengths[0]] = (fields[lengths[0]][0], length)
    for index in reversed(lengths[1:]):
        del edited[index]
    message.headers.fields = tuple(edited)


def _decoded(message: http.Message, limit: int) -> bytes:
    """The body as sent, decoded, never past ``limit`` bytes (``decoding.decode``)."""
    encoding = _header(message, b"content-encoding")
    return decoding.decode(message.raw_content or b"", encoding, limit)


def _refusal(status: int, reason: str) -> http.Response:
    return http.Response.make(
        status, json.dumps({"error": reason}).encode(), {"Content-Type": "application/json"}
    )


def _names_another_host(flow: http.HTTPFlow, upstream: tuple[str, int]) -> bool:
    """True for an absolute-form request (or HTTP/2 authority) naming a host not ``upstream``.

    A reverse listener always connects to its upstream; refusing such requests keeps a
    client that believes it is talking to some other host from being silently misrouted.
    """
    authority = flow.request.authority
    if not authority or flow.request.is_http2 or flow.request.is_http3:
        return False
    host, port = url.parse_authority(authority, check=False)
    return (host.lower(), port or 80) != upstream and (host.lower(), port or 443) != upstream


def _link_request(flow: http.HTTPFlow, settings: Settings) -> capture.LinkRequest:
    path, _, query = flow.request.path.partition("?")
    form = None
    if flow.request.method == "POST" and "x-www-form-urlencoded" in flow.request.headers.get(
        "content-type", ""
    ):
        try:
            content = _decoded(flow.request, settings.proxy.max_body_size)
        except (decoding.BodyTooLarge, decoding.UndecodableBody):
            content = b""  # no form onOffice sends is either: not a link
        if capture.LINK_MARKER.encode() in content:  # else not a link: nothing to decode
            form = content.decode("utf-8", "replace")
    return capture.LinkRequest(
        base=_signed_base(flow, settings),
        path=path,
        query=query,
        form=form,
    )


def _signed_base(flow: http.HTTPFlow, settings: Settings) -> str:
    """The ``scheme://host[:port]`` onOffice signed, as the caller reached us.

    ``capture.public_base_url`` wins; forwarded headers count only from a trusted proxy;
    otherwise the Host header as sent (its explicit port included) and our own TLS state.
    """
    if settings.capture.public_base_url:
        return settings.capture.public_base_url
    scheme = "https" if flow.client_conn.tls_established else "http"
    host = flow.request.host_header or ""
    if _from_trusted_proxy(flow, settings):
        scheme = flow.request.headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
        host = flow.request.headers.get("x-forwarded-host", host).split(",")[0].strip()
    return f"{scheme}://{host}"


def _from_trusted_proxy(flow: http.HTTPFlow, settings: Settings) -> bool:
    if not settings.capture.trusted_proxies or not flow.client_conn.peername:
        return False
    peer = ip_address(flow.client_conn.peername[0])
    return any(peer in network for network in settings.capture.trusted_proxies)
