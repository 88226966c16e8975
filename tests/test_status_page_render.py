"""The status page's server-side first paint (``status_page.render``), alone.

The rendered page is parsed back with the standard library's HTML parser, so the checks read
what a browser would: text and attribute values after unescaping, never the raw markup.
tests/test_status_page.py checks in a real browser that the script refreshes the same
elements the same way.
"""

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from claimgate import status_page
from claimgate.activity import Activity
from claimgate.status import status_report
from claimgate.store import Claim
from tests.status_documents import (
    CONFIG_SHOWN,
    NEW_ROW_FIELDS,
    UNKNOWN_CONFIG,
    config,
    customer_rows,
    lifetime,
    odd_configs,
)
from tests.support import VIOLATION_KINDS

NOW = 1_800_000_000.0
DECISIONS = ("injected", "replaced", "kept", "passed", "blocked", "observed")
HOSTILE = "<script>alert(\"x\")</script>&amp;'\"<b onmouseover='y'>"
VOID = {"meta", "br", "img", "input", "link", "hr", "wbr"}
EXPIRY = 5
"""The customers table's expiry column."""


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list["Element | str"] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def descendants(self) -> list["Element"]:
        children = [c for c in self.children if isinstance(c, Element)]
        return [e for child in children for e in [child, *child.descendants()]]

    def find_all(self, tag: str) -> list["Element"]:
        return [e for e in self.descendants() if e.tag == tag]

    def by_id(self, wanted: str) -> "Element":
        (match,) = [e for e in self.descendants() if e.attrs.get("id") == wanted]
        return match


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: bytes) -> Element:
    builder = _TreeBuilder()
    builder.feed(page.decode("utf-8"))
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return builder.root


def cells(row: Element) -> list[str]:
    return [td.text for td in row.find_all("td")]


def counts(page: Element, list_id: str, attribute: str) -> dict[str, str]:
    spans = [s for s in page.by_id(list_id).find_all("span") if attribute in s.attrs]
    return {span.attrs[attribute]: span.text for span in spans}


def by_customer(page: Element) -> dict[str, Element]:
    return {row.attrs["data-customer"]: row for row in page.by_id("customers").find_all("tr")}


def learned(page: Element) -> tuple[str, str]:
    """The claim lifetime block: what it says of refused and of accepted claims."""
    return page.by_id("lifetime-refused").text, page.by_id("lifetime-accepted").text


def configuration(page: Element) -> tuple[str, str]:
    """The configuration entry: its text and its tooltip (the ISO time it was loaded)."""
    entry = page.by_id("config")
    return entry.text, entry.attrs["title"]


def report(claims: list[Claim], activity: Activity | None = None) -> dict:
    return status_report(
        claims=claims,
        activity=activity or Activity(lambda: NOW),
        listeners={"forward": "127.0.0.1:8080", "admin": "127.0.0.1:8082"},
        mode="inject",
        ready=True,
        ttl=3600,
        now=NOW,
        config=config(),
    )


def test_hostile_ids_are_text_never_markup():
    activity = Activity(lambda: NOW - 30)
    activity.violation(HOSTILE, HOSTILE)
    document = report([Claim(HOSTILE, HOSTILE, "c", int(NOW) - 10)], activity)
    document["mode"] = HOSTILE
    document["listeners"] = {HOSTILE: HOSTILE}
    document["violations_last_hour"][HOSTILE] = 1  # status_report counts known kinds only
    document["lifetime"] = {"shortest_refused_age": HOSTILE, "longest_accepted_age": HOSTILE}
    document["customers"][0] |= {"expiring": HOSTILE, "refused": HOSTILE}
    document["config"] = {"fingerprint": HOSTILE, "loaded_at": HOSTILE}
    rendered = status_page.render(document)
    page = parse(rendered)

    assert rendered.count(b"<script") == status_page.TEMPLATE.count("<script") == 1
    assert page.find_all("b") == []
    (row,) = page.by_id("customers").find_all("tr")
    assert row.attrs["data-customer"] == HOSTILE
    first = row.find_all("td")[0]
    assert (first.text, first.attrs["title"]) == (HOSTILE, HOSTILE)
    assert cells(row)[1] == HOSTILE  # the user id
    assert cells(row)[6] == f"{HOSTILE}, 30 s ago"
    assert "class" not in row.attrs and cells(row)[EXPIRY] == "in 59 min"  # truthy is not true
    assert learned(page) == ("\u2014", "\u2014")
    (recent,) = page.by_id("recent").find_all("tr")
    assert recent.attrs["data-kind"] == HOSTILE
    assert cells(recent) == ["30 s ago", HOSTILE, HOSTILE]
    assert counts(page, "violations-hour", "data-kind")[HOSTILE] == "1"
    assert page.by_id("mode").text == HOSTILE
    assert page.by_id("listeners").text == f"{HOSTILE} {HOSTILE}"
    assert configuration(page) == UNKNOWN_CONFIG  # neither a fingerprint nor a time


