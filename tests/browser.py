"""A real headless browser for tests: Debian's Chromium driven by Playwright.

Playwright's wheel brings its driver but no browser, and nothing can be downloaded here
(``playwright install`` would), so the tests use the distribution's Chromium and install it
with apt when a fresh machine (CI) lacks it. Installation is serialised by a file lock, since
parallel test processes would otherwise race on dpkg's own lock, and a failed installation
fails the test: a skipped browser test would hide that the page was never checked.
"""

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_LOCK = Path(tempfile.gettempdir()) / "claimgate-chromium-install.lock"
INSTALL_TIMEOUT = 900.0
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in a container: the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",  # the tests talk to loopback only, whatever the environment says
]


def _apt(*args: str) -> None:
    """Run apt-get non-interactively; raise with its output's tail when it fails."""
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        ["apt-get", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise RuntimeError(
            f"apt-get {' '.join(args)} exited {result.returncode}:\n" + "\n".join(tail)
        )


_install_failure: list[str] = []  # one attempt per test process, not one per test


def ensure_chromium() -> Path:
    """Return Chromium's path, installing Debian's package first if it is missing.

    Fails the calling test (never skips it) when Chromium cannot be installed.
    """
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if not _install_failure:
        with INSTALL_LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing it right now
            try:
                if not os.access(CHROMIUM, os.X_OK):
                    _install()
            except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
                _install_failure.append(str(error))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    if _install_failure:
        pytest.fail(
            f"this test needs Chromium at {CHROMIUM}, and installing Debian's 'chromium' "
            f"package failed: {_install_failure[0]}",
            pytrace=False,
        )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"'apt-get install chromium' succeeded but {CHROMIUM} is missing", pytrace=False
        )
    return CHROMIUM


def _install() -> None:
    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get not found (not a Debian-like system)")
    _apt("update")
    _apt("install", "-y", "--no-install-recommends", "chromium")


def _processes_using(marker: str) -> list[int]:
    """Process ids whose command line mentions ``marker`` (our own user-data directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def _reap(user_data_dir: Path, timeout: float = 5.0) -> None:
    """Make sure no Chromium process of this browser outlives it.

    Only processes started with our own fresh user-data directory are considered, so another
    test's or a person's Chromium is never touched; they are ended by process id.
    """
    deadline = time.monotonic() + timeout
    while (pids := _processes_using(str(user_data_dir))) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def chromium(**context_options: Any) -> Iterator[BrowserContext]:
    """A fresh headless Chromium context (its own profile); closed, and its processes gone,
    on the way out. ``context_options`` go to Playwright's persistent context (e.g.
    ``http_credentials``, ``viewport``)."""
    executable = ensure_chromium()
    with tempfile.TemporaryDirectory(prefix="claimgate-chromium-") as profile:
        user_data_dir = Path(profile)
        try:
            with sync_playwright() as playwright:
                context = playwright.chromium.launch_persistent_context(
                    str(user_data_dir),
                    executable_path=str(executable),
                    headless=True,
                    args=CHROMIUM_ARGS,
                    env={k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
                    **context_options,
                )
                try:
                    yield context
                finally:
                    context.close()
        finally:
            _reap(user_data_dir)
