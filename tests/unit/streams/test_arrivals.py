"""The worker's Kafka-free parts: arrival order across partitions, flow control, and judging records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from schemas.events import Event
from schemas.policy import Policy
from schemas.settings import Settings
from streams.builders import agreement, born, consent, enrolled, flow
from streams.legs import SequencesSeen, decode, partition_of
from streams.member import MemberState
from streams.metrics import WorkerMetrics
from streams.processor import StreamState
from streams.sequences import SequenceTracker
from streams.worker import Arrivals, Judge, Send, arrival_key

from .conftest import Record

FLOWS = ("pupilflow.flows", 0)
FACTS = ("pupilflow.facts", 0)
OTHER = ("pupilflow.flows", 1)


def rec(tp: tuple[str, int], timestamp: int, offset: int = 0, emitted: str = "2024-06-03T10:00:00Z") -> Record:
    value = json.dumps({"kind": "flow", "emitted_at": emitted}, separators=(",", ":")).encode()
    return Record(tp[0], tp[1], offset, timestamp, b"k", value)


def stamps(records: list[Record]) -> list[int]:
    return [r.timestamp for r in records]


# --- arrival order -----------------------------------------------------------------------------------------


def test_arrival_key_is_the_producer_timestamp_then_the_emitted_at_instant() -> None:
    earlier = rec(FLOWS, 5, emitted="2024-06-03T10:00:00Z")
    later = rec(FACTS, 5, emitted="2024-06-03T10:00:01Z")
    assert arrival_key(earlier) == (5, datetime(2024, 6, 3, 10, tzinfo=UTC).timestamp())
    assert arrival_key(earlier) < arrival_key(later) < arrival_key(rec(FLOWS, 6, emitted="2024-06-03T09:00:00Z"))
    assert arrival_key(Record("t", 0, 0, 7, None, None)) == (7, 0.0)


def test_arrival_key_orders_a_fractional_emitted_at_after_the_whole_second() -> None:
    whole = consent("2024-06-03T10:00:00Z", "p-1", "peripatetic-music", "music_tuition", ["identity"])
    fraction = flow("2024-06-03T10:00:00.5Z", "peripatetic-music", "music_tuition", ["identity"])
    first = Record(FACTS[0], 0, 0, 5, b"p-1", whole.model_dump_json().encode())
    second = Record(FLOWS[0], 0, 0, 5, b"p-1", fraction.model_dump_json().encode())
    assert whole.emitted_at < fraction.emitted_at
    assert arrival_key(first) < arrival_key(second)


def test_records_of_several_partitions_are_released_in_arrival_order() -> None:
    arrivals = Arrivals([FLOWS, FACTS, OTHER])
    arrivals.add({FLOWS: [rec(FLOWS, 1, 0), rec(FLOWS, 3, 1)], FACTS: [rec(FACTS, 2, 0), rec(FACTS, 4, 1)]})
    assert len(arrivals) == 4
    assert arrivals.empty() == [OTHER]
    first = arrivals.release({OTHER: True}, now=0.0)
    # FLOWS ran dry after 3: its fetch state must be asked before 4 may go
    assert stamps(first) == [1, 2, 3]
    assert arrivals.empty() == [FLOWS, OTHER]
    assert stamps(arrivals.release({FLOWS: True, OTHER: True}, now=0.0)) == [4]
    assert len(arrivals) == 0


def test_records_in_the_same_millisecond_go_by_emitted_at() -> None:
    arrivals = Arrivals([FLOWS, FACTS])
    arrivals.add({FLOWS: [rec(FLOWS, 5, emitted="2024-06-03T10:00:02Z")]})
    arrivals.add({FACTS: [rec(FACTS, 5, emitted="2024-06-03T10:00:01Z")]})
    out = arrivals.release({}, now=0.0)
    assert [r.topic for r in out] == [FACTS[0]]
    assert [r.topic for r in arrivals.release({FACTS: True}, now=0.0)] == [FLOWS[0]]


def test_nothing_is_released_while_an_empty_partition_is_behind() -> None:
    arrivals = Arrivals([FLOWS, FACTS])
    arrivals.add({FLOWS: [rec(FLOWS, 10)]})
    assert arrivals.release({FACTS: False}, now=0.0) == []
    assert arrivals.release({FACTS: False}, now=100.0) == []  # being behind never times out
    assert len(arrivals) == 1
    arrivals.add({FACTS: [rec(FACTS, 5)]})  # the fact fetched late was sent first
    assert stamps(arrivals.release({}, now=100.0)) == [5]


def test_an_unknown_partition_holds_release_for_at_most_max_unknown_s() -> None:
    arrivals = Arrivals([FLOWS, FACTS], max_unknown_s=1.0)
    arrivals.add({FLOWS: [rec(FLOWS, 10), rec(FLOWS, 11)]})
    assert arrivals.release({FACTS: None}, now=50.0) == []
    assert arrivals.release({FACTS: None}, now=50.9) == []
    assert stamps(arrivals.release({FACTS: None}, now=51.0)) == [10, 11]


def test_the_unknown_wait_starts_again_once_every_partition_was_known() -> None:
    arrivals = Arrivals([FLOWS, FACTS], max_unknown_s=1.0)
    arrivals.add({FLOWS: [rec(FLOWS, 10)]})
    assert arrivals.release({FACTS: None}, now=0.0) == []
    assert stamps(arrivals.release({FACTS: True}, now=0.5)) == [10]
    arrivals.add({FLOWS: [rec(FLOWS, 11)]})
    assert arrivals.release({FACTS: None}, now=5.0) == []  # a fresh wait, not the one started at 0
    assert arrivals.release({FACTS: None}, now=5.5) == []
    assert stamps(arrivals.release({FACTS: None}, now=6.0)) == [11]


def test_a_partition_is_paused_at_high_and_resumed_below_low() -> None:
    arrivals = Arrivals([FLOWS, FACTS], high=4, low=2)
    arrivals.add({FLOWS: [rec(FLOWS, t, t) for t in range(3)]})
    assert arrivals.flow_control() == ([], [])
    arrivals.add({FLOWS: [rec(FLOWS, 3, 3)]})
    assert arrivals.flow_control() == ([FLOWS], [])
    assert arrivals.paused == {FLOWS}
    assert arrivals.flow_control() == ([], [])  # paused once
    arrivals.add({FACTS: [rec(FACTS, 1, emitted="2024-06-03T09:00:00Z")]})
    assert stamps(arrivals.release({}, now=0.0)) == [0, 1]  # FACTS ran dry
    assert len(arrivals) == 3
    assert arrivals.flow_control() == ([], [])  # 3 buffered: not below low
    assert stamps(arrivals.release({FACTS: True}, now=0.0)) == [1, 2, 3]
    assert arrivals.flow_control() == ([], [FLOWS])
    assert arrivals.paused == set()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.integers(0, 20)), max_size=40), st.integers(1, 5))
def test_whatever_the_polls_every_record_comes_out_once_in_arrival_order(
    records: list[tuple[int, int]], polls: int
) -> None:
    parts = [("t", 0), ("t", 1), ("t", 2)]
    arrivals = Arrivals(parts)
    # each partition's records are in timestamp order, as a producer's are
    per: dict[tuple[str, int], list[Record]] = {tp: [] for tp in parts}
    for offset, (p, stamp) in enumerate(sorted(records, key=lambda r: r[1])):
        per[parts[p]].append(rec(parts[p], stamp, offset))
    chunks = {
        tp: [rs[i * len(rs) // polls : (i + 1) * len(rs) // polls] for i in range(polls)] for tp, rs in per.items()
    }
    out: list[Record] = []
    for poll in range(polls + 1):
        if poll < polls:
            arrivals.add({tp: chunk[poll] for tp, chunk in chunks.items()})
        left = {tp for tp, chunk in chunks.items() if any(chunk[poll + 1 :])}
        # an empty partition with records still to fetch is behind; the last round every one has caught up
        out += arrivals.release({tp: tp not in left for tp in arrivals.empty()}, now=0.0)
    while len(arrivals):
        out += arrivals.release(dict.fromkeys(arrivals.empty(), True), now=0.0)
    assert sorted(r.offset for r in out) == list(range(len(records)))
    keys = [arrival_key(r) for r in out]
    assert keys == sorted(keys)


def test_partition_of_is_kafkas_default_partitioner() -> None:
    # Java's Utils.murmur2 positive modulo 1000 (the reference values kafka-python checks against)
    expected = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}
    assert {key: partition_of(key, 1000) for key in expected} == expected


# --- Judge -------------------------------------------------------------------------------------------------

MUSIC = ("peripatetic-music", "music_tuition", ["identity"])


class Harness:
    def __init__(self, policy: Policy) -> None:
        self.settings = Settings()
        self.topics = self.settings.topics
        self.metrics = WorkerMetrics()
        self.state = StreamState(policy, timedelta(hours=24))
        self.judge = Judge(self.settings, policy, self.metrics, self.state)
        self.offset = 0

    def send(self, topic: str, value: bytes | None, key: bytes | None = b"k") -> list[Send]:
        out: list[Send] = []
        self.offset += 1
        self.judge.handle(Record(topic, 3, self.offset, 0, key, value), out)
        return out

    def event(self, event: Event) -> list[Send]:
        topic = self.topics.flows if event.kind == "flow" else self.topics.facts
        return self.send(topic, event.model_dump_json().encode(), event.partition_key())

    def metric(self, line: str) -> bool:
        self.metrics.add(self.judge.take_tally())  # what the worker does once the transaction commits
        return line in generate_latest(self.metrics.registry).decode().splitlines()


@pytest.fixture
def harness(register: Policy) -> Harness:
    h = Harness(register)
    for fact in (
        agreement(
            "2024-01-01T00:00Z", "peripatetic-music", "dsa", agreement_id="agr-pm", valid_until="2030-01-01T00:00Z"
        ),
        born("p-1", "2014-01-01"),
        enrolled("2024-01-02T00:00Z", "p-1"),
    ):
        assert h.event(fact) == []
    return h


def dead(out: list[Send], topics: Settings) -> dict[str, object]:
    assert len(out) == 1
    topic, _key, value = out[0]
    assert topic == topics.topics.dlq
    assert value is not None
    letter: dict[str, object] = json.loads(value)
    return letter


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"{not json", "invalid event: <event>: Invalid JSON"),
        (b'{"kind":"flow","event_id":"f-1"}', "invalid event: flow."),
        (b"\xff\xfe", "invalid event"),
    ],
)
def test_an_unusable_record_is_a_dead_letter_with_the_reason(harness: Harness, value: bytes, error: str) -> None:
    out = harness.send(harness.topics.flows, value, key=b"the-key")
    letter = dead(out, harness.settings)
    assert out[0][1] == b"the-key"
    assert str(letter["error"]).startswith(error)
    assert letter["stage"] == "validate"
    assert (letter["topic"], letter["partition"], letter["offset"]) == (harness.topics.flows, 3, harness.offset)
    assert harness.metric('pupilflow_dead_letters_total{stage="validate"} 1.0')


def test_a_fact_on_the_flows_topic_and_a_flow_on_the_facts_topic_are_dead_letters(harness: Harness) -> None:
    fact = consent("2024-06-01T09:00Z", "p-1", *MUSIC)
    out = harness.send(harness.topics.flows, fact.model_dump_json().encode())
    assert dead(out, harness.settings)["error"] == "a 'consent_given' event on the flows topic"
    f = flow("2024-06-03T10:00Z", *MUSIC, subjects=["p-1"])
    out = harness.send(harness.topics.facts, f.model_dump_json().encode())
    assert dead(out, harness.settings)["error"] == "a 'flow' event on the facts topic"
    assert harness.state.open_flows() == 0
    assert len(harness.state.state.subject("p-1").consents) == 0
    assert harness.metric('pupilflow_dead_letters_total{stage="validate"} 2.0')


def test_a_violation_goes_to_decisions_and_violations_keyed_by_the_flows_subject(harness: Harness) -> None:
    f = flow("2024-06-03T10:00Z", *MUSIC, subjects=["p-1", "p-2"], event_id="f-1")
    out = harness.event(f)
    assert [(topic, key) for topic, key, _ in out] == [
        (harness.topics.decisions, b"p-1"),
        (harness.topics.violations, b"p-1"),
    ]
    assert out[0][2] == out[1][2]
    decision = json.loads(out[0][2] or b"")
    assert (decision["flow_event_id"], decision["verdict"], decision["reasons"][0]) == (
        "f-1",
        "violation",
        "NO_CONSENT",
    )
    assert harness.metric('pupilflow_decisions_total{verdict="violation"} 1.0')
    assert harness.metric('pupilflow_violations_total{group="partner",reason="NO_CONSENT"} 1.0')
    assert harness.metric('pupilflow_events_in_total{connector="flows",kind="flow"} 1.0')


def test_an_allowed_flow_goes_to_decisions_only(harness: Harness) -> None:
    harness.event(consent("2024-06-01T09:00Z", "p-1", *MUSIC))
    out = harness.event(flow("2024-06-03T10:00Z", *MUSIC, subjects=["p-1"], event_id="f-ok"))
    assert [(topic, key) for topic, key, _ in out] == [(harness.topics.decisions, b"p-1")]
    assert json.loads(out[0][2] or b"")["verdict"] == "allowed"
    assert harness.metric('pupilflow_decisions_total{verdict="allowed"} 1.0')
    assert harness.metric('pupilflow_decisions_total{verdict="violation"} 0.0')
    assert harness.metric('pupilflow_events_in_total{connector="consents",kind="consent_given"} 1.0')


def test_a_late_fact_sends_the_superseding_decision_keyed_by_the_flow(harness: Harness) -> None:
    first = harness.event(flow("2024-06-03T10:00Z", *MUSIC, subjects=["p-1"], event_id="f-1"))
    out = harness.event(consent("2024-06-01T09:00Z", "p-1", *MUSIC, emitted="2024-06-03T12:00Z"))
    assert [(topic, key) for topic, key, _ in out] == [(harness.topics.decisions, b"p-1")]
    decision = json.loads(out[0][2] or b"")
    assert decision["verdict"] == "allowed"
    assert decision["supersedes"] == json.loads(first[0][2] or b"")["decision_id"]
    assert harness.metric('pupilflow_supersessions_total{verdict="allowed"} 1.0')


def test_a_redelivered_flow_is_counted_and_sends_nothing(harness: Harness) -> None:
    f = flow("2024-06-03T10:00Z", *MUSIC, subjects=["p-1"], event_id="f-1")
    assert len(harness.event(f)) == 2
    assert harness.event(f) == []
    assert harness.metric("pupilflow_duplicates_total 1.0")
    assert harness.metric('pupilflow_decisions_total{verdict="violation"} 1.0')


def test_a_reused_event_id_is_a_dead_letter_of_the_evaluate_stage(harness: Harness) -> None:
    harness.event(flow("2024-06-03T10:00Z", *MUSIC, subjects=["p-1"], event_id="f-1"))
    out = harness.event(flow("2024-06-03T11:00Z", *MUSIC, subjects=["p-1"], event_id="f-1"))
    letter = dead(out, harness.settings)
    assert letter["stage"] == "evaluate"
    assert "reused with a different payload" in str(letter["error"])
    assert harness.metric('pupilflow_dead_letters_total{stage="evaluate"} 1.0')
    assert harness.metric("pupilflow_duplicates_total 0.0")


def test_a_sequence_gap_given_up_on_is_counted_for_its_connector(harness: Harness) -> None:
    harness.state.sequences["gappy"] = SequenceTracker(patience=1)
    base = flow("2024-06-03T10:00Z", *MUSIC, subjects=["p-1"])
    for n, seq in enumerate((0, 5, 6)):
        data = json.loads(base.model_dump_json())
        data["event_id"] = f"g-{n}"
        data["source"] = {"connector": "gappy", "sequence": seq}
        harness.send(harness.topics.flows, json.dumps(data).encode())
    assert harness.metric('pupilflow_sequence_gaps_total{connector="gappy"} 4.0')


def test_committed_observes_the_latency_of_each_decision_its_transaction_held(harness: Harness) -> None:
    f = flow("2024-06-03T10:00Z", *MUSIC, subjects=["p-1"], emitted="2024-06-03T10:00:00Z")
    harness.event(f)
    pending = harness.judge.take_pending()
    assert pending == [f.emitted_at.timestamp()]
    harness.judge.committed(pending, f.emitted_at.timestamp() + 0.02)
    assert harness.metric("pupilflow_decision_latency_seconds_count 1.0")
    assert harness.metric('pupilflow_decision_latency_seconds_bucket{le="0.01"} 0.0')
    assert harness.metric('pupilflow_decision_latency_seconds_bucket{le="0.025"} 1.0')
    assert harness.judge.take_pending() == []  # each decision belongs to one transaction


def test_a_group_waiting_on_its_facts_partition_does_not_hold_up_another_group() -> None:
    other_facts = ("pupilflow.facts", 1)
    arrivals = Arrivals([FLOWS, FACTS, OTHER, other_facts], group_of=lambda tp: tp[1])
    arrivals.add({FLOWS: [rec(FLOWS, 1)], OTHER: [rec(OTHER, 2)]})
    assert sorted(arrivals.empty()) == sorted([FACTS, other_facts])
    # partition 0's facts still have something to fetch; partition 1's are caught up
    released = arrivals.release({FACTS: False, other_facts: True}, now=0.0)
    assert stamps(released) == [2]
    assert stamps(arrivals.release({FACTS: True}, now=0.0)) == [1]


def test_a_record_newer_than_the_last_answer_of_an_empty_partition_waits_for_a_fresher_one() -> None:
    arrivals = Arrivals([FLOWS, FACTS], max_stale_s=0.2)
    arrivals.add({FLOWS: [rec(FLOWS, 100), rec(FLOWS, 200, 1)]})
    # The facts partition was last heard of at 150 ms: the record produced at 200 ms may have an earlier fact.
    assert stamps(arrivals.release({FACTS: True}, now=0.0, fetched_at={FACTS: 150})) == [100]
    assert arrivals.release({FACTS: True}, now=0.1, fetched_at={FACTS: 150}) == []
    assert stamps(arrivals.release({FACTS: True}, now=0.1, fetched_at={FACTS: 250})) == [200]


def test_a_stale_answer_holds_a_record_back_for_at_most_max_stale() -> None:
    arrivals = Arrivals([FLOWS, FACTS], max_stale_s=0.2)
    arrivals.add({FLOWS: [rec(FLOWS, 200)]})
    assert arrivals.release({FACTS: True}, now=1.0, fetched_at={FACTS: 150}) == []
    assert stamps(arrivals.release({FACTS: True}, now=1.25, fetched_at={FACTS: 150})) == [200]


def test_a_member_forwards_agreements_to_every_member_and_sends_the_numbers_it_took_in_to_their_tracker(
    register: Policy,
) -> None:
    settings = Settings(worker_members=2, worker_member=0)
    topics = settings.topics
    state = MemberState(register, topics.partitions, [0, 2])
    judge = Judge(settings, register, WorkerMetrics(), state)
    deal = agreement("2024-01-01T00:00Z", "peripatetic-music", "dsa", agreement_id="agr-fwd")
    raw = deal.model_dump_json().encode()

    out: list[Send] = []
    judge.handle(Record(topics.facts, 0, 1, 0, b"peripatetic-music", raw), out)
    assert out == [(topics.shared_facts, b"peripatetic-music", raw)]  # forwarded, not applied here yet
    assert state.state.recipient("peripatetic-music").agreements == []
    judge.handle(Record(topics.shared_facts, 0, 1, 0, b"peripatetic-music", raw), out)
    applied = state.state.recipient("peripatetic-music").agreements
    assert [a[1] for a in applied] == ["agr-fwd"]  # every member applies it from there

    legs = judge.take_legs()
    connector = deal.source.connector
    assert legs == [(partition_of(connector.encode(), topics.partitions), legs[0][1])]
    seen = decode(legs[0][1])
    assert seen == SequencesSeen(connector, (deal.source.sequence,))  # counted once, where it came in
    assert judge.take_legs() == []

    judge.handle(Record(topics.legs, 0, 2, 0, None, b'{"leg":"what"}'), out)
    assert out[-1][0] == topics.dlq
    assert b"unreadable leg message" in (out[-1][2] or b"")


def test_a_members_flow_waiting_for_legs_is_not_counted_as_a_duplicate(register: Policy) -> None:
    settings = Settings(worker_members=2, worker_member=0)
    topics = settings.topics
    owned = [0, 2]
    metrics = WorkerMetrics()
    judge = Judge(settings, register, metrics, MemberState(register, topics.partitions, owned))
    here = next(f"p-{n}" for n in range(100) if partition_of(f"p-{n}".encode(), topics.partitions) in owned)
    away = next(f"p-{n}" for n in range(100) if partition_of(f"p-{n}".encode(), topics.partitions) not in owned)
    sent = flow("2024-06-03T10:00Z", *MUSIC, subjects=[here, away])
    out: list[Send] = []
    for _ in range(2):
        judge.handle(Record(topics.flows, 0, 1, 0, here.encode(), sent.model_dump_json().encode()), out)
    assert len(judge.take_legs()) == 2  # its leg request, and the sequence numbers seen
    metrics.add(judge.take_tally())  # the transaction holding them committed
    text = generate_latest(metrics.registry).decode()
    duplicates = [line for line in text.splitlines() if line.startswith("pupilflow_duplicates_total")]
    assert duplicates == ["pupilflow_duplicates_total 1.0"]  # the second delivery only
