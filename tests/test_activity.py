from claimgate.activity import BUCKET, MAX_CUSTOMERS, RECENT, WINDOW, Activity


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
    clock.now += WINDOW - BUCKET
    activity.violation("missing_claim", "2")
    activity.decision("injected")
    assert activity.violations_last_hour()["missing_claim"] == 2
    clock.now += 2 * BUCKET
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


def test_memory_does_not_grow_with_traffic():
    clock = Clock()
    activity = Activity(clock)
    for _ in range(20_000):
        clock.now += 0.5  # 10,000 s of steady traffic
        activity.decision("injected")
        activity.violation("missing_claim", None)
    assert len(activity._decisions._buckets) <= WINDOW / BUCKET + 1
    per_hour = WINDOW / 0.5
    per_bucket = BUCKET / 0.5  # counted to the minute: one bucket more or less
    assert abs(sum(activity.decisions_last_hour().values()) - per_hour) <= per_bucket
