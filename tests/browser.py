"""A real headless browser for tests: Debian's Chromium driven by Playwright.

Playwright's wheel brings its driver but no browser, and nothing can be downloaded here
(``playwright install`` would), so the tests use the distribution's Chromium, which
``./dev setup`` installs (``./dev test`` runs it first). Where it is missing the test fails
naming that step: a skipped browser test would hide that the page was never checked.
"""

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
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


def ensure_chromium() -> Path:
    """Chromium's path; fails the calling test (never skips it) when it is not installed."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run ./dev setup", pytrace=False)
    return CHROMIUM


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
