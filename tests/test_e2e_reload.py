"""End to end, claimgate changes without a restart (docs/design.md 3.6): the real process
reloads its file on SIGHUP and, watching, on a Kubernetes-style symlink swap; a bad file or a
restart-only change is rejected whole; secrets rotate without a gap.
"""

import os
import re
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from claimgate.fingerprint import fingerprint
from claimgate.testing import ApiDouble, make_claim, make_secret
from tests.support import (
    ADMIN_TOKEN,
    PROVIDER_SECRET,
    SECRETS_ENV,
    App,
    Customer,
    Sidecar,
    World,
    admin_get,
    api_request,
    capture_section,
    forward_proxy,
    run_world,
    wait_until,
    write_config,
)

RELOAD_WITHIN = 10.0
"""Seconds a test waits for a reload's log line (bounded; the time taken is printed)."""
SWAP_SEEN_AFTER = 5.0
"""A request sent this long after a swap of the watched file sees it (issue 15)."""


@pytest.fixture
def customer() -> Customer:
    return Customer("91000")


@pytest.fixture
def backends(customer) -> Iterator[tuple[App, ApiDouble]]:
    with App() as app, ApiDouble({customer.token: customer.secret}) as api:
        yield app, api


def config_for(tmp: Path, app: App, api: ApiDouble, mode: str = "observe", **sections) -> dict:
    return {
        "proxy": forward_proxy(tmp, api),
        "capture": capture_section(app),
        "policy": {"mode": mode},
        "admin": {"token": "env:TEST_ADMIN_TOKEN"},
        **sections,
    }


def start(tmp: Path, config: dict, backends, customer, env=None, **start: Any) -> Iterator[World]:
    app, api = backends
    return run_world(tmp, config, {**SECRETS_ENV, **(env or {})}, app, api, [customer], **start)


def reload_by_signal(world: World, config: dict | None = None) -> dict[str, Any]:
    """Rewrite the file (if ``config``), send SIGHUP, return the reload's log line."""
    if config is not None:
        write_config(world.sidecar.config, config)
    seen = len(reloads(world))
    sent = time.monotonic()
    world.sidecar.process.send_signal(signal.SIGHUP)
    line = wait_until(lambda: len(reloads(world)) > seen, RELOAD_WITHIN)
    print(f"reload logged {line - sent:.3f} s after SIGHUP")
    return reloads(world)[seen]


def reloads(world: World) -> list[dict[str, Any]]:
    return [
        e for e in world.sidecar.events() if e["event"] in ("config_reloaded", "config_rejected")
    ]


def decisions(world: World) -> list[str]:
    return [e["decision"] for e in world.sidecar.events("api_request")]


def reload_counts(world: World) -> dict[str, float]:
    text = admin_get(world, "/metrics").text
    found = re.findall(r'^claimgate_config_reloads_total\{result="(\w+)"\} (\S+)$', text, re.M)
    return {result: float(value) for result, value in found}


def new_client(world: World) -> httpx.Client:
    """A client of its own: its requests come on a new connection."""
    trusted = ssl.create_default_context(cafile=str(world.sidecar.ca_path))
    return httpx.Client(proxy=world.sidecar.proxy_url, verify=trusted, trust_env=False)


def blocked(response: httpx.Response) -> bool:
    return response.headers.get("X-Claimgate-Violation") == "missing_claim"


@pytest.fixture
def observing(tmp_path, backends, customer) -> Iterator[World]:
    """A world in ``observe`` whose customer's token is known and which holds no claim:
    observe forwards its requests, enforce blocks them (``missing_claim``)."""
    app, api = backends
    worlds = start(tmp_path, config_for(tmp_path, app, api, mode="observe"), backends, customer)
    world = next(worlds)
    try:
        world.activate(customer)
        yield world
    finally:
        worlds.close()


def test_sighup_turns_observe_into_enforce_for_the_next_request_not_the_one_in_flight(
    tmp_path, backends, customer, observing
):
    app, api = backends
    world = observing
    _, response = world.call_api(api_request(customer))
    assert not blocked(response)
    api.delay = 1.0
    answers: list[httpx.Response] = []
    in_flight = threading.Thread(
        target=lambda: answers.append(world.client.post(api.url, content=api_request(customer)))
    )
    in_flight.start()
    api.wait_for_requests(2)  # decided under observe, now waiting for the API
    reloaded = reload_by_signal(world, config_for(tmp_path, app, api, mode="enforce"))
    in_flight.join(10)
    api.delay = 0.0
    assert reloaded["event"] == "config_reloaded"
    assert (reloaded["changed"], reloaded["trigger"]) == (["policy.mode"], "sighup")
    assert answers and answers[0].status_code == 200 and not blocked(answers[0])

    kept_alive = world.client.post(api.url, content=api_request(customer))
    with new_client(world) as fresh:
        new_connection = fresh.post(api.url, content=api_request(customer))
    assert blocked(kept_alive) and blocked(new_connection)
    assert len(api.requests) == 2  # the blocked ones never reached the API
    wait_until(lambda: len(decisions(world)) == 4, RELOAD_WITHIN)  # lines come after answers
    assert decisions(world) == ["observed", "observed", "blocked", "blocked"]
    assert reload_counts(world) == {"applied": 1.0, "rejected": 0.0}
    status = admin_get(world, "/status.json").json()
    assert status["mode"] == "enforce"
    assert status["config"]["fingerprint"] == reloaded["config_fp"]


