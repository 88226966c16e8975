"""The budget of log lines for what strangers provoke (``claimgate.throttle``)."""

from claimgate.throttle import LineBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_past_the_budget_of_a_second_are_counted_not_written():
    clock = Clock()
    budget = LineBudget(per_second=3, clock=clock)
    assert [budget.admit() for _ in range(5)] == [True, True, True, False, False]
    assert budget.take_suppressed() == 2
    assert budget.take_suppressed() == 0


def test_each_second_has_its_own_budget():
    clock = Clock()
    budget = LineBudget(per_second=2, clock=clock)
    assert [budget.admit() for _ in range(3)] == [True, True, False]
    clock.now += 1.0
    assert [budget.admit() for _ in range(3)] == [True, True, False]
    assert budget.take_suppressed() == 2
