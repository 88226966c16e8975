"""claimgate.testing.process: the real ``claimgate run`` as a child, started, read and stopped;
a free port; a stop that always reaps.

Every process a test here starts is stopped by that test.
"""

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from claimgate.testing import ClaimgateProcess, free_port, stop_process


def config_file(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "claimgate.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:0"\nca_dir = "{tmp_path / "ca"}"\n'
        f'[admin]\nlisten = "127.0.0.1:0"\n{extra}'
    )
    return config


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[ClaimgateProcess]:
    with ClaimgateProcess(config_file(tmp_path)) as running:
        yield running


def child(code: str) -> subprocess.Popen[str]:
    """A Python child that prints ``ready`` once ``code`` has run, then sleeps."""
    return subprocess.Popen(
        [sys.executable, "-c", f"{code}\nimport time\nprint('ready', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if "=" in entry)


# --- ClaimgateProcess ----------------------------------------------------------------------


def test_start_returns_once_every_listener_is_up(gate: ClaimgateProcess) -> None:
    assert set(gate.listeners) == {"forward", "admin"}
    health = httpx.get(f"http://{gate.listeners['admin']}/healthz", trust_env=False)
    assert health.status_code == 200
    (ready,) = gate.events("claimgate_ready")
    assert ready["listeners"] == gate.listeners
    assert gate.process.poll() is None and gate.pid == gate.process.pid


def test_stop_sends_sigterm_reaps_and_reads_the_output_to_its_end(
    gate: ClaimgateProcess,
) -> None:
    code = gate.stop()

    assert code == 0  # claimgate's own answer to SIGTERM: a clean exit
    assert gate.process.returncode == 0  # reaped
    events = [e["event"] for e in gate.events()]
    assert events.index("claimgate_ready") < events.index("shutdown_started")
    assert len(gate.events()) == len(gate.lines)  # one event per line, every line read
    assert gate.stop() == 0  # again: the same code, nothing sent


def test_wait_for_finds_logged_events_and_filters_them(gate: ClaimgateProcess) -> None:
    ready = gate.wait_for("claimgate_ready")  # logged before the call: still found

    assert gate.wait_for("claimgate_ready", lambda e: "admin" in e["listeners"]) == ready
    with pytest.raises(TimeoutError, match="'claimgate_ready'"):
        gate.wait_for("claimgate_ready", lambda e: False, timeout=0.2)
    with pytest.raises(TimeoutError, match="no 'never_logged' within"):
        gate.wait_for("never_logged", timeout=0.2)


def test_wait_for_gives_up_at_once_when_the_output_has_ended(gate: ClaimgateProcess) -> None:
    gate.stop()

    with pytest.raises(TimeoutError, match="before its output ended"):
        gate.wait_for("never_logged", timeout=600)


def test_the_child_gets_json_logs_a_fault_handler_and_no_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "example.test")
    monkeypatch.setenv("CLAIMGATE_LOG_FORMAT", "console")

    with ClaimgateProcess(config_file(tmp_path), {"CLAIMGATE_TESTING_MARK": "1"}) as gate:
        env = environment(gate.pid)

    assert not [name for name in env if name.upper().endswith("_PROXY")]
    assert env["CLAIMGATE_LOG_FORMAT"] == "json"
    assert env["PYTHONFAULTHANDLER"] == "1"
    assert env["CLAIMGATE_TESTING_MARK"] == "1"


def test_cpus_pin_the_child(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))

    with ClaimgateProcess(config_file(tmp_path), cpus={cpu}) as gate:
        assert os.sched_getaffinity(gate.pid) == {cpu}


def test_a_child_that_does_not_start_is_reaped_and_its_output_quoted(tmp_path: Path) -> None:
    # Two port-0 listeners on one host: claimgate refuses the configuration and exits 2.
    broken = ClaimgateProcess(config_file(tmp_path, '[api]\nlisten = "127.0.0.1:0"\n'))

    with pytest.raises(RuntimeError, match=r"did not start \(exit code 2\)") as refused:
        broken.start()

    assert broken.process.returncode == 2
    (unparsed,) = broken.events("unparsed")  # the error is plain text, not a JSON line
    assert unparsed["line"].startswith("claimgate: ")
    assert unparsed["line"] in str(refused.value)


def test_start_twice_or_stop_before_start_is_refused(gate: ClaimgateProcess) -> None:
    with pytest.raises(RuntimeError, match="started already"):
        gate.start()
    with pytest.raises(RuntimeError, match="not started"):
        ClaimgateProcess(gate.config).stop()


# --- stop_process and free_port ------------------------------------------------------------


def test_stop_process_ends_a_child_with_sigterm() -> None:
    process = child("")
    assert process.stdout is not None and process.stdout.readline() == "ready\n"

    assert stop_process(process) == -signal.SIGTERM
    process.stdout.close()


def test_stop_process_kills_a_child_that_ignores_sigterm() -> None:
    process = child("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)")
    assert process.stdout is not None and process.stdout.readline() == "ready\n"

    assert stop_process(process, timeout=0.5) == -signal.SIGKILL
    assert process.returncode == -signal.SIGKILL  # reaped
    process.stdout.close()


def test_stop_process_leaves_an_exited_child_alone() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()

    assert stop_process(process) == 3


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_free_port_is_free_on_its_host(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        port = free_port(host)
    except OSError:
        pytest.skip(f"no {host} on this machine")

    with socket.socket(family) as nobody, pytest.raises(ConnectionRefusedError):
        nobody.connect((host, port))  # nothing listens there
    with socket.socket(family) as server:
        server.bind((host, port))  # and a server can take it
