"""The admin listener (docs/design.md 3.3): probes, metrics, the claims API and the status page.

It runs on its own port, on the proxy's event loop (tornado on asyncio), so orchestrator
probes reach it without going through the proxy. Handlers only translate HTTP; what they
answer comes from an ``AdminBackend`` (``backend.Backend``). Every error is a short JSON body with a
4xx/5xx status, never a stack trace.
"""

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable
from ipaddress import ip_address
from typing import Any, Protocol

from tornado import httputil, netutil, web
from tornado.httpserver import HTTPServer

from claimgate import capture, signature, status_page
from claimgate.intake import Ingested
from claimgate.limits import HeadLimits, Refusal
from claimgate.settings import AdminSettings, Secret

MAX_BODY = 64 * 1024
"""Bytes a ``POST /claims`` body may have; a signed link is far smaller."""
TRANSPORT_LIMIT = 1024 * 1024
"""Above this tornado drops the connection unread; between the two we answer 413."""
REALM = 'Basic realm="claimgate", charset="UTF-8"'


class AdminBackend(Protocol):
    """What the admin listener needs from the running sidecar."""

    async def ingest(self, link: capture.LinkRequest, source: str) -> Ingested: ...

    async def readiness(self) -> str | None:
        """None when ready, else the reason it is not."""
        ...

    async def status(self) -> dict[str, Any]: ...

    async def claim_status(self, customer_web_id: str) -> dict[str, Any] | None: ...

    async def forget(self, customer_web_id: str) -> bool: ...

    def metrics_text(self) -> bytes: ...


