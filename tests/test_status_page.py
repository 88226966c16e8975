"""The status page (``GET /`` on the admin listener) in a real headless Chromium.

Against the real ``claimgate run``: the browser is refused without the admin token and told
to ask for it, loads the page with it, and watches real traffic appear: a verified service
call becomes a customer row (by fingerprint, never the claim), a provoked violation is
counted and listed, and the page stays readable on a phone.
"""

import hashlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Route, expect

import claimgate
from claimgate.testing import ApiDouble, make_claim, make_secret
from tests.browser import chromium
from tests.support import (
    PROVIDER_SECRET,
    VIOLATION_KINDS,
    App,
    Customer,
    World,
    api_request,
    forward_proxy,
    run_world,
)

PAGE = Path(claimgate.__file__).parent / "status.html"
ADMIN_TOKEN = secrets.token_urlsafe(24)
WAIT_MS = 5000  # the page refreshes every second (?refresh=1): a few refreshes at most
PHONE = {"width": 390, "height": 844}
# A customer id that would run script if the page ever rendered data as markup.
MARKUP_ID = '<img src="x" onerror="window.__injected = 1"><b id="injected">x</b>'


def fingerprint(value: str) -> str:
    """The page's contract, computed independently of claimgate's own helper."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def customers() -> dict[str, Customer]:
    return {
        "captured": Customer("31001"),
        "claimless": Customer("31002"),
        "forged": Customer("31003"),
        "markup": Customer(MARKUP_ID),
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory, customers: dict[str, Customer]) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("status_page")
    with App() as app, ApiDouble({c.token: c.secret for c in customers.values()}) as api:
        config = {
            "proxy": forward_proxy(tmp, api),
            "capture": {
                "listen": "127.0.0.2:0",
                "upstream": app.url,
                "provider_secret": "env:TEST_PROVIDER_SECRET",
            },
            "admin": {"listen": "127.0.0.5:0", "token": "env:TEST_ADMIN_TOKEN"},
        }
        env = {"TEST_PROVIDER_SECRET": PROVIDER_SECRET, "TEST_ADMIN_TOKEN": ADMIN_TOKEN}
        for world in run_world(tmp, config, env, app, api, list(customers.values())):
            world.secrets.add(ADMIN_TOKEN)
            yield world


@pytest.fixture(scope="module")
def page_url(world: World) -> str:
    admin = world.sidecar.listeners.get("admin")
    assert admin, f"claimgate reports no admin listener: {world.sidecar.listeners}"
    return f"http://{admin}/"


def test_the_page_is_self_contained():
    html = PAGE.read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=", html, re.I)
    assert not re.search(r"@import|url\(|https?://", html, re.I)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html


def test_the_admin_listener_serves_this_page(page_url: str):
    served = httpx.get(page_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/html")
    assert served.text == PAGE.read_text()


def test_without_the_token_the_browser_is_asked_for_it(page_url: str):
    with chromium() as browser:
        page = browser.new_page()
        with page.expect_response(page_url) as answer:
            try:
                page.goto(page_url)
            except PlaywrightError as error:
                # What a headless browser does where a person would see the login prompt.
                assert "ERR_INVALID_AUTH_CREDENTIALS" in error.message
        response = answer.value
        assert response.status == 401
        assert response.headers["www-authenticate"].startswith('Basic realm="claimgate"')
        assert response.headers["content-type"].startswith("application/json")
        assert "authorization" not in response.request.headers


def test_the_page_shows_captures_and_violations_as_they_happen(
    world: World, customers: dict[str, Customer], page_url: str
):
    credentials = {"username": "ops", "password": ADMIN_TOKEN}
    with chromium(http_credentials=credentials) as browser:
        page = browser.new_page()
        response = page.goto(page_url + "?refresh=1")
        assert response is not None and response.status == 200
        assert page.title() == "claimgate status"
        expect(page.locator("#ready")).to_have_text("ready", timeout=WAIT_MS)
        expect(page.locator("#mode")).to_have_text("inject")
        expect(page.locator("#status-error")).to_be_hidden()

        # A real signed service call through the capture listener becomes a customer row.
        captured = customers["captured"]
        world.activate(captured)
        claim = make_claim()
        assert world.service_call(captured, claim).status_code == 200
        world.sidecar.wait_for("claim_captured", lambda e: e["customer"] == captured.web_id)
        row = page.locator(f'#customers tr[data-customer="{captured.web_id}"]')
        expect(row).to_contain_text(fingerprint(claim), timeout=WAIT_MS)
        expect(row.locator("td").nth(1)).to_have_text("17")  # the service call's user
        expect(row).to_contain_text(re.compile(r"in 1[12] h"))  # claims.ttl = 12h
        assert world.call_api(api_request(captured))[0].claims() == [claim]
        injected = page.locator('#decisions-hour [data-decision="injected"]')
        expect(injected).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS)

        # Violations provoked for real: an API call for a customer without a claim, and a
        # service call signed with the wrong secret.
        claimless = customers["claimless"]
        world.activate(claimless)
        world.call_api(api_request(claimless))
        world.sidecar.wait_for(
            "violation",
            lambda e: e["kind"] == "missing_claim" and e["customer"] == claimless.web_id,
        )
        forged = customers["forged"]
        world.service_call(forged, make_claim(), secret=make_secret())
        world.sidecar.wait_for("violation", lambda e: e["kind"] == "bad_signature")
        for kind in ("missing_claim", "bad_signature"):
            count = page.locator(f'#violations-hour [data-kind="{kind}"]')
            expect(count).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS)
        expect(page.locator('#violations-hour [data-kind="hmac_v1"]')).to_have_text("0")
        recent = page.locator('#recent tr[data-kind="missing_claim"]')
        expect(recent.first).to_contain_text(claimless.web_id, timeout=WAIT_MS)
        claimless_row = page.locator(f'#customers tr[data-customer="{claimless.web_id}"]')
        # Reported once, as missing_claim (the API's 193 for it is not a second violation).
        last = re.compile(r"missing_claim, \d+ s ago")
        expect(claimless_row.locator("td").last).to_have_text(last, timeout=WAIT_MS)

        # A customer id is text, never markup.
        markup = customers["markup"]
        world.service_call(markup, make_claim())
        world.sidecar.wait_for("claim_captured", lambda e: e["customer"] == MARKUP_ID)
        page.wait_for_function(
            "id => [...document.querySelectorAll('#customers tr')]"
            ".some(row => row.dataset.customer === id && row.cells[0].textContent === id)",
            arg=MARKUP_ID,
            timeout=WAIT_MS,
        )
        assert page.locator("#injected, #customers img").count() == 0
        assert page.evaluate("window.__injected") is None

        # Fingerprints only: no claim, token or secret anywhere in the page.
        shown = page.content() + page.locator("body").inner_text()
        leaked = [s for s in world.secrets if s in shown]
        assert not leaked, f"{len(leaked)} secret value(s) appear in the page"

        assert_readable_on_a_phone(page)
        assert_a_failed_refresh_is_shown(page, captured.web_id)


# Every field of the status.json contract, with the edge cases the page must word well.
CRAFTED = {
    "generated_at": 1800000000.0,
    "mode": "enforce",
    "ready": False,
    "listeners": {"forward": "127.0.0.1:8080", "admin": "127.0.0.1:8082"},
    "customers": [
        {
            "customer": "100",
            "user": "17",
            "claim_fp": "abcdef012345",
            "source": "link",
            "claim_age": 42,
            "expires_in": 43158,
            "expired": False,
            "last_violation": None,
        },
        {
            "customer": "200",
            "user": "3",
            "claim_fp": "0123456789ab",
            "source": "admin",
            "claim_age": 180,
            "expires_in": 0,
            "expired": True,
            "last_violation": {"kind": "expired_claim", "age": 7200},
        },
        {
            "customer": "300",
            "user": None,
            "claim_fp": None,
            "source": None,
            "claim_age": None,
            "expires_in": None,
            "expired": False,
            "last_violation": {"kind": "missing_claim", "age": 12},
        },
    ],
    "violations_last_hour": {"missing_claim": 3, "expired_claim": 0, "new_kind": 2},
    "decisions_last_hour": {"injected": 10, "blocked": 0},
    "recent_violations": [{"kind": "unknown_token", "customer": None, "age": 1}]
    + [{"kind": "missing_claim", "customer": "300", "age": 100 + i} for i in range(25)],
}


def test_the_page_words_every_field_of_the_contract(page_url: str):
    credentials = {"username": "ops", "password": ADMIN_TOKEN}
    with chromium(http_credentials=credentials) as browser:
        page = browser.new_page()
        page.route("**/status.json*", lambda route: route.fulfill(json=CRAFTED))
        page.goto(page_url + "?refresh=1")
        expect(page.locator("#ready")).to_have_text("not ready", timeout=WAIT_MS)
        expect(page.locator("#mode")).to_have_text("enforce")
        expect(page.locator("#listeners")).to_contain_text("admin 127.0.0.1:8082")

        def cells(customer: str) -> list[str]:
            row = page.locator(f'#customers tr[data-customer="{customer}"] td')
            return [text.strip() for text in row.all_inner_texts()]

        assert cells("100") == ["100", "17", "abcdef012345", "link", "42 s", "in 11 h", "—"]
        assert cells("200") == [
            "200",
            "3",
            "0123456789ab",
            "admin",
            "3 min",
            "expired",
            "expired_claim, 2 h ago",
        ]
        assert cells("300") == ["300", "—", "—", "—", "—", "—", "missing_claim, 12 s ago"]

        hour = page.locator("#violations-hour [data-kind]")
        shown = dict(
            zip(
                hour.evaluate_all("e => e.map(n => n.dataset.kind)"),
                hour.all_inner_texts(),
                strict=True,
            )
        )
        assert tuple(shown)[: len(VIOLATION_KINDS)] == VIOLATION_KINDS
        assert shown["missing_claim"] == "3" and shown["hmac_v1"] == "0"
        assert shown["new_kind"] == "2"  # a kind added later is still shown
        zero = page.locator('#violations-hour li:has([data-kind="hmac_v1"])')
        expect(zero).to_have_class("zero")
        decisions = page.locator("#decisions-hour [data-decision]")
        assert decisions.count() == 6
        expect(page.locator('[data-decision="injected"]')).to_have_text("10")

        recent = page.locator("#recent tr")
        expect(recent).to_have_count(20)
        assert [t.strip() for t in recent.first.locator("td").all_inner_texts()] == [
            "1 s ago",
            "unknown_token",
            "—",
        ]
        expect(page.locator("#status-error")).to_be_hidden()


def assert_readable_on_a_phone(page: Page) -> None:
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(200)  # layout after the resize
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls {overflow}px sideways at {PHONE['width']}px"


def assert_a_failed_refresh_is_shown(page: Page, still_listed: str) -> None:
    """A refused refresh shows a banner, keeps the last data but not its readiness; the next
    good one clears it."""

    def refuse(route: Route) -> None:
        route.fulfill(status=401, content_type="application/json", body='{"error": "no"}')

    page.route("**/status.json*", refuse)
    banner = page.locator("#status-error")
    expect(banner).to_have_text("status unavailable: HTTP 401", timeout=WAIT_MS)
    expect(page.locator(f'#customers tr[data-customer="{still_listed}"]')).to_have_count(1)
    expect(page.locator("#ready")).to_have_text("unknown")  # not a stale green "ready"
    page.unroute("**/status.json*", refuse)
    expect(banner).to_be_hidden(timeout=WAIT_MS)
    expect(page.locator("#ready")).to_have_text("ready")
