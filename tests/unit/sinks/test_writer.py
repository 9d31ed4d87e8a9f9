"""The audit sink's batching, commit-after-insert, retry, chaining and bad-message handling (fakes for Kafka and
ClickHouse; the real thing is exercised in tests/integration)."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.decisions import DeadLetter, Decision, SubjectVerdict
from schemas.errors import RebalanceStalled
from schemas.events import (
    Actor,
    ConsentGiven,
    ConsentScope,
    NoticeVersionPublished,
    SharingAgreement,
    Source,
    Subject,
)
from schemas.settings import Settings, Topics
from sinks.chain import GENESIS, Head, link_hash
from sinks.metrics import SinkMetrics
from sinks.rows import CHAINED_DECISION_COLUMNS, DECISION_COLUMNS
from sinks.writer import AuditSink, fetch_options

TOPICS = Topics()
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
OFFSET = CHAINED_DECISION_COLUMNS.index("kafka_offset")
PARTITION = CHAINED_DECISION_COLUMNS.index("kafka_partition")


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def decision(n: int, verdict: str = "allowed", subjects: tuple[str, ...] = ("P1",)) -> Decision:
    return Decision(
        decision_id=f"d{n}",
        flow_event_id=f"e{n}",
        verdict=verdict,
        reasons=["NO_CONSENT"] if verdict == "violation" else [],
        explanation="ok",
        recipient="dfe",
        purpose="census",
        categories=["identity"],
        subject_ids=list(subjects),
        occurred_at=T0,
        decided_at=T0,
        emitted_at=T0,
        source_connector="sims",
        source_sequence=n,
        policy_digest="x",
        notice_version="1.0",
        disclosures=[SubjectVerdict(subject_id=s, verdict=verdict) for s in subjects],
    )


class FakeConsumer:
    def __init__(self, records: list[Record]) -> None:
        self.pending = list(records)
        self.commits = 0
        self.polled = 0

    def poll(self, timeout_ms: int, max_records: int) -> dict[str, list[Record]]:
        taken, self.pending = self.pending[:max_records], self.pending[max_records:]
        self.polled += len(taken)
        return {"tp": taken} if taken else {}

    def commit(self) -> None:
        self.commits += 1


class Result:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.result_rows = rows


class FakeClient:
    """Keeps inserted rows per table and answers the sink's two chain-recovery queries from them."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.inserts: list[tuple[str, int]] = []
        self.tables: dict[str, list[list[Any]]] = {}

    def insert(self, table: str, rows: list[Any], column_names: list[str], settings: Any = None) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ClickHouse is down")
        assert all(len(row) == len(column_names) for row in rows)
        self.inserts.append((table, len(rows)))
        self.tables.setdefault(table, []).extend(list(row) for row in rows)

    def query(self, sql: str, parameters: dict[str, Any]) -> Result:
        p = parameters["partition"]
        rows = [r for r in self.tables.get("decisions", []) if r[PARTITION] == p and r[-1] != ""]
        if "argMax" in sql:
            before = [r for r in rows if r[OFFSET] < parameters["offset"]]
            if not before:
                return Result([(0, "", 0)])
            last = max(before, key=lambda r: r[OFFSET])
            return Result([(last[OFFSET], last[-1], len({r[OFFSET] for r in before}))])
        rows.sort(key=lambda r: -r[OFFSET])
        return Result([(r[0], r[OFFSET]) for r in rows[: parameters["limit"]]])


class FakeHeads:
    def __init__(self) -> None:
        self.published: list[list[Head]] = []

    def publish(self, heads: list[Head]) -> None:
        self.published.append(heads)

    def latest(self) -> dict[int, Head]:
        return {head.partition: head for batch in self.published for head in batch}


def records(n: int, start: int = 0, partition: int = 0, **kwargs: Any) -> list[Record]:
    return [
        Record(TOPICS.decisions, partition, i, b"P1", decision(i, **kwargs).model_dump_json().encode())
        for i in range(start, start + n)
    ]


def make_sink(
    consumer: FakeConsumer, client: FakeClient, heads: FakeHeads | None = None, **kwargs: Any
) -> tuple[AuditSink, SinkMetrics, list[float], FakeHeads]:
    metrics = SinkMetrics()
    sleeps: list[float] = []
    heads = heads or FakeHeads()
    sink = AuditSink(consumer, client, TOPICS, metrics, heads=heads, sleep=sleeps.append, **kwargs)
    return sink, metrics, sleeps, heads