def test_a_bad_value_is_rejected_naming_the_key_and_the_running_settings_keep_working(
    tmp_path, backends, customer, observing
):
    app, api = backends
    config = config_for(tmp_path, app, api, mode="observe")
    world = observing
    rejected = reload_by_signal(world, config_for(tmp_path, app, api, mode="block"))
    assert rejected["event"] == "config_rejected"
    assert rejected["key"] == "policy.mode" and "block" not in rejected["problem"]
    assert rejected["level"] == "warning"
    _, response = world.call_api(api_request(customer))
    assert not blocked(response)  # still observe
    assert reload_counts(world) == {"applied": 0.0, "rejected": 1.0}
    assert reload_by_signal(world, config)["changed"] == []  # the old file again: no change


def test_a_changed_listener_is_refused_naming_the_key_and_nothing_of_its_file_applies(
    tmp_path, backends, customer, observing
):
    app, api = backends
    world = observing
    moved = config_for(tmp_path, app, api, mode="enforce")
    moved["proxy"]["listen"] = "127.0.0.3:0"
    rejected = reload_by_signal(world, moved)
    assert (rejected["event"], rejected["key"]) == ("config_rejected", "proxy.listen")
    assert "needs a restart" in rejected["problem"]
    _, response = world.call_api(api_request(customer))
    assert not blocked(response)  # the mode of that file was not applied either
    assert admin_get(world, "/status.json").json()["mode"] == "observe"


def logged_at(line: dict[str, Any]) -> float:
    """A log line's own time (its ISO ``timestamp``), as Unix seconds."""
    return datetime.fromisoformat(line["timestamp"]).timestamp()


