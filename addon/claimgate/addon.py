"""The mitmproxy addon: routes each flow to capture or injection, and nothing else.

Listeners are told apart by the proxy mode a connection arrived on (``Role``):

- ``forward`` (HTTPS_PROXY): TLS is intercepted only for ``proxy.api_hosts``; every other
  host is tunnelled untouched, decided per connection in ``tls_clienthello`` (never with
  mitmproxy's process-wide ``allow_hosts``, which would blind the capture listener).
- ``capture``: a reverse proxy in front of the provider's app; Marketplace links are verified
  and their claims stored, and the request always reaches the app unchanged.

mitmproxy forwards a flow whose hook raised, with whatever edits were made, so every hook
catches its own errors and decides explicitly (docs/design.md 2.7). The only edits to a request are
one assignment of a fully built body, or one answer set in its place.
"""

import asyncio
import gc
import json
import time
from dataclasses import replace
from enum import StrEnum
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import connection, ctx, http, tls
from mitmproxy.net.http import url
from mitmproxy.proxy import mode_specs
from mitmproxy.proxy.context import Context

from claimgate import capture, decoding, edge, onoffice, policy, rewrite
from claimgate.admin import AdminServer, Ingested
from claimgate.fingerprint import fingerprint
from claimgate.limits import Refusal
from claimgate.monitor import Monitor, RequestContext
from claimgate.policy import Decision, Kind, Mode, Verdict, Violation
from claimgate.scope import ApiHosts
from claimgate.settings import ListenAddress, Settings
from claimgate.sink import DiscardSink, answer_body
from claimgate.status import claim_report, status_report
from claimgate.store import Claim, ClaimStore
from claimgate.telemetry import get_logger, redact

VIOLATION_HEADER = "X-Claimgate-Violation"
METADATA_KEY = "claimgate"
IN_FLIGHT_KEY = "claimgate_in_flight"
DESTINATION_KEY = "claimgate_destination"
UPGRADED_KEY = "claimgate_upgraded"
DRAIN_POLL = 0.05
STORE_PING_TIMEOUT = 1.0

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


