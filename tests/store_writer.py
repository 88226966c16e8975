"""One of several processes writing claims for the same customer through ``RedisStore`` at once.

Run as ``python tests/store_writer.py URL PREFIX SEED COUNT BASE``: it connects, prints ``ready``,
waits for ``go`` on standard input (so the writers start together and really overlap), puts
COUNT claims for customer ``shared`` with timestamps ``BASE + 0 .. BASE + COUNT - 1`` in an
order shuffled by SEED, one after another, and prints one JSON line: every put's timestamp
and return value, the monotonic start and end of the writes, and any store event.
It exits 1 when the store reported an error, 2 when ``go`` did not come.
"""

import asyncio
import json
import random
import sys
import time

from claimgate.store import Claim, Operation
from claimgate.store.redis import RedisStore

CUSTOMER = "shared"

GO_TIMEOUT = 30.0


class Events:
    """Collects what the store reports; a healthy server should give nothing here."""

    def __init__(self) -> None:
        self.reported: list[str] = []

    def store_timed(self, operation: Operation, seconds: float) -> None:
        """Time taken is no trouble: not reported."""

    def store_error(self, operation: str, error: BaseException) -> None:
        self.reported.append(f"store_error {operation} {type(error).__name__}")

    def store_unavailable(self, reason: str) -> None:
        self.reported.append(f"store_unavailable {reason}")

    def store_recovered(self, written: int) -> None:
        self.reported.append(f"store_recovered {written}")


def claim_value(seed: int, timestamp: int) -> str:
    return f"claim-{seed}-{timestamp}"


async def write(url: str, prefix: str, seed: int, count: int, base: int) -> int:
    events = Events()
    store = RedisStore(url, password=None, prefix=prefix, ttl=600, max_entries=1000, events=events)
    await store.start()
    try:
        print("ready", flush=True)
        go = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), GO_TIMEOUT)
        if go.strip() != "go":
            return 2
        timestamps = list(range(base, base + count))
        random.Random(seed).shuffle(timestamps)
        results: list[tuple[int, bool]] = []
        started = time.monotonic()
        for timestamp in timestamps:
            kept = await store.put(
                Claim(CUSTOMER, f"user-{seed}", claim_value(seed, timestamp), timestamp)
            )
            results.append((timestamp, kept))
        ended = time.monotonic()
    finally:
        await store.close()
    report = {"results": results, "started": started, "ended": ended, "events": events.reported}
    print(json.dumps(report), flush=True)
    return 1 if events.reported else 0


def main() -> int:
    url, prefix, seed, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # Both writers get the same recent base, so they also race on equal timestamps (a claim
    # past its retention would not be stored at all).
    base = int(sys.argv[5]) if len(sys.argv) > 5 else int(time.time())
    try:
        return asyncio.run(write(url, prefix, seed, count, base))
    except TimeoutError:
        return 2


if __name__ == "__main__":
    sys.exit(main())
