"""``claimgate run`` as a child process, and what goes with one: a free port and a clean stop.

The demo, the end-to-end tests and the benchmarks run the real command, not the addon
in-process, so that they see what production sees: its listeners, its answer to SIGTERM
(docs/design.md 3.1) and its JSON log lines (docs/design.md 3.5). This is the one way they
start it, read it and stop it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO

STARTUP_TIMEOUT = 30.0
"""Seconds ``claimgate run`` may take to log ``claimgate_ready`` (mitmproxy's start-up, a slow
shared machine)."""
STOP_TIMEOUT = 15.0
"""Seconds a process may take to exit on SIGTERM before it is killed."""
_OUTPUT_TAIL = 50  # lines of output quoted when claimgate does not start
_EVENTS_QUOTED = 40  # names of the last events quoted when an awaited one does not come


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listened on a moment ago.

    For a server that must be told its port in advance, or one that must be absent. Another
    process may take the port in between; where a server can bind port 0 and report its
    address (claimgate's ``claimgate_ready`` does), prefer that.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, SIGKILL if it has not exited after ``timeout`` seconds, and reap it.

    Returns the exit code (negative: the signal that ended it). Waiting after the kill
    without a bound is deliberate: SIGKILL cannot be ignored, and an unreaped child would
    outlive the test as a zombie.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class ClaimgateProcess:
    """``claimgate run --config CONFIG`` as a child process, and every line it writes.

    ``env`` is added to this process's environment, less every ``*_PROXY`` variable (the
    child's own upstream connections must not go through the machine's proxy), with JSON
    logs and ``PYTHONFAULTHANDLER`` (a crash below Python still leaves a stack in the
    output). ``cpus``, when given, pins the child to those CPUs, so that a benchmark keeps
    its load off them.

    Its stdout and stderr are read on a thread as they come (the child never blocks on a
    full pipe) into :attr:`lines`; :meth:`events` has them parsed, a line that is not a JSON
    object as an event named ``unparsed`` with the ``line``. Use it as a context manager, or
    call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        config: Path,
        env: Mapping[str, str] | None = None,
        *,
        cpus: Collection[int] | None = None,
        arguments: Sequence[str] = (),
    ) -> None:
        self.config = config
        self._env = dict(env or {})
        self._arguments = tuple(arguments)
        """Given to ``claimgate run`` after ``--config``, e.g. ``--watch``."""
        self._cpus = set(cpus) if cpus else None
        self.listeners: dict[str, str] = {}
        """Listener name -> ``host:port``, as ``claimgate_ready`` reported them."""
        self.lines: list[str] = []
        """Every line of output so far, appended to as it comes."""
        # The reader thread appends to lines and sets _closed; callers parse lines into
        # _events up to _parsed. All under _output, which wakes wait_for on each new line.
        self._output = threading.Condition()
        self._closed = False
        self._events: list[dict[str, Any]] = []
        self._parsed = 0
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Self:
        """Start the child and return once it logged ``claimgate_ready``.

        Raises ``RuntimeError``, quoting the end of its output, when it does not within
        ``timeout`` seconds; the child is stopped then.
        """
        if self._process is not None:
            raise RuntimeError("this claimgate was started already")
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
        env |= {"CLAIMGATE_LOG_FORMAT": "json", "PYTHONFAULTHANDLER": "1", **self._env}
        cpus = self._cpus
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "claimgate",
                "run",
                "--config",
                str(self.config),
                *self._arguments,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            encoding="utf-8",
            errors="replace",
            env=env,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        assert process.stdout is not None
        self._process = process
        self._reader = threading.Thread(
            target=self._read,
            args=(process.stdout,),
            name=f"claimgate-output:{process.pid}",
            daemon=True,
        )
        self._reader.start()
        try:
            ready = self.wait_for("claimgate_ready", timeout=timeout)
        except TimeoutError:
            code = self.stop()
            tail = "".join(self.lines[-_OUTPUT_TAIL:])
            raise RuntimeError(f"claimgate did not start (exit code {code}):\n{tail}") from None
        except BaseException:
            self.stop()
            raise
        self.listeners = dict(ready["listeners"])
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, SIGKILL after ``timeout`` seconds, reap; then read the output's end.

        Returns the exit code. Once it returns, :attr:`lines` holds everything the child
        wrote. Calling it again returns the same code.
        """
        process = self.process
        code = stop_process(process, timeout)
        if self._reader is not None:
            self._reader.join(timeout)  # bounded: a grandchild could hold the pipe open
            if not self._reader.is_alive() and process.stdout is not None:
                process.stdout.close()
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def process(self) -> subprocess.Popen[str]:
        """The child (to signal it or read ``/proc``), once started."""
        if self._process is None:
            raise RuntimeError("claimgate is not started; call start() or use a with block")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """Every event logged so far, oldest first (only those named ``event``, if given)."""
        with self._output:
            self._parse()
            return [e for e in self._events if event is None or e.get("event") == event]

    def wait_for(
        self,
        event: str,
        where: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """The first event named ``event`` (and matching ``where``), logged or to come.

        Raises ``TimeoutError`` when there is none after ``timeout`` seconds, or at once when
        the child has closed its output (exited) without logging it.
        """
        deadline = time.monotonic() + timeout
        checked = 0
        with self._output:
            while True:
                self._parse()
                for logged in self._events[checked:]:
                    if logged.get("event") == event and (where is None or where(logged)):
                        return logged
                checked = len(self._events)
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    break
                self._output.wait_for(lambda: len(self.lines) > self._parsed or self._closed, left)
            seen = [e.get("event") for e in self._events[-_EVENTS_QUOTED:]]
        ended = "before its output ended" if self._closed else f"within {timeout} s"
        raise TimeoutError(f"claimgate logged no {event!r} {ended}; its last events: {seen}")

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            with self._output:
                self.lines.append(line)
                self._output.notify_all()
        with self._output:
            self._closed = True
            self._output.notify_all()

    def _parse(self) -> None:
        """Parse the lines not parsed yet into ``_events`` (the caller holds ``_output``)."""
        for line in self.lines[self._parsed :]:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            self._events.append(
                event if isinstance(event, dict) else {"event": "unparsed", "line": line}
            )
        self._parsed = len(self._events)
