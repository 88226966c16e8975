"""Where a claim stands, and what the API's refusals teach about the claim lifetime."""

from hypothesis import given
from hypothesis import strategies as st

from claimgate.lifetime import SUGGESTION_INTERVAL, Lifetime, Standing, standing, suggested_ttl
from claimgate.store import Claim

NOW = 1_800_000_000
TTL, WARN = 3600.0, 600.0


def aged(age: int, refused: bool = False) -> Claim:
    return Claim("21312", "17", "c", NOW - age, refused=refused)


def test_a_claim_is_fresh_then_expiring_then_expired():
    assert standing(aged(0), NOW, TTL, WARN) is Standing.FRESH
    assert standing(aged(int(TTL - WARN) - 1), NOW, TTL, WARN) is Standing.FRESH
    assert standing(aged(int(TTL - WARN)), NOW, TTL, WARN) is Standing.EXPIRING
    assert standing(aged(int(TTL) + 1), NOW, TTL, WARN) is Standing.EXPIRED


def test_a_refused_claim_is_expired_not_expiring_however_young():
    assert standing(aged(0, refused=True), NOW, TTL, WARN) is Standing.EXPIRED
    assert standing(aged(int(TTL - 10), refused=True), NOW, TTL, WARN) is Standing.EXPIRED


@given(st.floats(min_value=0, max_value=10 * 86400))
def test_the_suggested_ttl_is_whole_minutes_before_the_refusal(age):
    suggested = suggested_ttl(age)
    assert suggested % 60 == 0 and suggested >= 60
    assert suggested <= max(60, age)


def test_the_first_refusal_below_the_ttl_is_told_at_once_then_at_most_hourly():
    lifetime = Lifetime(ttl=12 * 3600)
    assert lifetime.refused(13 * 3600, NOW) is None  # at or past the TTL: no news
    assert lifetime.refused(6 * 3600, NOW) == suggested_ttl(6 * 3600)
    assert lifetime.refused(5 * 3600, NOW + 60) is None  # within the hour
    assert lifetime.refused(5 * 3600, NOW + SUGGESTION_INTERVAL) == suggested_ttl(5 * 3600)
    assert lifetime.report()["shortest_refused_age"] == 5 * 3600


def test_the_report_keeps_the_extremes_and_is_null_before_evidence():
    lifetime = Lifetime(ttl=TTL)
    assert lifetime.report() == {"shortest_refused_age": None, "longest_accepted_age": None}
    for age in (100.4, 900.0, 300.0):
        lifetime.accepted(age)
    for age in (5000.0, 4000.2, 4500.0):
        lifetime.refused(age, NOW)
    assert lifetime.report() == {"shortest_refused_age": 4000, "longest_accepted_age": 900}
