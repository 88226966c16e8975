"""The status page (``GET /`` on the admin listener) in a real headless Chromium.

Against the real ``claimgate run``: the browser is refused without the admin token and told
to ask for it, loads the page with it, and watches real traffic appear: a verified service
call becomes a customer row (by fingerprint, never the claim), a provoked violation is
counted and listed, and the page stays readable on a phone. However the page is opened (the
browser's Basic prompt, the token in the URL, behind a path prefix, JavaScript off) it shows
the data and keeps it current; the server's first paint and the script's refresh agree.

The admin token is in URLs here: nothing that shows a URL (a Page, a Response) goes into an
assertion, and browser errors are reported with the token replaced.
"""

import hashlib
import re
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Route, expect

import claimgate
from claimgate import status_page
from claimgate.testing import ApiDouble, make_claim, make_secret
from tests.browser import chromium
from tests.status_documents import (
    CONFIG_SHOWN,
    NEW_ROW_FIELDS,
    UNKNOWN_CONFIG,
    config,
    customer_rows,
    lifetime,
    odd_configs,
)
from tests.support import (
    PROVIDER_SECRET,
    VIOLATION_KINDS,
    App,
    Customer,
    World,
    api_request,
    forward_proxy,
    run_world,
    scrape,
    service_call_link,
)

PAGE = Path(claimgate.__file__).parent / "status.html"
ADMIN_TOKEN = secrets.token_urlsafe(24)
WAIT_MS = 5000  # the page refreshes every second (?refresh=1): a few refreshes at most
PHONE = {"width": 390, "height": 844}
# A customer id that would run script if the page ever rendered data as markup.
MARKUP_ID = '<img src="x" onerror="window.__injected = 1"><b id="injected">x</b>'
PREFIX = "/claimgate/"
"""Where the reverse proxy below serves the admin listener, as an ingress path would."""
REGIONS = (
    *("ready", "mode", "listeners", "config", "version", "ca-expires", "generated"),
    *("customers", "lifetime", "violations-hour", "decisions-hour", "recent"),
)
"""The elements the server renders and the script refreshes."""
# Each region as [tag, {attribute: value}, [children]], text as strings: what the DOM holds,
# independent of how it was serialised.
SNAPSHOT = """ids => ids.map(id => {
  const walk = node => node.nodeType === Node.TEXT_NODE ? node.data : [
    node.localName,
    Object.fromEntries([...node.attributes].map(a => [a.name, a.value])),
    [...node.childNodes].filter(n => n.nodeType === Node.ELEMENT_NODE
      || n.nodeType === Node.TEXT_NODE).map(walk),
  ];
  return walk(document.getElementById(id));
})"""
# What a person reads off the first paint: per customer id, user, claim and source; the
# counts by name; the recent violations' kinds and customers.
FIRST_PAINT = """() => ({
  ready: document.getElementById("ready").textContent,
  customers: [...document.querySelectorAll("#customers tr[data-customer]")]
    .map(row => [...row.cells].slice(0, 4).map(cell => cell.textContent)),
  violations: Object.fromEntries([...document.querySelectorAll("#violations-hour [data-kind]")]
    .map(n => [n.dataset.kind, n.textContent])),
  decisions: Object.fromEntries(
    [...document.querySelectorAll("#decisions-hour [data-decision]")]
      .map(n => [n.dataset.decision, n.textContent])),
  recent: [...document.querySelectorAll("#recent tr[data-kind]")]
    .map(row => [row.dataset.kind, row.cells[2].textContent]),
})"""
# Per customer, how its expiry cell looks: the highlight is the stylesheet's, so this checks
# that the (hashed) style applies, not only that a class is set.
EXPIRY_LOOK = """() => Object.fromEntries(
  [...document.querySelectorAll("#customers tr[data-customer]")].map(row => {
    const style = getComputedStyle(row.cells[5]);
    return [row.dataset.customer, [style.color, style.backgroundColor]];
  }))"""
# Records every time the error banner shows, from before the page's own script runs.
BANNER_WATCH = """window.__banners = [];
document.addEventListener("DOMContentLoaded", () => {
  const banner = document.getElementById("status-error");
  new MutationObserver(() => { if (!banner.hidden) window.__banners.push(banner.textContent); })
    .observe(banner, {attributes: true, childList: true, subtree: true, characterData: true});
});"""


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


