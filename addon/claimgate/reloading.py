"""What a configuration reload may change, decided before any of it is applied
(docs/design.md 3.6).

A reload reads the file and every secret as start-up does, by the same rules. Only keys
declared ``reloads`` may differ from the running settings: a change of any other key (a
listener, the CA directory, the store's address...) rejects the whole file, so a reload is
applied all or nothing, never half. Pure: the runner decides when to reload and the addon
applies what this returns.
"""

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from claimgate.settings import (
    SECTIONS,
    ConfigError,
    Customer,
    Settings,
    describe,
    keys,
    load_settings,
)

CUSTOMERS = "customers"
"""How ``[[customers]]`` is named among the changed keys: the list changes as a whole."""


@dataclass(frozen=True, slots=True)
class Applied:
    settings: Settings
    changed: tuple[str, ...]
    """The dotted names of the keys whose values changed (secrets too, by name only)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    key: str
    problem: str
    """What is wrong, never the value (it may be a secret)."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """The settings running now, and what the status page says of them."""

    settings: Settings
    fingerprint: str
    loaded_at: float
    """Unix seconds."""

    @classmethod
    def of(cls, settings: Settings, now: float | None = None) -> "Loaded":
        return cls(settings, settings_fingerprint(settings), time.time() if now is None else now)


def reload(
    path: Path | None,
    environ: Mapping[str, str],
    running: Settings,
    adjust: Callable[[Settings], Settings] = lambda settings: settings,
) -> Applied | Rejected:
    """Read ``path`` again and say whether its settings may replace ``running``.

    ``adjust`` applies what the command line set at start-up (``--watch``), as it was then.
    """
    try:
        loaded = adjust(load_settings(path, environ))
    except ConfigError as error:
        return Rejected(error.key, error.problem)
    return plan(running, loaded)


def plan(running: Settings, loaded: Settings) -> Applied | Rejected:
    changed = changed_keys(running, loaded)
    for dotted in changed:
        if not reloads(dotted):
            return Rejected(dotted, "needs a restart: only a new start applies a change of it")
    return Applied(loaded, changed)


def changed_keys(old: Settings, new: Settings) -> tuple[str, ...]:
    """The keys whose values differ, in the order they are declared."""
    changed: list[str] = []
    for item in dataclasses.fields(Settings):
        name = item.name
        if name == CUSTOMERS:
            changed += [CUSTOMERS] if old.customers != new.customers else []
            continue
        section_old, section_new = getattr(old, name), getattr(new, name)
        changed += [
            f"{name}.{key}"
            for key in keys(SECTIONS[name])
            if getattr(section_old, key) != getattr(section_new, key)
        ]
    return tuple(changed)


def reloads(dotted: str) -> bool:
    """Whether a reload may change the key ``dotted`` (``customers``: all its keys may)."""
    if dotted == CUSTOMERS:
        return all(key.reloads for key in keys(Customer).values())
    name, _, key = dotted.partition(".")
    return keys(SECTIONS[name])[key].reloads


def settings_fingerprint(settings: Settings) -> str:
    """12 hex digits of SHA-256 over the effective settings, each secret as its own
    fingerprint: two replicas on one configuration show the same, and a rotated secret
    changes it."""
    text = json.dumps(describe(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
