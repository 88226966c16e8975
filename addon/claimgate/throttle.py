"""A budget of log lines per second for what strangers provoke at will (pure).

Refused links and refused request heads are logged so that operators see an attack, but the
attacker decides how many there are: without a budget, a thousand forged links a second
write a thousand lines a second. Past the budget, lines are only counted, and the count is
reported in one line; the metrics still count every refusal.
"""

import time
from collections.abc import Callable

REFUSAL_LINES_PER_SECOND = 10


class LineBudget:
    """At most ``per_second`` lines in each second of ``clock``; the rest are counted."""

    def __init__(
        self,
        per_second: int = REFUSAL_LINES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self._clock = clock
        self._second = -1
        self._used = 0
        self._suppressed = 0

    def admit(self) -> bool:
        """True when this line may be written; False when it is only counted."""
        second = int(self._clock())
        if second != self._second:
            self._second, self._used = second, 0
        if self._used < self.per_second:
            self._used += 1
            return True
        self._suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """Lines counted instead of written since the last call."""
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
