"""``claimgate demo`` runs the whole path by itself and leaves nothing running."""

import os
import re
import subprocess
import sys
from pathlib import Path


def demo_processes() -> list[str]:
    """Command lines of live processes that belong to a demo (its temp dir is in them)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "claimgate-demo-" in cmdline:
                found.append(cmdline)
    return found


def test_demo_shows_the_claim_injected_and_exits_clean():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMGATE_")}
    result = subprocess.run(
        [sys.executable, "-m", "claimgate", "demo"],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "learned that API token" in out and "stored claim" in out
    fingerprints = re.findall(r"extendedclaim = ([0-9a-f]{12})…, ([0-9a-f]{12})…", out)
    assert fingerprints and fingerprints[0][0] == fingerprints[0][1]
    assert f"stored claim {fingerprints[0][0]}…" in out
    assert '"decision": "injected"' in out and "answered errorcode 0" in out
    assert "apiClaim=" not in out and "signature=" not in out
    assert demo_processes() == []
