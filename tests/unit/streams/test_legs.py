"""Members of the split topology, each keeping some partitions' subjects, decide as one replay does."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from random import Random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.decisions import Decision
from schemas.events import DataFlow, Event, Fact, Subject
from streams.evaluate import SubjectLeg
from streams.legs import (
    SHARED_FACTS,
    LegRequest,
    LegResult,
    Member,
    decode,
    encode,
    partition_of,
)
from streams.replay import Replayer

from .conftest import standard_agreements
from .test_evaluate_legs import about
from .test_evaluate_plan import POLICY, _sample_events, facts, flows


class Cluster:
    """Members owning partitions round robin; every message is delivered, through its wire form, as it is sent."""

    def __init__(
        self, partitions: int, members: int, *, one_clock: bool, delay: int = 0, kind: type[Member] = Member
    ) -> None:
        self.partitions = partitions
        self.delay = delay  # legs wait until this many more events have been taken
        self.in_flight: deque[tuple[int, Member, LegRequest | LegResult]] = deque()
        self.taken = 0
        self.members = [
            kind(POLICY, partitions, [p for p in range(partitions) if p % members == k]) for k in range(members)
        ]
        self.one_clock = one_clock
        self.requests = 0
        self.results: list[LegResult] = []

    def owner(self, partition: int) -> Member:
        return next(m for m in self.members if partition in m.owned)

    def take(self, event: Event) -> list[Decision]:
        if self.one_clock:
            for member in self.members:
                member._advance_to(event.emitted_at)  # replay's single clock, for a byte-for-byte comparison
        if isinstance(event, SHARED_FACTS):
            to = list(self.members)
        else:
            to = [self.owner(partition_of(event.partition_key(), self.partitions))]
        self.taken += 1
        decisions: list[Decision] = []
        queue: deque[tuple[Member, Event | LegRequest | LegResult]] = deque((m, event) for m in to)
        while self.in_flight and self.in_flight[0][0] <= self.taken:
            _, member, leg = self.in_flight.popleft()
            queue.append((member, leg))
        while queue:
            member, message = queue.popleft()
            sent = member.take(message)
            decisions.extend(sent.decisions)
            for partition, leg in sent.legs:
                wired = decode(encode(leg))
                assert wired == leg
                if isinstance(wired, LegRequest):
                    self.requests += 1
                else:
                    self.results.append(wired)
                if self.delay:
                    self.in_flight.append((self.taken + self.delay, self.owner(partition), wired))
                else:
                    queue.append((self.owner(partition), wired))
        return decisions

    def drain(self) -> list[Decision]:
        decisions: list[Decision] = []
        while self.in_flight:
            _, member, leg = self.in_flight.popleft()
            for partition, more in (sent := member.take(leg)).legs:
                self.in_flight.append((0, self.owner(partition), more))
            decisions.extend(sent.decisions)
        return decisions


def replayed() -> list[Decision]:
    replayer = Replayer(POLICY)
    return [d for event in _sample_events() for d in replayer.feed(event)]


def through(cluster: Cluster, events: Iterable[Event]) -> list[Decision]:
    return [d for event in events for d in cluster.take(event)]


def as_json(decisions: Iterable[Decision], *, without: frozenset[str] = frozenset()) -> list[str]:
    rows = []
    for decision in decisions:
        row = json.loads(decision.to_json_bytes())
        for name in without:
            row.pop(name)
        rows.append(json.dumps(row, sort_keys=True))
    return sorted(rows)


@pytest.mark.parametrize(("partitions", "members"), [(4, 2), (4, 4), (8, 3), (16, 16)])
def test_members_on_one_clock_make_exactly_the_replays_decisions(partitions: int, members: int) -> None:
    cluster = Cluster(partitions, members, one_clock=True)
    got = through(cluster, _sample_events())
    assert as_json(got) == as_json(replayed())
    assert cluster.requests > 0  # some flows had subjects kept by other members


def homed_elsewhere(events: Iterable[Event], partitions: int) -> list[Event]:
    """The events with a new first subject on every flow, keyed to another partition than its other subjects."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, DataFlow):
            taken = {partition_of(s.id.encode(), partitions) for s in event.subjects}
            leads = (f"lead-{event.event_id}-{k}" for k in range(1000))
            lead = next(s for s in leads if partition_of(s.encode(), partitions) not in taken)
            event = event.model_copy(update={"subjects": [Subject(id=lead), *event.subjects]})
        out.append(event)
    return out


def test_a_late_fact_about_a_subject_kept_elsewhere_supersedes_through_its_leg() -> None:
    events = homed_elsewhere(_sample_events(), 4)
    cluster = Cluster(4, 4, one_clock=True)
    got = through(cluster, events)
    replayer = Replayer(POLICY)
    assert as_json(got) == as_json(d for event in events for d in replayer.feed(event))
    changed = [r for r in cluster.results if r.revision > 0]
    assert changed  # late facts re-judged legs kept away from their flows' homes
    superseding = {d.flow_event_id for d in got if d.supersedes}
    assert {r.flow_id for r in changed} & superseding


def final(decisions: Iterable[Decision]) -> dict[str, tuple[str, list[str], list[str]]]:
    latest: dict[str, Decision] = {}
    for decision in sorted(decisions, key=lambda d: d.revision):
        latest[decision.flow_event_id] = decision
    return {k: (d.verdict, d.reasons, [v.model_dump_json() for v in d.disclosures]) for k, d in latest.items()}


