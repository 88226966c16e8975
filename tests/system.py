"""The system programs the suite runs, which ``./dev setup`` installs (``./dev test`` runs it).

A test that needs one fails naming that step when it is missing, never skips: a skipped
test would hide that a recipe or a store was never proven on this machine.
"""

import os
import shutil

import pytest

KNOWN_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")


def find_executable(name: str) -> str | None:
    """``name`` on PATH or where Debian puts it (PATH may lack the sbin dirs)."""
    found = shutil.which(name)
    if found:
        return found
    paths = (os.path.join(directory, name) for directory in KNOWN_DIRS)
    return next((path for path in paths if os.access(path, os.X_OK)), None)


def ensure_executable(name: str) -> str:
    """The path of ``name``; fails the test, naming the set-up step, when it is absent."""
    found = find_executable(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run ./dev setup", pytrace=False)
    return found
