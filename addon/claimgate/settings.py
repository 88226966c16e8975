"""Typed settings: one TOML file plus ``CLAIMGATE_<SECTION>_<KEY>`` variables (docs/design.md 3.2).

Everything is checked here, once, at start-up: a typo or a bad value stops claimgate with
one line that names the dotted key (``claimgate check-config`` exits 2 on it) instead of
showing up later as quietly wrong behaviour. An environment variable wins over the file.
Secrets are resolved here too (``env:NAME``, ``file:PATH``) and held in ``Secret``, which
never shows its value: not in ``repr``, not in an error, not in ``describe``.

Each key is declared once: a field of its section's dataclass, with ``setting`` as its
metadata (name, type, default, parser, help). The file's sections, the variables and
``describe`` all come from those fields, so a key cannot be known in one and missing in another.
"""

import dataclasses
import difflib
import hmac
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from claimgate.fingerprint import fingerprint
from claimgate.limits import Limits
from claimgate.policy import Affinity, Mode
from claimgate.store import DEFAULT_MAX_USERS
from claimgate.store.address import BadStoreUrl, is_ipv6, parse_store_url

ENV_PREFIX = "CLAIMGATE_"
CONFIG_VARIABLE = "CLAIMGATE_CONFIG"
"""Names the configuration file (``claimgate run``), not the ``[config]`` section's keys."""

type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
type Parser = Callable[..., Any]
type TextReader = Callable[[str, str], object]


class ConfigError(Exception):
    """A configuration problem, as one line naming the key to fix and what is wrong.

    ``problem`` never holds the value, which may be a secret: a reload logs it
    (``config_rejected``). ``got`` shows the value where the message is only printed (at
    start-up, in ``check-config``), for values that cannot be secrets.
    """

    def __init__(self, key: str, problem: str, got: str | None = None) -> None:
        super().__init__(f"{key}: {problem}" + (f", got {got}" if got is not None else ""))
        self.key = key
        self.problem = problem
        self.got = got


