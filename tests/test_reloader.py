"""Reloads while the sidecar serves: one at a time, applied or rejected, and reported
(docs/design.md 3.6)."""

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from claimgate.activity import Activity
from claimgate.metrics import Metrics
from claimgate.monitor import Monitor
from claimgate.policy import Mode
from claimgate.reloader import Reloader
from claimgate.reloading import settings_fingerprint
from claimgate.settings import Settings, load_settings

COUNTER = "claimgate_config_reloads_total"
ADMIN_TOKEN = "admin-token-VALUE-never-shown"
CONFIG = """\
[proxy]
listen = "127.0.0.1:18080"
ca_dir = "{ca}"
[policy]
mode = "inject"
[admin]
token = "file:{token}"
"""


class Sidecar:
    """A configuration file, the settings it started on, and what a reload applied."""

    def __init__(self, tmp_path: Path, environ: dict[str, str] | None = None) -> None:
        self.path = tmp_path / "claimgate.toml"
        self.token = tmp_path / "admin-token"
        self.token.write_text(ADMIN_TOKEN)
        self.text = CONFIG.format(ca=tmp_path / "ca", token=self.token)
        self.path.write_text(self.text)
        self.environ = environ or {}
        self.started = load_settings(self.path, self.environ)
        self.applied: list[Settings] = []
        self.on_apply: Callable[[Settings], None] = lambda settings: None
        self.monitor = Monitor(Metrics(), Activity())
        self.reloader = Reloader(self.path, self.environ, self.started, self.apply, self.monitor)

    def apply(self, settings: Settings) -> None:
        self.on_apply(settings)
        self.applied.append(settings)

    def edit(self, old: str, new: str) -> None:
        assert old in self.text, old
        self.text = self.text.replace(old, new, 1)
        self.path.write_text(self.text)

    def reloads(self, result: str) -> float:
        for family in text_string_to_metric_families(self.monitor.metrics.render().decode()):
            for sample in family.samples:
                if (sample.name, sample.labels) == (COUNTER, {"result": result}):
                    return sample.value
        raise AssertionError(result)


@pytest.fixture
def sidecar(tmp_path: Path) -> Sidecar:
    return Sidecar(tmp_path)


def watched(sidecar: Sidecar) -> set[Path]:
    """The watched paths, after checking that the file comes first and nothing twice."""
    files = sidecar.reloader.files()
    assert files[0] == sidecar.path and len(set(files)) == len(files)
    return set(files)


def events(logs: list[dict], name: str) -> list[dict]:
    return [line for line in logs if line["event"] == name]


async def test_a_reload_applies_a_changed_mode(sidecar):
    sidecar.edit('mode = "inject"', 'mode = "observe"')
    with capture_logs() as logs:
        await sidecar.reloader.reload("sighup")
    (new,) = sidecar.applied
    assert new.policy.mode is Mode.OBSERVE and sidecar.reloader.settings is new
    (line,) = events(logs, "config_reloaded")
    assert line["changed"] == ["policy.mode"] and line["trigger"] == "sighup"
    assert line["config_fp"] == settings_fingerprint(new)
    assert (sidecar.reloads("applied"), sidecar.reloads("rejected")) == (1, 0)


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ('listen = "127.0.0.1:18080"', 'listen = "127.0.0.1:18090"', "proxy.listen", "restart"),
        ('mode = "inject"', f'mode = "{ADMIN_TOKEN}"', "policy.mode", "expected one of"),
        ("[admin]", "[admin]\nshutdown_grace = 3\n[admin]", None, ""),
    ],
    ids=["restart_only", "bad_value", "not_toml"],
)
async def test_a_rejected_file_keeps_the_running_settings(sidecar, old, new, key, problem):
    sidecar.edit(old, new)
    with capture_logs() as logs:
        await sidecar.reloader.reload("watch")
    assert sidecar.reloader.settings is sidecar.started and sidecar.applied == []
    (line,) = events(logs, "config_rejected")
    assert line["key"] == (key or str(sidecar.path))  # a file that is no TOML: the file
    assert problem in line["problem"] and line["trigger"] == "watch"
    assert ADMIN_TOKEN not in repr(logs)
    assert (sidecar.reloads("applied"), sidecar.reloads("rejected")) == (0, 1)


