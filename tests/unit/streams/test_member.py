"""A member on the worker's storage decides as `Member` does, and a member restored from its changelog goes on
exactly as one that never stopped."""

from __future__ import annotations

from collections import deque

import pytest

from schemas.decisions import Decision
from schemas.events import Event, Subject
from streams.evaluate import SubjectLeg
from streams.legs import SHARED_FACTS, Asked, AskedLegs, LegRequest, SequencesSeen, decode, encode, partition_of
from streams.member import AskedOnDisk, MemberState
from streams.processor import Change
from streams.replay import Replayer

from .test_evaluate_plan import POLICY, _sample_events
from .test_legs import Cluster, as_json, homed_elsewhere

PARTITIONS, MEMBERS = 4, 4


def test_members_on_the_workers_storage_make_exactly_the_replays_decisions() -> None:
    events = homed_elsewhere(_sample_events(), PARTITIONS)
    cluster = Cluster(PARTITIONS, MEMBERS, one_clock=True, kind=MemberState)
    replayer = Replayer(POLICY)
    assert as_json(d for event in events for d in cluster.take(event)) == as_json(
        d for event in events for d in replayer.feed(event)
    )
    assert any(r.revision > 0 for r in cluster.results)


class Worked:
    """Members driven as the worker drives its state: `handle` every message, then one transaction an event."""

    def __init__(self, states: list[MemberState] | None = None, delay: int = 0) -> None:
        self.states = states or [
            MemberState(POLICY, PARTITIONS, [p for p in range(PARTITIONS) if p % MEMBERS == k]) for k in range(MEMBERS)
        ]
        self.logs: list[list[Change]] = [[] for _ in self.states]
        self.transactions = 0
        self.delay = delay  # legs wait on their topic until this many more events have been taken
        self.in_flight: deque[tuple[int, int, bytes]] = deque()  # (due, partition, value): committed, not yet read

    def owner(self, partition: int) -> MemberState:
        return next(m for m in self.states if partition in m.owned)

    def take(self, event: Event) -> list[Decision]:
        if isinstance(event, SHARED_FACTS):
            to = list(self.states)
        else:
            to = [self.owner(partition_of(event.partition_key(), PARTITIONS))]
        queue: deque[tuple[MemberState, object]] = deque((m, event) for m in to)
        while self.in_flight and self.in_flight[0][0] <= self.transactions:
            _, partition, value = self.in_flight.popleft()
            queue.append((self.owner(partition), decode(value)))
        decisions = self._run(queue)
        self.transactions += 1
        for log, member in zip(self.logs, self.states, strict=True):
            log.extend(member.changes(f"{1_700_000_000_000 + self.transactions}-0"))
        return decisions

    def _run(self, queue: deque[tuple[MemberState, object]]) -> list[Decision]:
        decisions: list[Decision] = []
        while queue:
            member, message = queue.popleft()
            outcome = member.handle(message)  # type: ignore[arg-type]
            assert [d.to_json_bytes() for d in outcome.decisions] == outcome.payloads
            decisions.extend(outcome.decisions)
            for partition, value in outcome.legs:
                if self.delay:
                    self.in_flight.append((self.transactions + self.delay, partition, value))
                else:
                    queue.append((self.owner(partition), decode(value)))
        return decisions

    def drain(self) -> list[Decision]:
        decisions: list[Decision] = []
        while self.in_flight:
            _, partition, value = self.in_flight.popleft()
            decisions.extend(self._run(deque([(self.owner(partition), decode(value))])))
        return decisions

    def restored(self) -> Worked:
        """Members started afresh from the changelogs written so far, as after a kill -9."""
        states = []
        for log, member in zip(self.logs, self.states, strict=True):
            fresh = MemberState(POLICY, PARTITIONS, member.owned)
            fresh.restore(log)
            states.append(fresh)
        again = Worked(states, self.delay)
        again.logs = [list(log) for log in self.logs]
        again.transactions = self.transactions
        again.in_flight = deque(self.in_flight)  # legs already on their topic are read by the restored members
        return again


