"""The audit sink's batching, commit-after-insert, retry and bad-message handling (fakes for Kafka and ClickHouse;
the real thing is exercised in tests/integration)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.decisions import DeadLetter, Decision
from schemas.settings import Topics
from sinks.metrics import SinkMetrics
from sinks.writer import AuditSink

TOPICS = Topics()
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def decision(n: int) -> Decision:
    return Decision(
        decision_id=f"d{n}",
        flow_event_id=f"e{n}",
        verdict="allowed",
        reasons=[],
        explanation="ok",
        recipient="dfe",
        purpose="census",
        categories=["identity"],
        subject_ids=["P1"],
        occurred_at=T0,
        decided_at=T0,
        emitted_at=T0,
        source_connector="sims",
        source_sequence=n,
        policy_digest="x",
        notice_version="1.0",
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


class FakeClient:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.inserts: list[tuple[str, int]] = []

    def insert(self, table: str, rows: list[Any], column_names: list[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ClickHouse is down")
        assert all(len(row) == len(column_names) for row in rows)
        self.inserts.append((table, len(rows)))


def records(n: int) -> list[Record]:
    return [Record(TOPICS.decisions, 0, i, b"P1", decision(i).model_dump_json().encode()) for i in range(n)]


def make_sink(consumer: FakeConsumer, client: FakeClient, **kwargs: Any) -> tuple[AuditSink, SinkMetrics, list[float]]:
    metrics = SinkMetrics()
    sleeps: list[float] = []
    sink = AuditSink(consumer, client, TOPICS, metrics, sleep=sleeps.append, **kwargs)
    return sink, metrics, sleeps


def test_batches_are_bounded_by_max_rows_and_committed_after_insert() -> None:
    consumer, client = FakeConsumer(records(25)), FakeClient()
    sink, metrics, _ = make_sink(consumer, client, max_rows=10, max_seconds=3600)
    polls = iter(range(100))
    sink.run(lambda: next(polls) >= 5 and not consumer.pending)
    assert client.inserts == [("decisions", 10), ("decisions", 10), ("decisions", 5)]
    assert consumer.commits == 3
    assert metrics.rows.labels(table="decisions")._value.get() == 25


def test_a_failing_insert_is_retried_with_backoff_and_nothing_is_committed_before_it_succeeds() -> None:
    consumer, client = FakeConsumer(records(3)), FakeClient(failures=3)
    sink, metrics, sleeps = make_sink(consumer, client, max_rows=10, max_seconds=0)
    sink.poll_once()
    assert sink.flush(lambda: False)
    assert sleeps == [0.5, 1.0, 2.0]
    assert client.inserts == [("decisions", 3)]
    assert consumer.commits == 1
    assert metrics.retries._value.get() == 3


def test_shutdown_while_clickhouse_is_down_commits_nothing() -> None:
    consumer, client = FakeConsumer(records(2)), FakeClient(failures=99)
    sink, _, _ = make_sink(consumer, client)
    sink.poll_once()
    assert sink.flush(lambda: True) is False
    assert consumer.commits == 0


def test_unreadable_decision_becomes_a_dead_letter_row_not_a_crash() -> None:
    bad = Record(TOPICS.decisions, 1, 7, None, b'{"decision_id": "x"}')
    letter = DeadLetter(topic="pupilflow.flows", partition=0, offset=3, key=None, raw="{", error="bad", received_at=T0)
    dlq = Record(TOPICS.dlq, 0, 0, None, letter.model_dump_json().encode())
    consumer, client = FakeConsumer([bad, dlq, *records(1)]), FakeClient()
    sink, metrics, _ = make_sink(consumer, client, max_rows=10, max_seconds=0)
    sink.poll_once()
    sink.flush(lambda: False)
    assert sorted(client.inserts) == [("dead_letters", 2), ("decisions", 1)]
    assert metrics.rejected._value.get() == 1
