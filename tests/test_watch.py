"""Noticing a changed configuration by its contents (docs/design.md 3.6)."""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from claimgate.watch import MAX_BYTES, Watcher, contents_digest

INTERVAL = 0.01
LOOKS = 2000
"""Most polls of a bounded wait: a count, never a wall-clock threshold."""


def test_the_digest_follows_the_contents_not_the_writes(tmp_path):
    path = tmp_path / "claimgate.toml"
    path.write_text('mode = "inject"\n')
    first = contents_digest([path])
    path.write_text('mode = "inject"\n')  # an identical rewrite
    assert contents_digest([path]) == first
    path.write_text('mode = "observe"\n')
    assert contents_digest([path]) != first


def test_a_file_appearing_or_vanishing_is_a_change(tmp_path):
    config, secret = tmp_path / "claimgate.toml", tmp_path / "token"
    config.write_text("[policy]\n")
    absent = contents_digest([config, secret])
    secret.write_text("")  # even empty, it is there now
    present = contents_digest([config, secret])
    assert present != absent
    secret.unlink()
    assert contents_digest([config, secret]) == absent


def kubernetes_volume(directory: Path, contents: str) -> Path:
    """A mounted ConfigMap as kubelet lays it out: the file leads through ``..data``."""
    directory.mkdir()
    (directory / "..v1").mkdir()
    (directory / "..v1" / "claimgate.toml").write_text(contents)
    (directory / "..data").symlink_to("..v1")
    (directory / "claimgate.toml").symlink_to("..data/claimgate.toml")
    return directory / "claimgate.toml"


def swap(directory: Path, version: str, contents: str) -> None:
    """kubelet's atomic update: a new version, then ``..data`` replaced in one rename."""
    (directory / version).mkdir()
    (directory / version / "claimgate.toml").write_text(contents)
    (directory / "..data_tmp").symlink_to(version)
    os.replace(directory / "..data_tmp", directory / "..data")


def test_a_kubernetes_symlink_swap_is_a_change_and_a_same_contents_swap_is_not(tmp_path):
    volume = tmp_path / "config"
    path = kubernetes_volume(volume, 'mode = "inject"\n')
    first = contents_digest([path])
    swap(volume, "..v2", 'mode = "inject"\n')
    assert contents_digest([path]) == first
    swap(volume, "..v3", 'mode = "observe"\n')
    assert path.is_symlink() and contents_digest([path]) != first


def test_a_huge_file_is_read_only_up_to_the_bound(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes(b"a" * MAX_BYTES + b"b" * 4096)
    huge = contents_digest([path])
    path.write_bytes(b"a" * MAX_BYTES)
    assert contents_digest([path]) == huge  # what lies past the bound is never read


class Paths:
    """What the watcher is told to read; each call is one look (it asks after every look)."""

    def __init__(self, *paths: Path) -> None:
        self.paths = list(paths)
        self.looks = 0

    def __call__(self) -> tuple[Path, ...]:
        self.looks += 1
        return tuple(self.paths)


class Calls:
    def __init__(self, then: Callable[[], None] = lambda: None) -> None:
        self.count = 0
        self.then = then

    async def __call__(self) -> None:
        self.count += 1
        if self.count == 1:
            self.then()


async def until(condition: Callable[[], bool], limit: int = LOOKS) -> bool:
    for _ in range(limit):
        if condition():
            return True
        await asyncio.sleep(INTERVAL / 2)
    return condition()


async def looks_pass(paths: Paths, count: int = 5) -> None:
    start = paths.looks
    assert await until(lambda: paths.looks >= start + count)


@contextlib.asynccontextmanager
async def watching(paths: Paths, changed: Calls) -> AsyncIterator[None]:
    task = asyncio.create_task(Watcher(paths, changed, INTERVAL).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "claimgate.toml"
    path.write_text('mode = "inject"\n')
    return path


async def test_the_watcher_calls_back_once_per_change(config):
    paths, changed = Paths(config), Calls()
    async with watching(paths, changed):
        await looks_pass(paths)
        assert changed.count == 0
        config.write_text('mode = "observe"\n')
        assert await until(lambda: changed.count == 1)
        config.write_text('mode = "observe"\n')
        await looks_pass(paths)
        assert changed.count == 1
        config.write_text('mode = "enforce"\n')
        assert await until(lambda: changed.count == 2)
        await looks_pass(paths)
        assert changed.count == 2


async def test_the_watcher_sees_a_kubernetes_swap(tmp_path):
    volume = tmp_path / "config"
    paths, changed = Paths(kubernetes_volume(volume, 'mode = "inject"\n')), Calls()
    async with watching(paths, changed):
        await looks_pass(paths, 1)
        swap(volume, "..v2", 'mode = "observe"\n')
        assert await until(lambda: changed.count == 1)


async def test_a_path_named_after_a_change_is_watched_from_then_on(config, tmp_path):
    secret, later = tmp_path / "token", tmp_path / "later"
    secret.write_text("one")
    paths = Paths(config)
    changed = Calls(then=lambda: paths.paths.extend([secret, later]))
    async with watching(paths, changed):
        await looks_pass(paths, 1)
        config.write_text('mode = "observe"\n')
        assert await until(lambda: changed.count == 1)
        await looks_pass(paths)
        assert changed.count == 1  # being named is no change of its own
        secret.write_text("two")
        assert await until(lambda: changed.count == 2)
        later.write_text("appears")
        assert await until(lambda: changed.count == 3)


@pytest.mark.parametrize("names_a_new_path", [False, True], ids=["same", "new"])
async def test_a_change_made_during_a_call_is_seen_at_the_next_look(
    config, tmp_path, names_a_new_path
):
    secret = tmp_path / "token"
    secret.write_text("one")
    paths = Paths(config)

    def meanwhile() -> None:  # the reload has read the file; then it changes again
        config.write_text('mode = "enforce"\n')
        if names_a_new_path:
            paths.paths.append(secret)

    changed = Calls(then=meanwhile)
    async with watching(paths, changed):
        await looks_pass(paths, 1)
        config.write_text('mode = "observe"\n')
        assert await until(lambda: changed.count == 1)
        assert await until(lambda: changed.count == 2, limit=200)