def test_an_id_with_undecodable_bytes_still_renders():
    """Link values keep undecodable bytes as lone surrogates; the page shows U+FFFD."""
    customer = "21\udcff"
    page = parse(status_page.render(report([Claim(customer, "1", "c", int(NOW))])))
    (row,) = page.by_id("customers").find_all("tr")
    assert row.attrs["data-customer"] == "21\ufffd"


def test_empty_states():
    page = parse(status_page.render(report([])))
    (row,) = page.by_id("customers").find_all("tr")
    assert row.attrs == {"class": "empty"}
    assert (row.find_all("td")[0].attrs, row.text) == ({"colspan": "7"}, "no customers yet")
    (none,) = page.by_id("recent").find_all("tr")
    assert (none.find_all("td")[0].attrs, none.text) == ({"colspan": "3"}, "none")
    for list_id in ("violations-hour", "decisions-hour"):
        items = page.by_id(list_id).find_all("li")
        assert items and all(li.attrs == {"class": "zero"} for li in items)
        assert {li.find_all("span")[1].text for li in items} == {"0"}


def test_a_document_without_data_renders_dashes():
    """What the admin listener renders for a backend that reports nothing yet."""
    page = parse(status_page.render({"customers": []}))
    assert (page.by_id("ready").attrs["data-ready"], page.by_id("ready").text) == (
        "false",
        "not ready",
    )
    for element in ("mode", "listeners", "generated", "lifetime-refused", "lifetime-accepted"):
        assert page.by_id(element).text == "\u2014"
    assert page.by_id("generated").attrs["title"] == ""
    assert configuration(page) == UNKNOWN_CONFIG
    assert page.by_id("footer").text == "updated \u2014 \u00b7 refreshes every 5 s"


def test_every_violation_kind_and_decision_is_shown_in_order():
    activity = Activity(lambda: NOW)
    activity.violation("missing_claim", "1")
    activity.violation("missing_claim", "2")
    activity.violation("bad_signature", None)
    activity.decision("injected")
    document = report([], activity)
    document["violations_last_hour"]["new_kind"] = 4
    page = parse(status_page.render(document))

    kinds = counts(page, "violations-hour", "data-kind")
    assert tuple(kinds) == (*VIOLATION_KINDS, "new_kind")
    assert kinds["missing_claim"] == "2" and kinds["bad_signature"] == "1"
    assert kinds["new_kind"] == "4" and kinds["hmac_v1"] == "0"
    decisions = counts(page, "decisions-hour", "data-decision")
    assert tuple(decisions) == DECISIONS
    assert decisions["injected"] == "1" and decisions["blocked"] == "0"
    items = page.by_id("violations-hour").find_all("li")
    assert [li.attrs.get("class") for li in items[:2]] == [None, "zero"]
    assert [li.find_all("span")[0].text for li in items] == [*VIOLATION_KINDS, "new_kind"]