class Secret:
    """A resolved secret that never shows itself, so settings may be printed and logged."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself, for the code that signs, compares or connects with it."""
        return self._value

    @property
    def fingerprint(self) -> str:
        """The public name of the secret (docs/design.md 2.9)."""
        return fingerprint(self._value)

    def __repr__(self) -> str:
        return f"Secret(fp={self.fingerprint})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where a listener binds. Port 0 lets the OS pick a free port (handy in tests)."""

    host: str
    """A host name or IP address; an IPv6 address is kept without its brackets."""
    port: int

    @classmethod
    def parse(cls, text: str, key: str) -> Self:
        """Read ``host:port`` or ``[v6]:port``; the host is required, never implied."""
        parts = _split_host_port(text)
        port = _port(parts[1], minimum=0) if parts is not None and parts[1] is not None else None
        if parts is None or port is None:
            raise ConfigError(
                key, "expected host:port such as 127.0.0.1:8080 or [::1]:8080", got=repr(text)
            )
        return cls(parts[0], port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class LogFormat(StrEnum):
    """How log lines are written; unset means decide by whether stderr is a TTY."""

    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    """The lowest level logged."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# Declaring keys


def _as_string(text: str, key: str) -> object:
    return text


def _as_integer(text: str, key: str) -> object:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(key, "expected an integer", got=repr(text)) from None


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _as_boolean(text: str, key: str) -> object:
    word = text.strip().lower()
    if word in _TRUE + _FALSE:
        return word in _TRUE
    raise ConfigError(key, "expected true or false")


def _as_list(text: str, key: str) -> object:
    """A TOML or JSON array literal if it starts with ``[``, else comma-separated items."""
    if not text.lstrip().startswith("["):
        return [item.strip() for item in text.split(",") if item.strip()]
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(
            key, 'expected a TOML or JSON array such as ["a", "b"], or comma-separated items'
        ) from None


@dataclass(frozen=True, slots=True)
class Key:
    """How one key's value is read and what the key is for (docs/design.md 3.2)."""

    parse: Parser
    """``(value, dotted key)`` to the typed value, or a ``ConfigError`` naming the key."""
    help: str
    """What the key is for: the README's configuration table says exactly this."""
    variable: TextReader = _as_string
    """Gives a ``CLAIMGATE_`` variable's text the TOML type that ``parse`` expects."""
    environ: bool = False
    """``parse`` resolves ``env:`` references, so it takes the environment as well."""
    reloads: bool = False
    """A reload (SIGHUP, or watching) applies a change of it; a change of any other key
    needs a restart, and a reload that carries one is rejected whole (docs/design.md 3.6)."""

    def read(self, value: object, key: str, environ: Mapping[str, str]) -> Any:
        """The typed value; ``environ`` is where the ``env:`` references in it point."""
        if self.environ:
            return self.parse(value, key, environ=environ)
        return self.parse(value, key)


_KEY = "claimgate.key"


def setting(
    parse: Parser,
    help: str,
    *,
    variable: TextReader = _as_string,
    environ: bool = False,
    reloads: bool = False,
) -> Mapping[str, Key]:
    """The ``field(metadata=...)`` that makes a dataclass field a key; its default is the key's."""
    return {_KEY: Key(parse, help, variable, environ, reloads)}


# Values


def _toml_type(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string"}
    names |= {list: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)


def _string(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {_toml_type(value)}")
    return value


def _boolean(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {_toml_type(value)}")
    return value


def _string_list(value: object, key: str) -> list[str]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected an array of strings, got {_toml_type(value)}")
    return [_string(item, f"{key}[{index}]") for index, item in enumerate(value)]


def _positive_int(value: object, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(key, f"expected an integer, got {_toml_type(value)}")
    if value < 1:
        raise ConfigError(key, "must be at least 1", got=str(value))
    return value


_SIZE = re.compile(r"(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _size(value: object, key: str) -> int:
    """Bytes, from an integer or a text such as "512k", "4MiB" or "1g" (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        found = _SIZE.fullmatch(_string(value, key).strip().lower())
        if found is None:
            raise ConfigError(key, "expected a size such as 512k, 4m or 1g", got=repr(value))
        size = int(found.group(1)) * _SIZE_UNITS[found.group(2)[:1]]
    if size < 1024:
        raise ConfigError(key, "must be at least 1k", got=repr(value))
    return size


def _choice[E: StrEnum](value: object, key: str, enum: type[E]) -> E:
    text = _string(value, key)
    try:
        return enum(text.lower())
    except ValueError:
        raise ConfigError(key, f"expected one of {', '.join(enum)}", got=repr(text)) from None


_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: object, key: str) -> float:
    seconds = _seconds(value)
    if seconds is None:
        raise ConfigError(key, "expected a duration such as 30s, 10m or 12h", got=repr(value))
    if not 0 < seconds < math.inf:
        raise ConfigError(key, "must be more than 0 and finite", got=repr(value))
    return seconds


def _seconds(value: object) -> float | None:
    """Seconds, or None when ``value`` is not written as a duration at all."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # TOML integers are unbounded
            return math.inf
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if _NUMBER.fullmatch(text):
        return float(text)
    if _DURATION.fullmatch(text):
        return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    return None


_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def _split_host_port(text: str) -> tuple[str, str | None] | None:
    """``(host, port text or None)`` from ``host[:port]`` or ``[v6][:port]``; None if malformed."""
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")) or not is_ipv6(host):
            return None
        return host, rest[1:] if rest else None
    host, colon, port = text.partition(":")
    if not _HOSTNAME.fullmatch(host) or ":" in port:
        return None
    return host, port if colon else None


def _port(text: str, minimum: int) -> int | None:
    if not (text.isascii() and text.isdigit()):
        return None
    port = int(text)
    return port if minimum <= port <= 65535 else None


def _listen(value: object, key: str) -> ListenAddress:
    return ListenAddress.parse(_string(value, key), key)


def _api_hosts(value: object, key: str) -> tuple[str, ...]:
    hosts = _string_list(value, key)
    if not hosts:
        raise ConfigError(key, "at least one host is required")
    return tuple(_api_host(host, f"{key}[{index}]") for index, host in enumerate(hosts))


def _api_host(text: str, key: str) -> str:
    host = text.strip().lower()
    parts = _split_host_port(host)
    if parts is None or (parts[1] is not None and _port(parts[1], minimum=1) is None):
        raise ConfigError(key, "expected host or host:port without scheme or path", got=repr(text))
    return host


def _origin(value: object, key: str, schemes: tuple[str, ...]) -> str:
    """``scheme://host[:port]`` with nothing after it but an optional slash, which is dropped."""
    text = _string(value, key)
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    host_port = _split_host_port(parts.netloc) if parts is not None else None
    if (
        parts is None
        or host_port is None
        or parts.scheme.lower() not in schemes
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or (host_port[1] is not None and _port(host_port[1], minimum=1) is None)
    ):
        expected = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ConfigError(key, f"expected {expected}host[:port] without a path", got=repr(text))
    return f"{parts.scheme.lower()}://{parts.netloc}"


def _store(value: object, key: str) -> str:
    """``memory`` or a Redis URL (``store.address``); never a password in it, since it would
    show up wherever the URL is printed."""
    text = _string(value, key)
    if text.lower() == "memory":
        return "memory"
    try:
        parse_store_url(text)
    except BadStoreUrl as error:
        shown = repr(text) if not {"@", "?"} & set(text) else None  # may hold a password
        raise ConfigError(key, str(error), got=shown) from None
    return text


_ACL_USER = re.compile(r"[!-~]{1,128}")


def _acl_user(value: object, key: str) -> str:
    """A Redis ACL user name: printable, no spaces (Redis splits ACL rules at them)."""
    text = _string(value, key)
    if not _ACL_USER.fullmatch(text):
        raise ConfigError(key, "expected 1 to 128 printable characters without spaces")
    return text


def _path(value: object, key: str) -> Path:
    text = _string(value, key)
    if not text:
        raise ConfigError(key, "expected a path, got an empty string")
    return Path(text).expanduser()


def _existing_file(value: object, key: str) -> Path:
    path = _path(value, key)
    if not path.is_file():
        raise ConfigError(key, f"no such file: {path}")
    return path


def _directory(value: object, key: str) -> Path:
    path = _path(value, key)
    if path.exists() and not path.is_dir():
        raise ConfigError(key, f"not a directory: {path}")
    return path


def _networks(value: object, key: str) -> tuple[IPNetwork, ...]:
    return tuple(
        _network(item, f"{key}[{index}]") for index, item in enumerate(_string_list(value, key))
    )


def _network(text: str, key: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip())
    except ValueError:  # its message quotes the value
        raise ConfigError(
            key,
            "expected an IP address or network such as 10.0.0.0/8 (no host bits set)",
            got=repr(text),
        ) from None


def _customer_web_id(value: object, key: str) -> str:
    """onOffice ids are numbers, so a TOML integer is taken as the same id written as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _string(value, key).strip()
    if not text:
        raise ConfigError(key, "must not be empty")
    return text


# Secrets

_FINGERPRINT = re.compile(r"[0-9a-f]{12}")


def _secret(value: object, key: str, environ: Mapping[str, str]) -> Secret:
    if not isinstance(value, str):
        raise ConfigError(
            key, f"expected env:NAME or file:PATH as a string, got {_toml_type(value)}"
        )
    return Secret(_resolve(value, key, environ))


MAX_ROTATING_SECRETS = 4
"""Secrets one key may hold during a rotation: the old ones still in use, and the new one."""


def _secrets(value: object, key: str, environ: Mapping[str, str]) -> tuple[Secret, ...]:
    """One secret reference, or an array of 1 to 4 of them (different secrets) in a rotation."""
    if isinstance(value, str):
        return (_secret(value, key, environ),)
    if not isinstance(value, list):
        raise ConfigError(
            key,
            "expected env:NAME or file:PATH as a string, or an array of them, "
            f"got {_toml_type(value)}",
        )
    if not 1 <= len(value) <= MAX_ROTATING_SECRETS:
        raise ConfigError(key, f"expected 1 to {MAX_ROTATING_SECRETS} secrets", got=str(len(value)))
    secrets = tuple(_secret(item, f"{key}[{index}]", environ) for index, item in enumerate(value))
    for index, secret in enumerate(secrets):
        first = secrets.index(secret)
        if first != index:
            raise ConfigError(f"{key}[{index}]", f"the same secret as {key}[{first}]")
    return secrets


def _as_secret_references(text: str, key: str) -> object:
    """An array literal if the variable starts with ``[``, else one reference: secrets may
    hold commas, so the text is never split at them."""
    if not text.lstrip().startswith("["):
        return text
    try:
        return _as_list(text, key)
    except ConfigError:
        raise ConfigError(
            key, 'expected one secret reference, or an array such as ["env:OLD", "env:NEW"]'
        ) from None


def _resolve(reference: str, key: str, environ: Mapping[str, str]) -> str:
    """The secret behind ``env:NAME`` or ``file:PATH``; any other text is the secret itself."""
    if reference.startswith("env:"):
        return _from_environment(reference.removeprefix("env:"), key, environ)
    if reference.startswith("file:"):
        return _from_file(reference.removeprefix("file:"), key)
    if not reference:
        raise ConfigError(key, "the secret is empty")
    return reference


def _from_environment(name: str, key: str, environ: Mapping[str, str]) -> str:
    if not name:
        raise ConfigError(key, "expected a variable name after env:")
    value = environ.get(name)
    if value is None:
        raise ConfigError(key, f"environment variable {name} is not set")
    if not value:
        raise ConfigError(key, f"environment variable {name} is empty")
    if not _is_utf8(value):
        raise ConfigError(key, f"environment variable {name} is not UTF-8 text")
    return value


def _is_utf8(text: str) -> bool:
    """False for text Python decoded from bytes that are not UTF-8 (it keeps them as lone
    surrogates, which no log line, key or signature can encode later)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _from_file(name: str, key: str) -> str:
    if not name:
        raise ConfigError(key, "expected a path after file:")
    path = Path(name).expanduser()
    try:
        value = path.read_text(encoding="utf-8").rstrip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read secret file {path}: {_reason(exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"cannot read secret file {path}: not UTF-8 text") from None
    if not value:
        raise ConfigError(key, f"secret file {path} is empty")
    return value


def _provider_tokens(value: object, key: str, environ: Mapping[str, str]) -> tuple[str, ...]:
    items = _string_list(value, key)
    return tuple(
        _provider_token(item, f"{key}[{index}]", environ) for index, item in enumerate(items)
    )


def _provider_token(text: str, key: str, environ: Mapping[str, str]) -> str:
    """A fingerprint as written, or the fingerprint of a referenced token; never a raw token."""
    if _FINGERPRINT.fullmatch(text.lower()):
        return text.lower()
    if text.startswith(("env:", "file:")):
        return fingerprint(_resolve(text, key, environ))
    raise ConfigError(
        key, "expected a 12-hex-digit fingerprint or an env:/file: reference, not the token itself"
    )


# Sections


def _default_ca_dir() -> Path:
    return Path("~/.claimgate").expanduser()


DEFAULT_CAPTURE_LISTEN = ListenAddress("127.0.0.1", 8081)
_HTTP_ORIGIN = partial(_origin, schemes=("http", "https"))


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """The forward listener that the legacy code uses as HTTPS_PROXY."""

    listen: ListenAddress = field(
        default=ListenAddress("127.0.0.1", 8080),
        metadata=setting(_listen, "forward listener (HTTPS_PROXY); keep it on loopback"),
    )
    api_hosts: tuple[str, ...] = field(
        default=("api.onoffice.de",),
        metadata=setting(
            _api_hosts,
            "hosts intercepted and rewritten (`host` = any port, or `host:port`)",
            variable=_as_list,
        ),
    )
    """Lower case."""
    upstream_ca: Path | None = field(
        default=None, metadata=setting(_existing_file, "CA bundle that verifies the API host")
    )
    """None trusts the system store."""
    ca_dir: Path = field(
        default_factory=_default_ca_dir,
        metadata=setting(_directory, "where the interception CA lives"),
    )
    max_body_size: int = field(
        default=4 * 1024 * 1024,
        metadata=setting(
            _size,
            "bytes of a body claimgate holds and reads, counted once decoded (gzip, deflate, "
            "br, zstd); a larger API request goes on untouched (`malformed_request`; 413 in "
            "`enforce`)",
        ),
    )


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    """Where service calls are captured: in front of the provider app, or from a mirror."""

    upstream: str | None = field(
        default=None,
        metadata=setting(
            _HTTP_ORIGIN, "the provider app behind the capture listener; turns capture on"
        ),
    )
    listen: ListenAddress | None = field(
        default=None, metadata=setting(_listen, "capture listener")
    )
    """Becomes 127.0.0.1:8081 once ``upstream`` is set."""
    public_base_url: str | None = field(
        default=None,
        metadata=setting(
            _HTTP_ORIGIN,
            "`scheme://host[:port]` onOffice signed, when TLS ends in front",
            reloads=True,
        ),
    )
    provider_secret: tuple[Secret, ...] | None = field(
        default=None,
        metadata=setting(
            _secrets,
            "provider secret for link signatures; an array of them during a rotation "
            '(`["env:OLD", "file:NEW"]`)',
            variable=_as_secret_references,
            environ=True,
            reloads=True,
        ),
    )
    """A link signed with any of them verifies; never empty."""
    max_age: float = field(
        default=600.0,
        metadata=setting(
            _duration,
            "oldest service-call timestamp accepted (120 s of clock skew into the future)",
            reloads=True,
        ),
    )
    """Seconds."""
    mirror_listen: ListenAddress | None = field(
        default=None,
        metadata=setting(
            _listen,
            "mirror listener: captures copies of inbound requests, answers 204, forwards nothing",
        ),
    )
    trusted_proxies: tuple[IPNetwork, ...] = field(
        default=(),
        metadata=setting(
            _networks,
            "addresses (IP or CIDR) whose `X-Forwarded-Proto`/`-Host` are believed",
            variable=_as_list,
            reloads=True,
        ),
    )


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The optional reverse listener for integrations whose API base URL is configurable."""

    listen: ListenAddress | None = field(
        default=None,
        metadata=setting(
            _listen,
            "API listener: a reverse proxy to the API for integrations whose API base URL is "
            "configurable",
        ),
    )
    upstream: str = field(
        default="https://api.onoffice.de",
        metadata=setting(
            partial(_origin, schemes=("https",)),
            "where the API listener forwards, with verified TLS (`proxy.upstream_ca` or "
            "system trust)",
        ),
    )


@dataclass(frozen=True, slots=True)
class ClaimsSettings:
    """How long claims live and where they are kept."""

    ttl: float = field(
        default=12 * 3600.0,
        metadata=setting(
            _duration,
            "how long a claim is injected after its service call (onOffice publishes no "
            "lifetime; a working day, and the API's error 201 reveals a shorter one)",
            reloads=True,
        ),
    )
    """Seconds."""
    warn_before: float = field(
        default=3600.0,
        metadata=setting(
            _duration,
            "a claim this close to its expiry counts as expiring (`claimgate_claims_expiring`, "
            "the status page)",
            reloads=True,
        ),
    )
    """Seconds."""
    store: str = field(
        default="memory",
        metadata=setting(
            _store,
            "`memory`, or the Redis all replicas share: a `redis[s]://`, "
            "`redis[s]+sentinel://` or `redis[s]+cluster://` URL",
        ),
    )
    store_password: Secret | None = field(
        default=None,
        metadata=setting(
            _secret,
            "Redis password (`env:`/`file:`); a password in the URL is refused",
            environ=True,
        ),
    )
    store_username: str | None = field(
        default=None,
        metadata=setting(
            _acl_user, "Redis ACL user of the data nodes (with `store_password`), in every mode"
        ),
    )
    sentinel_password: Secret | None = field(
        default=None,
        metadata=setting(
            _secret,
            "password of the sentinels (`env:`/`file:`), for a `redis+sentinel://` store",
            environ=True,
        ),
    )
    store_prefix: str = field(
        default="claimgate:",
        metadata=setting(_string, "key prefix, so one server can hold several environments"),
    )
    affinity: Affinity = field(
        default=Affinity.CUSTOMER,
        metadata=setting(
            partial(_choice, enum=Affinity),
            "`customer`: every request gets the customer's freshest claim; `user`: a request "
            "carrying a known claim of user U gets U's freshest",
            reloads=True,
        ),
    )
    max_users_per_customer: int = field(
        default=DEFAULT_MAX_USERS,
        metadata=setting(
            _positive_int,
            "users per customer whose freshest claims are kept (the user whose claim is "
            "oldest leaves first)",
            variable=_as_integer,
        ),
    )
    max_entries: int = field(
        default=100_000,
        metadata=setting(
            _positive_int,
            "customers the memory store holds at most (least recently used leave first)",
            variable=_as_integer,
        ),
    )


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """What to do with API requests, and which tokens are the provider's own."""

    mode: Mode = field(
        default=Mode.INJECT,
        metadata=setting(
            partial(_choice, enum=Mode), "`observe`, `inject` or `enforce`", reloads=True
        ),
    )
    provider_tokens: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            _provider_tokens,
            "the provider's own API tokens (12-hex fingerprints or `env:` refs): passed untouched",
            variable=_as_list,
            environ=True,
            reloads=True,
        ),
    )
    """Fingerprints only: the tokens themselves are never kept."""


@dataclass(frozen=True, slots=True)
class Customer:
    """A static token-to-customer mapping, with the API secret for version-1 re-signing."""

    customer_web_id: str = field(
        metadata=setting(_customer_web_id, "the customer's id, as its links carry it", reloads=True)
    )
    token: Secret = field(
        metadata=setting(_secret, "the customer's API token", environ=True, reloads=True)
    )
    secret: Secret | None = field(
        default=None,
        metadata=setting(
            _secret, "that token's API secret, for version-1 re-signing", environ=True, reloads=True
        ),
    )


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin listener; without a token ``/claims`` is off and ``/`` is loopback only."""

    listen: ListenAddress = field(
        default=ListenAddress("127.0.0.1", 8082),
        metadata=setting(_listen, "admin listener (probes, metrics, claims API, status page)"),
    )
    token: Secret | None = field(
        default=None,
        metadata=setting(
            _secret,
            "guards `/` and `/claims`; without it `/claims` is off and `/` is loopback only",
            environ=True,
            reloads=True,
        ),
    )
    shutdown_grace: float = field(
        default=20.0,
        metadata=setting(
            _duration, "how long requests in flight may take after SIGTERM", reloads=True
        ),
    )
    """Seconds."""


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Log output; the choice for an unset format is telemetry's, not made here."""

    format: LogFormat | None = field(
        default=None,
        metadata=setting(partial(_choice, enum=LogFormat), "`json` or `console`", reloads=True),
    )
    level: LogLevel = field(
        default=LogLevel.INFO,
        metadata=setting(
            partial(_choice, enum=LogLevel),
            "`debug`, `info`, `warning` or `error`; `debug` also shows mitmproxy's "
            "per-connection lines",
            reloads=True,
        ),
    )


@dataclass(frozen=True, slots=True)
class ConfigSettings:
    """How the running sidecar follows its own configuration."""

    watch: bool = field(
        default=False,
        metadata=setting(
            _boolean,
            "reload when the file or a `file:` secret changes (as a mounted ConfigMap or "
            "Secret does), as on SIGHUP; `claimgate run --watch` also sets it",
            variable=_as_boolean,
        ),
    )


_ATTACHED_KEYS: Mapping[type, Mapping[str, Key]] = {
    Limits: {
        "request_line": Key(
            _size,
            "bytes of a request line (method, URL and query) on every listener; 414 past it",
        ),
        "header_size": Key(_size, "bytes of a request's whole head; 431 past it"),
        "header_count": Key(
            _positive_int, "header fields of one request; 431 past it", variable=_as_integer
        ),
        "header_timeout": Key(
            _duration,
            "time to receive a request's head, from the connection's start or its first byte; "
            "408 (or the connection closed) past it",
        ),
        "body_rate": Key(
            _positive_int,
            "bytes a second a request body must average on the proxy listeners, from its "
            "head's end after limits.header_timeout of grace; 408 past it",
            variable=_as_integer,
        ),
        "connections": Key(
            _positive_int,
            "connections open at once on each listener, counted apart; past it the one idle "
            "longest is closed to make room, or with every one busy the new one",
            variable=_as_integer,
        ),
        "bodies": Key(
            _size,
            "bytes of request bodies each proxy listener holds at once (counted apart; at "
            "least proxy.max_body_size); 503 for a body past it",
        ),
    }
}
"""The keys of a section whose dataclass lives in a pure module (docs/design.md 4), which
cannot carry this module's parsers: it declares their names, types and defaults, this the rest."""


@dataclass(frozen=True, slots=True)
class Settings:
    """All settings; ``Settings()`` is what claimgate runs on with no file."""

    proxy: ProxySettings = field(default_factory=ProxySettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    claims: ClaimsSettings = field(default_factory=ClaimsSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    customers: tuple[Customer, ...] = ()
    admin: AdminSettings = field(default_factory=AdminSettings)
    log: LogSettings = field(default_factory=LogSettings)
    limits: Limits = field(default_factory=Limits)
    """What a request head may take, how fast its body must come, and how many connections
    each listener holds open; strangers reach some of the listeners."""
    config: ConfigSettings = field(default_factory=ConfigSettings)

    @property
    def capture_enabled(self) -> bool:
        """True when a provider app sits behind the capture listener."""
        return self.capture.upstream is not None


SECTIONS: Mapping[str, type] = {
    item.name: item.type for item in dataclasses.fields(Settings) if item.name != "customers"
}
"""The ``[section]`` tables by name; ``[[customers]]`` is an array of ``Customer`` tables."""


def keys(section: type) -> dict[str, Key]:
    """A section's (or ``Customer``'s) declared keys by name, in the order declared."""
    attached = _ATTACHED_KEYS.get(section, {})
    return {
        item.name: item.metadata.get(_KEY) or attached[item.name]
        for item in dataclasses.fields(section)
    }


def load_settings(path: Path | None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Read ``path`` (None: defaults only), let ``CLAIMGATE_*`` variables win, validate all.

    Raises ``ConfigError`` for the first problem found.
    """
    document = _read_toml(path) if path is not None else {}
    values = _file_values(document)
    _apply_environment(values, environ)
    sections = {
        name: _build(section, name, values[name], environ) for name, section in SECTIONS.items()
    }
    sections["capture"] = _complete_capture(sections["capture"])
    _check_limits(sections["limits"], sections["proxy"])
    _check_claims(sections["claims"])
    customers = _customers(document.get("customers", []), environ)
    settings = Settings(customers=customers, **sections)
    _check_listeners(settings)
    return settings


def file_references(path: Path | None, environ: Mapping[str, str]) -> tuple[Path, ...]:
    """Every ``file:PATH`` the configuration reads (in the file or a ``CLAIMGATE_`` variable),
    once each, in order: what watching must look at beside the file itself."""
    found: list[str] = []

    def visit(value: object) -> None:
        if isinstance(value, str) and value.startswith("file:"):
            found.append(value.removeprefix("file:"))
        elif isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)

    visit(_read_toml(path) if path is not None else {})
    for variable, text in sorted(environ.items()):
        if variable.startswith(ENV_PREFIX) and variable != CONFIG_VARIABLE:
            visit(_as_list(text, variable) if text.lstrip().startswith("[") else text)
    return tuple(dict.fromkeys(Path(name).expanduser() for name in found if name))


def describe(settings: Settings) -> dict[str, Any]:
    """The effective settings as JSON-able data, secrets masked, for ``check-config``."""
    return _plain(settings)


def parse_duration(text: str | int | float, key: str) -> float:
    """Seconds from ``90s``, ``10m``, ``12h``, ``1d``, ``1h30m`` or a bare number of seconds."""
    return _duration(text, key)


# Reading the file and the environment


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {_reason(exc)}") from exc
    except UnicodeDecodeError:
        raise ConfigError(str(path), "cannot read: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), str(exc)) from exc


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _file_values(document: Mapping[str, object]) -> dict[str, dict[str, object]]:
    """The file's raw values per section; unknown sections and keys are typos, so errors."""
    values: dict[str, dict[str, object]] = {name: {} for name in SECTIONS}
    for name, table in document.items():
        if name == "customers":
            continue
        if name not in SECTIONS:
            raise ConfigError(name, _unknown("section", name, [*SECTIONS, "customers"]))
        if not isinstance(table, dict):
            raise ConfigError(name, f"expected a table [{name}], got {_toml_type(table)}")
        _check_keys(table, keys(SECTIONS[name]), name)
        values[name].update(table)
    return values


def _check_keys(table: Mapping[str, object], known: Mapping[str, Key], prefix: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{prefix}.{key}", _unknown("key", key, list(known)))


def _unknown(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown {kind}; did you mean {close[0]}?"
    return f"unknown {kind}; expected one of {', '.join(sorted(known))}"


def _apply_environment(values: dict[str, dict[str, object]], environ: Mapping[str, str]) -> None:
    """Overlay ``CLAIMGATE_<SECTION>_<KEY>``; an empty variable means "not set": the default."""
    for variable, text in sorted(environ.items()):
        target = _environment_target(variable)
        if target is None:
            continue
        section, name, key = target
        if text == "":
            values[section].pop(name, None)
        elif not _is_utf8(text):
            raise ConfigError(f"{section}.{name}", f"{variable} is not UTF-8 text")
        else:
            values[section][name] = key.variable(text, f"{section}.{name}")


def _environment_target(variable: str) -> tuple[str, str, Key] | None:
    """The section and key a variable sets; None for CLAIMGATE_ variables that are not ours."""
    if not variable.startswith(ENV_PREFIX) or variable == CONFIG_VARIABLE:
        return None
    section, _, name = variable.removeprefix(ENV_PREFIX).lower().partition("_")
    if section == "customers":
        raise ConfigError(variable, "customers come only from [[customers]] in the file")
    if section not in SECTIONS:
        return None
    known = keys(SECTIONS[section])
    if name not in known:
        raise ConfigError(variable, _unknown(f"key in [{section}]", name, list(known)))
    return section, name, known[name]


def _build[T](
    cls: type[T], prefix: str, table: Mapping[str, object], environ: Mapping[str, str]
) -> T:
    """Parse the keys present; the dataclass supplies the defaults of the others."""
    known = keys(cls)
    return cls(
        **{
            name: known[name].read(value, f"{prefix}.{name}", environ)
            for name, value in table.items()
        }
    )


# Rules across keys


def _check_limits(limits: Limits, proxy: ProxySettings) -> None:
    """The request line is part of the head, so the head's bound cannot be the smaller; a
    listener must be able to hold one body of the size it holds rather than streams."""
    if limits.header_size < limits.request_line:
        raise ConfigError(
            "limits.header_size",
            f"must be at least limits.request_line ({limits.request_line} bytes)",
            got=str(limits.header_size),
        )
    if limits.bodies < proxy.max_body_size:
        raise ConfigError(
            "limits.bodies",
            f"must be at least proxy.max_body_size ({proxy.max_body_size} bytes)",
            got=str(limits.bodies),
        )


def _check_claims(claims: ClaimsSettings) -> None:
    """In a cluster a brace in the prefix would become the keys' hash tag, parting a
    customer's keys that the scripts must find in one slot (store/keys.py)."""
    cluster = claims.store != "memory" and parse_store_url(claims.store).cluster
    if cluster and {"{", "}"} & set(claims.store_prefix):
        raise ConfigError(
            "claims.store_prefix",
            "must hold no { or } with a redis+cluster:// store: they would make its hash tag",
        )


def _complete_capture(capture: CaptureSettings) -> CaptureSettings:
    """Capture needs an app behind it, and the provider secret to verify what it captures."""
    if capture.listen is not None and capture.upstream is None:
        raise ConfigError("capture.upstream", "required when capture.listen is set")
    if capture.provider_secret is None and (
        capture.upstream is not None or capture.mirror_listen is not None
    ):
        raise ConfigError(
            "capture.provider_secret",
            "required when capture is on (capture.upstream or capture.mirror_listen is set)",
        )
    if capture.upstream is not None and capture.listen is None:
        return dataclasses.replace(capture, listen=DEFAULT_CAPTURE_LISTEN)
    return capture


def _customers(value: object, environ: Mapping[str, str]) -> tuple[Customer, ...]:
    if not isinstance(value, list) or not all(isinstance(table, dict) for table in value):
        raise ConfigError("customers", "expected [[customers]] tables")
    customers = tuple(
        _customer(table, f"customers[{index}]", environ) for index, table in enumerate(value)
    )
    _check_unique(customers)
    return customers


def _customer(table: Mapping[str, object], prefix: str, environ: Mapping[str, str]) -> Customer:
    _check_keys(table, keys(Customer), prefix)
    for item in dataclasses.fields(Customer):  # a key declared without a default
        if item.default is item.default_factory is MISSING and item.name not in table:
            raise ConfigError(f"{prefix}.{item.name}", "required")
    return _build(Customer, prefix, table, environ)


def _check_unique(customers: tuple[Customer, ...]) -> None:
    """One customer per id and per token, or a token could not be attributed."""
    ids: dict[str, int] = {}
    tokens: dict[Secret, int] = {}
    for index, customer in enumerate(customers):
        first = ids.setdefault(customer.customer_web_id, index)
        if first != index:
            raise ConfigError(
                f"customers[{index}].customer_web_id",
                f"already used by customers[{first}]",
                got=repr(customer.customer_web_id),
            )
        first = tokens.setdefault(customer.token, index)
        if first != index:
            raise ConfigError(f"customers[{index}].token", f"same token as customers[{first}]")


_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def _check_listeners(settings: Settings) -> None:
    """Two listeners on one address would only fail later, at bind time, less clearly."""
    listeners = list(_listeners(settings))
    for index, (key, address) in enumerate(listeners):
        for other_key, other in listeners[:index]:
            if _clash(address, other):
                raise ConfigError(key, f"{address} clashes with {other_key} ({other})")
            if _same_any_port(key, address, other_key, other):
                raise ConfigError(
                    key,
                    f"port 0 on {address.host} is taken by {other_key} too: mitmproxy cannot "
                    "run two listeners on one host with port 0; use another host (e.g. "
                    "127.0.0.2) or a fixed port",
                )


def _listeners(settings: Settings) -> Iterator[tuple[str, ListenAddress]]:
    """Every listener that is on, by its dotted key, in the order the keys are declared."""
    for name in SECTIONS:
        section = getattr(settings, name)
        for key in keys(SECTIONS[name]):
            address = getattr(section, key)
            if isinstance(address, ListenAddress):
                yield f"{name}.{key}", address


def _clash(one: ListenAddress, other: ListenAddress) -> bool:
    if one.port == 0 or one.port != other.port:
        return False
    return one.host == other.host or bool({one.host, other.host} & _WILDCARD_HOSTS)


def _same_any_port(key: str, one: ListenAddress, other_key: str, other: ListenAddress) -> bool:
    """mitmproxy refuses two of its listeners on (host, 0); the admin listener is not one."""
    if "admin.listen" in (key, other_key):
        return False
    return one.port == 0 and other.port == 0 and one.host == other.host


# Describing


def _plain(value: object) -> Any:
    """JSON-able data for ``describe``; a secret becomes its fingerprint."""
    match value:
        case Secret():
            return f"<secret fp={value.fingerprint}>"
        case ListenAddress() | Path() | ipaddress.IPv4Network() | ipaddress.IPv6Network():
            return str(value)
        case StrEnum():
            return value.value
        case tuple() | list():
            return [_plain(item) for item in value]
        case _ if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                item.name: _plain(getattr(value, item.name)) for item in dataclasses.fields(value)
            }
        case _:
            return value
