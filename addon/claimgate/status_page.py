"""The status page's first paint: the ``status.json`` document rendered into ``status.html``.

The page's script only refreshes what is rendered here, so a browser without JavaScript, or
one whose first fetch fails, still shows the data. The markup mirrors the script's
``render`` element for element (the browser tests compare the two); change both together.
Every value is escaped: customer and user ids come from signed links and are hostile text.

The script's constants (the violation kinds and decisions in order, the refresh, the number
of recent violations, the expiry tooltips) are slots too, filled once when this module loads,
so they are declared here only; the Content-Security-Policy hashes the script as filled.
"""

import base64
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from html import escape
from importlib import resources
from typing import Any

from claimgate.policy import Decision, Kind

REFRESH_SECONDS = 5
"""How often the page reloads itself without JavaScript; the script's default is the same."""
RECENT_MAX = 20
DASH = "\u2014"
KINDS = tuple(kind.value for kind in Kind)
DECISIONS = tuple(decision.value for decision in Decision)
_EPOCH = datetime(1970, 1, 1)
_SLOT = re.compile(r"\{\{(\w+)\}\}")
_CONFIG_FINGERPRINT = re.compile(r"[0-9a-f]{12}")

EXPIRING_TITLE = (
    "expires within claims.warn_before: the next service call (a user opening the service) "
    "brings a fresh claim"
)
"""The tooltip of an expiring claim's expiry; the script's is the same."""
REFUSED_TITLE = (
    "the API refused this claim (error 201 or 248): none is injected until a newer service call"
)
"""The tooltip of a refused claim's expiry; the script's is the same."""

TEMPLATE = resources.files("claimgate").joinpath("status.html").read_text("utf-8")


def _script_value(value: object) -> str:
    """``value`` as a JavaScript literal (JSON), never able to end the script early."""
    return json.dumps(value).replace("<", "\\u003c")


_CONSTANTS = {
    "refresh": str(REFRESH_SECONDS),
    "recent_max": str(RECENT_MAX),
    "kinds": _script_value(KINDS),
    "decisions": _script_value(DECISIONS),
    "expiring_title": _script_value(EXPIRING_TITLE),
    "refused_title": _script_value(REFUSED_TITLE),
}
PAGE = _SLOT.sub(lambda slot: _CONSTANTS.get(slot.group(1), slot.group(0)), TEMPLATE)
"""``TEMPLATE`` with its constants filled in: what ``render`` fills with a document."""


def _inline_hash(tag: str) -> str:
    """The CSP source that allows the page's one inline ``<tag>`` and nothing else."""
    (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", PAGE, re.DOTALL)
    return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_inline_hash('script')}; "
    f"style-src {_inline_hash('style')}; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def render(document: Mapping[str, Any]) -> bytes:
    """The page for ``document`` (as ``status.status_report`` builds it), as UTF-8."""
    generated = _utc(document.get("generated_at"))
    shown, iso = _stamp(generated)
    clock = DASH if generated is None else generated.strftime("%H:%M:%S UTC")
    listeners = _mapping(document.get("listeners"))
    config = _mapping(document.get("config"))
    loaded, loaded_iso = _stamp(_utc(config.get("loaded_at")))
    ca_expires, ca_expires_iso = _stamp(_utc(document.get("ca_expires_at")))
    lifetime = _mapping(document.get("lifetime"))
    slots = {
        "ready_state": "true" if document.get("ready") is True else "false",
        "ready": "ready" if document.get("ready") is True else "not ready",
        "mode": _e(_text(document.get("mode"))),
        "listeners": _e(", ".join(f"{name} {addr}" for name, addr in listeners.items()) or DASH),
        "config": _e(f"{_config_fingerprint(config.get('fingerprint'))}, loaded {loaded}"),
        "config_iso": loaded_iso,
        "version": _e(_text(document.get("version"))),
        "ca_expires": ca_expires,
        "ca_expires_iso": ca_expires_iso,
        "generated": shown,
        "generated_iso": iso,
        "customers": _customers(document.get("customers")),
        "refused_at": _observed("refused at", lifetime.get("shortest_refused_age")),
        "accepted_up_to": _observed("accepted up to", lifetime.get("longest_accepted_age")),
        "violations_hour": _counts(KINDS, document.get("violations_last_hour"), "data-kind"),
        "decisions_hour": _counts(DECISIONS, document.get("decisions_last_hour"), "data-decision"),
        "recent": _recent(document.get("recent_violations")),
        "footer": f"updated {clock} \u00b7 refreshes every {REFRESH_SECONDS} s",
    }
    page = _SLOT.sub(lambda slot: slots[slot.group(1)], PAGE)
    # Ids decoded from links may hold lone surrogates (undecodable bytes): shown as U+FFFD.
    return page.encode("utf-8", "xmlcharrefreplace")


