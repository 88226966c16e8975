"""What the status page and ``GET /claims/<id>`` show: per customer, ages and fingerprints.

Pure: built from the store's claims and the recent activity. Never a claim, a token or a
secret: claims appear as fingerprints. The customer list is capped, so a store with 100,000
customers still gives a page a browser can render; the newest activity comes first.
"""

from collections.abc import Mapping
from typing import Any

from claimgate.activity import Activity
from claimgate.fingerprint import fingerprint
from claimgate.lifetime import Lifetime, Standing, standing
from claimgate.policy import Decision, Kind, claim_age
from claimgate.store import Claim

MAX_ROWS = 500
ROW_FIELDS = (
    "customer",
    "user",
    "claim_fp",
    "source",
    "claim_age",
    "expires_in",
    "expired",
    "expiring",
    "refused",
)
"""What a status-page row shows of ``claim_report``."""
FLAGS = frozenset({"expired", "expiring", "refused"})
CONFIG_FIELDS = ("fingerprint", "loaded_at")
"""What the status document says of the configuration running (``reloading.Loaded``)."""


def claim_report(claim: Claim, now: float, ttl: float, warn_before: float = 0.0) -> dict[str, Any]:
    """One customer's claim, as the admin API shows it (docs/design.md 2.11 for its standing)."""
    held = standing(claim, now, ttl, warn_before)
    return {
        "customer": claim.customer_web_id,
        "user": claim.user_id,
        "claim_fp": fingerprint(claim.claim),
        "source": claim.source,
        "call_timestamp": claim.timestamp,
        "claim_age": round(claim_age(claim, now)),
        "expires_at": claim.timestamp + ttl,
        "expires_in": round(claim.timestamp + ttl - now),
        "expired": held is Standing.EXPIRED,
        "expiring": held is Standing.EXPIRING,
        "refused": claim.refused,
    }


def user_report(claim: Claim, now: float, ttl: float) -> dict[str, Any]:
    """One user's freshest claim, in ``GET /claims/<id>``'s ``users`` (docs/design.md 2.12)."""
    return {
        "user": claim.user_id,
        "claim_fp": fingerprint(claim.claim),
        "call_timestamp": claim.timestamp,
        "age": round(claim_age(claim, now)),
        "expires_in": round(claim.timestamp + ttl - now),
        "refused": claim.refused,
    }


def status_report(
    *,
    claims: list[Claim],
    activity: Activity,
    listeners: dict[str, str],
    mode: str,
    ready: bool,
    ttl: float,
    now: float,
    warn_before: float = 0.0,
    lifetime: Lifetime | None = None,
    config: Mapping[str, Any] | None = None,
    version: str | None = None,
    ca_expires_at: float | None = None,
) -> dict[str, Any]:
    """The document behind the status page (``GET /status.json``).

    ``config`` is the configuration running (its ``fingerprint`` and ``loaded_at``, Unix
    seconds); without it, both are null. ``version`` is claimgate's, ``ca_expires_at`` when
    the interception CA expires (Unix seconds); either may be null.
    """
    rows: dict[str, dict[str, Any]] = {}
    for claim in claims:
        report = claim_report(claim, now, ttl, warn_before)
        rows[claim.customer_web_id] = {key: report[key] for key in ROW_FIELDS}
    for customer in activity.customers_with_violations():
        rows.setdefault(customer, _without_claim(customer))
    for customer, row in rows.items():
        last = activity.last_violation(customer)
        row["last_violation"] = (
            None if last is None else {"kind": last.kind, "age": round(now - last.at)}
        )
    ordered = sorted(rows.values(), key=lambda row: _recency(row))[:MAX_ROWS]
    violations = activity.violations_last_hour()
    decisions = activity.decisions_last_hour()
    return {
        "generated_at": now,
        "mode": mode,
        "ready": ready,
        "listeners": listeners,
        "config": {key: (config or {}).get(key) for key in CONFIG_FIELDS},
        "version": version,
        "ca_expires_at": ca_expires_at,
        "lifetime": (lifetime or Lifetime(ttl)).report(),
        "customers_total": len(rows),
        "customers": ordered,
        "violations_last_hour": {kind.value: violations.get(kind.value, 0) for kind in Kind},
        "decisions_last_hour": {d.value: decisions.get(d.value, 0) for d in Decision},
        "recent_violations": [
            {"kind": kind, "customer": customer, "age": round(now - at)}
            for at, kind, customer in activity.recent_violations()
        ],
    }


def _without_claim(customer: str) -> dict[str, Any]:
    """The row of a customer seen only in violations: nothing known, nothing flagged."""
    row: dict[str, Any] = {key: False if key in FLAGS else None for key in ROW_FIELDS}
    row["customer"] = customer
    return row


def _recency(row: dict[str, Any]) -> float:
    """Sort key: the most recently active customers first."""
    ages = [row["claim_age"]]
    if row["last_violation"] is not None:
        ages.append(row["last_violation"]["age"])
    known = [age for age in ages if age is not None]
    return min(known) if known else float("inf")
