"""A member of the split topology (`streams.legs.Member`) on the stream worker's storage and changelog.

Its open flows, those waiting for legs among them, live in `OpenFlows` and the `b:`/`f:` changelog keys as any
worker's do (a waiting flow's line carries its legs and arrival). What it adds:

    k:<flow id>\\t<subject id>   a leg request this member answered, with its legs and their revisions, kept open
                                to late facts about their subjects (`streams.legs.Asked.to_bytes`); deleted when it
                                leaves the lateness window

so a member killed at any point restores what it had committed, as the worker does (`StreamState.restoring`).
"""

from __future__ import annotations

from datetime import timedelta

from schemas.decisions import Decision
from schemas.events import Event
from schemas.policy import Policy
from streams.legs import Asked, AskedKey, LegRequest, LegResult, Member, SequencesSeen, encode
from streams.processor import Change, Outcome, StreamState
from streams.sequences import SequenceTracker
from streams.state import DEFAULT_LATENESS


class MemberState(Member, StreamState):
    """`Member` whose open flows and answered requests are kept, and restored, as `StreamState` keeps a worker's."""

    def __init__(
        self,
        policy: Policy,
        partitions: int,
        owned: frozenset[int] | list[int] | range,
        lateness: timedelta = DEFAULT_LATENESS,
        *,
        on_disk: bool = False,
    ) -> None:
        """A member owning `owned` of `partitions`, its open flows in memory or (`on_disk`) a temporary file."""
        super().__init__(policy, partitions, owned, lateness, on_disk=on_disk)
        # A connector's events are spread over every member: each sends the numbers it takes in to the member that
        # tracks that connector (`SequencesSeen`), where they are tracked as one worker tracks them.
        self.tracks_sequences = False
        self._legs_out: list[tuple[int, LegRequest | LegResult]] = []
        self._asked_dirty: set[AskedKey] = set()

    def handle(self, message: Event | LegRequest | LegResult | SequencesSeen, raw: bytes | None = None) -> Outcome:
        """Apply an event or a leg message; the decisions, and the legs to send to other members."""
        if isinstance(message, SequencesSeen):
            return self._seen(message)
        if isinstance(message, LegRequest | LegResult):
            sent = self.take(message)
            self._legs_out.extend(sent.legs)
            self._watermark_moved = True
            outcome = Outcome(sent.decisions, [d.to_json_bytes() for d in sent.decisions])
        else:
            outcome = super().handle(message, raw)
        outcome.legs = [(partition, encode(leg)) for partition, leg in self._legs_out]
        self._legs_out = []
        return outcome

    def _seen(self, seen: SequencesSeen) -> Outcome:
        """Track a connector's numbers taken in by any member; `missing` counts those that now count as lost."""
        tracker = self.sequences.get(seen.connector)
        if tracker is None:
            tracker = self.sequences[seen.connector] = SequenceTracker()
        missing = sum(tracker.see(n, hold=self.catching_up) for n in seen.sequences)
        self._moved.add(seen.connector)
        return Outcome(missing=missing)

    def _decide(self, event: Event) -> list[Decision]:
        sent = self.take(event)
        self._legs_out.extend(sent.legs)
        return sent.decisions

    def _asked_changed(self, key: AskedKey) -> None:
        self._asked_dirty.add(key)

    def _asked_closed(self, key: AskedKey) -> None:
        self._asked_dirty.add(key)

    def changes(self, batch_id: str) -> list[Change]:
        """`StreamState.changes`, and the answered requests kept, changed or closed since the last call."""
        out = super().changes(batch_id)
        for key in sorted(self._asked_dirty):
            asked = self._asked.get(key)
            out.append((_asked_key(key), None if asked is None else asked.to_bytes()))
        self._asked_dirty.clear()
        return out

    def _restore_other(self, kind: bytes, name: bytes, value: bytes) -> None:
        if kind != b"k":
            return
        flow_id, _, first = name.decode().partition("\t")
        key = (flow_id, first)
        self._keep_asked(key, Asked.from_bytes(value))
        self._asked_dirty.discard(key)  # restored as it was written


def _asked_key(key: AskedKey) -> bytes:
    return f"k:{key[0]}\t{key[1]}".encode()
