"""Whether a reloaded configuration may replace the running one (docs/design.md 3.6)."""

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from claimgate.fingerprint import fingerprint
from claimgate.policy import Mode
from claimgate.reloading import (
    Applied,
    Loaded,
    Rejected,
    plan,
    reload,
    reloads,
    settings_fingerprint,
)
from claimgate.settings import LogLevel, Settings, load_settings

ADMIN_TOKEN = "admin-token-VALUE-never-shown"
CUSTOMER_TOKEN = "customer-token-VALUE-never-shown"
ENVIRON = {"CUSTOMER_TOKEN": CUSTOMER_TOKEN}
CONFIG = """\
[proxy]
listen = "127.0.0.1:18080"
ca_dir = "{ca}"
[claims]
ttl = "12h"
[policy]
mode = "inject"
[[customers]]
customer_web_id = "21312"
token = "env:CUSTOMER_TOKEN"
[admin]
listen = "127.0.0.1:18082"
token = "file:{token}"
[log]
level = "info"
"""


class Config:
    """A configuration file in ``tmp_path`` and the settings it started with."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "claimgate.toml"
        self.token = tmp_path / "admin-token"
        self.token.write_text(ADMIN_TOKEN + "\n")
        self.text = CONFIG.format(ca=tmp_path / "ca", token=self.token)
        self.path.write_text(self.text)
        self.running = load_settings(self.path, ENVIRON)

    def edit(self, old: str, new: str) -> None:
        assert old in self.text, old
        self.text = self.text.replace(old, new, 1)
        self.path.write_text(self.text)

    def reload(self, environ: dict[str, str] = ENVIRON) -> Applied | Rejected:
        return reload(self.path, environ, self.running)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(tmp_path)


def test_an_unchanged_file_applies_with_nothing_changed(config):
    assert config.reload() == Applied(config.running, ())


RELOADABLE_EDITS = [
    ('mode = "inject"', 'mode = "observe"', "policy.mode"),
    ('level = "info"', 'level = "debug"', "log.level"),
    ('ttl = "12h"', 'ttl = "2h"', "claims.ttl"),
    ('customer_web_id = "21312"', 'customer_web_id = "4711"', "customers"),
    ('level = "info"', 'level = "info"\nformat = "json"', "log.format"),
]


@pytest.mark.parametrize(("old", "new", "dotted"), RELOADABLE_EDITS)
def test_a_reloadable_change_is_applied_and_named(config, old, new, dotted):
    config.edit(old, new)
    result = config.reload()
    assert result == Applied(load_settings(config.path, ENVIRON), (dotted,))


def test_a_rotated_file_secret_is_a_change_of_its_key(config):
    config.token.write_text("the-new-admin-token\n")
    result = config.reload()
    assert isinstance(result, Applied) and result.changed == ("admin.token",)
    assert result.settings.admin.token.reveal() == "the-new-admin-token"


def test_several_changes_are_named_in_the_order_the_keys_are_declared(config):
    config.edit('level = "info"', 'level = "warning"')
    config.edit('mode = "inject"', 'mode = "enforce"')
    config.edit('ttl = "12h"', 'ttl = "1h"')
    config.edit('customer_web_id = "21312"', 'customer_web_id = "9"')
    config.token.write_text("rotated")
    result = config.reload()
    assert isinstance(result, Applied)
    assert result.settings.policy.mode is Mode.ENFORCE
    keys = ("claims.ttl", "policy.mode", "admin.token", "log.level")
    assert tuple(name for name in result.changed if name != "customers") == keys
    assert result.changed.count("customers") == 1


def test_customers_are_named_where_they_are_declared(config):
    config.edit('mode = "inject"', 'mode = "enforce"')
    config.edit('customer_web_id = "21312"', 'customer_web_id = "9"')
    config.token.write_text("rotated")
    assert config.reload().changed == ("policy.mode", "customers", "admin.token")


RESTART_EDITS = [
    ('listen = "127.0.0.1:18080"', 'listen = "127.0.0.1:18090"', "proxy.listen"),
    ('listen = "127.0.0.1:18082"', 'listen = "127.0.0.1:18092"', "admin.listen"),
    ('ca_dir = "', 'ca_dir = "/elsewhere', "proxy.ca_dir"),
    ('ttl = "12h"', 'ttl = "12h"\nstore = "redis://127.0.0.1:6379/0"', "claims.store"),
    ('level = "info"\n', 'level = "info"\n[config]\nwatch = true\n', "config.watch"),
]


@pytest.mark.parametrize("with_reloadable", [False, True], ids=["alone", "with_mode"])
@pytest.mark.parametrize(("old", "new", "dotted"), RESTART_EDITS)
def test_a_restart_only_change_rejects_the_whole_file(config, old, new, dotted, with_reloadable):
    config.edit(old, new)
    if with_reloadable:
        config.edit('mode = "inject"', 'mode = "observe"')
    result = config.reload()
    assert isinstance(result, Rejected) and result.key == dotted
    assert "restart" in result.problem


RELOADABLE = """policy.mode policy.provider_tokens customers claims.ttl claims.warn_before
claims.affinity capture.max_age capture.trusted_proxies capture.public_base_url
capture.provider_secret admin.token admin.shutdown_grace log.level log.format"""
RESTART_ONLY = """proxy.listen capture.listen capture.mirror_listen api.listen admin.listen
capture.upstream api.upstream proxy.ca_dir claims.store claims.max_entries
claims.max_users_per_customer proxy.max_body_size limits.request_line limits.header_size
config.watch"""


@pytest.mark.parametrize(
    ("dotted", "expected"),
    [*((name, True) for name in RELOADABLE.split()), *((n, False) for n in RESTART_ONLY.split())],
)
def test_the_keys_a_reload_may_change_are_the_designs(dotted, expected):
    assert reloads(dotted) is expected


BAD_VALUES = [
    ('mode = "inject"', 'mode = "{}"', "policy.mode"),
    ('level = "info"', 'level = "{}"', "log.level"),
    ('ttl = "12h"', 'ttl = "{}"', "claims.ttl"),
    ('listen = "127.0.0.1:18080"', 'listen = "{}"', "proxy.listen"),
]


@hypothesis_settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(word=st.from_regex(r"[a-z]{1,10}", fullmatch=True), case=st.sampled_from(BAD_VALUES))
def test_a_bad_value_is_rejected_by_its_key_never_showing_the_value(tmp_path, word, case):
    config = Config(tmp_path)
    old, new, dotted = case
    value = f"bad-{word}"
    config.edit(old, new.format(value))
    result = config.reload()
    assert isinstance(result, Rejected) and result.key == dotted
    assert value not in result.problem


def test_a_bad_trusted_proxy_is_rejected_without_its_value(config):
    config.edit("[proxy]\n", '[capture]\ntrusted_proxies = ["10.0.0.bad"]\n[proxy]\n')
    result = config.reload()
    assert isinstance(result, Rejected) and result.key == "capture.trusted_proxies[0]"
    assert "10.0.0.bad" not in result.problem


def test_a_file_that_cannot_be_read_or_parsed_is_rejected(config):
    config.path.unlink()
    missing = config.reload()
    assert isinstance(missing, Rejected) and missing.key == str(config.path)
    config.path.write_text("[policy\nmode = 'observe'\n")
    assert isinstance(config.reload(), Rejected)
    config.path.write_bytes(b"\xff\xfe")
    assert isinstance(config.reload(), Rejected)
    config.path.write_text(config.text.replace("mode =", "mood ="))
    assert config.reload().key == "policy.mood"


@pytest.mark.parametrize(
    "spoil",
    [
        lambda c: c.edit('listen = "127.0.0.1:18080"', 'listen = "127.0.0.1:1"'),
        lambda c: c.edit('mode = "inject"', f'mode = "{ADMIN_TOKEN}"'),
        lambda c: c.edit(
            "[admin]", '[[customers]]\ncustomer_web_id = "2"\ntoken = "env:CUSTOMER_TOKEN"\n[admin]'
        ),
        lambda c: c.edit(f'token = "file:{c.token}"', f'token = "{ADMIN_TOKEN}'),
        lambda c: c.token.write_text(""),
    ],
    ids=["restart_only", "secret_as_mode", "same_token", "unterminated", "empty_secret"],
)
def test_no_secret_appears_in_a_rejection(config, spoil):
    spoil(config)
    result = config.reload()
    assert isinstance(result, Rejected)
    for secret in (ADMIN_TOKEN, CUSTOMER_TOKEN):
        assert secret not in repr(result)


def test_the_start_up_adjustment_is_no_change(config):
    def adjust(settings: Settings) -> Settings:  # as `claimgate run --watch` does
        return dataclasses.replace(
            settings, config=dataclasses.replace(settings.config, watch=True)
        )

    config.running = adjust(config.running)
    assert reload(config.path, ENVIRON, config.running, adjust) == Applied(config.running, ())
    without = config.reload()  # the file alone says watch = false
    assert isinstance(without, Rejected) and without.key == "config.watch"


def test_the_fingerprint_names_the_effective_settings(config):
    first = settings_fingerprint(config.running)
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    assert settings_fingerprint(load_settings(config.path, ENVIRON)) == first
    config.edit(f"file:{config.token}", "env:ADMIN")  # the same secret from elsewhere
    same = load_settings(config.path, ENVIRON | {"ADMIN": ADMIN_TOKEN})
    assert same == config.running and settings_fingerprint(same) == first
    assert settings_fingerprint(dataclasses.replace(same, customers=())) != first
    assert Loaded.of(config.running, now=5.0) == Loaded(config.running, first, 5.0)


def test_the_fingerprint_changes_with_a_rotated_secret_and_never_shows_it(config):
    before = settings_fingerprint(config.running)
    config.token.write_text("rotated-admin-token")
    after = settings_fingerprint(load_settings(config.path, ENVIRON))
    assert after != before
    for shown in (before, after):
        assert shown not in ADMIN_TOKEN and shown not in "rotated-admin-token"
        assert shown not in (fingerprint(ADMIN_TOKEN), fingerprint("rotated-admin-token"))


@given(
    modes=st.tuples(st.sampled_from(Mode), st.sampled_from(Mode)),
    levels=st.tuples(st.sampled_from(LogLevel), st.sampled_from(LogLevel)),
)
def test_plan_names_exactly_the_keys_that_differ(modes, levels):
    old, new = (
        Settings(
            policy=dataclasses.replace(Settings().policy, mode=mode),
            log=dataclasses.replace(Settings().log, level=level),
        )
        for mode, level in zip(modes, levels, strict=True)
    )
    expected = ("policy.mode",) * (modes[0] != modes[1]) + ("log.level",) * (levels[0] != levels[1])
    assert plan(old, new) == Applied(new, expected)
    assert (settings_fingerprint(old) == settings_fingerprint(new)) == (expected == ())