class Claimgate:
    """Capture claims on the capture listeners; inject them on the forward and API listeners."""

    def __init__(self, settings: Settings, store: ClaimStore, monitor: Monitor) -> None:
        self.settings = settings
        self.store = store
        self.monitor = monitor
        self.roles = listener_modes(settings)
        self.api_hosts = ApiHosts(settings.proxy.api_hosts)
        self.mode = settings.policy.mode
        self.provider_tokens = frozenset(settings.policy.provider_tokens)
        self.static_customers = {c.token.reveal(): c.customer_web_id for c in settings.customers}
        self.token_secrets = {
            c.token.reveal(): c.secret.reveal() for c in settings.customers if c.secret
        }
        secret = settings.capture.provider_secret
        self.provider_secret = secret.reveal() if secret else None
        upstream = urlsplit(settings.api.upstream)
        self.api_upstream = (upstream.hostname or "", upstream.port or 443)
        self.api_upstream_host = url.hostport("https", *self.api_upstream)
        """The Host the API must see: its own name, whatever the integration called us."""
        self.admin = AdminServer(settings.admin, self, settings.limits)
        self.sink = DiscardSink(settings.proxy.max_body_size)
        self.sink_address = ("127.0.0.1", 0)
        self.listeners: dict[str, str] = {}
        self.in_flight = 0
        """Requests between their headers and their answer: what a graceful stop waits for."""
        self.first_requests = edge.FirstRequestDeadlines(
            settings.limits.header_timeout,
            lambda client: self._head_refused(Refusal.HEADER_TIMEOUT, client),
        )
        self.shutting_down = False

    def role_of(self, proxy_mode: mode_specs.ProxyMode) -> Role | None:
        return self.roles.get(proxy_mode.full_spec)

    # --- lifecycle ------------------------------------------------------------------

    async def running(self) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")
        for server in proxyserver.servers:
            role = self.role_of(server.mode)
            if role is not None and server.listen_addrs:
                host, port = server.listen_addrs[0][:2]
                self.listeners[role.value] = f"{host}:{port}"
        self.listeners["admin"] = self.admin.start()
        self.sink_address = self.sink.start()
        # What exists now lives as long as the process; freezing it keeps the cyclic
        # collector's full passes frequent and cheap, so garbage from finished flows (they
        # form reference cycles) is freed soon instead of piling up between rare passes.
        gc.collect()
        gc.freeze()
        log.info("claimgate_ready", listeners=self.listeners, mode=self.mode.value)

    async def done(self) -> None:
        await self.admin.stop()
        await self.sink.stop()

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

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """Pass every non-API host through untouched: its own certificate reaches the client."""
        try:
            if self.role_of(data.context.client.proxy_mode) is not Role.FORWARD:
                return
            server = data.context.server.address
            host = data.client_hello.sni or (server[0] if server else "")
            port = server[1] if server else 443
            if (host, port) not in self.api_hosts:
                data.ignore_connection = True
        except Exception:
            log.exception("internal_error", hook="tls_clienthello")

    def http1_server(self, context: Context) -> edge.BoundedHttp1Server:
        """The HTTP/1 server of a client connection on any listener (``edge.install``).

        Every request head is bounded there; only the forward listener may CONNECT.
        """
        self.first_requests.met(context.client)  # the server keeps the time from now on
        role = self.role_of(context.client.proxy_mode)
        return edge.BoundedHttp1Server(
            context, self.settings.limits, self._head_refused, connect_allowed=role is Role.FORWARD
        )

    def _head_refused(self, refusal: Refusal, client: connection.Client) -> None:
        try:
            role = self.role_of(client.proxy_mode)
            peer = client.peername[0] if client.peername else ""
            self.monitor.request_refused(refusal, role.value if role else "", peer)
        except Exception:
            log.exception("internal_error", hook="request_refused")

    def client_connected(self, client: connection.Client) -> None:
        try:
            self.first_requests.connected(client)
        except Exception:
            log.exception("internal_error", hook="client_connected")

    def client_disconnected(self, client: connection.Client) -> None:
        self.first_requests.met(client)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self.first_requests.met(flow.client_conn)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Count the request in flight; decide now about API bodies too large to hold."""
        self.first_requests.met(flow.client_conn)
        self.in_flight += 1
        flow.metadata[IN_FLIGHT_KEY] = True
        try:
            role = self.role_of(flow.client_conn.proxy_mode)
            if not self._is_api(flow, role):
                return
            if role is Role.API:
                flow.request.host_header = self.api_upstream_host
            elif flow.request.scheme == "http":
                self._upgrade_to_https(flow)
            if flow.request.stream:  # its declared size is above proxy.max_body_size
                self._too_large(flow, time.perf_counter())
            elif self.mode is Mode.ENFORCE and "content-length" not in flow.request.headers:
                # Its size shows only while it is read; should it grow too large, mitmproxy
                # streams it, and it must then go to the sink, not the API. The request hook
                # points a body that was read whole back at the API.
                flow.metadata[DESTINATION_KEY] = _destination(flow)
                _point_at(flow, self.sink_address)
        except Exception:
            log.exception("internal_error", hook="requestheaders")

    async def request(self, flow: http.HTTPFlow) -> None:
        role = self.role_of(flow.client_conn.proxy_mode)
        if role in (Role.CAPTURE, Role.MIRROR):
            await self._capture(flow)
            if role is Role.MIRROR:
                flow.response = http.Response.make(204)
            return
        if flow.request.stream and DESTINATION_KEY in flow.metadata:
            self._too_large(flow, time.perf_counter())  # grew too large: it went to the sink
            return
        if DESTINATION_KEY in flow.metadata:  # read whole: back to the API
            _point_at(flow, flow.metadata.pop(DESTINATION_KEY))
        if not self._is_api(flow, role) or METADATA_KEY in flow.metadata:
            return  # not the API, or decided at the headers (too large)
        if flow.request.stream:  # grew past proxy.max_body_size while it was read
            self._too_large(flow, time.perf_counter())
            return
        if role is Role.API and _names_another_host(flow, self.api_upstream):
            flow.response = _refusal(
                MISDIRECTED, f"this listener only forwards to {self.api_upstream_host}"
            )
            return
        await self._inject(flow)

    def _is_api(self, flow: http.HTTPFlow, role: Role | None) -> bool:
        return role is Role.API or (
            role is Role.FORWARD and (flow.request.host, flow.request.port) in self.api_hosts
        )

    def _upgrade_to_https(self, flow: http.HTTPFlow) -> None:
        """A plain-HTTP request to an API host: sent over TLS, so no claim or token travels in
        clear (to the port of its ``host:port`` entry, else 443, as the API listener does)."""
        port = self.api_hosts.tls_port((flow.request.host, flow.request.port))
        flow.request.scheme = "https"
        flow.request.port = port  # after the scheme: the Host header follows both
        flow.metadata[UPGRADED_KEY] = True

    def _too_large(self, flow: http.HTTPFlow, started: float, decoded: bool = False) -> None:
        """A body above ``proxy.max_body_size``, on the wire or once decoded: never rewritten.

        It goes on untouched; in ``enforce`` it is answered 413 instead: here when its bytes
        were held, else by the sink that the streamed bytes are pointed at.
        """
        limit = self.settings.proxy.max_body_size
        if decoded:
            reason = f"body larger than proxy.max_body_size ({limit} bytes) once decoded"
        else:
            size = flow.request.headers.get("content-length", "unknown (chunked)")
            reason = f"body larger than proxy.max_body_size ({size} bytes)"
        verdict = policy.malformed(reason, self.mode)
        if verdict.decision is Decision.BLOCKED:
            if decoded:
                flow.response = _answer(413, answer_body(limit), Kind.MALFORMED_REQUEST.value)
            else:
                _point_at(flow, self.sink_address)
        for violation in verdict.violations:
            self.monitor.violation(violation)
        flow.metadata[METADATA_KEY] = RequestContext(
            token_fp="",
            customer=None,
            actions=0,
            verdict=verdict,
            claim=None,
            own_seconds=time.perf_counter() - started,
            answered_locally=verdict.decision is Decision.BLOCKED,
        )

    def response(self, flow: http.HTTPFlow) -> None:
        self._settle(flow)
        context = flow.metadata.get(METADATA_KEY)
        if context is None:
            return
        try:
            context.upgraded_to_https = flow.metadata.get(UPGRADED_KEY, False)
            if (
                not context.answered_locally
                and flow.response is not None
                and _claim_may_have_gone_out(context)
            ):
                self._report_rejections(flow.response, context)
            self.monitor.decision(context, flow.response.status_code if flow.response else None)
        except Exception:
            log.exception("internal_error", hook="response")

    def error(self, flow: http.HTTPFlow) -> None:
        self._settle(flow)
        context = flow.metadata.get(METADATA_KEY)
        if context is None:
            return
        try:
            context.upgraded_to_https = flow.metadata.get(UPGRADED_KEY, False)
            error = redact(str(flow.error)) if flow.error else None
            self.monitor.decision(context, None, upstream_error=error)
        except Exception:
            log.exception("internal_error", hook="error")

    def _settle(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.pop(IN_FLIGHT_KEY, False):
            self.in_flight -= 1

    # --- capture --------------------------------------------------------------------

    async def _capture(self, flow: http.HTTPFlow) -> None:
        """Learn from a Marketplace link; the request itself goes on unchanged, always."""
        try:
            await self.ingest(_link_request(flow, self.settings), "link")
        except Exception:
            log.exception("internal_error", hook="request", listener=Role.CAPTURE.value)

    async def ingest(self, link: capture.LinkRequest, source: str) -> Ingested:
        """Verify a link and learn from it: one path for listeners and ``POST /claims``."""
        result = capture.examine(
            link, self.provider_secret, self.settings.capture.max_age, time.time()
        )
        if result is None:
            return Ingested(None)
        if isinstance(result, capture.Refused):
            self.monitor.refused_link(result, link.path, source)
            return Ingested(result)
        claim = replace(result.claim, source=source)
        if result.kind is capture.LinkKind.ACTIVATION:
            assert result.api_token is not None
            await self.store.learn_token(result.api_token, claim.customer_web_id)
            self.monitor.token_learned(
                claim.customer_web_id, claim.user_id, result.api_token, source
            )
            return Ingested(result)
        stored = await self.store.put(claim)
        self.monitor.captured(claim, result.kind, stored)
        return Ingested(result, stored)

    # --- injection ------------------------------------------------------------------

    async def _inject(self, flow: http.HTTPFlow) -> None:
        started = time.perf_counter()
        try:
            await self._decide_and_apply(flow, started)
        except Exception:
            log.exception("internal_error", hook="request", listener=Role.FORWARD.value)
            enforce = self.mode is Mode.ENFORCE
            flow.metadata[METADATA_KEY] = RequestContext(
                token_fp="",
                customer=None,
                actions=0,
                verdict=Verdict(Decision.BLOCKED if enforce else Decision.PASSED, ()),
                claim=None,
                own_seconds=time.perf_counter() - started,
                answered_locally=enforce,
                internal_error=True,
            )
            if enforce:
                flow.response = _answer(
                    502, onoffice.request_error_body(onoffice.UNKNOWN_ERROR, 500), "internal_error"
                )

    async def _decide_and_apply(self, flow: http.HTTPFlow, started: float) -> None:
        try:
            request = rewrite.parse(_decoded(flow.request, self.settings.proxy.max_body_size))
        except decoding.BodyTooLarge:
            self._too_large(flow, started, decoded=True)
            return
        except (rewrite.MalformedRequest, decoding.UndecodableBody) as error:
            verdict = policy.malformed(str(error), self.mode)
            self._finish(flow, started, verdict, None, None, token_fp="")
            return

        token = request.token
        token_fp = fingerprint(token)
        customer = self.static_customers.get(token) or await self.store.customer_of_token(token)
        claim = await self.store.freshest(customer) if customer else None
        carried = {c for a in request.actions for c in a.claims}
        if claim is not None:
            carried.discard(claim.claim)
        facts = policy.Facts(
            mode=self.mode,
            customer_web_id=customer,
            provider_token=token_fp in self.provider_tokens,
            claim=claim,
            now=time.time(),
            ttl=self.settings.claims.ttl,
            claim_owners={c: await self.store.owner_of_claim(c) for c in carried},
            resignable=self._resignable(request),
        )
        verdict = policy.decide(request, facts)
        new_body = None
        if verdict.decision is not Decision.BLOCKED and verdict.changes_body:
            assert claim is not None
            secrets = {i: self.token_secrets[token] for i in verdict.resign}
            new_body = rewrite.rewrite(request, claim.claim, verdict.inject_into, secrets)
        self._finish(flow, started, verdict, request, claim, token_fp, customer, new_body)

    def _resignable(self, request: rewrite.ApiRequest) -> frozenset[int]:
        """Version-1 actions that may become version 2: secret known and their HMAC genuine.

        Checking the old HMAC first keeps claimgate from signing requests nobody signed.
        """
        secret = self.token_secrets.get(request.token)
        if secret is None:
            return frozenset()
        return frozenset(
            a.index
            for a in request.actions
            if not a.hmac_v2 and onoffice.hmac_v1(secret, request.token, a.decoded()) == a.hmac
        )

    def _finish(
        self,
        flow: http.HTTPFlow,
        started: float,
        verdict: Verdict,
        request: rewrite.ApiRequest | None,
        claim: Claim | None,
        token_fp: str,
        customer: str | None = None,
        new_body: bytes | None = None,
    ) -> None:
        """Record the verdict, then carry it out with one edit, the last thing done.

        Nothing after the edit can fail, so an error never leaves an edited request behind.
        """
        for violation in verdict.violations:
            self.monitor.violation(violation)
        blocked = verdict.decision is Decision.BLOCKED
        flow.metadata[METADATA_KEY] = RequestContext(
            token_fp=token_fp,
            customer=customer,
            actions=len(request.actions) if request else 0,
            verdict=verdict,
            claim=claim,
            own_seconds=time.perf_counter() - started,
            answered_locally=blocked,
        )
        if blocked:
            kinds = ",".join(sorted({v.kind.value for v in verdict.violations}))
            status = 400 if request is None else 200
            flow.response = _answer(status, policy.block_response(request), kinds)
        elif new_body is not None:
            flow.request.content = new_body

    def _report_rejections(self, response: http.Response, context: RequestContext) -> None:
        """Per-action errors 193/201/248 mean the API refused the claim (docs/design.md 2.8)."""
        for index, code in _rejected_claims(response, self.settings.proxy.max_body_size):
            violation = Violation(
                Kind.API_REJECTED_CLAIM,
                {
                    "action": index,
                    "errorcode": code,
                    "customer": context.customer,
                    "token_fp": context.token_fp,
                    "claim_fp": fingerprint(context.claim.claim) if context.claim else None,
                },
            )
            self.monitor.violation(violation)
            context.verdict = _with_violation(context.verdict, violation)

    # --- for the admin listener -----------------------------------------------------

    async def readiness(self) -> str | None:
        if self.shutting_down:
            return "shutting down"
        proxyserver = ctx.master.addons.get("proxyserver")
        if not proxyserver.is_running or not all(s.is_running for s in proxyserver.servers):
            return "listeners not bound"
        try:
            async with asyncio.timeout(STORE_PING_TIMEOUT):
                await self.store.ping()
        except Exception as error:
            return f"store not answering ({type(error).__name__})"
        return None

    async def status(self) -> dict[str, Any]:
        return status_report(
            claims=await self.store.claims(),
            activity=self.monitor.activity,
            listeners=self.listeners,
            mode=self.mode.value,
            ready=await self.readiness() is None,
            ttl=self.settings.claims.ttl,
            now=time.time(),
        )

    async def claim_status(self, customer_web_id: str) -> dict[str, Any] | None:
        claim = await self.store.freshest(customer_web_id)
        return None if claim is None else claim_report(claim, time.time(), self.settings.claims.ttl)

    async def forget(self, customer_web_id: str) -> bool:
        forgotten = await self.store.forget(customer_web_id)
        log.info("claim_forgotten", customer=customer_web_id, had_claim=forgotten)
        return forgotten

    def metrics_text(self) -> bytes:
        return self.monitor.metrics.render()


# --- helpers outside the class: no state, testable alone -------------------------------


def _answer(status: int, body: bytes, violation: str) -> http.Response:
    return http.Response.make(
        status,
        body,
        {"Content-Type": "application/json", VIOLATION_HEADER: violation},
    )


def _claim_may_have_gone_out(context: RequestContext) -> bool:
    """Whether the API's 193/201/248 can be about a claim that was sent.

    Not for a request claimgate could not read (malformed, or its own error: it went out as
    it came), nor for one forwarded knowingly without a claim, whose 193 repeats a violation
    already reported (missing, expired, unknown token).
    """
    if context.internal_error:
        return False
    kinds = {v.kind for v in context.verdict.violations}
    if Kind.MALFORMED_REQUEST in kinds:
        return False
    return not (context.verdict.decision is Decision.PASSED and kinds & policy.WITHOUT_CLAIM)


def _decoded(message: http.Message, limit: int) -> bytes:
    """The body as sent, decoded, never past ``limit`` bytes (``decoding.decode``)."""
    encoding = message.headers.get("content-encoding")
    return decoding.decode(message.raw_content or b"", encoding, limit)


def _destination(flow: http.HTTPFlow) -> tuple[str, int, str]:
    return flow.request.host, flow.request.port, flow.request.scheme


def _point_at(flow: http.HTTPFlow, destination: tuple[str, int] | tuple[str, int, str]) -> None:
    """Send the request elsewhere, leaving its Host header as it is."""
    host, port, *scheme = destination
    flow.request.data.host = host
    flow.request.data.port = port
    flow.request.scheme = scheme[0] if scheme else "http"


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


def _rejected_claims(response: http.Response, limit: int) -> list[tuple[int, int]]:
    try:
        content = _decoded(response, limit)
    except (decoding.BodyTooLarge, decoding.UndecodableBody):
        return []  # beyond what claimgate reads: the answer goes on unread
    if not onoffice.may_reject_claim(content):
        return []
    try:
        return onoffice.rejected_claim_codes(json.loads(content))
    except ValueError:
        return []


def _with_violation(verdict: Verdict, violation: Violation) -> Verdict:
    return Verdict(
        verdict.decision,
        (*verdict.violations, violation),
        verdict.inject_into,
        verdict.resign,
        verdict.would,
    )
