"""What happened lately, for the status page: bounded, in memory, per process.

Prometheus keeps the long history; this keeps only what a person looking at the status page
needs right now: violation and decision counts over the last hour, the most recent
violations, and the last violation of each customer. Counts are kept per minute, so memory
does not grow with traffic (a busy sidecar sees hundreds of requests a second); the other
structures have fixed size bounds.
"""

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW = 3600.0
"""Seconds the status page counts over (to the minute)."""
BUCKET = 60.0
MAX_CUSTOMERS = 10_000
"""Customers whose last violation is remembered (least recently violated leave first)."""
RECENT = 20


@dataclass(frozen=True, slots=True)
class LastViolation:
    kind: str
    at: float


class MinuteCounts:
    """Counts per minute over a sliding hour: at most 61 small counters, whatever the load."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: deque[tuple[int, Counter[str]]] = deque()

    def add(self, key: str) -> None:
        minute = int(self._clock() // BUCKET)
        if not self._buckets or self._buckets[-1][0] != minute:
            self._buckets.append((minute, Counter()))
            self._expire(minute)
        self._buckets[-1][1][key] += 1

    def last_hour(self) -> Counter[str]:
        self._expire(int(self._clock() // BUCKET))
        total: Counter[str] = Counter()
        for _, counts in self._buckets:
            total.update(counts)
        return total

    def _expire(self, minute: int) -> None:
        oldest = minute - int(WINDOW // BUCKET)
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()


class Activity:
    """Recent violations and decisions, counted over a sliding hour."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._violations = MinuteCounts(clock)
        self._decisions = MinuteCounts(clock)
        self._recent: deque[tuple[float, str, str | None]] = deque(maxlen=RECENT)
        self._last_by_customer: OrderedDict[str, LastViolation] = OrderedDict()

    def violation(self, kind: str, customer: str | None) -> None:
        now = self._clock()
        self._violations.add(kind)
        self._recent.append((now, kind, customer))
        if customer is not None:
            self._last_by_customer[customer] = LastViolation(kind, now)
            self._last_by_customer.move_to_end(customer)
            if len(self._last_by_customer) > MAX_CUSTOMERS:
                self._last_by_customer.popitem(last=False)

    def decision(self, decision: str) -> None:
        self._decisions.add(decision)

    def last_violation(self, customer: str) -> LastViolation | None:
        return self._last_by_customer.get(customer)

    def customers_with_violations(self) -> list[str]:
        return list(self._last_by_customer)

    def violations_last_hour(self) -> Counter[str]:
        return self._violations.last_hour()

    def decisions_last_hour(self) -> Counter[str]:
        return self._decisions.last_hour()

    def recent_violations(self) -> list[tuple[float, str, str | None]]:
        """The newest violations first (within the last hour)."""
        cutoff = self._clock() - WINDOW
        return [event for event in reversed(self._recent) if event[0] >= cutoff]