def test_rows_are_worded_as_the_script_words_them():
    document = {
        "generated_at": NOW + 0.1234,
        "ready": True,
        "mode": "enforce",
        "listeners": {"admin": "127.0.0.1:8082"},
        "config": config(),
        "customers": customer_rows(missing_since=200_000),
        "lifetime": lifetime(),
        "recent_violations": [
            {"kind": "missing_claim", "customer": "300", "age": 100 + i} for i in range(25)
        ]
        + [{"kind": "unknown_token", "customer": None, "age": 1}],
    }
    page = parse(status_page.render(document))
    assert (page.by_id("ready").attrs["data-ready"], page.by_id("ready").text) == ("true", "ready")
    assert page.by_id("generated").text == "2027-01-15 08:00:00 UTC"
    assert page.by_id("generated").attrs["title"] == "2027-01-15T08:00:00.123Z"
    assert configuration(page) == CONFIG_SHOWN
    assert page.by_id("footer").text == "updated 08:00:00 UTC \u00b7 refreshes every 5 s"
    rows = by_customer(page)
    assert cells(rows["100"]) == ["100", "17", "abcdef012345", "link", "42 s", "in 11 h", "—"]
    assert cells(rows["200"]) == [
        *("200", "3", "0123456789ab", "admin", "3 min", "expired", "expired_claim, 2 h ago")
    ]
    assert cells(rows["300"]) == ["300", "—", "—", "—", "—", "—", "missing_claim, 2 d ago"]
    assert [td.attrs.get("class") for td in rows["200"].find_all("td")] == [
        *("mono id", None, "mono", None, "num", "expired", "violated")
    ]
    assert rows["100"].find_all("td")[6].attrs == {"class": "muted"}
    assert learned(page) == ("refused at 6 h", "accepted up to 11 h")

    # Expiring: the row and its expiry highlighted, the tooltip naming the warning window.
    expiring = rows["400"].find_all("td")[EXPIRY]
    assert (rows["400"].attrs.get("class"), expiring.attrs.get("class")) == ("expiring", "expiring")
    assert expiring.text == "in 36 min" and "claims.warn_before" in expiring.attrs["title"]
    # Refused: worded and styled apart from expired, though the document says expired too.
    refused = rows["500"].find_all("td")[EXPIRY]
    assert (refused.text, refused.attrs.get("class")) == ("refused", "refused")
    assert "refused" in refused.attrs["title"] and "class" not in rows["500"].attrs
    assert cells(rows["500"])[6] == "rejected_claim, 30 s ago"
    assert [c for c, row in rows.items() if "class" in row.attrs] == ["400"]
    titled = [c for c, row in rows.items() if "title" in row.find_all("td")[EXPIRY].attrs]
    assert titled == ["400", "500"]

    recent = page.by_id("recent").find_all("tr")
    assert len(recent) == status_page.RECENT_MAX
    assert cells(recent[0]) == ["1 s ago", "unknown_token", "—"]
    assert cells(recent[1]) == ["1 min ago", "missing_claim", "300"]


def test_the_expiry_reads_refused_then_expired_then_expiring():
    """Whatever combination a document holds, one word and one highlight at most."""
    base = {"customer": "1", "expires_in": 600}
    for flags, shown, css in [
        ({"refused": True, "expired": True, "expiring": True}, "refused", "refused"),
        ({"refused": True, "expires_in": None}, "refused", "refused"),
        ({"expired": True, "expiring": True}, "expired", "expired"),
        ({"expiring": True, "expires_in": -5}, "expired", "expired"),
        ({"expiring": True}, "in 10 min", "expiring"),
        ({"expiring": True, "expires_in": None}, "\u2014", "expiring"),
        ({"expiring": 1, "refused": "yes"}, "in 10 min", None),
    ]:
        (row,) = by_customer(parse(status_page.render({"customers": [base | flags]}))).values()
        cell = row.find_all("td")[EXPIRY]
        assert (cell.text, cell.attrs.get("class")) == (shown, css), flags
        assert row.attrs.get("class") == ("expiring" if css == "expiring" else None), flags
        assert ("title" in cell.attrs) == (css in ("expiring", "refused")), flags


def test_a_document_without_the_new_fields_renders_as_before():
    """An older claimgate's document (no ``expiring``, ``refused``, ``lifetime`` or
    ``config``): its rows read as neither, the lifetime and the configuration as unknown; what
    it has is worded as it always was."""
    current = customer_rows()
    older = [{k: v for k, v in row.items() if k not in NEW_ROW_FIELDS} for row in current]
    page = parse(status_page.render({"customers": older}))
    rows = by_customer(page)
    assert learned(page) == ("\u2014", "\u2014")
    assert configuration(page) == UNKNOWN_CONFIG
    assert all("class" not in row.attrs for row in rows.values())
    assert cells(rows["400"])[EXPIRY] == "in 36 min"  # no longer highlighted
    assert cells(rows["500"])[EXPIRY] == "expired"  # its expired flag still holds
    unflagged = [r["customer"] for r in current if not (r["expiring"] or r["refused"])]
    now = by_customer(parse(status_page.render({"customers": current})))
    assert unflagged and all(rows[c] == now[c] for c in unflagged)