def drain(sink: AuditSink, consumer: FakeConsumer) -> None:
    polls = iter(range(1000))
    sink.run(lambda: next(polls) >= 5 and not consumer.pending)


def test_batches_are_bounded_by_max_rows_and_committed_after_insert() -> None:
    consumer, client = FakeConsumer(records(25)), FakeClient()
    sink, metrics, _, _ = make_sink(consumer, client, max_rows=10, max_seconds=3600)
    drain(sink, consumer)
    decisions = [n for table, n in client.inserts if table == "decisions"]
    assert decisions == [10, 10, 5]
    assert consumer.commits == 3
    assert metrics.rows.labels(table="decisions")._value.get() == 25
    assert metrics.rows.labels(table="disclosures")._value.get() == 25


def test_a_failing_insert_is_retried_with_backoff_and_nothing_is_committed_before_it_succeeds() -> None:
    consumer, client = FakeConsumer(records(3)), FakeClient(failures=3)
    sink, metrics, sleeps, _ = make_sink(consumer, client, max_rows=10, max_seconds=0)
    sink.poll_once()
    assert sink.flush(lambda: False)
    assert sleeps == [0.5, 1.0, 2.0]
    assert ("decisions", 3) in client.inserts
    assert consumer.commits == 1
    assert metrics.retries._value.get() == 3


def test_backoff_is_capped() -> None:
    consumer, client = FakeConsumer(records(1)), FakeClient(failures=8)
    sink, _, sleeps, _ = make_sink(consumer, client, max_seconds=0, max_backoff_seconds=4)
    sink.poll_once()
    assert sink.flush(lambda: False)
    assert sleeps == [0.5, 1.0, 2.0, 4, 4, 4, 4, 4]


def test_shutdown_while_clickhouse_is_down_commits_nothing() -> None:
    consumer, client = FakeConsumer(records(2)), FakeClient(failures=99)
    sink, _, _, heads = make_sink(consumer, client)
    sink.poll_once()
    assert sink.flush(lambda: True) is False
    assert consumer.commits == 0
    assert heads.published == []


def test_unreadable_decision_and_fact_become_dead_letter_rows_not_a_crash() -> None:
    bad = Record(TOPICS.decisions, 1, 7, None, b'{"decision_id": "x"}')
    bad_fact = Record(TOPICS.facts, 0, 3, b"P1", b'{"kind": "consent_given"}')
    letter = DeadLetter(topic="pupilflow.flows", partition=0, offset=3, key=None, raw="{", error="bad", received_at=T0)
    dlq = Record(TOPICS.dlq, 0, 0, None, letter.model_dump_json().encode())
    consumer, client = FakeConsumer([bad, bad_fact, dlq, *records(1)]), FakeClient()
    sink, metrics, _, _ = make_sink(consumer, client, max_rows=10, max_seconds=0)
    sink.poll_once()
    sink.flush(lambda: False)
    assert sorted(client.inserts) == [("dead_letters", 3), ("decisions", 1), ("disclosures", 1)]
    stages = {row[0]: row[6] for row in client.tables["dead_letters"]}
    assert stages == {TOPICS.decisions: "sink", TOPICS.facts: "sink", "pupilflow.flows": "validate"}
    assert metrics.rejected._value.get() == 2


def test_violations_and_disclosures_come_from_each_decision() -> None:
    consumer, client = FakeConsumer(records(2, verdict="violation", subjects=("P1", "P2", "P3"))), FakeClient()
    sink, _, _, _ = make_sink(consumer, client, max_seconds=0)
    sink.poll_once()
    sink.flush(lambda: False)
    assert sorted(client.inserts) == [("decisions", 2), ("disclosures", 6), ("violations", 2)]


def test_each_partition_is_its_own_chain_and_heads_are_checkpointed_before_the_commit() -> None:
    consumer = FakeConsumer(records(3, partition=0) + records(2, start=10, partition=1))
    client = FakeClient()
    sink, _, _, heads = make_sink(consumer, client, max_seconds=0)
    sink.poll_once()
    sink.flush(lambda: False)
    rows = client.tables["decisions"]
    for partition in (0, 1):
        chain = [r for r in rows if r[PARTITION] == partition]
        prev = GENESIS
        for row in chain:
            assert row[-2] == prev
            assert row[-1] == link_hash(prev, row[: len(DECISION_COLUMNS)])
            prev = row[-1]
    (published,) = heads.published
    assert {h.partition: (h.offset, h.rows_in_chain) for h in published} == {0: (2, 3), 1: (11, 2)}