async def test_a_failing_apply_is_logged_and_the_next_reload_works(sidecar):
    def fail_once(settings: Settings) -> None:
        sidecar.on_apply = lambda settings: None
        raise RuntimeError("the proxy could not take it")

    sidecar.on_apply = fail_once
    sidecar.edit('mode = "inject"', 'mode = "enforce"')
    with capture_logs() as logs:
        await sidecar.reloader.reload("sighup")  # does not raise
    (line,) = events(logs, "internal_error")
    assert line["trigger"] == "sighup" and line["log_level"] == "error"
    assert sidecar.reloader.settings is sidecar.started
    with capture_logs() as logs:
        await sidecar.reloader.reload("sighup")
    assert sidecar.reloader.settings.policy.mode is Mode.ENFORCE
    (line,) = events(logs, "config_reloaded")
    assert line["changed"] == ["policy.mode"]


def test_the_watched_files_are_the_config_and_its_file_secrets(tmp_path):
    provider = tmp_path / "provider-secret"
    provider.write_text("provider")
    sidecar = Sidecar(tmp_path, {"CLAIMGATE_CAPTURE_PROVIDER_SECRET": f"file:{provider}"})
    assert watched(sidecar) == {sidecar.path, sidecar.token, provider}
    assert Reloader(None, {}, Settings(), sidecar.apply, sidecar.monitor).files() == ()


async def test_a_reload_naming_a_new_file_secret_watches_it(sidecar, tmp_path):
    secret = tmp_path / "customer-secret"
    secret.write_text("customer")
    sidecar.edit(
        "[admin]", f'[[customers]]\ncustomer_web_id = "1"\ntoken = "file:{secret}"\n[admin]'
    )
    await sidecar.reloader.reload("sighup")
    assert len(sidecar.applied) == 1
    assert watched(sidecar) == {sidecar.path, secret, sidecar.token}


async def test_a_file_secret_not_there_yet_is_watched_for(sidecar, tmp_path):
    secret = tmp_path / "customer-secret"  # the Secret volume is updated after the ConfigMap
    sidecar.edit(
        "[admin]", f'[[customers]]\ncustomer_web_id = "1"\ntoken = "file:{secret}"\n[admin]'
    )
    await sidecar.reloader.reload("watch")
    assert sidecar.reloads("rejected") == 1
    assert secret in sidecar.reloader.files()


async def settled() -> None:
    """Until every task but this test's has finished (a bounded number of turns)."""
    for _ in range(10_000):
        if asyncio.all_tasks() == {asyncio.current_task()}:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("reload tasks still running")


async def test_a_burst_of_requests_reloads_at_most_twice(sidecar):
    sidecar.edit('mode = "inject"', 'mode = "observe"')
    for _ in range(50):
        sidecar.reloader.request("sighup")
    await settled()
    assert 1 <= len(sidecar.applied) <= 2
    assert sidecar.reloader.settings.policy.mode is Mode.OBSERVE


async def test_requests_during_a_reload_wait_as_one_that_reads_the_newest_file(sidecar):
    def meanwhile(settings: Settings) -> None:  # runs inside the first reload
        sidecar.on_apply = lambda settings: None
        sidecar.edit('mode = "observe"', 'mode = "enforce"')
        for _ in range(50):
            sidecar.reloader.request("sighup")

    sidecar.on_apply = meanwhile
    sidecar.edit('mode = "inject"', 'mode = "observe"')
    sidecar.reloader.request("sighup")
    await settled()
    assert [settings.policy.mode for settings in sidecar.applied] == [Mode.OBSERVE, Mode.ENFORCE]
    assert sidecar.reloader.settings.policy.mode is Mode.ENFORCE
