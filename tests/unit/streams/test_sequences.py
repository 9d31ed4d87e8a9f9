"""SequenceTracker: out-of-order arrivals are not losses; a hole counts as lost only after `patience` later numbers."""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.sequences import SequenceTracker


def seen(numbers: list[int], patience: int = 10_000) -> tuple[SequenceTracker, list[int]]:
    tracker = SequenceTracker(patience)
    return tracker, [tracker.see(n) for n in numbers]


def test_in_order_numbers_move_next_and_leave_nothing_ahead() -> None:
    tracker, reported = seen(list(range(5)))
    assert (tracker.next, tracker.ahead, tracker.heap, tracker.lost) == (5, set(), [], 0)
    assert reported == [0] * 5
    assert tracker.missing() == 0


def test_out_of_order_numbers_wait_ahead_and_fill_in() -> None:
    tracker = SequenceTracker()
    assert tracker.see(2) == 0
    assert tracker.see(1) == 0
    assert (tracker.next, tracker.ahead) == (0, {1, 2})
    assert tracker.missing() == 1
    tracker.see(0)
    assert (tracker.next, tracker.ahead, tracker.heap) == (3, set(), [])
    assert tracker.missing() == 0
    assert tracker.lost == 0


def test_a_redelivery_below_next_or_already_ahead_changes_nothing() -> None:
    tracker, _ = seen([0, 1, 5])
    before = tracker.to_bytes()
    assert tracker.see(0) == 0
    assert tracker.see(5) == 0
    assert tracker.to_bytes() == before
    assert tracker.heap == [5]


def test_a_gap_is_lost_only_after_patience_later_numbers() -> None:
    tracker, reported = seen([0, 1, *range(3, 6)], patience=3)  # 2 is missing; 3 later numbers are patient
    assert reported == [0] * 5
    assert tracker.lost == 0
    assert tracker.missing() == 1
    assert tracker.see(6) == 1  # the fourth later number gives up on 2
    assert (tracker.next, tracker.ahead, tracker.heap, tracker.lost) == (7, set(), [], 1)
    assert tracker.see(2) == 0  # arriving after all: a re-delivery now
    assert tracker.lost == 1


def test_a_wide_gap_is_counted_whole() -> None:
    tracker, reported = seen([0, 10, 11, 12], patience=2)
    assert reported == [0, 0, 0, 9]
    assert (tracker.next, tracker.lost) == (13, 9)


def test_missing_counts_the_holes_below_the_highest_seen() -> None:
    tracker, _ = seen([0, 3, 7, 5])
    assert tracker.missing() == 8 - 1 - 3  # 1, 2, 4, 6
    tracker.see(1)
    tracker.see(2)
    assert tracker.next == 4
    assert tracker.missing() == 2  # 4, 6


def test_bytes_round_trip_keeps_the_numbers_and_a_consistent_heap() -> None:
    tracker, _ = seen([0, 9, 4, 7, 3, 12], patience=10_000)
    restored = SequenceTracker.from_bytes(tracker.to_bytes())
    assert restored.to_bytes() == tracker.to_bytes()
    assert (restored.next, restored.ahead, restored.lost) == (tracker.next, tracker.ahead, tracker.lost)
    assert sorted(restored.heap) == sorted(restored.ahead)
    heap = list(restored.heap)
    heapq.heapify(heap)
    assert restored.heap[0] == heap[0]
    # the restored one goes on exactly as the original
    for n in (1, 2, 5, 6, 8, 10, 11):
        assert restored.see(n) == tracker.see(n)
    assert restored.to_bytes() == tracker.to_bytes()
    assert (restored.next, restored.ahead, restored.heap) == (13, set(), [])


def test_bytes_round_trip_after_losses() -> None:
    tracker, _ = seen([0, 5, 6, 7, 9], patience=2)
    assert tracker.lost == 4
    restored = SequenceTracker.from_bytes(tracker.to_bytes())
    assert (restored.next, restored.ahead, restored.lost) == (8, {9}, 4)
    assert restored.heap == [9]
    restored.see(8)
    assert (restored.next, restored.ahead, restored.heap) == (10, set(), [])


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[int], set[int]]:
    n = draw(st.integers(min_value=1, max_value=60))
    removed = draw(st.sets(st.integers(min_value=0, max_value=n - 1), max_size=n))
    order = draw(st.permutations([i for i in range(n) if i not in removed]))
    redelivered = draw(st.lists(st.sampled_from(order), max_size=10)) if order else []
    return [*order, *redelivered], removed


@settings(max_examples=300, deadline=None)
@given(arrivals())
def test_after_enough_later_numbers_exactly_the_removed_ones_are_lost(case: tuple[list[int], set[int]]) -> None:
    numbers, removed = case
    n = max([*removed, *numbers]) + 1
    patience = n  # no arrival of the shuffled ones is ever given up on
    tracker = SequenceTracker(patience)
    reported = sum(tracker.see(x) for x in numbers)
    assert reported == 0
    assert tracker.lost == 0
    assert tracker.missing() == (len([r for r in removed if r < max(numbers)]) if numbers else 0)
    reported += sum(tracker.see(x) for x in range(n, n + patience + len(removed) + 1))
    assert tracker.lost == reported == len([r for r in removed if r < tracker.next])
    assert tracker.lost == len(removed)
    assert tracker.ahead == set()
    assert sorted(tracker.heap) == sorted(tracker.ahead)
    assert tracker.missing() == 0


def test_while_holding_no_hole_is_given_up_until_the_hold_limit() -> None:
    tracker = SequenceTracker(patience=3)
    assert [tracker.see(n, hold=True) for n in [0, *range(2, 12)]] == [0] * 11  # 10 numbers wait past hole 1
    assert (tracker.next, tracker.lost) == (1, 0)
    assert tracker.see(1, hold=True) == 0  # the hole filled in: nothing was lost after all
    assert (tracker.next, tracker.ahead, tracker.lost) == (12, set(), 0)


def test_a_hold_bounds_what_waits_ahead_to_its_limit() -> None:
    tracker = SequenceTracker(patience=2)
    reported = [tracker.see(n, hold=True) for n in [0, *range(2, 20)]]
    assert sum(reported) == 1  # hole 1 given up once 11 > 2 * HOLD_LIMIT numbers waited
    assert len(tracker.ahead) <= 2 * 5


def test_holes_that_waited_through_a_hold_are_given_up_together_after_it() -> None:
    tracker = SequenceTracker(patience=2)
    for n in [0, 2, 3, 5, 6, 8, 9]:  # holes 1, 4 and 7
        tracker.see(n, hold=True)
    assert tracker.lost == 0
    assert tracker.see(10) == 3  # each hole now has more than 2 numbers past it
    assert (tracker.next, tracker.ahead, tracker.lost) == (11, set(), 3)
    assert tracker.see(11) == 0
