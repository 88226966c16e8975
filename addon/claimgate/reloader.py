"""Reloads while the sidecar serves (docs/design.md 3.6): when they run, one at a time, and
what they report.

``reloading`` decides whether a file may replace the running settings; this runs that
decision on SIGHUP and on a watched change (``watch.Watcher``), hands the settings it
allows to ``apply`` (which changes every part at once, on the event loop), and reports
``config_reloaded`` or ``config_rejected``. Signals may come in bursts: at most one reload
runs and one more waits, which then reads the newest file.
"""

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path

from claimgate import reloading
from claimgate.monitor import Monitor
from claimgate.settings import ConfigError, Settings, file_references
from claimgate.telemetry import get_logger

log = get_logger()


class Reloader:
    def __init__(
        self,
        path: Path | None,
        environ: Mapping[str, str],
        settings: Settings,
        apply: Callable[[Settings], None],
        monitor: Monitor,
        adjust: Callable[[Settings], Settings] = lambda settings: settings,
    ) -> None:
        self.path = path
        self.environ = environ
        self.settings = settings
        self.apply = apply
        self.monitor = monitor
        self.adjust = adjust
        """What the command line set at start-up (``--watch``), applied to every reload."""
        self._references = _references(path, environ, ())
        self._lock = asyncio.Lock()
        self._waiting = False
        self._tasks: set[asyncio.Task[None]] = set()

    def files(self) -> tuple[Path, ...]:
        """What watching reads: the file and the ``file:`` secrets it names."""
        return ((self.path,) if self.path is not None else ()) + self._references

    def request(self, trigger: str) -> None:
        """Reload soon (from a signal handler); nothing more if one is already waiting."""
        if self._waiting:
            return
        self._waiting = True
        task = asyncio.get_running_loop().create_task(self.reload(trigger))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, trigger: str) -> None:
        """Read the file again and apply it, or keep the running settings and say why."""
        self._waiting = True
        async with self._lock:
            self._waiting = False
            try:
                await self._reload(trigger)
            except Exception:  # a reload must never end the sidecar
                log.exception("internal_error", during="config_reload", trigger=trigger)

    async def _reload(self, trigger: str) -> None:
        result, self._references = await asyncio.to_thread(self._read)
        if isinstance(result, reloading.Rejected):
            self.monitor.config_rejected(result.key, result.problem, trigger)
            return
        self.apply(result.settings)
        self.settings = result.settings
        fingerprint = reloading.settings_fingerprint(result.settings)
        self.monitor.config_reloaded(result.changed, fingerprint, trigger)

    def _read(self) -> tuple[reloading.Applied | reloading.Rejected, tuple[Path, ...]]:
        """The file's verdict and what it names, read off the event loop. What it names is
        what to watch, applied or not: a rejected file may wait for a secret file still to
        come (a Secret volume updated after the ConfigMap)."""
        result = reloading.reload(self.path, self.environ, self.settings, self.adjust)
        return result, _references(self.path, self.environ, self._references)


def _references(
    path: Path | None, environ: Mapping[str, str], known: tuple[Path, ...]
) -> tuple[Path, ...]:
    try:
        return file_references(path, environ)
    except ConfigError:  # the file went away since it was read: watch what it named
        return known