class PrefixProxy:
    """A reverse proxy that serves the admin listener under ``PREFIX``, as an ingress does:
    the path is stripped, the browser's ``Authorization`` passed on, the answer passed back."""

    def __init__(self, upstream: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if not self.path.startswith(PREFIX):
                    self.send_error(404)
                    return
                forwarded = {k: v for k, v in self.headers.items() if k.lower() in PASSED_ON}
                answer = httpx.get(
                    upstream + self.path.removeprefix(PREFIX), headers=forwarded, trust_env=False
                )
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() in PASSED_BACK:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.address = "%s:%d" % self.server.server_address[:2]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


PASSED_ON = {"authorization", "accept"}
PASSED_BACK = {"content-type", "www-authenticate", "content-security-policy", "cache-control"}


@pytest.fixture(scope="module")
def prefix_proxy(page_url: str) -> Iterator[PrefixProxy]:
    proxy = PrefixProxy(page_url)
    yield proxy
    proxy.close()


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def redacted(text: str) -> str:
    return text.replace(ADMIN_TOKEN, "<admin token>")


def open_page(page: Page, url: str) -> int:
    """Navigate to ``url`` (which may hold the token); the status, or a redacted failure."""
    try:
        response = page.goto(url)
    except PlaywrightError as error:
        raise AssertionError(redacted(error.message)) from None
    assert response is not None, "no response to the navigation"
    return response.status


def add_claim(world: World, page_url: str, customer: Customer) -> str:
    """Store a claim for ``customer`` through ``POST /claims``; returns its fingerprint."""
    claim = make_claim()
    link = service_call_link(customer, claim)
    world.secrets |= {claim, link.rsplit("signature=", 1)[-1]}
    stored = httpx.post(page_url + "claims", json={"url": link}, headers=bearer())
    assert stored.status_code == 201, stored.json()
    return fingerprint(claim)


def snapshot(page: Page) -> list[Any]:
    return page.evaluate(SNAPSHOT, list(REGIONS))


def test_the_page_is_self_contained():
    html = PAGE.read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=", html, re.I)
    assert not re.search(r"@import|url\(|https?://", html, re.I)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html


def test_the_admin_listener_serves_this_page_filled_in(page_url: str):
    served = httpx.get(page_url, headers=bearer())
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/html")
    assert served.headers["content-security-policy"] == status_page.CONTENT_SECURITY_POLICY
    around_the_slots = re.split(r"\{\{\w+\}\}", PAGE.read_text())
    assert len(around_the_slots) > 1
    assert re.fullmatch(".*?".join(map(re.escape, around_the_slots)), served.text, re.DOTALL)


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
        expect(page.locator("#version")).to_have_text(claimgate.__version__)
        # the CA claimgate made in its ca_dir, as the metric says it
        expires = datetime.fromtimestamp(
            scrape(world).value("claimgate_ca_expiry_timestamp_seconds"), UTC
        )
        expect(page.locator("#ca-expires")).to_have_text(f"{expires:%Y-%m-%d %H:%M:%S} UTC")
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

        # A link whose id is markup is refused before anything else: it never reaches the
        # page (the renderer's escaping of hostile ids is tested in test_status_page_render).
        markup = customers["markup"]
        world.service_call(markup, make_claim())
        world.sidecar.wait_for(
            "violation", lambda e: e["kind"] == "malformed_request" and "link" in e
        )
        count = page.locator('#violations-hour [data-kind="malformed_request"]')
        expect(count).to_have_text("1", timeout=WAIT_MS)
        rows = page.evaluate(
            "[...document.querySelectorAll('#customers tr')].map(row => row.dataset.customer)"
        )
        assert captured.web_id in rows and MARKUP_ID not in rows
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
    "version": "0.1.0<b>x</b>",
    "ca_expires_at": 2100000000.5,
    "ready": False,
    "listeners": {"forward": "127.0.0.1:8080", "admin": "127.0.0.1:8082"},
    "config": config(),
    "customers": [
        *customer_rows(),
        {
            "customer": MARKUP_ID + "&amp; '\"",
            "user": "<u>&</u>",
            "claim_fp": "fedcba987654",
            "source": "link",
            "claim_age": 5000,
            "expires_in": 38200,
            "expired": False,
            "last_violation": {"kind": "<i>kind</i>", "age": 90000},
        },
    ],
    "lifetime": lifetime(),
    "violations_last_hour": {"missing_claim": 3, "expired_claim": 0, "new_kind": 2},
    "decisions_last_hour": {"injected": 10, "blocked": 0},
    "recent_violations": [{"kind": "unknown_token", "customer": None, "age": 1}]
    + [{"kind": "missing_claim", "customer": "300", "age": 100 + i} for i in range(25)],
}
# What an older claimgate sends (no expiring, refused, lifetime or config), and a document
# whose new fields hold what they never should: both renderers must read them alike.
OLDER = {
    **{key: value for key, value in CRAFTED.items() if key not in ("lifetime", "config")},
    "customers": [
        {k: v for k, v in row.items() if k not in NEW_ROW_FIELDS} for row in CRAFTED["customers"]
    ],
}
ODD = {
    **CRAFTED,
    "lifetime": {"shortest_refused_age": "6 h", "longest_accepted_age": True},
    "config": {"fingerprint": MARKUP_ID, "loaded_at": "2027-01-15 07:40:00"},
    "customers": [
        *(row | {"expiring": "yes", "refused": 1} for row in customer_rows()),
        {"customer": "600", "expires_in": None, "expiring": True},
        {"customer": "700", "expires_in": -5, "expiring": True},
        {"customer": "800", "refused": True, "expired": False, "expiring": True},
    ],
}
CREDENTIALS = {"username": "ops", "password": ADMIN_TOKEN}


