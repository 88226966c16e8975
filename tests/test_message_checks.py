"""``claimgate.message_checks``: mitmproxy's type check of its messages, the same verdicts
without an exception on the way, and so without the cyclic garbage of one."""

import dataclasses
import gc
import typing
from collections.abc import Callable, Iterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.test import tutils

from claimgate import message_checks

MITMPROXY_CHECK = http.MessageData.__post_init__


@pytest.fixture
def installed() -> Iterator[None]:
    message_checks.install()
    yield
    http.MessageData.__post_init__ = MITMPROXY_CHECK


def _verdict(check: Callable[[http.MessageData], None], message: http.MessageData) -> str | None:
    try:
        check(message)
    except TypeError as error:
        return str(error)
    return None


VALUES = [None, b"", b"x", "", "x", 0, 7, True, 1.5, http.Headers(), [], (), object()]


@pytest.mark.usefixtures("installed")
@given(
    response=st.booleans(),
    changes=st.lists(st.tuples(st.integers(0, 11), st.sampled_from(VALUES)), max_size=3),
)
def test_every_message_passes_or_fails_as_mitmproxy_s_own_check_says(response, changes):
    message = (tutils.tresp() if response else tutils.treq()).data
    names = [field.name for field in dataclasses.fields(message)]
    for field, value in changes:
        setattr(message, names[field % len(names)], value)
    assert _verdict(http.MessageData.__post_init__, message) == _verdict(MITMPROXY_CHECK, message)


def test_every_field_of_mitmproxy_s_messages_is_decided_by_isinstance():
    """Else that field would still take mitmproxy's way, exceptions and all."""
    for cls in (http.RequestData, http.ResponseData):
        for field in dataclasses.fields(cls):
            assert message_checks.accepted_classes(field.type) is not None, field.name


@pytest.mark.parametrize(
    "typeinfo", [typing.Any, tuple[int, int], Sequence[str], typing.IO, "bytes", int | typing.Any]
)
def test_a_type_isinstance_cannot_decide_is_left_to_mitmproxy(typeinfo):
    assert message_checks.accepted_classes(typeinfo) is None


def _cyclic_garbage_of_building_messages() -> int:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(10):
            tutils.treq(content=None, timestamp_end=None)
            tutils.tresp(content=None, timestamp_end=None)
        return gc.collect()
    finally:
        if was_enabled:
            gc.enable()


def test_building_messages_leaves_no_cyclic_garbage(installed):
    assert _cyclic_garbage_of_building_messages() == 0


def test_mitmproxy_s_own_check_does_leave_some():
    """What the module is for, and what shows the test above can fail."""
    assert _cyclic_garbage_of_building_messages() > 0