def test_the_claim_lifetime_shows_numbers_only():
    dash = ("\u2014", "\u2014")
    for value, shown in [
        (
            {"shortest_refused_age": 59.9, "longest_accepted_age": 90_000},
            ("refused at 59 s", "accepted up to 1 d"),
        ),
        (
            {"shortest_refused_age": None, "longest_accepted_age": 3600},
            ("\u2014", "accepted up to 1 h"),
        ),
        ({"shortest_refused_age": True, "longest_accepted_age": "6 h"}, dash),
        ({"shortest_refused_age": float("nan"), "longest_accepted_age": float("inf")}, dash),
        ({}, dash),
        ([22_000, 41_000], dash),
        (None, dash),
    ]:
        page = parse(status_page.render({"customers": [], "lifetime": value}))
        assert learned(page) == shown, value


def test_the_configuration_is_shown_after_the_listeners():
    """The fingerprint of the configuration running and when it was loaded, as reported."""
    page = parse(status_page.render(report([])))
    assert configuration(page) == CONFIG_SHOWN
    terms = [dt.text for dt in page.find_all("dl")[0].find_all("dt")]
    assert terms == [
        *("Ready", "Mode", "Listeners", "Configuration"),
        *("Version", "CA expires", "Generated"),
    ]


def test_the_version_and_the_ca_s_expiry_are_shown_as_reported():
    """Text, never markup; a time as every other, a dash without one."""
    document = report([]) | {"version": "0.1.0 <b>rc</b>", "ca_expires_at": 2_100_000_000.5}
    page = parse(status_page.render(document))
    assert page.by_id("version").text == "0.1.0 <b>rc</b>" and page.find_all("b") == []
    expires = page.by_id("ca-expires")
    assert (expires.text, expires.attrs["title"]) == (
        "2036-07-18 13:20:00 UTC",
        "2036-07-18T13:20:00.500Z",
    )
    bare = parse(status_page.render(report([])))
    assert (bare.by_id("version").text, bare.by_id("ca-expires").text) == ("\u2014", "\u2014")


def test_the_configuration_shows_a_fingerprint_and_a_time_only():
    """Anything but 12 lowercase hex digits, or a number of seconds, is a dash: never text
    copied from the document, never markup."""
    fingerprint_only = ("c0ffee123abc, loaded \u2014", "")
    odd = [
        *odd_configs(),
        # What JSON cannot carry, so the browser tests cannot send.
        ({"fingerprint": "c0ffee123abc", "loaded_at": float("nan")}, fingerprint_only),
        ({"fingerprint": "c0ffee123abc", "loaded_at": float("inf")}, fingerprint_only),
        ({"fingerprint": b"c0ffee123abc", "loaded_at": None}, UNKNOWN_CONFIG),
        (("c0ffee123abc", 1_800_000_000), UNKNOWN_CONFIG),
    ]
    for value, shown in odd:
        rendered = status_page.render({"customers": [], "config": value})
        page = parse(rendered)
        assert configuration(page) == shown, value
        assert page.find_all("img") == page.find_all("b") == [], value
        assert rendered.count(b"<script") == 1 and b"onerror" not in rendered, value


def test_every_slot_is_filled_and_the_policy_allows_exactly_the_page_code():
    rendered = status_page.render(report([])).decode()
    assert not re.search(r"\{\{\w+\}\}", rendered)
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in rendered
    # The script's lists are claimgate's, put there by the server: declared once.
    (script,) = re.findall(r"<script>(.*?)</script>", rendered, re.DOTALL)
    declared = dict(re.findall(r"var (KINDS|DECISIONS) = (\[.*?\]);", script))
    assert json.loads(declared["KINDS"]) == list(VIOLATION_KINDS)
    assert json.loads(declared["DECISIONS"]) == list(DECISIONS)
    policy = status_page.CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in policy and "default-src 'none'" in policy
    for tag in ("script", "style"):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", rendered, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