def serve_crafted(page: Page, document: dict[str, Any]) -> None:
    """The real page's answer (its headers, its policy), with ``document`` rendered in it."""

    def crafted_page(route: Route) -> None:
        real = route.fetch()
        assert real.status == 200, real.status
        route.fulfill(response=real, body=status_page.render(document))

    page.route(lambda url: urlsplit(url).path == "/", crafted_page)
    page.route("**/status.json*", lambda route: route.fulfill(json=document))


def first_paint(page_url: str, document: dict[str, Any]) -> list[Any]:
    """The server's rendering of ``document``, as a browser without JavaScript holds it."""
    with chromium(http_credentials=CREDENTIALS, java_script_enabled=False) as browser:
        page = browser.new_page()
        serve_crafted(page, document)
        page.goto(page_url)
        return snapshot(page)


def refreshed(browser: Any, page_url: str, document: dict[str, Any]) -> Page:
    """The page once its script has rendered ``document`` over the server's first paint."""
    page = browser.new_page()
    serve_crafted(page, document)
    page.goto(page_url + "?refresh=1")
    # The server's footer says 5 s: this is the script's, after it rendered the document.
    updated = re.compile(r"^updated .* refreshes every 1 s$")
    expect(page.locator("#footer")).to_have_text(updated, timeout=WAIT_MS)
    return page


@pytest.mark.parametrize("document", [OLDER, ODD], ids=["older-document", "odd-values"])
def test_missing_and_odd_fields_are_read_alike(page_url: str, document: dict[str, Any]):
    painted = first_paint(page_url, document)
    with chromium(http_credentials=CREDENTIALS) as browser:
        page = refreshed(browser, page_url, document)
        assert snapshot(page) == painted
        expect(page.locator("#lifetime-refused")).to_have_text("\u2014")
        expect(page.locator("#lifetime-accepted")).to_have_text("\u2014")
        expect(page.locator("#config")).to_have_text(UNKNOWN_CONFIG[0])
        expect(page.locator("#config")).to_have_attribute("title", UNKNOWN_CONFIG[1])
        assert page.locator("#injected").count() == 0
        expect(page.locator("#status-error")).to_be_hidden()
        # Only a true "expiring" highlights, and only a claim neither expired nor refused.
        highlighted = page.locator("#customers tr.expiring").evaluate_all(
            "rows => rows.map(row => row.dataset.customer)"
        )
        assert highlighted == ([] if document is OLDER else ["600"])


