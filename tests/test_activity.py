from claimgate.activity import MAX_CUSTOMERS, RECENT, WINDOW, Activity


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


def test_counts_cover_the_last_hour_only():
    clock = Clock()
    activity = Activity(clock)
    activity.violation("missing_claim", "1")
    activity.decision("passed")
    clock.now += WINDOW - 1
    activity.violation("missing_claim", "2")
    activity.decision("injected")
    assert activity.violations_last_hour()["missing_claim"] == 2
    clock.now += 2
    assert activity.violations_last_hour()["missing_claim"] == 1
    assert activity.decisions_last_hour() == {"injected": 1}


def test_last_violation_per_customer_and_recent_newest_first():
    clock = Clock()
    activity = Activity(clock)
    for index in range(RECENT + 5):
        clock.now += 1
        activity.violation("bad_signature" if index % 2 else "hmac_v1", str(index % 3))
    activity.violation("unknown_token", None)
    recent = activity.recent_violations()
    assert len(recent) == RECENT
    assert recent[0][1:] == ("unknown_token", None)
    assert activity.last_violation("0").kind == "hmac_v1"
    assert activity.last_violation("nobody") is None


def test_customers_remembered_are_bounded():
    activity = Activity(Clock())
    for index in range(MAX_CUSTOMERS + 10):
        activity.violation("missing_claim", str(index))
    remembered = activity.customers_with_violations()
    assert len(remembered) == MAX_CUSTOMERS
    assert "0" not in remembered and str(MAX_CUSTOMERS + 9) in remembered
