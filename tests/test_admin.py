"""The admin listener's HTTP contract, served for real on a loopback port.

The backend here is a small stand-in: this module tests how the listener translates HTTP
(authentication, status codes, JSON errors); the real backend is the addon, exercised end to
end in test_e2e_operations.py.
"""

import asyncio
import base64
from typing import Any

import httpx
import pytest

from claimgate import capture
from claimgate.admin import AdminServer, bearer_or_basic_token, is_loopback, token_matches
from claimgate.intake import Ingested
from claimgate.limits import Limits
from claimgate.settings import AdminSettings, ListenAddress, Secret
from claimgate.store import Claim

TOKEN = "admin-token-for-tests"


class Backend:
    def __init__(self) -> None:
        self.ready_reason: str | None = None
        self.ingested: list[tuple[capture.LinkRequest, str]] = []
        self.answer = Ingested(None)
        self.forgotten: list[str] = []

    async def ingest(self, link: capture.LinkRequest, source: str) -> Ingested:
        self.ingested.append((link, source))
        return self.answer

    async def readiness(self) -> str | None:
        return self.ready_reason

    async def status(self) -> dict[str, Any]:
        return {"customers": []}

    async def claim_status(self, customer_web_id: str) -> dict[str, Any] | None:
        return {"customer": customer_web_id} if customer_web_id == "21312" else None

    async def forget(self, customer_web_id: str) -> bool:
        self.forgotten.append(customer_web_id)
        return True

    def metrics_text(self) -> bytes:
        return b"claimgate_up 1\n"


@pytest.fixture
async def served(request):
    host, token = getattr(request, "param", ("127.0.0.1", TOKEN))
    backend = Backend()
    settings = AdminSettings(ListenAddress(host, 0), Secret(token) if token else None)
    server = AdminServer(settings, backend, Limits())
    address = await server.start()
    async with httpx.AsyncClient(base_url=f"http://{address}", trust_env=False) as client:
        yield client, backend
    await server.stop()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_probes_and_metrics_need_no_token(served):
    client, backend = served
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    backend.ready_reason = "shutting down"
    not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json() == {"status": "not ready", "reason": "shutting down"}
    scrape = await client.get("/metrics")
    assert scrape.text == "claimgate_up 1\n"
    assert scrape.headers["Content-Type"].startswith("text/plain; version=0.0.4")


@pytest.mark.parametrize("path", ["/", "/status.json", "/claims/21312"])
async def test_token_is_required_and_checked(served, path):
    client, _ = served
    for headers in ({}, bearer("wrong"), {"Authorization": "Token " + TOKEN}):
        refused = await client.get(path, headers=headers)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith('Basic realm="claimgate"')
        assert refused.json() == {"error": "the admin token is required"}
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    for headers in (bearer(), {"Authorization": f"Basic {basic}"}):
        assert (await client.get(path, headers=headers)).status_code == 200


async def test_status_page_is_self_contained_html(served):
    client, _ = served
    page = await client.get("/", headers=bearer())
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    assert "Server" not in page.headers


async def test_post_claims_hands_the_link_to_the_backend(served):
    client, backend = served
    claim = Claim("21312", "17", "c", 1)
    backend.answer = Ingested(capture.Captured(capture.LinkKind.SERVICE_CALL, claim, None), True)
    url = "https://provider.example:8443/service?apiClaim=c&customerWebId=21312&signature=s"
    created = await client.post("/claims", json={"url": url}, headers=bearer())
    assert created.status_code == 201
    assert created.json() == {
        "link": "service_call",
        "customer": "21312",
        "user": "17",
        "stored": True,
    }
    link, source = backend.ingested[0]
    assert (link.base, link.path, source) == ("https://provider.example:8443", "/service", "admin")
    assert link.query == "apiClaim=c&customerWebId=21312&signature=s"