def test_the_page_words_every_field_of_the_contract(page_url: str):
    """The server's first paint, read with JavaScript off, is the script's refresh of the
    same document, element for element; and that is worded as below."""
    painted = first_paint(page_url, CRAFTED)
    with chromium(http_credentials=CREDENTIALS) as browser:
        page = refreshed(browser, page_url, CRAFTED)
        assert snapshot(page) == painted
        assert page.locator("#injected, #customers img, #customers u, #customers i").count() == 0
        expect(page.locator("#ready")).to_have_text("not ready", timeout=WAIT_MS)
        expect(page.locator("#mode")).to_have_text("enforce")
        expect(page.locator("#listeners")).to_contain_text("admin 127.0.0.1:8082")
        expect(page.locator("#config")).to_have_text(CONFIG_SHOWN[0])
        expect(page.locator("#config")).to_have_attribute("title", CONFIG_SHOWN[1])
        expect(page.locator("#version")).to_have_text("0.1.0<b>x</b>")
        expect(page.locator("#ca-expires")).to_have_text("2036-07-18 13:20:00 UTC")
        expect(page.locator("#ca-expires")).to_have_attribute("title", "2036-07-18T13:20:00.500Z")

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
        assert cells("400")[5] == "in 36 min"
        assert cells("500")[5:] == ["refused", "rejected_claim, 30 s ago"]

        # An expiring claim stands out, row and cell, and says why; a refused one is shown
        # as bad as an expired one, and says what happens next.
        expect(page.locator("#customers tr.expiring")).to_have_count(1)
        expiring = page.locator('#customers tr.expiring[data-customer="400"] td.expiring')
        expect(expiring).to_have_attribute("title", re.compile(r"within claims\.warn_before"))
        refused = page.locator('#customers tr[data-customer="500"] td').nth(5)
        expect(refused).to_have_class("refused")
        expect(refused).to_have_attribute("title", re.compile(r"refused"))
        look = page.evaluate(EXPIRY_LOOK)
        assert look["500"][0] == look["200"][0] != look["100"][0]  # refused: expired's colour
        assert look["400"][0] not in (look["100"][0], look["200"][0])  # a warning colour
        assert look["400"][1] != look["100"][1] == look["500"][1]  # a highlighted background

        # What the API taught about the claim lifetime, and what to make of it.
        expect(page.locator("#lifetime-refused")).to_have_text("refused at 6 h")
        expect(page.locator("#lifetime-accepted")).to_have_text("accepted up to 11 h")
        expect(page.locator("#lifetime + .note")).to_contain_text("claims.ttl")

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


def test_odd_configurations_are_shown_as_dashes(page_url: str):
    """Each of them, refreshed by the script as the server renders it (the server's side is
    in test_status_page_render): only a fingerprint or a time, never markup."""
    with chromium(http_credentials=CREDENTIALS) as browser:
        page = browser.new_page()
        serve_crafted(page, CRAFTED)
        shown = {"document": CRAFTED}
        page.route("**/status.json*", lambda route: route.fulfill(json=shown["document"]))
        page.goto(page_url + "?refresh=0.2")
        expect(page.locator("#config")).to_have_text(CONFIG_SHOWN[0])  # the server's
        entry = page.locator("#config")
        for i, (value, (text, title)) in enumerate(odd_configs()):
            # The mode tells which document the script rendered last.
            shown["document"] = CRAFTED | {"mode": f"odd {i}", "config": value}
            expect(page.locator("#mode")).to_have_text(f"odd {i}", timeout=WAIT_MS)
            expect(entry).to_have_text(text)
            expect(entry).to_have_attribute("title", title)
            assert entry.locator("*").count() == 0, value
        assert page.locator("#injected, img").count() == 0
        assert page.evaluate("window.__injected") is None
        expect(page.locator("#status-error")).to_be_hidden()


def test_the_page_shows_the_configuration_running(page_url: str):
    """The fingerprint and load time ``/status.json`` reports, in the server's first paint
    and after the script's refresh alike."""
    configured = httpx.get(page_url + "status.json", headers=bearer()).json()["config"]
    assert re.fullmatch(r"[0-9a-f]{12}", configured["fingerprint"]), configured
    loaded = datetime.fromtimestamp(configured["loaded_at"], UTC)
    text = f"{configured['fingerprint']}, loaded {loaded:%Y-%m-%d %H:%M:%S} UTC"
    title = re.compile(rf"^{loaded:%Y-%m-%dT%H:%M:%S}\.\d{{3}}Z$")
    with chromium(http_credentials=CREDENTIALS) as browser:
        page = browser.new_page()
        assert open_page(page, page_url + "?refresh=1") == 200
        entry = page.locator("#config")
        expect(entry).to_have_text(text)
        expect(entry).to_have_attribute("title", title)
        updated = re.compile(r"^updated .* refreshes every 1 s$")
        expect(page.locator("#footer")).to_have_text(updated, timeout=WAIT_MS)
        expect(entry).to_have_text(text)
        expect(entry).to_have_attribute("title", title)


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