def test_a_batch_redelivered_after_a_crash_before_the_commit_rebuilds_identical_rows() -> None:
    client = FakeClient()
    first, _, _, _ = make_sink(FakeConsumer(records(4)), client, max_seconds=0)
    first.poll_once()
    first.flush(lambda: False)
    crashed, _, _, _ = make_sink(FakeConsumer(records(3, start=4)), client, max_seconds=0)
    crashed.poll_once()
    crashed.flush(lambda: False)  # inserted; pretend the commit never reached Kafka
    before = [list(r) for r in client.tables["decisions"]]

    again, _, _, heads = make_sink(FakeConsumer(records(3, start=4)), client, max_seconds=0)
    again.poll_once()
    again.flush(lambda: False)
    redelivered = client.tables["decisions"][len(before) :]
    assert redelivered == before[4:]
    assert heads.published[-1][0] == Head(0, 6, before[-1][-1], 7)


def test_a_decision_sent_twice_is_chained_once() -> None:
    twice = records(3)
    copy = Record(TOPICS.decisions, 0, 3, b"P1", twice[1].value)
    consumer, client = FakeConsumer([*twice, copy, *records(1, start=4)]), FakeClient()
    sink, metrics, _, _ = make_sink(consumer, client, max_seconds=0)
    sink.poll_once()
    sink.flush(lambda: False)
    offsets = [r[OFFSET] for r in client.tables["decisions"]]
    assert offsets == [0, 1, 2, 4]
    assert metrics.duplicates._value.get() == 1


def test_facts_land_with_their_subject_or_recipient_as_key() -> None:
    envelope = {"occurred_at": T0, "emitted_at": T0, "source": Source(connector="forms", sequence=1)}
    consent = ConsentGiven(
        event_id="c1",
        subject=Subject(id="P7"),
        consent_id="c1",
        given_by=Actor(id="M1", relationship="mother", has_parental_responsibility=True),
        scope=ConsentScope(recipient="sims", purpose="admin", categories=["identity"]),
        **envelope,
    )
    agreement = SharingAgreement(
        event_id="a1", agreement_id="a1", recipient="sims", agreement_type="dsa", valid_from=T0, **envelope
    )
    notice = NoticeVersionPublished(event_id="n1", version="2.0", **envelope)
    facts = [
        Record(TOPICS.facts, 0, i, None, fact.model_dump_json().encode())
        for i, fact in enumerate((consent, agreement, notice))
    ]
    consumer, client = FakeConsumer(facts), FakeClient()
    sink, _, _, _ = make_sink(consumer, client, max_seconds=0)
    sink.poll_once()
    sink.flush(lambda: False)
    keys = [(r[0], r[3], r[4], r[5]) for r in client.tables["facts"]]
    assert keys == [
        ("P7", "consent_given", "P7", "sims"),
        ("sims", "sharing_agreement", None, "sims"),
        ("", "notice_version", None, None),
    ]


def test_a_tail_deleted_before_a_restart_stays_visible_because_the_chain_goes_on_from_the_checkpoint() -> None:
    client, heads = FakeClient(), FakeHeads()
    first, _, _, _ = make_sink(FakeConsumer(records(3)), client, heads=heads, max_seconds=0)
    first.poll_once()
    first.flush(lambda: False)
    deleted = client.tables["decisions"].pop()  # offset 2, committed and checkpointed

    again, _, _, _ = make_sink(FakeConsumer(records(1, start=3)), client, heads=heads, max_seconds=0)
    again.poll_once()
    again.flush(lambda: False)
    assert client.tables["decisions"][-1][-2] == deleted[-1]
    assert heads.published[-1] == [Head(0, 3, client.tables["decisions"][-1][-1], 4)]


class CollectorWatch(FakeConsumer):
    """Notes, at each poll, whether Python's cyclic garbage collector is running."""

    def __init__(self, records: list[Record]) -> None:
        super().__init__(records)
        self.collecting: list[bool] = []

    def poll(self, timeout_ms: int, max_records: int) -> dict[str, list[Record]]:
        self.collecting.append(gc.isenabled())
        return super().poll(timeout_ms, max_records)


