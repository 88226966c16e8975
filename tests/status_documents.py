"""Status-document rows crafted for the edge cases the page must word well (status.json).

Shared by the server-rendered page's tests and the browser's, so both read the same rows.
"""

from typing import Any


def customer_rows(missing_since: int = 12) -> list[dict[str, Any]]:
    """A fresh claim, an expired one, and a customer without one (violated ``missing_since``
    seconds ago)."""
    return [
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
            "last_violation": {"kind": "missing_claim", "age": missing_since},
        },
    ]
