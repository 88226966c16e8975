"""A real ``redis-server`` for tests, and the pytest fixtures that own its lifetime.

The shared store is only proven against the real server, so tests start their own: one
process per ``redis_server`` fixture, on its own free loopback port, with no persistence,
stopped at the end whatever the test's outcome. ``./dev setup`` installs Debian's package
(``./dev test`` runs it first); where it is still missing the test fails naming that step
instead of skipping, since a skipped store test would hide that the store was never proven.

The repository's conftest.py registers these fixtures for every test module.
"""

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
import redis

from claimgate.testing import free_port

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
KNOWN_PATHS = ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server")

_running: set["RedisServer"] = set()


def find_redis_server() -> str | None:
    """``redis-server`` on PATH or where Debian puts it (PATH may lack the sbin dirs)."""
    found = shutil.which("redis-server")
    if found:
        return found
    return next((path for path in KNOWN_PATHS if os.access(path, os.X_OK)), None)


def ensure_redis_server() -> str:
    """The path of ``redis-server``; fails the test, naming the set-up step, when it is absent."""
    found = find_redis_server()
    if found is None:
        pytest.fail("redis-server is not installed: run ./dev setup", pytrace=False)
    return found


class RedisServer:
    """One ``redis-server`` process on loopback; ``restart`` keeps its port (outage tests)."""

    def __init__(self, executable: str | None = None, password: str | None = None) -> None:
        self.executable = executable or ensure_redis_server()
        self.password = password
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="claimgate-redis-"))
        self._log = self._dir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, **options: Any) -> redis.Redis:
        """A plain synchronous client, to look at what the store really wrote."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **options)

    def start(self) -> None:
        """Start and return once the server answers PING.

        The first start retries on another port when the chosen one was taken meanwhile;
        later starts keep the port, since clients already point at it.
        """
        for attempt in range(3):
            try:
                self._start()
            except RuntimeError:
                if self._started or attempt == 2:
                    raise
                self.port = free_port()
            else:
                self._started = True
                return

    def _start(self) -> None:
        if self.running:
            return
        command = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--dir", str(self._dir),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--hz", "100",  # serverCron handles SIGTERM: stop in ~10 ms, not ~100
        ]  # fmt: skip
        if self.password is not None:
            command += ["--requirepass", self.password]
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        _running.add(self)
        try:
            self._wait_until_answering()
        except BaseException:
            self.kill()
            raise

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with contextlib.closing(self.client(socket_timeout=0.5, socket_connect_timeout=0.5)) as c:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited {self._process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if c.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server did not answer PING:\n{self.log_tail()}")
                time.sleep(0.005)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM (no persistence, so it exits at once), SIGKILL if it lingers."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-traffic, as in a crash."""
        self._end(signal.SIGKILL)

    def _end(self, signum: signal.Signals) -> None:
        process, self._process = self._process, None
        _running.discard(self)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port, empty."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@atexit.register
def _kill_leftovers() -> None:
    """A last net for servers whose owner never got to stop them (an interrupted run)."""
    for server in list(_running):
        server.kill()


@pytest.fixture(scope="session")
def redis_server_executable() -> str:
    """Looked up once per run; when it is missing, every test that needs a server fails."""
    return ensure_redis_server()


@pytest.fixture
def redis_server(redis_server_executable: str) -> Iterator[RedisServer]:
    """A fresh, empty ``redis-server`` for one test, stopped when the test ends."""
    with RedisServer(redis_server_executable) as server:
        yield server
