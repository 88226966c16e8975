"""``claimgate.collector``: no automatic pass while held; at start, what exists is frozen
(later passes never walk it) and cyclic garbage made afterwards is collected on its own."""

import gc
import weakref

import pytest

from claimgate import collector


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def _cycle_freed_by_allocating() -> bool:
    """Whether a new cycle, dropped, is freed while plenty of tracked objects are made."""
    gone = weakref.ref(_Node())
    churn = [[] for _ in range(50 * gc.get_threshold()[0])]
    del churn
    return gone() is None


@pytest.fixture
def restored_collector():
    was_enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.usefixtures("restored_collector")
def test_held_collects_nothing_then_start_freezes_what_exists_and_collects_what_follows():
    collector.hold()
    assert not _cycle_freed_by_allocating()
    before = _Node()
    frozen_before = gc.get_freeze_count()
    collector.start()
    assert gc.get_freeze_count() > frozen_before
    assert all(before is not obj for obj in gc.get_objects())  # frozen: no pass walks it
    assert _cycle_freed_by_allocating()