def bearer_or_basic_token(authorization: str) -> str | None:
    """The token in ``Authorization``: Bearer, or the password of HTTP Basic."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def token_matches(authorization: str, token: str) -> bool:
    """Compare in constant time, so response timing tells nothing about the token."""
    given = bearer_or_basic_token(authorization)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def is_loopback(host: str) -> bool:
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class AdminToken:
    """The admin token in force; a reload replaces it, and the next request sees the new one."""

    def __init__(self, token: Secret | None) -> None:
        self.value = token.reveal() if token else None


class _Handler(web.RequestHandler):
    """JSON errors, no server banner, nothing cached."""

    backend: AdminBackend
    admin_token: AdminToken
    loopback: bool
    limits: HeadLimits

    def initialize(
        self, backend: AdminBackend, token: AdminToken, loopback: bool, limits: HeadLimits
    ) -> None:
        self.backend = backend
        self.admin_token = token
        self.loopback = loopback
        self.limits = limits

    @property
    def token(self) -> str | None:
        return self.admin_token.value

    def prepare(self) -> Awaitable[None] | None:
        """The bounds tornado does not keep itself (it bounds the head's bytes and time)."""
        if len(self.request.uri or "") > self.limits.request_line:
            refusal = Refusal.REQUEST_LINE
        elif sum(1 for _ in self.request.headers.get_all()) > self.limits.header_count:
            refusal = Refusal.HEADER_COUNT
        else:
            return None
        self.set_header("Connection", "close")
        raise web.HTTPError(refusal.status, refusal.message)

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_json(self, status: int, body: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = httputil.responses.get(status_code, "error").lower()
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, web.HTTPError) and error.log_message:
            reason = error.log_message
        if status_code == 401:
            self.set_header("WWW-Authenticate", REALM)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": reason}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Expected HTTP errors are answers, not incidents; the rest go to the log by type."""
        if not isinstance(value, web.HTTPError):
            from claimgate.telemetry import get_logger

            get_logger().error("internal_error", hook="admin", exc_info=(typ, value, tb))

    def require_token(self, *, page: bool) -> None:
        """``/claims`` needs the token; ``/`` too, or a loopback listener when none is set."""
        if self.token is None:
            if page and self.loopback:
                return
            detail = "set admin.token" + ("" if page else " to use the claims API")
            raise web.HTTPError(403 if page else 404, f"not available without a token: {detail}")
        if not token_matches(self.request.headers.get("Authorization", ""), self.token):
            raise web.HTTPError(401, "the admin token is required")


class Health(_Handler):
    def get(self) -> None:
        self.write_json(200, {"status": "ok"})


class Ready(_Handler):
    async def get(self) -> None:
        reason = await self.backend.readiness()
        if reason is None:
            self.write_json(200, {"status": "ready"})
        else:
            self.write_json(503, {"status": "not ready", "reason": reason})


class Metrics(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.backend.metrics_text())


class StatusPage(_Handler):
    """The page with the current data in it: it shows it with JavaScript off, too."""

    async def get(self) -> None:
        self.require_token(page=True)
        page = status_page.render(await self.backend.status())
        self.set_header("Content-Type", "text/html; charset=utf-8")
        # Only the page's own script and style run, so even markup that slipped past the
        # escaping could not execute.
        self.set_header("Content-Security-Policy", status_page.CONTENT_SECURITY_POLICY)
        self.finish(page)


class StatusJson(_Handler):
    async def get(self) -> None:
        self.require_token(page=True)
        self.write_json(200, await self.backend.status())


class Claims(_Handler):
    async def post(self) -> None:
        self.require_token(page=False)
        if len(self.request.body) > MAX_BODY:
            raise web.HTTPError(413, f"body larger than {MAX_BODY} bytes")
        url = _url_from(self.request.body)
        try:
            base, path, query = signature.split_url(url)
        except ValueError:  # urllib's message may quote the URL, and with it a claim
            raise web.HTTPError(
                400, "not a valid URL (check the host's [ ] and the port)"
            ) from None
        ingested = await self.backend.ingest(capture.LinkRequest(base, path, query), "admin")
        self._answer_ingest(ingested)

    def _answer_ingest(self, ingested: Ingested) -> None:
        result = ingested.result
        if result is None:
            raise web.HTTPError(400, "not a Marketplace link: apiClaim and customerWebId needed")
        if isinstance(result, capture.Refused):
            self.write_json(422, {"error": result.reason, "violation": result.violation})
            return
        body = {
            "link": result.kind.value,
            "customer": result.claim.customer_web_id,
            "user": result.claim.user_id,
        }
        if result.kind is capture.LinkKind.ACTIVATION:
            self.write_json(201, body | {"token_learned": True})
        elif ingested.stored:
            self.write_json(201, body | {"stored": True})
        else:
            self.write_json(409, body | {"error": "a newer claim is held for this customer"})


class Customer(_Handler):
    def prepare(self) -> Awaitable[None] | None:
        super().prepare()
        if not capture.ONOFFICE_ID.fullmatch(self.path_args[0]):
            raise web.HTTPError(400, "a customerWebId is 1-64 letters, digits, '-' or '_'")
        return None

    async def get(self, customer_web_id: str) -> None:
        self.require_token(page=False)
        found = await self.backend.claim_status(customer_web_id)
        if found is None:
            raise web.HTTPError(404, "no claim for this customer")
        self.write_json(200, found)

    async def delete(self, customer_web_id: str) -> None:
        self.require_token(page=False)
        await self.backend.forget(customer_web_id)
        self.set_status(204)
        self.finish()


class NotFound(_Handler):
    def prepare(self) -> Awaitable[None] | None:
        super().prepare()
        raise web.HTTPError(404, "unknown path")


def _url_from(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPError(400, "body is not JSON") from None
    url = payload.get("url") if isinstance(payload, dict) else None
    if not isinstance(url, str) or "://" not in url:
        raise web.HTTPError(400, 'expected {"url": "<full signed service-call URL>"}')
    return url


class AdminServer:
    """The listener; ``start`` binds it (port 0 picks a free port), ``stop`` closes it."""

    def __init__(self, settings: AdminSettings, backend: AdminBackend, limits: HeadLimits) -> None:
        loopback = is_loopback(settings.listen.host)
        self.token = AdminToken(settings.token)
        args = {"backend": backend, "token": self.token, "loopback": loopback, "limits": limits}
        self.app = web.Application(
            [
                (r"/healthz", Health, args),
                (r"/readyz", Ready, args),
                (r"/metrics", Metrics, args),
                (r"/", StatusPage, args),
                (r"/status\.json", StatusJson, args),
                (r"/claims", Claims, args),
                (r"/claims/([^/]+)", Customer, args),
            ],
            default_handler_class=NotFound,
            default_handler_args=args,
        )
        self.settings = settings
        self.limits = limits
        self.server: HTTPServer | None = None
        self.address = ""

    def start(self) -> str:
        """Bind and serve on the running loop; returns the bound ``host:port``."""
        sockets = netutil.bind_sockets(self.settings.listen.port, self.settings.listen.host)
        self.server = HTTPServer(
            self.app,
            xheaders=False,
            max_body_size=TRANSPORT_LIMIT,
            # tornado closes a connection whose head is larger, or slower than the timeout
            # (which also ends idle keep-alive connections: a probe or scrape reconnects).
            max_header_size=self.limits.header_size,
            idle_connection_timeout=self.limits.header_timeout,
            body_timeout=self.limits.header_timeout,
        )
        self.server.add_sockets(sockets)
        host, port = sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"
        return self.address

    def rotate_token(self, token: Secret | None) -> None:
        """A reloaded ``admin.token``: honoured from the next request on, the old one not."""
        self.token.value = token.reveal() if token else None

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()
            self.server = None
