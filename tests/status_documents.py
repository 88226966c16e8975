"""Status-document rows crafted for the edge cases the page must word well (status.json).

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