@pytest.mark.parametrize(
    ("answer", "status", "key"),
    [
        (Ingested(None), 400, "error"),
        (
            Ingested(
                capture.Refused(
                    "bad_signature",
                    "signature does not match",
                    capture.LinkKind.SERVICE_CALL,
                    "1",
                    "2",
                    "fp",
                )
            ),
            422,
            "violation",
        ),
        (
            Ingested(
                capture.Captured(capture.LinkKind.SERVICE_CALL, Claim("1", "2", "c", 1), None),
                False,
            ),
            409,
            "error",
        ),
        (
            Ingested(capture.Captured(capture.LinkKind.ACTIVATION, Claim("1", "2", "c", 1), "t")),
            201,
            "token_learned",
        ),
    ],
)
async def test_post_claims_outcomes(served, answer, status, key):
    client, backend = served
    backend.answer = answer
    response = await client.post(
        "/claims", json={"url": "https://p.example/s?a=1"}, headers=bearer()
    )
    assert response.status_code == status
    assert key in response.json()


async def test_get_and_delete_a_customer(served):
    client, backend = served
    assert (await client.get("/claims/21312", headers=bearer())).json() == {"customer": "21312"}
    missing = await client.get("/claims/999", headers=bearer())
    assert (missing.status_code, missing.json()["error"]) == (404, "no claim for this customer")
    assert (await client.delete("/claims/21312", headers=bearer())).status_code == 204
    assert backend.forgotten == ["21312"]


@pytest.mark.parametrize("customer", ["x" * 65, "21%3Cb%3E", "21%20312"])
async def test_a_customer_id_onoffice_never_uses_is_refused_unread(served, customer):
    client, backend = served
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"/claims/{customer}", headers=bearer())
        assert (response.status_code, set(response.json())) == (400, {"error"})
    assert backend.forgotten == []


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /healthz?" + b"q" * 17_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: h\r\n" + b"X: 1\r\n" * 101 + b"\r\n", 431),
    ],
)
async def test_a_head_past_a_bound_is_refused_with_its_status(served, head, status):
    client, _ = served
    host, port = str(client.base_url.host), client.base_url.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(head)
    answer = await reader.read(65536)
    writer.close()
    assert answer.split(b" ", 2)[1] == str(status).encode()


@pytest.mark.parametrize(
    ("method", "path", "content", "status"),
    [
        ("POST", "/claims", b"{", 400),
        ("POST", "/claims", b'["url"]', 400),
        ("POST", "/claims", b"[" * 30_000 + b"]" * 30_000, 400),  # within the body bound
        ("POST", "/claims", b'{"url": "http://[::1"}', 400),
        ("POST", "/claims", b"x" * (64 * 1024 + 1), 413),
        ("PATCH", "/claims/1", b"", 405),
        ("GET", "/claims", None, 405),
        ("DELETE", "/healthz", None, 405),
        ("GET", "/nothing/here", None, 404),
    ],
)
async def test_errors_are_short_json(served, method, path, content, status):
    client, _ = served
    response = await client.request(method, path, content=content, headers=bearer())
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize("served", [("127.0.0.1", None)], indirect=True)
async def test_without_a_token_claims_are_off_and_the_page_is_loopback_only(served):
    client, _ = served
    assert (await client.get("/")).status_code == 200
    off = await client.post("/claims", json={"url": "https://p.example/"})
    assert off.status_code == 404
    assert "admin.token" in off.json()["error"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("admin.example", False),
    ],
)
def test_loopback_decides_whether_the_page_needs_a_token(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic " + base64.b64encode(b"u:p:w").decode(), "p:w"),
        ("Basic ????", None),
        ("Digest x", None),
        ("", None),
    ],
)
def test_token_extraction(header, token):
    assert bearer_or_basic_token(header) == token


def test_token_matches_only_the_exact_token():
    assert token_matches("Bearer s3cret", "s3cret")
    assert not token_matches("Bearer s3cret2", "s3cret")
    assert not token_matches("Bearer ", "s3cret")
