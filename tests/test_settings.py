"""The configuration contract (docs/design.md 3.2): file, environment, defaults, errors, secrets."""

import dataclasses
import ipaddress
import json
import re
import textwrap
import tomllib
import typing
from pathlib import Path

import pytest

from claimgate.fingerprint import fingerprint
from claimgate.limits import Limits
from claimgate.policy import Affinity, Mode
from claimgate.settings import (
    SECTIONS,
    ConfigError,
    Customer,
    ListenAddress,
    LogFormat,
    LogLevel,
    Secret,
    Settings,
    describe,
    keys,
    load_settings,
    parse_duration,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "claimgate.example.toml"
SECRET = "s3cr3t-VALUE-never-shown"
TOKEN = "0f0e0d0c0b0a09080706050403020100"


def load(tmp_path: Path, text: str | None = None, env: dict[str, str] | None = None) -> Settings:
    path = None
    if text is not None:
        path = tmp_path / "claimgate.toml"
        path.write_text(textwrap.dedent(text))
    return load_settings(path, env or {})


def failure(tmp_path: Path, text: str | None = None, env: dict[str, str] | None = None) -> str:
    """The one-line message of the error that loading raises."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    error = info.value
    got = "" if error.got is None else f", got {error.got}"
    assert str(error) == f"{error.key}: {error.problem}{got}"
    assert error.got is None or f"got {error.got}" not in error.problem  # reloads log it
    assert "\n" not in str(error)
    return str(error)


def declared_keys() -> set[str]:
    """Every dotted key of the ``[section]`` tables, as settings.py declares them."""
    return {f"{name}.{key}" for name, section in SECTIONS.items() for key in keys(section)}


# Defaults


def test_no_file_and_no_environment_gives_the_documented_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path)

    assert settings == Settings()
    assert str(settings.proxy.listen) == "127.0.0.1:8080"
    assert settings.proxy.api_hosts == ("api.onoffice.de",)
    assert settings.proxy.upstream_ca is None
    assert settings.proxy.ca_dir == Path.home() / ".claimgate"
    assert settings.capture.listen is None
    assert settings.capture.upstream is None
    assert settings.capture.max_age == 600.0
    assert settings.capture.trusted_proxies == ()
    assert settings.api.listen is None
    assert settings.api.upstream == "https://api.onoffice.de"
    assert settings.claims.ttl == 12 * 3600.0
    assert settings.claims.warn_before == 3600.0
    assert settings.claims.affinity is Affinity.CUSTOMER
    assert settings.claims.store == "memory"
    assert settings.claims.store_prefix == "claimgate:"
    assert settings.claims.max_entries == 100_000
    assert settings.policy.mode is Mode.INJECT
    assert settings.policy.provider_tokens == ()
    assert settings.limits == Limits(
        16 * 1024, 64 * 1024, 100, 10.0, body_rate=1024, connections=500, bodies=64 * 1024**2
    )
    assert settings.customers == ()
    assert str(settings.admin.listen) == "127.0.0.1:8082"
    assert settings.admin.token is None
    assert settings.log.format is None
    assert settings.log.level is LogLevel.INFO
    assert settings.config.watch is False
    assert not settings.capture_enabled


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") == Settings()


# Every key from the file

EVERY_KEY = {
    "proxy": {
        "listen": '"0.0.0.0:3128"',
        "api_hosts": '["API.onoffice.de", "api.test:8443", "[::1]:9443"]',
        "upstream_ca": "'{ca}'",
        "ca_dir": "'{ca_dir}'",
        "max_body_size": '"512k"',
    },
    "capture": {
        "upstream": '"http://app:9000/"',
        "listen": '"[::]:8181"',
        "public_base_url": '"https://app.example.com/"',
        "provider_secret": '"env:PROVIDER_SECRET"',
        "max_age": '"5m"',
        "mirror_listen": '"127.0.0.1:8183"',
        "trusted_proxies": '["10.0.0.0/8", "192.168.1.7", "fd00::/8"]',
    },
    "api": {"listen": '"127.0.0.1:8190"', "upstream": '"https://api.test:8443"'},
    "claims": {
        "ttl": "3600",
        "warn_before": '"10m"',
        "store": '"rediss://redis.internal:6380/2"',
        "store_password": '"env:REDIS_PASSWORD"',
        "store_username": '"claimgate"',
        "sentinel_password": '"env:SENTINEL_PASSWORD"',
        "store_prefix": '"cg:"',
        "affinity": '"user"',
        "max_users_per_customer": "5",
        "max_entries": "50",
    },
    "policy": {"mode": '"enforce"', "provider_tokens": '["ABCDEF012345", "env:PROVIDER_TOKEN"]'},
    "admin": {
        "listen": '"0.0.0.0:9100"',
        "token": '"env:ADMIN_TOKEN"',
        "shutdown_grace": '"45s"',
    },
    "log": {"format": '"console"', "level": '"debug"'},
    "limits": {
        "request_line": '"8k"',
        "header_size": "32768",
        "header_count": "40",
        "header_timeout": '"2.5s"',
        "body_rate": "100",
        "connections": "250",
        "bodies": '"16m"',
    },
    "config": {"watch": "true"},
}
CUSTOMERS = """
[[customers]]
customer_web_id = 21
token = "env:TOKEN_21"
secret = "env:SECRET_21"

[[customers]]
customer_web_id = "42"
token = "inline-token-42"
"""
ENV = {
    "PROVIDER_SECRET": "provider-secret",
    "REDIS_PASSWORD": "redis-password",
    "SENTINEL_PASSWORD": "sentinel-password",
    "PROVIDER_TOKEN": TOKEN,
    "ADMIN_TOKEN": "admin-token",
    "TOKEN_21": "token-21",
    "SECRET_21": "secret-21",
}


def every_key_document(tmp_path: Path) -> str:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here\n")
    lines = []
    for section, table in EVERY_KEY.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value}" for key, value in table.items()]
    text = "\n".join(lines).format(ca=ca, ca_dir=tmp_path / "ca-dir")
    return text + CUSTOMERS


def test_the_every_key_document_covers_every_declared_key() -> None:
    """Keeps the next test complete when a key is added."""
    assert {f"{section}.{key}" for section, table in EVERY_KEY.items() for key in table} == (
        declared_keys()
    )


def test_every_key_is_read_from_the_file(tmp_path: Path) -> None:
    settings = load(tmp_path, every_key_document(tmp_path), ENV)

    assert settings.proxy.listen == ListenAddress("0.0.0.0", 3128)
    assert settings.proxy.api_hosts == ("api.onoffice.de", "api.test:8443", "[::1]:9443")
    assert settings.proxy.upstream_ca == tmp_path / "ca.pem"
    assert settings.proxy.ca_dir == tmp_path / "ca-dir"
    assert settings.proxy.max_body_size == 512 * 1024
    assert settings.capture.upstream == "http://app:9000"
    assert settings.capture.listen == ListenAddress("::", 8181)
    assert settings.capture.public_base_url == "https://app.example.com"
    assert settings.capture.provider_secret == (Secret("provider-secret"),)
    assert settings.capture.max_age == 300.0
    assert settings.capture.mirror_listen == ListenAddress("127.0.0.1", 8183)
    assert settings.capture.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert settings.api.listen == ListenAddress("127.0.0.1", 8190)
    assert settings.api.upstream == "https://api.test:8443"
    assert settings.claims.ttl == 3600.0
    assert settings.claims.warn_before == 600.0
    assert settings.claims.affinity is Affinity.USER
    assert settings.claims.max_users_per_customer == 5
    assert settings.claims.store == "rediss://redis.internal:6380/2"
    assert settings.claims.store_password == Secret("redis-password")
    assert settings.claims.store_username == "claimgate"
    assert settings.claims.sentinel_password == Secret("sentinel-password")
    assert settings.claims.store_prefix == "cg:"
    assert settings.claims.max_entries == 50
    assert settings.policy.mode is Mode.ENFORCE
    assert settings.policy.provider_tokens == ("abcdef012345", fingerprint(TOKEN))
    assert settings.admin.listen == ListenAddress("0.0.0.0", 9100)
    assert settings.admin.token == Secret("admin-token")
    assert settings.admin.shutdown_grace == 45.0
    assert settings.log.format is LogFormat.CONSOLE
    assert settings.log.level is LogLevel.DEBUG
    assert settings.limits == Limits(
        8 * 1024, 32 * 1024, 40, 2.5, body_rate=100, connections=250, bodies=16 * 1024**2
    )
    assert settings.config.watch is True
    assert settings.customers == (
        Customer("21", Secret("token-21"), Secret("secret-21")),
        Customer("42", Secret("inline-token-42")),
    )
    assert settings.capture_enabled


def test_capture_listens_on_8081_once_an_upstream_is_set(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
        [capture]
        upstream = "https://127.0.0.1:9000"
        provider_secret = "env:PROVIDER_SECRET"
        """,
        ENV,
    )
    assert settings.capture.listen == ListenAddress("127.0.0.1", 8081)


