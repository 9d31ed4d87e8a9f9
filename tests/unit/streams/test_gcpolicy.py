"""FreezeSurvivors: what survives a full collection is frozen, garbage is not, and the freeze is refreshed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.gcpolicy import FreezeSurvivors


class Node:
    """A tracked object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # leave the test process as it was


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_nothing_is_frozen_until_a_full_collection_has_run() -> None:
    with FreezeSurvivors(clock=Clock()) as freezer:
        freezer.tick()
        assert gc.get_freeze_count() == 0
        gc.collect(1)
        freezer.tick()
        assert gc.get_freeze_count() == 0


def test_survivors_of_a_full_collection_are_frozen_and_its_garbage_is_not() -> None:
    kept = [Node() for _ in range(1000)]
    dropped = cycle()
    with FreezeSurvivors(clock=Clock()) as freezer:
        gc.collect()
        assert any(obj is kept[0] for obj in gc.get_objects(generation=2))
        freezer.tick()
    assert dropped() is None  # the cycle was collected before anything was frozen
    assert gc.get_freeze_count() >= len(kept)
    assert not any(obj is kept[0] for obj in gc.get_objects(generation=2))  # in the permanent generation now
    frozen = gc.get_freeze_count()
    gc.collect()
    assert gc.get_freeze_count() == frozen  # a later collection leaves the frozen objects alone


def test_a_frozen_object_that_became_cyclic_garbage_is_freed_at_the_refresh() -> None:
    clock = Clock()
    holder = [Node(), Node()]
    with FreezeSurvivors(refresh_s=60, clock=clock) as freezer:
        gc.collect()
        freezer.tick()
        assert gc.get_freeze_count() > 0
        a, b = holder
        a.other, b.other = b, a
        lost = weakref.ref(a)
        del a, b
        holder.clear()  # now an unreachable cycle, but frozen: collections do not see it
        gc.collect()
        assert lost() is not None
        clock.now = 61.0
        freezer.tick()
    assert lost() is None
    assert gc.get_freeze_count() > 0  # the survivors of the refresh are frozen again


def test_the_callback_is_removed_on_exit() -> None:
    freezer = FreezeSurvivors(clock=Clock())
    with freezer:
        assert freezer._callback in gc.callbacks
    assert freezer._callback not in gc.callbacks