def test_garbage_collection_pauses_while_a_batch_is_open_and_resumes_once_it_is_written() -> None:
    consumer = CollectorWatch(records(5))
    sink, _, _, _ = make_sink(consumer, FakeClient(), max_rows=3, max_seconds=3600)
    sink.poll_once()
    assert gc.isenabled()  # only `run` pauses it
    sink.flush(lambda: False)
    drain(sink, consumer)
    assert gc.isenabled()
    # Polls with no batch open collect; a poll while two decisions wait for the next flush does not.
    assert consumer.collecting[:2] == [True, True]
    assert False in consumer.collecting


def test_a_collector_switched_off_before_the_sink_runs_stays_off() -> None:
    consumer = CollectorWatch(records(5))
    sink, _, _, _ = make_sink(consumer, FakeClient(), max_rows=3, max_seconds=0)
    gc.disable()
    try:
        drain(sink, consumer)
        assert not gc.isenabled()
    finally:
        gc.enable()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rebalancing_sink(states: list[str | None]) -> tuple[AuditSink, Any, Clock, list[str | None]]:
    """A sink subscribed at t=0 whose group-state answers come from `states`; returns the listener and clock."""
    clock, asked = Clock(), []

    def state() -> str | None:
        asked.append(states[len(asked)])
        return asked[-1]

    sink, _, _, _ = make_sink(
        FakeConsumer([]), FakeClient(), clock=clock, rebalance_stall_seconds=20, group_state=state
    )
    return sink, sink.rebalance_listener(), clock, asked


def test_a_rebalance_the_broker_finished_but_the_consumer_never_took_stops_the_sink_after_the_limit() -> None:
    sink, listener, clock, asked = rebalancing_sink(["Stable"])
    listener.on_partitions_revoked(set())
    clock.now = 19.9
    sink._check_rebalance()
    assert asked == []  # within the limit the broker is not even asked
    clock.now = 20.5
    with pytest.raises(RebalanceStalled, match="group Stable"):
        sink._check_rebalance()
    assert not sink.assigned_once


def test_a_group_still_waiting_for_members_or_an_unknown_state_is_waited_for() -> None:
    sink, _, clock, asked = rebalancing_sink(["PreparingRebalance", None, "Dead", "Empty"])
    for now in (21.0, 42.0, 63.0):
        clock.now = now
        sink._check_rebalance()  # no raise: a fresh consumer would wait just the same
    clock.now = 84.0
    with pytest.raises(RebalanceStalled, match="group Empty"):
        sink._check_rebalance()
    assert asked == ["PreparingRebalance", None, "Dead", "Empty"]


def test_a_completed_rebalance_clears_the_watch_and_counts_as_progress() -> None:
    sink, listener, clock, asked = rebalancing_sink(["Stable"])
    listener.on_partitions_revoked(set())
    listener.on_partitions_assigned({("decisions", 0)})
    clock.now = 1_000.0
    sink._check_rebalance()
    assert asked == []
    assert sink.assigned_once


def test_the_limit_is_counted_from_the_end_of_the_flush_before_a_rebalance() -> None:
    # Flushing to a ClickHouse that is down can take minutes; that is the sink's own wait, not a stall.
    consumer, client, clock = FakeConsumer(records(2)), FakeClient(failures=3), Clock()
    sink, _, _, _ = make_sink(consumer, client, clock=clock, rebalance_stall_seconds=20, group_state=lambda: "Stable")
    listener = sink.rebalance_listener()
    listener.on_partitions_assigned({("decisions", 0)})
    sink.poll_once()
    clock.now = 100.0  # the flush inside the revoke ends here
    listener.on_partitions_revoked({("decisions", 0)})
    assert ("decisions", 2) in client.inserts
    clock.now = 110.0
    sink._check_rebalance()
    clock.now = 121.0
    with pytest.raises(RebalanceStalled):
        sink._check_rebalance()


def test_the_sinks_fetches_wait_at_the_broker_unless_told_not_to() -> None:
    assert fetch_options(Settings()) == {"fetch_min_bytes": 1024 * 1024, "fetch_max_wait_ms": 100}
    assert fetch_options(Settings(sink_fetch_wait_ms=250))["fetch_max_wait_ms"] == 250
    assert fetch_options(Settings(sink_fetch_wait_ms=0)) == {"fetch_min_bytes": 1}
    with pytest.raises(ValueError, match="less than or equal to 1000"):
        Settings(sink_fetch_wait_ms=5_000)