@pytest.mark.parametrize("delay", [1, 3, 20])
def test_legs_still_in_flight_while_later_events_arrive_end_on_the_replays_final_verdicts(delay: int) -> None:
    events = homed_elsewhere(_sample_events(), 4)
    cluster = Cluster(4, 2, one_clock=True, delay=delay)
    got = [*through(cluster, events), *cluster.drain()]
    replayer = Replayer(POLICY)
    assert final(got) == final(d for event in events for d in replayer.feed(event))
    assert len({(d.flow_event_id, d.revision) for d in got}) == len(got)  # no decision made twice


def test_members_each_on_their_own_clock_differ_from_the_replay_only_in_decided_at() -> None:
    got = through(Cluster(4, 2, one_clock=False), _sample_events())
    want = replayed()
    assert as_json(got, without=frozenset({"decided_at"})) == as_json(want, without=frozenset({"decided_at"}))


def test_one_member_owning_every_partition_sends_no_leg_and_decides_as_the_replay() -> None:
    cluster = Cluster(4, 1, one_clock=False)
    assert [d.to_json_bytes() for d in through(cluster, _sample_events())] == [d.to_json_bytes() for d in replayed()]
    assert cluster.requests == 0


def flow_about(*subjects: str) -> DataFlow:
    flow = next(e for e in _sample_events() if isinstance(e, DataFlow))
    return flow.model_copy(update={"subjects": [Subject(id=s) for s in subjects], "event_id": "flow-legs-1"})


def test_a_leg_request_delivered_twice_is_answered_once() -> None:
    member = Member(POLICY, 2, [0, 1])
    request = LegRequest(flow_about("p1", "p2", "p3"), (Subject(id="p2"), Subject(id="p3")), home=0)
    assert len(member.take(request).legs) == 1
    assert member.take(request).legs == []


def test_a_flow_with_subjects_elsewhere_is_decided_when_its_last_leg_comes_home() -> None:
    home_partition = partition_of(b"p1", 2)
    names = [f"p{n}" for n in range(2, 30)]
    others = [s for s in names if partition_of(s.encode(), 2) != home_partition][:5]
    home, away = Member(POLICY, 2, [home_partition]), Member(POLICY, 2, [1 - home_partition])
    flow = flow_about("p1", *others)
    sent = home.take(flow)
    assert sent.decisions == []
    # One request per partition, not per subject: a census about a thousand pupils sends at most one per partition.
    assert [(p, type(m)) for p, m in sent.legs] == [(1 - home_partition, LegRequest)]
    assert [s.id for s in sent.legs[0][1].subjects] == others  # type: ignore[union-attr]
    answer = away.take(sent.legs[0][1])
    assert answer.decisions == []
    assert len(answer.legs) == 1
    decided = home.take(answer.legs[0][1]).decisions
    assert [d.to_json_bytes() for d in decided] == [d.to_json_bytes() for d in Replayer(POLICY).feed(flow)]


def test_wire_forms_round_trip_and_anything_else_is_a_value_error() -> None:
    leg = SubjectLeg("p1", frozenset({"B", "A"}), ("r1", "r2"), ("consent-1",))
    other = SubjectLeg("p2", frozenset(), (), ())
    result = LegResult("flow-1", (leg, other), datetime(2026, 3, 1, 9, 30, tzinfo=UTC), 2)
    assert decode(encode(result)) == result
    request = LegRequest(flow_about("p1", "p2", "p3"), (Subject(kind="parent", id="p2"), Subject(id="p3")), home=3)
    assert decode(encode(request)) == request
    for raw in (b"[]", b'{"leg": "other"}', b"not json", b'{"leg": "result"}', b'{"leg": "result", "legs": [1]}'):
        with pytest.raises(ValueError, match=r"leg message|Expecting value"):
            decode(raw)
    # A request carrying another kind of event than a flow is refused, as is one whose flow is not valid.
    body = json.loads(encode(request))
    fact = next(e for e in _sample_events() if e.kind != "flow")
    for flow in (json.loads(fact.model_dump_json()), {**body["flow"], "subjects": []}):
        with pytest.raises(ValueError, match="validation error"):
            decode(json.dumps({**body, "flow": flow}).encode())


def test_a_member_owns_some_partitions_and_takes_messages_through_take() -> None:
    with pytest.raises(ValueError, match="owns some of partitions"):
        Member(POLICY, 4, [4])
    with pytest.raises(ValueError, match="owns some of partitions"):
        Member(POLICY, 4, [])
    with pytest.raises(TypeError, match="take"):
        Member(POLICY, 4, [0]).feed(flow_about("p1"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.booleans(),
    st.lists(facts(), max_size=8),
    st.lists(facts(), max_size=8),
    st.lists(flows(), min_size=1, max_size=5),
    st.randoms(use_true_random=False),
)
def test_generated_events_in_any_order_split_across_members_decide_as_the_replay(
    agreements: bool, about_p: list[Fact], about_q: list[Fact], judged: list[DataFlow], order: Random
) -> None:
    # p and q on partitions kept by different members: a flow about both has a leg away from home.
    assert partition_of(b"p", 4) % 2 != partition_of(b"q", 4) % 2
    both = [["p", "q"], ["q", "p"], ["p"], ["q"]]
    judged = [f.model_copy(update={"subjects": [Subject(id=s) for s in order.choice(both)]}) for f in judged]
    events: list[Event] = [*about_p, *(about(f, "q") for f in about_q), *judged]
    order.shuffle(events)  # facts before and after the flows they bear on: late facts among them
    if agreements:
        events = [*standard_agreements(POLICY), *events]
    cluster = Cluster(4, 2, one_clock=True)
    replayer = Replayer(POLICY)
    assert as_json(through(cluster, events)) == as_json(d for event in events for d in replayer.feed(event))