@pytest.mark.parametrize("prefix", ["/", PREFIX], ids=["root", "path-prefix"])
def test_the_page_works_with_the_token_in_its_url(
    world: World, page_url: str, prefix_proxy: PrefixProxy, prefix: str
):
    """``http://anyuser:TOKEN@host/`` (a bookmark behind Basic): the browser authenticates
    the navigation with it and caches it for the origin; the script's refreshes never carry
    it in their URL, keep the page's path prefix, and show new data without a reload."""
    host = world.sidecar.listeners["admin"] if prefix == "/" else prefix_proxy.address
    with chromium() as browser:
        page = browser.new_page()
        page.add_init_script(BANNER_WATCH)
        refreshes: list[tuple[str, int]] = []
        page.on("response", lambda r: refreshes.append((r.url, r.status)) if "json" in r.url else 0)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(redacted(m.text)) if m.type == "error" else 0)

        status = open_page(page, f"http://anyuser:{ADMIN_TOKEN}@{host}{prefix}?refresh=1")
        assert status == 200
        expect(page.locator("#ready")).to_have_text("ready")  # the server's first paint
        page.evaluate("window.__sameDocument = true")

        customer = Customer("3201" + str(len(prefix)))
        claim_fp = add_claim(world, page_url, customer)
        row = page.locator(f'#customers tr[data-customer="{customer.web_id}"]')
        expect(row).to_contain_text(claim_fp, timeout=WAIT_MS)
        expect(row.locator("td").nth(3)).to_have_text("admin")

        same_document = page.evaluate("window.__sameDocument === true")
        assert same_document, "the page was reloaded"
        banners = page.evaluate("window.__banners")
        assert banners == [], banners
        assert errors == [], errors
        assert refreshes, "the script never refreshed"
        for url, code in refreshes:
            parts = urlsplit(url)
            assert (parts.username, parts.password) == (None, None), "credentials in a fetch URL"
            assert (parts.path, code) == (prefix + "status.json", 200)


def test_without_javascript_the_first_paint_shows_the_data(world: World, page_url: str):
    """The same customers and counts as ``/status.json``; the page reloads itself (noscript
    refresh), so a claim added later appears too."""
    add_claim(world, page_url, Customer("32101"))
    credentials = {"username": "ops", "password": ADMIN_TOKEN}
    with chromium(http_credentials=credentials, java_script_enabled=False) as browser:
        page = browser.new_page()
        expected = httpx.get(page_url + "status.json", headers=bearer()).json()
        assert page.goto(page_url) is not None
        shown = page.evaluate(FIRST_PAINT)

        assert shown["customers"] == [
            [c["customer"], c["user"] or "—", c["claim_fp"] or "—", c["source"] or "—"]
            for c in expected["customers"]
        ]
        assert "32101" in [row[0] for row in shown["customers"]]
        for name, counted in (
            ("violations", "violations_last_hour"),
            ("decisions", "decisions_last_hour"),
        ):
            assert shown[name] == {k: str(n) for k, n in expected[counted].items()}
        assert shown["recent"] == [
            [v["kind"], v["customer"] or "—"] for v in expected["recent_violations"][:20]
        ]
        assert shown["ready"] == ("ready" if expected["ready"] else "not ready")
        expect(page.locator("#status-error")).to_be_hidden()
        expect(page.locator("#footer")).to_contain_text("refreshes every 5 s")

        customer = Customer("32102")
        claim_fp = add_claim(world, page_url, customer)
        row = page.locator(f'#customers tr[data-customer="{customer.web_id}"]')
        reloads = 3 * status_page.REFRESH_SECONDS * 1000
        expect(row).to_contain_text(claim_fp, timeout=reloads)
