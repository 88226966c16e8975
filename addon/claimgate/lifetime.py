"""Claim lifetime: where a claim stands, and what the API's answers teach (docs/design.md 2.11).

onOffice will limit a claim's validity without saying by how much. ``claims.ttl`` is
claimgate's guess; the ages at which the API accepts and refuses claims are the evidence,
kept here per process, and the first refusal below the guess is worth telling at once.
"""

import math
from dataclasses import dataclass
from enum import StrEnum

from claimgate.policy import is_expired
from claimgate.store import Claim

SUGGESTION_INTERVAL = 3600.0
"""Seconds between two ``claim_lifetime_observed`` lines of one process."""
SUGGESTED_SHARE = 0.9
"""The TTL suggested: this share of the shortest refused age, for a margin."""


class Standing(StrEnum):
    """Where a customer's freshest claim stands."""

    FRESH = "fresh"
    EXPIRING = "expiring"
    """Within ``claims.warn_before`` of its expiry."""
    EXPIRED = "expired"
    """Past ``claims.ttl``, or refused by the API (a refused claim is expired, not expiring)."""


def standing(claim: Claim, now: float, ttl: float, warn_before: float) -> Standing:
    if claim.refused or is_expired(claim, now, ttl):
        return Standing.EXPIRED
    expiring = claim.timestamp + ttl - now <= warn_before
    return Standing.EXPIRING if expiring else Standing.FRESH


def suggested_ttl(shortest_refused_age: float) -> int:
    """Seconds, whole minutes, at least one: a TTL that ends before the API's refusals."""
    return max(60, math.floor(shortest_refused_age * SUGGESTED_SHARE / 60) * 60)


@dataclass(slots=True)
class Lifetime:
    """The claim ages this process saw the API accept and refuse as outdated (201)."""

    ttl: float
    shortest_refused_age: float | None = None
    longest_accepted_age: float | None = None
    _last_told: float | None = None

    def accepted(self, age: float) -> None:
        if self.longest_accepted_age is None or age > self.longest_accepted_age:
            self.longest_accepted_age = age

    def refused(self, age: float, now: float) -> int | None:
        """Record a refusal at ``age``; the TTL to suggest when it is time to say so.

        That is at the first refusal below ``ttl``, then at most once an interval.
        """
        if self.shortest_refused_age is None or age < self.shortest_refused_age:
            self.shortest_refused_age = age
        if age >= self.ttl:
            return None
        if self._last_told is not None and now - self._last_told < SUGGESTION_INTERVAL:
            return None
        self._last_told = now
        return suggested_ttl(self.shortest_refused_age)

    def report(self) -> dict[str, float | None]:
        """``lifetime`` in ``/status.json``: whole seconds, or None before any evidence."""
        return {
            "shortest_refused_age": _seconds(self.shortest_refused_age),
            "longest_accepted_age": _seconds(self.longest_accepted_age),
        }


def _seconds(age: float | None) -> float | None:
    return None if age is None else round(age)
