"""What happened lately, for the status page: bounded, in memory, per process.

Prometheus keeps the long history; this keeps only what a person looking at the status page
needs right now: violation and decision counts over the last hour, the most recent
violations, and the last violation of each customer. Every structure has a size bound, so a
flood of violations cannot grow memory.
"""

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

WINDOW = 3600.0
"""Seconds the status page counts over."""
MAX_EVENTS = 100_000
"""Events kept for the hourly counts; beyond this the oldest are dropped (counts undercount)."""
MAX_CUSTOMERS = 10_000
"""Customers whose last violation is remembered (least recently violated leave first)."""
RECENT = 20


@dataclass(frozen=True, slots=True)
class LastViolation:
    kind: str
    at: float


class Activity:
    """Recent violations and decisions, counted over a sliding hour."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._violations: deque[tuple[float, str, str | None]] = deque(maxlen=MAX_EVENTS)
        self._decisions: deque[tuple[float, str]] = deque(maxlen=MAX_EVENTS)
        self._last_by_customer: OrderedDict[str, LastViolation] = OrderedDict()

    def violation(self, kind: str, customer: str | None) -> None:
        now = self._clock()
        self._violations.append((now, kind, customer))
        if customer is not None:
            self._last_by_customer[customer] = LastViolation(kind, now)
            self._last_by_customer.move_to_end(customer)
            if len(self._last_by_customer) > MAX_CUSTOMERS:
                self._last_by_customer.popitem(last=False)

    def decision(self, decision: str) -> None:
        self._decisions.append((self._clock(), decision))

    def last_violation(self, customer: str) -> LastViolation | None:
        return self._last_by_customer.get(customer)

    def customers_with_violations(self) -> list[str]:
        return list(self._last_by_customer)

    def violations_last_hour(self) -> Counter[str]:
        self._expire()
        return Counter(kind for _, kind, _ in self._violations)

    def decisions_last_hour(self) -> Counter[str]:
        self._expire()
        return Counter(decision for _, decision in self._decisions)

    def recent_violations(self) -> list[tuple[float, str, str | None]]:
        """The newest violations first."""
        self._expire()
        return list(islice(reversed(self._violations), RECENT))

    def _expire(self) -> None:
        cutoff = self._clock() - WINDOW
        for events in (self._violations, self._decisions):
            while events and events[0][0] < cutoff:
                events.popleft()