def _e(value: str) -> str:
    return escape(value, quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return DASH if value is None or value == "" else str(value)


def _duration(seconds: Any) -> str:
    """``42 s``, ``3 min``, ``2 h``, ``4 d``: coarse on purpose, it is read at a glance."""
    if not _is_number(seconds):
        return DASH
    s = math.floor(max(0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def _ago(seconds: Any) -> str:
    return f"{_duration(seconds)} ago" if _is_number(seconds) else DASH


def _observed(what: str, seconds: Any) -> str:
    """``refused at 6 h``: a claim age the API's answers taught, or a dash before any."""
    return f"{what} {_duration(seconds)}" if _is_number(seconds) else DASH


def _utc(timestamp: Any) -> datetime | None:
    """Whole milliseconds, truncated like JavaScript's ``Date``, so both show the same time."""
    if not _is_number(timestamp):
        return None
    try:
        return _EPOCH + timedelta(milliseconds=math.trunc(timestamp * 1000))
    except OverflowError:
        return None


def _stamp(when: datetime | None) -> tuple[str, str]:
    """``2027-01-15 08:00:00 UTC`` and its ISO form (the tooltip); a dash and none without.
    The date comes from the ISO form: zero-padded to four digits, as JavaScript's is."""
    if when is None:
        return DASH, ""
    iso = when.isoformat(timespec="milliseconds") + "Z"
    return f"{iso[:10]} {when:%H:%M:%S} UTC", iso


def _config_fingerprint(value: Any) -> str:
    """The configuration's fingerprint (``reloading.settings_fingerprint``), or a dash for
    anything but one: 12 lowercase hex digits, nothing around them."""
    return value if isinstance(value, str) and _CONFIG_FINGERPRINT.fullmatch(value) else DASH


def _expiry(customer: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """The expiry cell's text, class and tooltip. Refused outranks expired, which outranks
    expiring; a document without ``refused`` or ``expiring`` (an older claimgate) shows
    neither."""
    if customer.get("refused") is True:
        return "refused", "refused", REFUSED_TITLE
    expires_in = customer.get("expires_in")
    if customer.get("expired") is True or (_is_number(expires_in) and expires_in <= 0):
        return "expired", "expired", None
    shown = f"in {_duration(expires_in)}" if _is_number(expires_in) else DASH
    if customer.get("expiring") is True:
        return shown, "expiring", EXPIRING_TITLE
    return shown, "", None


def _td(text: str, css: str = "", title: str | None = None) -> str:
    attributes = (f' class="{css}"' if css else "") + (
        "" if title is None else f' title="{_e(title)}"'
    )
    return f"<td{attributes}>{_e(text)}</td>"


def _empty_row(columns: int, message: str) -> str:
    return f'<tr class="empty"><td colspan="{columns}">{message}</td></tr>'


def _customers(value: Any) -> str:
    rows = [row for row in value if isinstance(row, Mapping)] if isinstance(value, list) else []
    return "".join(map(_customer_row, rows)) or _empty_row(7, "no customers yet")


def _customer_row(customer: Mapping[str, Any]) -> str:
    customer_id = _text(customer.get("customer"))
    expires, expiry_css, expiry_title = _expiry(customer)
    last = customer.get("last_violation")
    if isinstance(last, Mapping) and last.get("kind"):
        violation = _td(f"{last['kind']}, {_ago(last.get('age'))}", "violated")
    else:
        violation = _td(DASH, "muted")
    cells = [
        _td(customer_id, "mono id", customer_id),
        _td(_text(customer.get("user"))),
        _td(_text(customer.get("claim_fp")), "mono"),
        _td(_text(customer.get("source"))),
        _td(_duration(customer.get("claim_age")), "num"),
        _td(expires, expiry_css, expiry_title),
        violation,
    ]
    row_css = ' class="expiring"' if expiry_css == "expiring" else ""
    return f'<tr data-customer="{_e(customer_id)}"{row_css}>{"".join(cells)}</tr>'


def _counts(known: Iterable[str], value: Any, attribute: str) -> str:
    """Every known name in its order, then any the document adds; zeros are shown muted."""
    values = _mapping(value)
    names = list(known)
    names += [name for name in values if name not in names]
    items = []
    for name in names:
        count = values.get(name)
        count = count if _is_number(count) else 0
        css = ' class="zero"' if count == 0 else ""
        items.append(
            f'<li{css}><span class="label">{_e(name)}</span>'
            f'<span class="n" {attribute}="{_e(name)}">{_e(str(count))}</span></li>'
        )
    return "".join(items)


def _recent(value: Any) -> str:
    """The newest first, at most ``RECENT_MAX``."""
    violations = [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
    violations.sort(key=lambda v: v.get("age") if _is_number(v.get("age")) else 0)
    rows = []
    for violation in violations[:RECENT_MAX]:
        kind, customer = _text(violation.get("kind")), _text(violation.get("customer"))
        cells = _td(_ago(violation.get("age"))) + _td(kind) + _td(customer, "mono id", customer)
        rows.append(f'<tr data-kind="{_e(kind)}">{cells}</tr>')
    return "".join(rows) or _empty_row(3, "none")
