"""Per-connector sequence numbers: which are still missing, and when a hole counts as possibly lost events.

A connector numbers its events 0, 1, 2, ... without gaps. They reach the worker keyed by subject, over several
partitions and two topics, so they arrive a little out of order; a number below the highest seen may simply be
still in flight. A hole is reported as possibly lost once `patience` later numbers have arrived past it.

While the worker catches up on a backlog its partitions are read at different speeds, so one partition's
numbers can run tens of thousands ahead of another's; judging holes then would raise false alarms. The worker
says so (`see(..., hold=True)`) and holes wait, up to `HOLD_LIMIT` times the patience, until it has caught up.
"""

from __future__ import annotations

import heapq
import json

HOLD_LIMIT = 5
"""While holding, holes are still given up once this many times `patience` numbers wait ahead (bounded memory)."""


class SequenceTracker:
    """The numbers seen from one connector: everything below `next` plus the set seen above it."""

    __slots__ = ("ahead", "heap", "lost", "next", "patience")

    def __init__(self, patience: int = 10_000) -> None:
        self.next = 0
        self.ahead: set[int] = set()
        self.heap: list[int] = []  # `ahead` as a min-heap, so giving up on the oldest hole is O(log n)
        self.lost = 0
        self.patience = patience

    def see(self, sequence: int, *, hold: bool = False) -> int:
        """Record one number; returns how many numbers this made count as lost (usually 0).

        `hold`: the numbers are arriving from a backlog, read partition by partition; give up on no hole yet.
        """
        if sequence < self.next or sequence in self.ahead:
            return 0  # a re-delivery
        if sequence != self.next:
            self.ahead.add(sequence)
            heapq.heappush(self.heap, sequence)
            limit = self.patience * HOLD_LIMIT if hold else self.patience
            lost = 0
            while len(self.ahead) > limit:  # after a hold, every hole that waited long enough goes at once
                lost += self._give_up()
            return lost
        self.next += 1
        self._catch_up()
        return 0

    def _catch_up(self) -> None:
        ahead, heap = self.ahead, self.heap
        while heap and heap[0] <= self.next:
            found = heapq.heappop(heap)
            if found == self.next:
                ahead.discard(found)
                self.next += 1

    def _give_up(self) -> int:
        # The oldest hole has waited long enough: count it and move past it.
        first = self.heap[0]
        lost = first - self.next
        self.lost += lost
        self.next = first
        self._catch_up()
        return lost

    def missing(self) -> int:
        """Numbers below the highest seen that have not arrived (in flight or lost)."""
        if not self.ahead:
            return 0
        return max(self.ahead) + 1 - self.next - len(self.ahead)

    def to_bytes(self) -> bytes:
        """Compact JSON, for the changelog."""
        return json.dumps([self.next, sorted(self.ahead), self.lost], separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SequenceTracker:
        """The inverse of `to_bytes`."""
        nxt, ahead, lost = json.loads(raw)
        tracker = cls()
        tracker.next, tracker.ahead, tracker.lost = int(nxt), set(ahead), int(lost)
        tracker.heap = sorted(tracker.ahead)
        return tracker