def test_a_mirror_alone_captures_without_an_upstream(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
        [capture]
        mirror_listen = "0.0.0.0:8083"
        provider_secret = "env:PROVIDER_SECRET"
        """,
        ENV,
    )
    assert settings.capture.listen is None
    assert not settings.capture_enabled


# The environment


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    text = """
    [policy]
    mode = "observe"
    [capture]
    max_age = "10m"
    [admin]
    listen = "127.0.0.1:9000"
    """
    env = {
        "CLAIMGATE_POLICY_MODE": "ENFORCE",
        "CLAIMGATE_CAPTURE_MAX_AGE": "1h30m",
        "CLAIMGATE_ADMIN_LISTEN": "0.0.0.0:9001",
        "CLAIMGATE_ADMIN_TOKEN": "env:ADMIN_TOKEN",
        "CLAIMGATE_CLAIMS_MAX_ENTRIES": "7",
        "ADMIN_TOKEN": "admin-token",
    }
    settings = load(tmp_path, text, env)

    assert settings.policy.mode is Mode.ENFORCE
    assert settings.capture.max_age == 5400.0
    assert settings.admin.listen == ListenAddress("0.0.0.0", 9001)
    assert settings.admin.token == Secret("admin-token")
    assert settings.claims.max_entries == 7


@pytest.mark.parametrize(
    "value",
    [
        "api.onoffice.de, api.test:8443",
        "api.onoffice.de,api.test:8443,",
        '["api.onoffice.de", "api.test:8443"]',
        "['api.onoffice.de', 'api.test:8443']",
        '[\n  "api.onoffice.de",\n  "api.test:8443",\n]',
    ],
)
def test_a_list_from_the_environment_is_comma_separated_or_an_array(
    tmp_path: Path, value: str
) -> None:
    settings = load(tmp_path, env={"CLAIMGATE_PROXY_API_HOSTS": value})
    assert settings.proxy.api_hosts == ("api.onoffice.de", "api.test:8443")


def test_a_json_array_that_is_not_toml_is_accepted(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"CLAIMGATE_CAPTURE_TRUSTED_PROXIES": '["10.0.0.0\\/8"]'})
    assert settings.capture.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)


def test_an_empty_variable_restores_the_default_over_the_file(tmp_path: Path) -> None:
    text = """
    [policy]
    mode = "observe"
    [api]
    listen = "127.0.0.1:8090"
    """
    env = {"CLAIMGATE_POLICY_MODE": "", "CLAIMGATE_API_LISTEN": ""}
    settings = load(tmp_path, text, env)
    assert settings.policy.mode is Mode.INJECT
    assert settings.api.listen is None


def test_claimgate_variables_of_no_section_are_ignored(tmp_path: Path) -> None:
    env = {"CLAIMGATE_CONFIG": "/etc/claimgate.toml", "CLAIMGATE_": "x", "CLAIMGATE_X_Y": "1"}
    assert load(tmp_path, env=env) == Settings()


# Booleans


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_key_reads_a_toml_boolean(tmp_path: Path, value: bool) -> None:
    settings = load(tmp_path, f"[config]\nwatch = {str(value).lower()}")
    assert settings.config.watch is value


@pytest.mark.parametrize(
    ("value", "kind"), [('"yes"', "string"), ('"true"', "string"), ("1", "integer")]
)
def test_a_boolean_key_refuses_anything_but_a_toml_boolean(
    tmp_path: Path, value: str, kind: str
) -> None:
    message = failure(tmp_path, f"[config]\nwatch = {value}")
    assert message == f"config.watch: expected true or false, got {kind}"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[(word, True) for word in ("true", "yes", "on", "1", "TRUE", "Yes", "oN", " on ")],
        *[(word, False) for word in ("false", "no", "off", "0", "FALSE", "No", "OFF")],
    ],
)
def test_a_boolean_variable_takes_the_usual_words_in_any_case(
    tmp_path: Path, text: str, value: bool
) -> None:
    other = "true" if not value else "false"  # the variable wins over the file
    settings = load(tmp_path, f"[config]\nwatch = {other}", {"CLAIMGATE_CONFIG_WATCH": text})
    assert settings.config.watch is value


@pytest.mark.parametrize("text", ["maybe", "2", "y", "n", "enabled", "true!", "'true'"])
def test_a_boolean_variable_refuses_other_text(tmp_path: Path, text: str) -> None:
    message = failure(tmp_path, env={"CLAIMGATE_CONFIG_WATCH": text})
    assert message == "config.watch: expected true or false"


# Errors: one line, naming the key

ERRORS = [
    # (file, environment, expected message or its start)
    (
        '[capture]\nmax_age = "ten minutes"',
        {},
        "capture.max_age: expected a duration such as 30s, 10m or 12h, got 'ten minutes'",
    ),
    ("[capture]\nmax_age = 0", {}, "capture.max_age: must be more than 0"),
    ('[capture]\nmax_age = "0s"', {}, "capture.max_age: must be more than 0"),
    ('[capture]\nmax_age = "-5m"', {}, "capture.max_age: expected a duration"),
    ("[capture]\nmax_age = [1]", {}, "capture.max_age: expected a duration"),
    ("[capture]\nmax_age = nan", {}, "capture.max_age: must be more than 0"),
    ('[claims]\nttl = "forever"', {}, "claims.ttl: expected a duration"),
    ('[proxy]\nlisten = "8080"', {}, "proxy.listen: expected host:port such as 127.0.0.1:8080"),
    ('[proxy]\nlisten = ":8080"', {}, "proxy.listen: expected host:port"),
    ('[proxy]\nlisten = "::1:8080"', {}, "proxy.listen: expected host:port"),
    ('[proxy]\nlisten = "127.0.0.1:65536"', {}, "proxy.listen: expected host:port"),
    ("[proxy]\nlisten = 8080", {}, "proxy.listen: expected a string, got integer"),
    (
        '[proxy]\napi_hosts = "api.onoffice.de"',
        {},
        "proxy.api_hosts: expected an array of strings, got string",
    ),
    ("[proxy]\napi_hosts = []", {}, "proxy.api_hosts: at least one host is required"),
    ("[proxy]\napi_hosts = [1]", {}, "proxy.api_hosts[0]: expected a string, got integer"),
    ('[proxy]\napi_hosts = ["https://api.onoffice.de"]', {}, "proxy.api_hosts[0]: expected host"),
    ('[proxy]\napi_hosts = ["a.de", "api.onoffice.de/api"]', {}, "proxy.api_hosts[1]: expected"),
    ('[proxy]\napi_hosts = [""]', {}, "proxy.api_hosts[0]: expected host"),
    ('[proxy]\napi_hosts = ["api.onoffice.de:0"]', {}, "proxy.api_hosts[0]: expected host"),
    ('[proxy]\nupstream_ca = "/no/such/ca.pem"', {}, "proxy.upstream_ca: no such file: "),
    ('[proxy]\nca_dir = ""', {}, "proxy.ca_dir: expected a path, got an empty string"),
    ('[capture]\nupstream = "ftp://app"', {}, "capture.upstream: expected http:// or https://"),
    ('[capture]\nupstream = "http://app:9000/path"', {}, "capture.upstream: expected http://"),
    ('[capture]\nupstream = "http://app?x=1"', {}, "capture.upstream: expected http://"),
    ('[capture]\nupstream = "http://user@app"', {}, "capture.upstream: expected http://"),
    ('[capture]\nupstream = "127.0.0.1:9000"', {}, "capture.upstream: expected http://"),
    ('[capture]\nupstream = "http://app:99999"', {}, "capture.upstream: expected http://"),
    (
        '[capture]\nlisten = "127.0.0.1:8081"',
        {},
        "capture.upstream: required when capture.listen is set",
    ),
    (
        '[capture]\nupstream = "http://app:9000"',
        {},
        "capture.provider_secret: required when capture is on",
    ),
    (
        '[capture]\nmirror_listen = "127.0.0.1:8083"',
        {},
        "capture.provider_secret: required when capture is on",
    ),
    (
        '[capture]\npublic_base_url = "https://app.example.com/base"',
        {},
        "capture.public_base_url: expected http:// or https://host[:port] without a path",
    ),
    ('[capture]\ntrusted_proxies = ["10.0.0.1/8"]', {}, "capture.trusted_proxies[0]: expected"),
    ('[capture]\ntrusted_proxies = ["proxy.local"]', {}, "capture.trusted_proxies[0]: expected"),
    (
        '[api]\nupstream = "http://api.onoffice.de"',
        {},
        "api.upstream: expected https://host[:port] without a path, got 'http://api.onoffice.de'",
    ),
    ('[claims]\nstore = "postgres://db"', {}, "claims.store: expected memory or a redis://"),
    ('[claims]\nstore = "redis://"', {}, "claims.store: expected memory or a redis://"),
    ('[claims]\nstore = "redis://host:0"', {}, "claims.store: expected memory or a redis://"),
    (
        '[claims]\nstore = "redis+sentinel://s1:26379,s2:26379"',
        {},
        "claims.store: expected the monitored service's name after the sentinels",
    ),
    (
        '[claims]\nstore = "redis+sentinel://s1:99999/mymaster"',
        {},
        "claims.store: expected a sentinel's port between 1 and 65535",
    ),
    (
        '[claims]\nstore = "redis+cluster://n1:7000/1"',
        {},
        "claims.store: a cluster URL names no database",
    ),
    (
        '[claims]\nstore = "rediss+cluster://n1:7000/"\nstore_prefix = "{cg}:"',
        {},
        "claims.store_prefix: must hold no { or } with a redis+cluster:// store",
    ),
    ('[claims]\nstore_username = "a b"', {}, "claims.store_username: expected 1 to 128"),
    ("[claims]\nmax_entries = 0", {}, "claims.max_entries: must be at least 1, got 0"),
    (
        '[proxy]\nmax_body_size = "8m"\n[limits]\nbodies = "4m"',
        {},
        "limits.bodies: must be at least proxy.max_body_size (8388608 bytes), got 4194304",
    ),
    ('[claims]\nmax_entries = "100"', {}, "claims.max_entries: expected an integer, got string"),
    ("[claims]\nmax_entries = true", {}, "claims.max_entries: expected an integer, got boolean"),
    ("[claims]\nstore_prefix = 1", {}, "claims.store_prefix: expected a string, got integer"),
    (
        '[policy]\nmode = "block"',
        {},
        "policy.mode: expected one of observe, inject, enforce, got 'block'",
    ),
    ('[policy]\nprovider_tokens = ["abc"]', {}, "policy.provider_tokens[0]: expected a 12-hex"),
    ('[log]\nlevel = "verbose"', {}, "log.level: expected one of debug, info, warning, error"),
    ('[log]\nformat = "xml"', {}, "log.format: expected one of json, console, got 'xml'"),
    ("[proxi]\nlisten = 1", {}, "proxi: unknown section; did you mean proxy?"),
    ("[nonsense]", {}, "nonsense: unknown section; expected one of "),
    ("proxy = 1", {}, "proxy: expected a table [proxy], got integer"),
    ('[capture]\nmaxage = "5m"', {}, "capture.maxage: unknown key; did you mean max_age?"),
    ("[admin]\nlisten = 1\ntoken = 2", {}, "admin.listen: expected a string"),
    (
        '[api]\nlisten = "127.0.0.1:8080"',
        {},
        "api.listen: 127.0.0.1:8080 clashes with proxy.listen",
    ),
    (
        '[admin]\nlisten = "0.0.0.0:8080"',
        {},
        "admin.listen: 0.0.0.0:8080 clashes with proxy.listen",
    ),
    # the environment
    (
        None,
        {"CLAIMGATE_CAPTURE_MAXAGE": "5m"},
        "CLAIMGATE_CAPTURE_MAXAGE: unknown key in [capture]",
    ),
    (
        None,
        {"CLAIMGATE_CUSTOMERS_0_TOKEN": "x"},
        "CLAIMGATE_CUSTOMERS_0_TOKEN: customers come only",
    ),
    (None, {"CLAIMGATE_CAPTURE_MAX_AGE": "soon"}, "capture.max_age: expected a duration"),
    (None, {"CLAIMGATE_CLAIMS_MAX_ENTRIES": "lots"}, "claims.max_entries: expected an integer"),
    (None, {"CLAIMGATE_PROXY_API_HOSTS": '["a",'}, "proxy.api_hosts: expected a TOML or JSON"),
    (None, {"CLAIMGATE_PROXY_API_HOSTS": "[1]"}, "proxy.api_hosts[0]: expected a string"),
    (None, {"CLAIMGATE_PROXY_API_HOSTS": ","}, "proxy.api_hosts: at least one host"),
    # customers
    ('customers = "21"', {}, "customers: expected [[customers]] tables"),
    ("[customers]\ntoken = 1", {}, "customers: expected [[customers]] tables"),
    ('[[customers]]\ncustomer_web_id = "21"', {}, "customers[0].token: required"),
    ('[[customers]]\ntoken = "t"', {}, "customers[0].customer_web_id: required"),
    (
        '[[customers]]\ncustomer_web_id = " "\ntoken = "t"',
        {},
        "customers[0].customer_web_id: must not be empty",
    ),
    (
        "[[customers]]\ncustomer_web_id = true\ntoken = 't'",
        {},
        "customers[0].customer_web_id: expected a string, got boolean",
    ),
    (
        '[[customers]]\ncustomer_web_id = "21"\ntokn = "t"',
        {},
        "customers[0].tokn: unknown key; did you mean token?",
    ),
    (
        '[[customers]]\ncustomer_web_id = "21"\ntoken = "a"\n'
        '[[customers]]\ncustomer_web_id = 21\ntoken = "b"',
        {},
        "customers[1].customer_web_id: already used by customers[0], got '21'",
    ),
    (
        '[[customers]]\ncustomer_web_id = "21"\ntoken = "a"\n'
        '[[customers]]\ncustomer_web_id = "22"\ntoken = "a"',
        {},
        "customers[1].token: same token as customers[0]",
    ),
    # secrets
    ('[admin]\ntoken = "env:NOPE"', {}, "admin.token: environment variable NOPE is not set"),
    (
        '[admin]\ntoken = "env:EMPTY"',
        {"EMPTY": ""},
        "admin.token: environment variable EMPTY is empty",
    ),
    (
        '[admin]\ntoken = "env:BYTES"',
        {"BYTES": "t\udcff"},
        "admin.token: environment variable BYTES is not UTF-8 text",
    ),
    (
        None,
        {"CLAIMGATE_CLAIMS_STORE_PREFIX": "p\udcff:"},
        "claims.store_prefix: CLAIMGATE_CLAIMS_STORE_PREFIX is not UTF-8 text",
    ),
    ('[admin]\ntoken = "env:"', {}, "admin.token: expected a variable name after env:"),
    ('[admin]\ntoken = "file:"', {}, "admin.token: expected a path after file:"),
    ('[admin]\ntoken = ""', {}, "admin.token: the secret is empty"),
    (
        '[admin]\ntoken = "file:/no/such/secret"',
        {},
        "admin.token: cannot read secret file /no/such/secret: No such file or directory",
    ),
    ("[admin]\ntoken = 1234", {}, "admin.token: expected env:NAME or file:PATH as a string"),
    (
        '[claims]\nstore_password = "env:NOPE"',
        {},
        "claims.store_password: environment variable NOPE is not set",
    ),
    (
        '[policy]\nprovider_tokens = ["env:NOPE"]',
        {},
        "policy.provider_tokens[0]: environment variable NOPE is not set",
    ),
    (
        '[[customers]]\ncustomer_web_id = "21"\ntoken = "t"\nsecret = "env:NOPE"',
        {},
        "customers[0].secret: environment variable NOPE is not set",
    ),
]


@pytest.mark.parametrize(("text", "env", "expected"), ERRORS)
def test_an_error_is_one_line_naming_the_key(
    tmp_path: Path, text: str | None, env: dict[str, str], expected: str
) -> None:
    assert failure(tmp_path, text, env).startswith(expected)


def test_a_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "claimgate.toml"
    message = failure(tmp_path, "[proxy\n")
    assert message.startswith(f"{path}: ")
    assert "line 1" in message


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


def test_a_ca_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "ca").write_text("")
    message = failure(tmp_path, f"[proxy]\nca_dir = '{tmp_path / 'ca'}'")
    assert message == f"proxy.ca_dir: not a directory: {tmp_path / 'ca'}"


def test_an_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n\n")
    message = failure(tmp_path, f"[admin]\ntoken = 'file:{tmp_path / 'token'}'")
    assert message == f"admin.token: secret file {tmp_path / 'token'} is empty"


# Durations and addresses


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("10m", 600.0),
        ("12h", 43200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        (" 10M ", 600.0),
        ("45", 45.0),
        ("2.5", 2.5),
        (30, 30.0),
        (0.5, 0.5),
    ],
)
def test_durations(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text, "claims.ttl") == seconds


@pytest.mark.parametrize(
    "text", ["ten minutes", "", "10x", "m", "1h 30m", "-1", "1e3", True, 0, -5, float("inf")]
)
def test_bad_durations(text: str | int | float) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text, "claims.ttl")
    assert info.value.key == "claims.ttl"


def test_a_huge_integer_duration_is_an_error_not_a_crash(tmp_path: Path) -> None:
    message = failure(tmp_path, f"[claims]\nttl = 1{'0' * 400}")
    assert message.startswith("claims.ttl: must be more than 0 and finite")


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
        ("localhost:0", "localhost", 0, "localhost:0"),
        ("0.0.0.0:65535", "0.0.0.0", 65535, "0.0.0.0:65535"),
        ("[::1]:9000", "::1", 9000, "[::1]:9000"),
        ("claimgate_admin:8082", "claimgate_admin", 8082, "claimgate_admin:8082"),
    ],
)
def test_listen_addresses(text: str, host: str, port: int, shown: str) -> None:
    address = ListenAddress.parse(text, "proxy.listen")
    assert (address.host, address.port) == (host, port)
    assert str(address) == shown


@pytest.mark.parametrize(
    "text",
    [
        ":8080",
        "8080",
        "::1:8080",
        "[::1]",
        "host:",
        "host:abc",
        "host:+80",
        "host:70000",
        "[nothost]:80",
        "[::1]x:80",
        "ho st:80",
        "",
    ],
)
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        ListenAddress.parse(text, "proxy.listen")
    assert info.value.key == "proxy.listen"


# Secrets


def test_secrets_come_from_the_environment_a_file_or_inline(tmp_path: Path) -> None:
    (tmp_path / "redis").write_text(SECRET + "-file\n")
    text = f"""
    [admin]
    token = "env:ADMIN_TOKEN"
    [claims]
    store_password = "file:{tmp_path / "redis"}"
    [capture]
    mirror_listen = "127.0.0.1:8083"
    provider_secret = "{SECRET}-inline"
    """
    settings = load(tmp_path, text, {"ADMIN_TOKEN": SECRET + "-env"})

    assert settings.admin.token is not None
    assert settings.admin.token.reveal() == SECRET + "-env"
    assert settings.claims.store_password is not None
    assert settings.claims.store_password.reveal() == SECRET + "-file"
    assert settings.capture.provider_secret is not None
    assert [s.reveal() for s in settings.capture.provider_secret] == [SECRET + "-inline"]
    assert SECRET not in repr(settings)
    assert SECRET not in json.dumps(describe(settings))


def test_a_secret_never_shows_its_value() -> None:
    secret = Secret(SECRET)

    assert repr(secret) == f"Secret(fp={fingerprint(SECRET)})"
    assert str(secret) == repr(secret)
    assert f"{secret}" == repr(secret)
    assert secret.fingerprint == fingerprint(SECRET)
    assert secret.reveal() == SECRET
    assert secret == Secret(SECRET)
    assert secret != Secret("other")
    assert secret != SECRET
    assert len({secret, Secret(SECRET)}) == 1


@pytest.mark.parametrize(
    ("text", "env"),
    [
        (f'[claims]\nstore = "redis://:{SECRET}@redis:6379/0"', {}),
        (f'[claims]\nstore = "redis://user:{SECRET}@redis:bad"', {}),
        (f'[claims]\nstore = "ftp://user:{SECRET}@redis"', {}),
        (f'[claims]\nstore = "redis://redis:6379/0?password={SECRET}"', {}),
        (f'[claims]\nstore = "redis+sentinel://s1/mymaster?password={SECRET}"', {}),
        (f'[claims]\nstore = "redis+sentinel://s1:bad/m?password={SECRET}"', {}),
        (f'[policy]\nprovider_tokens = ["{SECRET}"]', {}),
        (None, {"CLAIMGATE_POLICY_PROVIDER_TOKENS": SECRET}),
        (None, {"CLAIMGATE_POLICY_PROVIDER_TOKENS": f'["{SECRET}"'}),
        (
            f'[[customers]]\ncustomer_web_id = "1"\ntoken = "{SECRET}"\n'
            f'[[customers]]\ncustomer_web_id = "2"\ntoken = "{SECRET}"',
            {},
        ),
        ("[admin]\ntoken = 'file:/no/such/file'", {"ADMIN_TOKEN": SECRET}),
        ("[admin]\ntoken = 'env:ADMIN_TOKEN'", {"ADMIN_TOKEN": SECRET + "\udcff"}),
        (None, {"CLAIMGATE_POLICY_PROVIDER_TOKENS": SECRET + "\udcff"}),
    ],
)
def test_no_error_shows_a_secret(tmp_path: Path, text: str | None, env: dict[str, str]) -> None:
    assert SECRET not in failure(tmp_path, text, env)


def test_a_password_in_the_store_url_points_to_store_password(tmp_path: Path) -> None:
    message = failure(tmp_path, f'[claims]\nstore = "rediss://:{SECRET}@redis:6380"')
    assert message == ("claims.store: do not put a password in the URL; set claims.store_password")


def test_a_redis_url_with_a_user_but_no_password_is_accepted(tmp_path: Path) -> None:
    settings = load(tmp_path, '[claims]\nstore = "redis://claimgate@redis:6379/0"')
    assert settings.claims.store == "redis://claimgate@redis:6379/0"


def test_provider_tokens_keep_only_fingerprints(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    text = f'[policy]\nprovider_tokens = ["env:T", "file:{tmp_path / "token"}", "AbCdEf012345"]'
    settings = load(tmp_path, text, {"T": TOKEN})
    assert settings.policy.provider_tokens == (
        fingerprint(TOKEN),
        fingerprint(TOKEN),
        "abcdef012345",
    )


ROTATION_ENV = {"OLD": SECRET + "-old", "NEW": SECRET + "-new"}


def test_the_provider_secret_is_one_reference_or_an_array_during_a_rotation(
    tmp_path: Path,
) -> None:
    (tmp_path / "new").write_text(SECRET + "-new\n")
    one = load(tmp_path, '[capture]\nprovider_secret = "env:OLD"', ROTATION_ENV)
    assert one.capture.provider_secret == (Secret(SECRET + "-old"),)
    text = f'[capture]\nprovider_secret = ["env:OLD", "file:{tmp_path / "new"}"]'
    rotating = load(tmp_path, text, ROTATION_ENV)
    assert rotating.capture.provider_secret == (Secret(SECRET + "-old"), Secret(SECRET + "-new"))
    assert describe(rotating)["capture"]["provider_secret"] == [
        f"<secret fp={fingerprint(SECRET + '-old')}>",
        f"<secret fp={fingerprint(SECRET + '-new')}>",
    ]
    assert SECRET not in repr(rotating) + json.dumps(describe(rotating))


@pytest.mark.parametrize(
    ("variable", "secrets"),
    [
        ('["env:OLD","env:NEW"]', (SECRET + "-old", SECRET + "-new")),
        ("['env:NEW']", (SECRET + "-new",)),
        ("env:OLD", (SECRET + "-old",)),
        ("inline,with,commas", ("inline,with,commas",)),  # a secret may hold commas
    ],
)
def test_the_provider_secret_variable_is_one_reference_or_an_array_literal(
    tmp_path: Path, variable: str, secrets: tuple[str, ...]
) -> None:
    env = ROTATION_ENV | {"CLAIMGATE_CAPTURE_PROVIDER_SECRET": variable}
    settings = load(tmp_path, '[capture]\nprovider_secret = "never-used"', env)
    assert settings.capture.provider_secret == tuple(Secret(secret) for secret in secrets)


@pytest.mark.parametrize(
    ("value", "env", "message"),
    [
        ("[]", {}, "capture.provider_secret: expected 1 to 4 secrets, got 0"),
        (
            '["env:OLD", "env:NEW", "a", "b", "c"]',
            ROTATION_ENV,
            "capture.provider_secret: expected 1 to 4 secrets, got 5",
        ),
        (
            '["env:OLD", "env:AGAIN"]',
            ROTATION_ENV | {"AGAIN": ROTATION_ENV["OLD"]},
            "capture.provider_secret[1]: the same secret as capture.provider_secret[0]",
        ),
        (
            f'["env:NEW", "{SECRET}-x", "{SECRET}-x"]',
            ROTATION_ENV,
            "capture.provider_secret[2]: the same secret as capture.provider_secret[1]",
        ),
        (
            '["env:OLD", 1]',
            ROTATION_ENV,
            "capture.provider_secret[1]: expected env:NAME or file:PATH as a string, got integer",
        ),
        (
            '["env:OLD", "env:GONE"]',
            ROTATION_ENV,
            "capture.provider_secret[1]: environment variable GONE is not set",
        ),
        (
            "{ old = 'env:OLD' }",
            ROTATION_ENV,
            "capture.provider_secret: expected env:NAME or file:PATH as a string, or an array "
            "of them, got table",
        ),
    ],
)
def test_a_bad_provider_secret_array_is_refused_by_its_dotted_key(
    tmp_path: Path, value: str, env: dict[str, str], message: str
) -> None:
    assert failure(tmp_path, f"[capture]\nprovider_secret = {value}", env) == message


@pytest.mark.parametrize(
    ("text", "env"),
    [
        (f'[capture]\nprovider_secret = ["{SECRET}", "{SECRET}"]', {}),
        (f'[capture]\nprovider_secret = ["{SECRET}", 7]', {}),
        (f'[capture]\nprovider_secret = ["{SECRET}", "", "x"]', {}),
        (f'[capture]\nprovider_secret = ["{SECRET}", "a", "b", "c", "d"]', {}),
        ("[capture]\nprovider_secret = ['env:OLD', 'env:AGAIN']", {"OLD": SECRET, "AGAIN": SECRET}),
        (None, {"CLAIMGATE_CAPTURE_PROVIDER_SECRET": f'["{SECRET}"'}),
        (None, {"CLAIMGATE_CAPTURE_PROVIDER_SECRET": f'["{SECRET}", "{SECRET}"]'}),
        (None, {"CLAIMGATE_CAPTURE_PROVIDER_SECRET": f"[{SECRET}, {SECRET}]"}),
    ],
)
def test_no_provider_secret_error_shows_a_secret(
    tmp_path: Path, text: str | None, env: dict[str, str]
) -> None:
    message = failure(tmp_path, text, env)
    assert message.startswith("capture.provider_secret")
    assert SECRET not in message


# describe


def test_describe_is_plain_data_with_secrets_masked(tmp_path: Path) -> None:
    settings = load(tmp_path, every_key_document(tmp_path), ENV)
    described = describe(settings)

    assert json.loads(json.dumps(described)) == described
    assert described["proxy"]["listen"] == "0.0.0.0:3128"
    assert described["capture"]["listen"] == "[::]:8181"
    assert described["capture"]["trusted_proxies"] == ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]
    assert described["capture"]["provider_secret"] == [
        f"<secret fp={fingerprint('provider-secret')}>"
    ]
    assert described["policy"] == {
        "mode": "enforce",
        "provider_tokens": ["abcdef012345", fingerprint(TOKEN)],
    }
    assert described["customers"][0] == {
        "customer_web_id": "21",
        "token": f"<secret fp={fingerprint('token-21')}>",
        "secret": f"<secret fp={fingerprint('secret-21')}>",
    }
    assert described["log"] == {"format": "console", "level": "debug"}
    dumped = json.dumps(described)
    for value in [*ENV.values(), "inline-token-42"]:
        assert value not in dumped


# The declaration: one per key, and what is derived from it


def test_every_declared_key_has_one_line_of_help() -> None:
    for section in [*SECTIONS.values(), Customer]:
        for name, key in keys(section).items():
            assert key.help.strip() and "\n" not in key.help, f"{section.__name__}.{name}"


def test_every_declared_key_has_its_variable_and_no_other_key_has_one(tmp_path: Path) -> None:
    variables = {f"CLAIMGATE_{key.replace('.', '_').upper()}": "" for key in declared_keys()}
    assert load(tmp_path, env=variables) == Settings()
    message = failure(tmp_path, env={"CLAIMGATE_PROXY_LISTENER": ""})
    assert message.startswith("CLAIMGATE_PROXY_LISTENER: unknown key in [proxy]")


LIST_KEYS = sorted(
    f"{name}.{item.name}"
    for name, section in SECTIONS.items()
    for item in dataclasses.fields(section)
    if typing.get_origin(item.type) is tuple
)


@pytest.mark.parametrize("dotted", LIST_KEYS)
def test_a_list_key_reads_its_variable_as_items(tmp_path: Path, dotted: str) -> None:
    """Either the two items load, or the first item is refused: never the text as a whole."""
    section, name = dotted.split(".")
    env = {f"CLAIMGATE_{section}_{name}".upper(): "one.example, two.example"}
    try:
        settings = load(tmp_path, env=env)
    except ConfigError as error:
        assert error.key == f"{dotted}[0]"
    else:
        assert getattr(getattr(settings, section), name) == ("one.example", "two.example")


def test_check_config_describes_exactly_the_declared_keys() -> None:
    described = describe(Settings())
    assert list(described) == [item.name for item in dataclasses.fields(Settings)]
    named = {f"{name}.{key}" for name in SECTIONS for key in described[name]}
    assert named == declared_keys()


def readme_table() -> dict[str, tuple[str, str]]:
    """The configuration table of the README: each key's reloads column and meaning, by key."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"(?m)^\| `([^`]+)` \| .*? \| (yes|no) \| (.*) \|$", section)
    assert len(rows) == len(re.findall(r"(?m)^\| `", section)), "a row without a reloads column"
    return {key: (reloads, meaning) for key, reloads, meaning in rows}


def test_the_readme_table_is_the_declared_keys_with_their_help() -> None:
    table = readme_table()
    customers_reload, customers = table.pop("[[customers]]")
    assert set(table) == declared_keys()
    for dotted, (reloads, meaning) in table.items():
        name, key = dotted.split(".")
        declared = keys(SECTIONS[name])[key]
        assert meaning == declared.help, dotted
        assert reloads == ("yes" if declared.reloads else "no"), dotted
    assert set(re.findall(r"`([^`]+)`", customers)) == set(keys(Customer))
    assert customers_reload == "yes"
    assert all(key.reloads for key in keys(Customer).values())


def test_what_binds_or_opens_a_store_needs_a_restart() -> None:
    """A listener, the interception CA and the claim store are set up once, at start-up."""
    fixed = {"proxy.ca_dir"} | {key for key in declared_keys() if key.startswith("claims.store")}
    for name, section in SECTIONS.items():
        for item in dataclasses.fields(section):
            if ListenAddress in (item.type, *typing.get_args(item.type)):
                fixed.add(f"{name}.{item.name}")
    assert {"proxy.listen", "capture.mirror_listen", "admin.listen", "claims.store"} <= fixed
    for dotted in sorted(fixed):
        name, key = dotted.split(".")
        assert not keys(SECTIONS[name])[key].reloads, dotted


def test_the_design_lists_the_declared_sections() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    listed = re.findall(r"`([^`]+)`", re.search(r"Sections: (.*?)\.", design, re.S)[1])
    names = [item.name for item in dataclasses.fields(Settings)]
    assert listed == [f"[[{name}]]" if name == "customers" else name for name in names]


# The example configuration


def example_environment(text: str) -> dict[str, str]:
    return {name: f"value-of-{name}" for name in re.findall(r"env:([A-Z0-9_]+)", text)}


def test_the_example_loads_as_the_defaults() -> None:
    text = EXAMPLE.read_text()
    assert load_settings(EXAMPLE, example_environment(text)) == Settings()


def test_the_example_loads_with_every_setting_uncommented(tmp_path: Path) -> None:
    text = re.sub(r"(?m)^#(?=[\[a-z])", "", EXAMPLE.read_text())
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    text = re.sub(r'(?m)^upstream_ca = ".*"$', f"upstream_ca = '{ca}'", text)
    env = example_environment(text)
    settings = load(tmp_path, text, env)

    assert settings.capture_enabled
    assert len(settings.customers) == 2
    assert settings.admin.token == Secret(env["ADMIN_TOKEN"])
    defaults = Settings()
    assert settings.proxy.listen == defaults.proxy.listen
    assert settings.proxy.api_hosts == defaults.proxy.api_hosts
    assert settings.proxy.ca_dir == defaults.proxy.ca_dir
    assert settings.capture.max_age == defaults.capture.max_age
    assert settings.api.upstream == defaults.api.upstream
    optional = ("store_password", "store_username", "sentinel_password")  # examples, no default
    assert all(getattr(settings.claims, key) is not None for key in optional)
    assert settings.claims == dataclasses.replace(
        defaults.claims, **{key: getattr(settings.claims, key) for key in optional}
    )
    assert settings.policy.mode == defaults.policy.mode
    assert settings.admin.listen == defaults.admin.listen
    assert settings.log.level == defaults.log.level


def test_the_example_documents_exactly_the_declared_keys() -> None:
    document = tomllib.loads(re.sub(r"(?m)^#(?=[\[a-z])", "", EXAMPLE.read_text()))
    customers = document.pop("customers")
    named = {f"{section}.{key}" for section, table in document.items() for key in table}
    assert named == declared_keys()
    assert set().union(*customers) == set(keys(Customer))


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ('"4m"', 4 * 1024**2),
        ('"4MiB"', 4 * 1024**2),
        ('"512 kb"', 512 * 1024),
        ("65536", 65536),
        ('"1g"', 1024**3),
    ],
)
def test_sizes(tmp_path, value, size):
    config = tmp_path / "c.toml"
    config.write_text(f'[proxy]\nmax_body_size = {value}\n[limits]\nbodies = "1g"\n')
    assert load_settings(config, {}).proxy.max_body_size == size


@pytest.mark.parametrize("value", ['"lots"', '"-1k"', "12", '"4 tb"'])
def test_bad_sizes_name_the_key(tmp_path, value):
    config = tmp_path / "c.toml"
    config.write_text(f"[proxy]\nmax_body_size = {value}\n")
    with pytest.raises(ConfigError, match=r"^proxy\.max_body_size: "):
        load_settings(config, {})


def test_two_proxy_listeners_on_one_host_with_port_zero_are_refused(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[proxy]\nlisten = "127.0.0.1:0"\n[api]\nlisten = "127.0.0.1:0"\n')
    with pytest.raises(ConfigError, match=r"^api\.listen: port 0 on 127\.0\.0\.1"):
        load_settings(config, {})
    config.write_text('[proxy]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = "127.0.0.1:0"\n')
    assert load_settings(config, {}).admin.listen.port == 0
