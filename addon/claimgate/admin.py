"""The admin listener (docs/design.md 3.3): probes, metrics, the claims API and the status page.

It runs on its own port, on the proxy's event loop (``http_listener``, bounded like every
listener), so orchestrator probes reach it without going through the proxy. The routes only
translate HTTP; what they answer comes from an ``AdminBackend`` (``backend.Backend``). Every
error is a short JSON body with a 4xx/5xx status, never a stack trace.
"""

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from typing import Any, Protocol
from urllib.parse import unquote

from claimgate import capture, signature, status_page
from claimgate.http_listener import (
    HttpListener,
    OnIdleClosed,
    OnRefusal,
    Request,
    Response,
    json_error,
)
from claimgate.intake import Ingested
from claimgate.limits import Limits
from claimgate.settings import AdminSettings, Secret

MAX_BODY = 64 * 1024
"""Bytes a request body may have (``POST /claims``); a signed link is far smaller."""
REALM = 'Basic realm="claimgate", charset="UTF-8"'
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CUSTOMER_PREFIX = "/claims/"
_NEVER_CACHED = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


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


class AdminError(Exception):
    """An answer that ends a request early: its status and the message of its JSON error."""

    def __init__(self, status: int, message: str, *headers: tuple[str, str]) -> None:
        super().__init__(message)
        self.response = json_error(status, message, *headers)


type Route = Callable[[Request], Awaitable[Response]]


def _json(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body).encode(), (("Content-Type", "application/json"),))


def _url_from(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
        raise AdminError(400, "body is not JSON") from None
    url = payload.get("url") if isinstance(payload, dict) else None
    if not isinstance(url, str) or "://" not in url:
        raise AdminError(400, 'expected {"url": "<full signed service-call URL>"}')
    return url


def _answer_ingest(ingested: Ingested) -> Response:
    result = ingested.result
    if result is None:
        raise AdminError(400, "not a Marketplace link: apiClaim and customerWebId needed")
    if isinstance(result, capture.Refused):
        return _json(422, {"error": result.reason, "violation": result.violation})
    body = {
        "link": result.kind.value,
        "customer": result.claim.customer_web_id,
        "user": result.claim.user_id,
    }
    if result.kind is capture.LinkKind.ACTIVATION:
        return _json(201, body | {"token_learned": True})
    if ingested.stored:
        return _json(201, body | {"stored": True})
    return _json(409, body | {"error": "a newer claim is held for this customer"})


class AdminServer:
    """The listener; ``start`` binds it (port 0 picks a free port), ``stop`` closes it."""

    def __init__(
        self,
        settings: AdminSettings,
        backend: AdminBackend,
        limits: Limits,
        on_refusal: OnRefusal | None = None,
        on_idle_closed: OnIdleClosed | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.loopback = is_loopback(settings.listen.host)
        self.token = settings.token.reveal() if settings.token else None
        """The admin token in force; a reload replaces it, and the next request sees it."""
        self.listener = HttpListener(
            self.handle,
            limits,
            name="admin",
            body_limit=MAX_BODY,
            body_timeout=limits.header_timeout,
            on_refusal=on_refusal,
            on_idle_closed=on_idle_closed,
        )
        self.routes: dict[str, dict[str, Route]] = {
            "/healthz": {"GET": self.health},
            "/readyz": {"GET": self.ready},
            "/metrics": {"GET": self.metrics},
            "/": {"GET": self.status_page},
            "/status.json": {"GET": self.status_json},
            "/claims": {"POST": self.post_claims},
        }
        self.customer_routes: dict[str, Callable[[Request, str], Awaitable[Response]]] = {
            "GET": self.get_customer,
            "DELETE": self.delete_customer,
        }
        self.address = ""

    async def start(self) -> str:
        """Bind and serve on the running loop; returns the bound ``host:port``."""
        host, port = await self.listener.start(self.settings.listen.host, self.settings.listen.port)
        self.address = f"{host}:{port}"
        return self.address

    def rotate_token(self, token: Secret | None) -> None:
        """A reloaded ``admin.token``: honoured from the next request on, the old one not."""
        self.token = token.reveal() if token else None

    async def stop(self) -> None:
        await self.listener.stop()

    async def handle(self, request: Request) -> Response:
        """Route the request; every answer, errors too, is kept out of caches."""
        try:
            response = await self._route(request)
        except AdminError as error:
            response = error.response
        return Response(response.status, response.body, (*response.headers, *_NEVER_CACHED))

    async def _route(self, request: Request) -> Response:
        path = request.path
        if path.startswith(CUSTOMER_PREFIX) and "/" not in path[len(CUSTOMER_PREFIX) :]:
            customer_web_id = unquote(path[len(CUSTOMER_PREFIX) :])
            if not customer_web_id:
                raise AdminError(404, "unknown path")
            if not capture.ONOFFICE_ID.fullmatch(customer_web_id):
                raise AdminError(400, "a customerWebId is 1-64 letters, digits, '-' or '_'")
            customer_route = self.customer_routes.get(request.method)
            if customer_route is None:
                raise AdminError(405, "method not allowed")
            return await customer_route(request, customer_web_id)
        methods = self.routes.get(path)
        if methods is None:
            raise AdminError(404, "unknown path")
        route = methods.get(request.method)
        if route is None:
            raise AdminError(405, "method not allowed")
        return await route(request)

    def require_token(self, request: Request, *, page: bool) -> None:
        """``/claims`` needs the token; ``/`` too, or a loopback listener when none is set."""
        token = self.token
        if token is None:
            if page and self.loopback:
                return
            detail = "set admin.token" + ("" if page else " to use the claims API")
            raise AdminError(403 if page else 404, f"not available without a token: {detail}")
        if not token_matches(request.header("authorization"), token):
            raise AdminError(401, "the admin token is required", ("WWW-Authenticate", REALM))

    async def health(self, _request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def ready(self, _request: Request) -> Response:
        reason = await self.backend.readiness()
        if reason is None:
            return _json(200, {"status": "ready"})
        return _json(503, {"status": "not ready", "reason": reason})

    async def metrics(self, _request: Request) -> Response:
        return Response(200, self.backend.metrics_text(), (("Content-Type", METRICS_TYPE),))

    async def status_page(self, request: Request) -> Response:
        """The page with the current data in it: it shows it with JavaScript off, too."""
        self.require_token(request, page=True)
        page = status_page.render(await self.backend.status())
        # Only the page's own script and style run, so even markup that slipped past the
        # escaping could not execute.
        headers = (
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Security-Policy", status_page.CONTENT_SECURITY_POLICY),
        )
        return Response(200, page, headers)

    async def status_json(self, request: Request) -> Response:
        self.require_token(request, page=True)
        return _json(200, await self.backend.status())

    async def post_claims(self, request: Request) -> Response:
        self.require_token(request, page=False)
        url = _url_from(request.body)
        try:
            base, path, query = signature.split_url(url)
        except ValueError:  # urllib's message may quote the URL, and with it a claim
            raise AdminError(400, "not a valid URL (check the host's [ ] and the port)") from None
        ingested = await self.backend.ingest(capture.LinkRequest(base, path, query), "admin")
        return _answer_ingest(ingested)

    async def get_customer(self, request: Request, customer_web_id: str) -> Response:
        self.require_token(request, page=False)
        found = await self.backend.claim_status(customer_web_id)
        if found is None:
            raise AdminError(404, "no claim for this customer")
        return _json(200, found)

    async def delete_customer(self, request: Request, customer_web_id: str) -> Response:
        self.require_token(request, page=False)
        await self.backend.forget(customer_web_id)
        return Response(204)
