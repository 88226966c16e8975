"""mitmproxy's type check of every HTTP message it builds, without an exception per field.

When Python runs without ``-O``, mitmproxy checks the fields of each request and answer it
builds (``MessageData.__post_init__``, a developer's aid). That check tries the members of
a union one by one and raises and catches a ``TypeError`` for each miss: six per request
and answer, since ``content``, ``trailers`` and ``timestamp_end`` are None while a message
streams in. Each exception's traceback holds the frames of the call in a reference cycle,
which only the cyclic collector frees: most of the sidecar's cyclic garbage, and with the
checks themselves an eighth of its CPU per request (docs/performance.md, "Own work").

``install`` puts a check in its place that decides by ``isinstance`` with the classes each
field's type allows, and leaves every value it does not accept to mitmproxy's own check:
the same values pass and the same ``TypeError`` is raised, with no exception on the way
(docs/design.md 6.2).
"""

import dataclasses
import types
import typing
from typing import Any

from mitmproxy import http
from mitmproxy.utils import typecheck

type _Field = tuple[str, tuple[type, ...] | None, Any]
"""A field's name, the classes whose instances mitmproxy's check accepts for it (None when
``isinstance`` alone cannot tell), and its declared type."""


def accepted_classes(typeinfo: Any) -> tuple[type, ...] | None:
    """Classes whose instances ``typecheck.check_option_type`` accepts for ``typeinfo`` (a
    class, or a union of classes), by ``isinstance`` alone; None for any other type. (It
    takes an int for a float too: such a value goes to it and passes there.)"""
    union = typing.get_origin(typeinfo) in (typing.Union, types.UnionType)
    members = typing.get_args(typeinfo) if union else (typeinfo,)
    if not all(_plain_class(m) for m in members):
        return None  # Any, a tuple or sequence type, IO, a name as a string: mitmproxy's
    return members


def _plain_class(member: Any) -> bool:
    """A class as ``isinstance`` takes it; ``typing``'s own (Any, IO) are classes too, but
    mitmproxy's check treats them apart."""
    return (
        isinstance(member, type)
        and typing.get_origin(member) is None
        and member.__module__ != "typing"
    )


_fields: dict[type, tuple[_Field, ...]] = {}
"""Each message class's fields, worked out at its first message (two classes in all)."""


def _fields_of(cls: type) -> tuple[_Field, ...]:
    found = _fields.get(cls)
    if found is None:
        declared = dataclasses.fields(cls)
        found = _fields[cls] = tuple((f.name, accepted_classes(f.type), f.type) for f in declared)
    return found


def _check_fields(message: http.MessageData) -> None:
    for name, classes, typeinfo in _fields_of(type(message)):
        value = getattr(message, name)
        if classes is None or not isinstance(value, classes):
            typecheck.check_option_type(name, value, typeinfo)  # raises what mitmproxy raises


def install() -> None:
    """Check mitmproxy's messages with ``_check_fields``; nothing to do under ``-O``, where
    mitmproxy checks nothing. Once per process, before the listeners accept."""
    if hasattr(http.MessageData, "__post_init__"):
        http.MessageData.__post_init__ = _check_fields  # type: ignore[attr-defined]