@pytest.mark.parametrize(("cut", "delay"), [(45, 0), (53, 0), (76, 0), (45, 3), (57, 3), (76, 3), (60, 20)])
def test_members_restored_from_their_changelogs_go_on_as_if_they_had_never_stopped(cut: int, delay: int) -> None:
    # Cut at 76: a leg kept for the flow before it is re-judged by the fact after it. With legs delayed, flows wait
    # for their legs across the cut.
    events = homed_elsewhere(_sample_events(), PARTITIONS)
    whole = Worked(delay=delay)
    decided = [[d.to_json_bytes() for d in whole.take(event)] for event in events]
    decided.append([d.to_json_bytes() for d in whole.drain()])

    stopped = Worked(delay=delay)
    for event in events[:cut]:
        stopped.take(event)
    assert any(m._asked or m.open_flows() for m in stopped.states)  # something open to restore
    resumed = stopped.restored()
    after = [[d.to_json_bytes() for d in resumed.take(event)] for event in events[cut:]]
    after.append([d.to_json_bytes() for d in resumed.drain()])
    assert after == decided[cut:]
    assert any(decided[cut:])


def test_a_flow_waiting_for_a_leg_is_restored_waiting_and_decided_when_the_leg_comes() -> None:
    events = homed_elsewhere(_sample_events(), PARTITIONS)
    flow = next(e for e in events if e.kind == "flow")
    home = partition_of(flow.partition_key(), PARTITIONS)
    members = Worked()
    state = members.owner(home)
    outcome = state.handle(flow)
    assert outcome.decisions == []
    assert outcome.legs  # it waits for a leg kept by the other member
    log = state.changes("1700000000001-0")
    fresh = MemberState(POLICY, PARTITIONS, state.owned)
    fresh.restore(log)
    for partition, value in outcome.legs:
        answer = members.owner(partition).handle(decode(value))
        decided = [d for _, v in answer.legs for d in fresh.handle(decode(v)).decisions]
    assert [d.to_json_bytes() for d in decided] == [d.to_json_bytes() for d in Replayer(POLICY).feed(flow)]


def test_a_connectors_numbers_from_every_member_are_tracked_and_restored_where_they_are_sent() -> None:
    tracker = MemberState(POLICY, PARTITIONS, [0])
    seen = [SequencesSeen("mis", (0, 1, 3)), SequencesSeen("mis", (2, 5))]
    outcomes = [tracker.handle(decode(encode(message))) for message in seen]
    assert [o.missing for o in outcomes] == [0, 0]
    assert tracker.sequences["mis"].missing() == 1  # 4, in flight or lost
    log = tracker.changes("1700000000001-0")
    assert any(key == b"q:mis" for key, _ in log)
    again = MemberState(POLICY, PARTITIONS, [0])
    again.restore(log)
    assert again.sequences["mis"].missing() == 1
    assert again.handle(SequencesSeen("mis", (4,))).missing == 0
    assert again.sequences["mis"].missing() == 0


def test_a_member_does_not_track_the_share_of_numbers_it_takes_in_itself() -> None:
    member = MemberState(POLICY, PARTITIONS, [0])
    fact = next(e for e in _sample_events() if e.kind == "consent_given")
    member.handle(fact)
    assert member.sequences == {}  # sent on as `SequencesSeen` by the worker, to wherever the connector is tracked


def test_sequence_numbers_on_the_wire_are_whole_numbers() -> None:
    with pytest.raises(ValueError, match="whole numbers"):
        decode(b'{"leg":"seen","connector":"mis","sequences":[1,-2]}')


@pytest.mark.parametrize("kind", [AskedLegs, AskedOnDisk])
def test_answered_requests_close_when_their_window_does_in_memory_and_on_disk(kind: type[AskedLegs]) -> None:
    flow = next(e for e in _sample_events() if e.kind == "flow")
    asked = kind()

    def answered(first: str, expires: int) -> Asked:
        request = LegRequest(flow, (Subject(id=first), Subject(id="shared")), home=0)
        leg = SubjectLeg(first, frozenset(), (), ())
        return Asked(request, [leg, SubjectLeg("shared", frozenset(), (), ())], [0, 0], expires)

    asked.put((flow.event_id, "a"), answered("a", 1_000))
    asked.put((flow.event_id, "b"), answered("b", 2_000))
    assert asked.expire(1_000) == []  # open up to and including its end
    assert [key for key, _ in asked.affected("shared", 1_000, None)] == [(flow.event_id, "a"), (flow.event_id, "b")]
    assert asked.expire(1_001) == [(flow.event_id, "a")]
    assert (flow.event_id, "a") not in asked
    assert asked.affected("a", 0, None) == []
    assert asked.affected("shared", 1_001, None) == [((flow.event_id, "b"), 1)]
    assert asked.expire(1_500) == []
    asked.put((flow.event_id, "c"), answered("c", 1_200))  # a later request may close first
    assert asked.expire(1_500) == [(flow.event_id, "c")]
    assert asked.expire(5_000) == [(flow.event_id, "b")]
    assert len(asked) == 0