def kubelet_volume(directory: Path, files: dict[str, str], version: int) -> None:
    """Publish ``files`` into ``directory`` as kubelet updates a ConfigMap volume: a new
    timestamped directory, then an atomic rename of the ``..data`` symlink onto it; each
    file's own name is a symlink through ``..data`` that never changes."""
    target = directory / f"..2026_12_02_{version:02d}"
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text)
    (directory / "..data_tmp").symlink_to(target.name)
    os.replace(directory / "..data_tmp", directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


def test_watching_applies_each_symlink_swap_of_a_mounted_configmap(tmp_path, backends, customer):
    app, api = backends
    volume = tmp_path / "config"
    volume.mkdir()
    path = volume / "claimgate.toml"

    def document(mode: str) -> str:
        config = config_for(tmp_path, app, api, mode=mode, config={"watch": True})
        write_config(tmp_path / "rendered.toml", config)
        return (tmp_path / "rendered.toml").read_text()

    kubelet_volume(volume, {"claimgate.toml": document("observe")}, 1)
    config = config_for(tmp_path, app, api, mode="observe", config={"watch": True})
    worlds = start(tmp_path, config, backends, customer, config_path=path)
    world = next(worlds)
    try:
        world.activate(customer)
        for version, mode in ((2, "enforce"), (3, "observe")):
            kubelet_volume(volume, {"claimgate.toml": document(mode)}, version)
            swapped, swapped_at = time.monotonic(), time.time()
            time.sleep(SWAP_SEEN_AFTER)
            response = world.client.post(api.url, content=api_request(customer))
            assert blocked(response) == (mode == "enforce")
            line = reloads(world)[-1]
            assert (line["event"], line["trigger"]) == ("config_reloaded", "watch")
            assert line["changed"] == ["policy.mode"]
            logged = logged_at(line) - swapped_at
            seen = time.monotonic() - swapped
            print(
                f"swap {version}: reloaded {logged:.2f} s after; a request at {seen:.1f} s saw it"
            )
        assert len(reloads(world)) == 2  # one reload per swap, none while nothing changed
    finally:
        worlds.close()


def test_a_rotated_admin_token_file_is_honoured_and_the_old_one_refused(
    tmp_path, backends, customer
):
    app, api = backends
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    config = config_for(tmp_path, app, api, admin={"token": f"file:{token_file}"})
    worlds = start(tmp_path, config, backends, customer, arguments=["--watch"])
    world = next(worlds)
    try:
        before = admin_get(world, "/status.json").json()["config"]
        rotated = make_secret()
        world.secrets.add(rotated)
        token_file.write_text(rotated + "\n")  # in place, no signal: watching sees it
        line = wait_until(lambda: len(reloads(world)) == 1, RELOAD_WITHIN)
        assert line and reloads(world)[0]["changed"] == ["admin.token"]
        assert admin_get(world, "/status.json").status_code == 401  # ADMIN_TOKEN, the old one
        after = httpx.get(
            f"http://{world.sidecar.listeners['admin']}/status.json",
            headers={"Authorization": f"Bearer {rotated}"},
            trust_env=False,
        )
        assert after.status_code == 200
        after = after.json()["config"]
        assert after["fingerprint"] != before["fingerprint"]  # a rotated secret changes it
        assert after["loaded_at"] > before["loaded_at"]
    finally:
        world.secrets.discard(ADMIN_TOKEN)  # checked for leaks below all the same
        worlds.close()


def test_a_link_signed_with_either_listed_provider_secret_is_stored_during_a_rotation(
    tmp_path, backends, customer
):
    app, api = backends
    config = config_for(tmp_path, app, api)
    new_secret = make_secret()
    worlds = start(tmp_path, config, backends, customer, env={"TEST_PS_NEW": new_secret})
    world = next(worlds)
    world.secrets.add(new_secret)
    try:
        both = config_for(tmp_path, app, api)
        both["capture"]["provider_secret"] = ["env:TEST_PS", "env:TEST_PS_NEW"]
        assert reload_by_signal(world, both)["changed"] == ["capture.provider_secret"]
        for secret in (PROVIDER_SECRET, new_secret):
            claim = make_claim()
            assert world.service_call(customer, claim, secret=secret).status_code == 200
            captured = world.sidecar.wait_for(
                "claim_captured", lambda e, c=claim: e["claim_fp"] == fingerprint(c)
            )
            assert captured["provider_secret_fp"] == fingerprint(secret)
        only_new = config_for(tmp_path, app, api)
        only_new["capture"]["provider_secret"] = "env:TEST_PS_NEW"
        assert reload_by_signal(world, only_new)["event"] == "config_reloaded"
        world.service_call(customer, make_claim())  # signed with the old secret
        refused = world.sidecar.wait_for("violation", lambda e: e["kind"] == "bad_signature")
        assert refused["kind"] == "bad_signature"
    finally:
        worlds.close()


def catches_sighup(pid: int) -> bool:
    """Whether the process has a handler for SIGHUP (signal 1: bit 0 of SigCgt) yet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M)
    return caught is not None and int(caught[1], 16) & 1 == 1


def test_sighup_never_ends_the_process_from_start_up_on(tmp_path, backends, customer):
    app, api = backends
    config = config_for(tmp_path, app, api)
    path = tmp_path / "claimgate.toml"
    write_config(path, config)
    sidecar = Sidecar(path, SECRETS_ENV, Path(config["proxy"]["ca_dir"]) / "mitmproxy-ca-cert.pem")
    early: list[float] = []
    started = threading.Event()

    def hang_up_while_it_starts() -> None:
        for _ in range(20_000):  # bounded: about 20 s at most
            if started.is_set():
                return
            try:
                pid = sidecar.pid
            except RuntimeError:  # not spawned yet
                time.sleep(0.001)
                continue
            if catches_sighup(pid) and len(early) < 50:
                os.kill(pid, signal.SIGHUP)
                early.append(time.monotonic())
            time.sleep(0.001)

    hanging_up = threading.Thread(target=hang_up_while_it_starts, daemon=True)
    hanging_up.start()
    try:
        sidecar.start()
        started.set()
        hanging_up.join(5)
        assert early, "no SIGHUP reached it while it started"
        first = sidecar.wait_for("config_reloaded", timeout=RELOAD_WITHIN)
        assert first["trigger"] == "sighup"  # the early ones were kept for once it served
        for _ in range(20):
            sidecar.process.send_signal(signal.SIGHUP)
        wait_until(lambda: len(sidecar.events("config_reloaded")) >= 2, RELOAD_WITHIN)
        assert sidecar.process.poll() is None
        ready = httpx.get(f"http://{sidecar.listeners['admin']}/readyz", trust_env=False)
        assert ready.status_code == 200
        print(
            f"{len(early)} SIGHUPs while starting, {len(sidecar.events('config_reloaded'))} reloads"
        )
    finally:
        started.set()
        code = sidecar.stop()
    assert code == 0
    output = "".join(sidecar.lines)
    assert PROVIDER_SECRET not in output and ADMIN_TOKEN not in output
