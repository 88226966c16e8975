"""Status-document rows and values crafted for the edge cases the page must word well
(status.json).

Shared by the server-rendered page's tests and the browser's, so both read the same rows.
"""

from typing import Any

NEW_ROW_FIELDS = ("expiring", "refused")
"""Per-customer fields an older claimgate's document lacks; the page shows them as absent."""


def customer_rows(missing_since: int = 12) -> list[dict[str, Any]]:
    """A fresh claim, an expired one, a customer without one (violated ``missing_since``
    seconds ago), one expiring within ``claims.warn_before``, and one the API refused."""
    return [
        {
            "customer": "100",
            "user": "17",
            "claim_fp": "abcdef012345",
            "source": "link",
            "claim_age": 42,
            "expires_in": 43158,
            "expired": False,
            "expiring": False,
            "refused": False,
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
            "expiring": False,
            "refused": False,
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
            "expiring": False,
            "refused": False,
            "last_violation": {"kind": "missing_claim", "age": missing_since},
        },
        {
            "customer": "400",
            "user": "8",
            "claim_fp": "456789abcdef",
            "source": "link",
            "claim_age": 41_000,
            "expires_in": 2200,
            "expired": False,
            "expiring": True,
            "refused": False,
            "last_violation": None,
        },
        {
            # Refused by the API while its TTL still ran: expired, never expiring.
            "customer": "500",
            "user": "9",
            "claim_fp": "89abcdef0123",
            "source": "link",
            "claim_age": 22_000,
            "expires_in": 21_200,
            "expired": True,
            "expiring": False,
            "refused": True,
            "last_violation": {"kind": "rejected_claim", "age": 30},
        },
    ]


def lifetime() -> dict[str, Any]:
    """What the API taught: a claim refused at about 6 h, others accepted up to about 11 h."""
    return {"shortest_refused_age": 22_000, "longest_accepted_age": 41_000}


CONFIG_FINGERPRINT = "c0ffee123abc"
LOADED_AT = 1_799_998_800.25
"""2027-01-15 07:40:00.250 UTC: twenty minutes before the documents' ``generated_at``."""
LOADED_ISO = "2027-01-15T07:40:00.250Z"
CONFIG_SHOWN = (f"{CONFIG_FINGERPRINT}, loaded 2027-01-15 07:40:00 UTC", LOADED_ISO)
"""What the page shows of ``config()``: its text and its tooltip."""
UNKNOWN_CONFIG = ("\u2014, loaded \u2014", "")
"""What the page shows of a document without a configuration (an older claimgate's)."""
MARKUP = '<img src="x" onerror="window.__injected = 1"><b id="injected">c0ffee123abc</b>'
"""A value that would run script if the page ever rendered a document's value as markup."""


def config() -> dict[str, Any]:
    """The configuration running, as ``status_report`` is given it."""
    return {"fingerprint": CONFIG_FINGERPRINT, "loaded_at": LOADED_AT}


def odd_configs() -> list[tuple[Any, tuple[str, str]]]:
    """``config`` values a document should never hold, each with the text and tooltip the
    page shows for it: only 12 lowercase hex digits are a fingerprint, only a number a time;
    anything else is a dash. JSON values only (what the browser is sent is JSON); the last
    few are the edges of the times both the server and the script can show."""
    fingerprint_only = (f"{CONFIG_FINGERPRINT}, loaded \u2014", "")
    time_only = ("\u2014, loaded 2027-01-15 07:40:00 UTC", LOADED_ISO)
    at = {"loaded_at": LOADED_AT}
    fingerprinted = {"fingerprint": CONFIG_FINGERPRINT}

    def edge(iso: str) -> tuple[str, str]:
        return f"{CONFIG_FINGERPRINT}, loaded {iso[:10]} {iso[11:19]} UTC", iso + "Z"

    return [
        ({"fingerprint": MARKUP, "loaded_at": MARKUP}, UNKNOWN_CONFIG),
        ({"fingerprint": CONFIG_FINGERPRINT * 1000, "loaded_at": "9" * 1000}, UNKNOWN_CONFIG),
        ({"fingerprint": CONFIG_FINGERPRINT.upper()} | at, time_only),
        ({"fingerprint": CONFIG_FINGERPRINT[:-1]} | at, time_only),
        ({"fingerprint": CONFIG_FINGERPRINT + "\n"} | at, time_only),
        ({"fingerprint": " " + CONFIG_FINGERPRINT} | at, time_only),
        ({"fingerprint": 123456789012} | at, time_only),
        ({"fingerprint": [CONFIG_FINGERPRINT]} | at, time_only),
        ({"fingerprint": {"fingerprint": CONFIG_FINGERPRINT}} | at, time_only),
        ({"fingerprint": True, "loaded_at": None}, UNKNOWN_CONFIG),
        (fingerprinted | {"loaded_at": str(LOADED_AT)}, fingerprint_only),
        (fingerprinted | {"loaded_at": True}, fingerprint_only),
        (fingerprinted | {"loaded_at": [LOADED_AT]}, fingerprint_only),
        (fingerprinted, fingerprint_only),
        ({}, UNKNOWN_CONFIG),
        ([CONFIG_FINGERPRINT, LOADED_AT], UNKNOWN_CONFIG),
        (CONFIG_FINGERPRINT, UNKNOWN_CONFIG),
        (None, UNKNOWN_CONFIG),
        # The times both renderers show: from the year 1 to the year 9999, nothing past.
        (fingerprinted | {"loaded_at": 253_402_300_799.5}, edge("9999-12-31T23:59:59.500")),
        (fingerprinted | {"loaded_at": 253_402_300_800}, fingerprint_only),
        (fingerprinted | {"loaded_at": 1e300}, fingerprint_only),
        (fingerprinted | {"loaded_at": -62_135_596_800}, edge("0001-01-01T00:00:00.000")),
        (fingerprinted | {"loaded_at": -62_135_596_800.5}, fingerprint_only),
    ]
