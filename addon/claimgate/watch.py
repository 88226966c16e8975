"""Noticing that the configuration changed on disk (``config.watch``, docs/design.md 3.6).

Kubernetes updates a mounted ConfigMap or Secret by swapping a ``..data`` symlink: no signal
announces it, and the path the configuration names stays a symlink that never changes
itself. So the watcher reads what the paths lead to: once a second it reads the file and
every ``file:`` secret (each bounded) and calls back when the contents differ from the last
time. A few small reads a second cost nothing; a content digest, unlike modification times,
sees a swap whatever the timestamps of the new files say.
"""

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

WATCH_INTERVAL = 1.0
"""Seconds between two looks: a swap is applied within about this much, plus the reload."""
MAX_BYTES = 1 << 20
"""Read of one file at most: far above any configuration or secret."""


def contents_digest(paths: Sequence[Path]) -> bytes:
    """One digest of what every path holds now; a path that cannot be read counts by its
    error, so that a file appearing or vanishing is a change too."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode("utf-8", "surrogateescape") + b"\0")
        try:
            with path.open("rb") as file:
                digest.update(file.read(MAX_BYTES))
        except OSError as error:
            digest.update(f"\0unreadable:{error.errno}".encode())
        digest.update(b"\0\0")
    return digest.digest()


class Watcher:
    """Calls ``changed`` when what ``paths()`` names holds something new.

    ``paths`` is asked every time: a reload may add or drop a secret file. A file that
    changes while ``changed`` runs is seen at the next look; a rejected file is not reloaded
    again every second, only once it changes again.
    """

    def __init__(
        self,
        paths: Callable[[], Sequence[Path]],
        changed: Callable[[], Awaitable[None]],
        interval: float = WATCH_INTERVAL,
    ) -> None:
        self.paths = paths
        self.changed = changed
        self.interval = interval

    async def run(self) -> None:
        paths = self.paths()
        seen = {path: contents_digest([path]) for path in paths}
        while True:
            await asyncio.sleep(self.interval)
            now = {path: contents_digest([path]) for path in paths}
            if now != seen:
                seen = now
                await self.changed()
            if (named := self.paths()) != paths:
                # A path named anew is looked at from now on, its first look no change; one
                # still named keeps what was seen before the call, so a change during it counts.
                paths = named
                seen = {path: seen.get(path) or contents_digest([path]) for path in paths}
