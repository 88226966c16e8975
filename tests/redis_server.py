"""A real ``redis-server`` for tests, and the pytest fixtures that own its lifetime.

The shared store is only proven against the real server, so tests start their own: one
process per ``redis_server`` fixture, on its own free loopback port, with no persistence,
stopped at the end whatever the test's outcome. ``./dev setup`` installs Debian's package
(``./dev test`` runs it first); where it is still missing the test fails naming that step
instead of skipping, since a skipped store test would hide that the store was never proven.

:class:`RedisProcess` is what a server and a sentinel share (tests/redis_sentinel.py starts
both from it). The repository's conftest.py registers these fixtures for every test module.
"""

import atexit
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from claimgate.testing import free_port
from tests.system import ensure_executable, find_executable

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

_running: set["RedisProcess"] = set()


def find_redis_server() -> str | None:
    return find_executable("redis-server")


def ensure_redis_server() -> str:
    return ensure_executable("redis-server")


def config_value(value: str) -> str:
    """``value`` as one token of a Redis config line, whose parser splits on spaces."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RedisProcess:
    """One ``redis-server`` or ``redis-sentinel`` child on loopback, from its own config file.

    The config file is written at the first start and kept: a later start reads it as the
    process last rewrote it (a sentinel rewrites its own, a server its own on CONFIG REWRITE),
    as a real restart would. The port is given on the command line, which wins over the file.
    ``settings`` are config lines appended to the subclass's defaults (a later line wins).
    """

    program: ClassVar[str] = "redis-server"

    def __init__(
        self, executable: str, password: str | None = None, settings: Sequence[str] = ()
    ) -> None:
        self.executable = executable
        self.password = password
        self.settings = tuple(settings)
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix=f"claimgate-{self.program}-"))
        self._config = self.directory / f"{self.program}.conf"
        self._log = self.directory / f"{self.program}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, **options: Any) -> redis.Redis:
        """A plain synchronous client; ``password`` (and ``username``) may replace its own."""
        options.setdefault("password", self.password)
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def probe(self, **options: Any) -> redis.Redis:
        """A client that fails at once (no retries, one-second timeouts): for polling, where
        redis-py's default retries would spend seconds on each refused connection or AUTH."""
        options = {"socket_timeout": 1, "socket_connect_timeout": 1, **options}
        return self.client(retry=Retry(NoBackoff(), 0), **options)

    def defaults(self) -> list[str]:
        """The config lines every process of this kind starts from."""
        lines = [
            "bind 127.0.0.1",
            "protected-mode yes",
            f"dir {config_value(str(self.directory))}",
            "daemonize no",
            'logfile ""',  # standard output, which goes to the log file
        ]
        if self.password is not None:
            lines.append(f"requirepass {config_value(self.password)}")
        return lines

    def start(self) -> None:
        """Start and return once the process answers PING.

        The first start retries on another port when the chosen one was taken meanwhile;
        later starts keep the port, since clients already point at it.
        """
        for attempt in range(3):
            try:
                self._start()
            except RuntimeError:
                if self._started or attempt == 2:
                    raise
                self.choose_ports()
            else:
                self._started = True
                return

    def _start(self) -> None:
        if self.running:
            return
        if not self._config.exists():
            self._config.write_text("\n".join([*self.defaults(), *self.settings, ""]))
        command = [self.executable, str(self._config), *self.arguments()]
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

    def choose_ports(self) -> None:
        """New free ports after a first start found one taken (a subclass may have more)."""
        self.port = free_port()

    def arguments(self) -> list[str]:
        """Command-line settings, which win over the config file: the ports, so that a new
        choice needs no rewrite of a file the process may have rewritten."""
        return ["--port", str(self.port)]

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        with contextlib.closing(self.probe()) as c:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"{self.program} exited {self._process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if c.ping():
                        return
                except redis.ConnectionError as error:  # also a refused AUTH: quoted below
                    last = error
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.program} on port {self.port} did not answer PING ({last!r}):\n"
                        f"{self.log_tail()}"
                    )
                time.sleep(0.005)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM (no persistence, so it exits at once), SIGKILL if it lingers."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the process vanishes mid-traffic, as in a crash."""
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

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP for the block, SIGCONT after: connections stay open and nothing answers,
        as with a server stalled in a long command or a paused VM."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port, empty."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()  # __exit__ will not run: the directory would stay behind
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class RedisServer(RedisProcess):
    """One ``redis-server`` on loopback, no persistence; ``restart`` keeps its port."""

    def __init__(
        self,
        executable: str | None = None,
        password: str | None = None,
        settings: Sequence[str] = (),
    ) -> None:
        super().__init__(executable or ensure_redis_server(), password, settings)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def defaults(self) -> list[str]:
        return [
            *super().defaults(),
            'save ""',
            "appendonly no",
            "loglevel warning",
            "hz 100",  # serverCron handles SIGTERM: stop in ~10 ms, not ~100
        ]


@atexit.register
def _kill_leftovers() -> None:
    """A last net for processes whose owner never got to stop them (an interrupted run)."""
    for process in list(_running):
        process.kill()


class Topology:
    """Several Redis processes started and stopped together: a sentinel or cluster set-up.

    A context manager: ``stop`` ends every process, also when ``start`` fails.
    """

    POLL_INTERVAL = 0.05

    @property
    def processes(self) -> Sequence[RedisProcess]:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _poll(self, condition: Callable[[], bool], timeout: float, failure: str) -> float:
        """Calls ``condition`` until it holds and returns that moment (monotonic); on timeout,
        fails with ``failure``, the last Redis error and the tail of every process's log."""
        deadline = time.monotonic() + timeout
        last: redis.RedisError | None = None
        while True:
            try:
                if condition():
                    return time.monotonic()
            except redis.RedisError as error:  # a node down or still loading: ask again
                last = error
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {process.program} on port {process.port}:\n{process.log_tail()}"
                    for process in self.processes
                )
                raise TimeoutError(f"{failure} within {timeout} s (last error: {last!r})\n{logs}")
            time.sleep(self.POLL_INTERVAL)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_server_executable() -> str:
    """Looked up once per run; when it is missing, every test that needs a server fails."""
    return ensure_redis_server()


@pytest.fixture
def redis_server(redis_server_executable: str) -> Iterator[RedisServer]:
    """A fresh, empty ``redis-server`` for one test, stopped when the test ends."""
    with RedisServer(redis_server_executable) as server:
        yield server
