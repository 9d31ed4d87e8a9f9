"""The audit sink: Kafka decisions and dead letters → batched, idempotent ClickHouse inserts.

Offsets are committed only after a batch is in ClickHouse, so a crash re-delivers at most the last batch;
`decisions` and `dead_letters` are ReplacingMergeTree tables keyed by decision id / source offset, so a
re-delivered row replaces itself instead of counting twice. While ClickHouse is down the sink retries with
backoff and stops polling Kafka (back-pressure) rather than buffering without bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas.decisions import DeadLetter, Decision
from schemas.settings import Topics
from sinks.metrics import SinkMetrics
from sinks.rows import DEAD_LETTER_COLUMNS, DECISION_COLUMNS, dead_letter_row, decision_row

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """Rows read from Kafka and not yet in ClickHouse."""

    decisions: list[list[object]] = field(default_factory=list)
    dead_letters: list[list[object]] = field(default_factory=list)
    started: float | None = None

    def __len__(self) -> int:
        return len(self.decisions) + len(self.dead_letters)


class AuditSink:
    """Consumes the decisions and dead-letter topics and lands them in ClickHouse in batches."""

    def __init__(
        self,
        consumer: Any,
        client: Any,
        topics: Topics,
        metrics: SinkMetrics,
        *,
        max_rows: int = 10_000,
        max_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._consumer = consumer
        self._client = client
        self._topics = topics
        self._metrics = metrics
        self._max_rows = max_rows
        self._max_seconds = max_seconds
        self._max_backoff = max_backoff_seconds
        self._clock = clock
        self._sleep = sleep
        self._batch = Batch()

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Poll, batch and flush until `should_stop()`; then flush what is left and return."""
        while not should_stop():
            self.poll_once()
            if self._due():
                self.flush(should_stop)
        self.flush(lambda: False)

    def poll_once(self, timeout_ms: int = 200) -> int:
        """Read what Kafka has (up to the batch limit) into the batch; returns the number of messages."""
        room = max(1, self._max_rows - len(self._batch))
        records = self._consumer.poll(timeout_ms=timeout_ms, max_records=room)
        count = 0
        for batch in records.values():
            for record in batch:
                self.add(record)
                count += 1
        return count

    def add(self, record: Any) -> None:
        """Turn one Kafka record into a row of the right table (unreadable ones become dead letters)."""
        if self._batch.started is None:
            self._batch.started = self._clock()
        raw = record.value.decode("utf-8", "backslashreplace")
        try:
            if record.topic == self._topics.dlq:
                self._batch.dead_letters.append(dead_letter_row(DeadLetter.model_validate_json(record.value)))
            else:
                decision = Decision.model_validate_json(record.value)
                self._batch.decisions.append(decision_row(decision, raw, record.partition, record.offset))
        except ValidationError as exc:
            self._metrics.rejected.inc()
            letter = DeadLetter(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key.decode("utf-8", "backslashreplace") if record.key else None,
                raw=raw,
                error=f"sink could not read message: {exc.errors(include_url=False)[:3]}",
                received_at=datetime.now(UTC),
                stage="sink",
            )
            self._batch.dead_letters.append(dead_letter_row(letter))

    def _due(self) -> bool:
        if not self._batch:
            return False
        started = self._batch.started if self._batch.started is not None else self._clock()
        return len(self._batch) >= self._max_rows or self._clock() - started >= self._max_seconds

    def flush(self, should_stop: Callable[[], bool]) -> bool:
        """Insert the batch (retrying with backoff while ClickHouse fails), then commit offsets."""
        if not self._batch:
            return True
        backoff = 0.5
        while True:
            try:
                self._insert()
                break
            except Exception as exc:  # any transport or server error: keep the batch, retry later
                if should_stop():
                    log.error("ClickHouse unavailable at shutdown; %d rows stay uncommitted in Kafka", len(self._batch))
                    return False
                self._metrics.retries.inc()
                log.warning("ClickHouse insert failed (%s); retrying in %.1fs", exc, backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
        self._consumer.commit()
        self._batch = Batch()
        return True

    def _insert(self) -> None:
        started = time.perf_counter()
        tables = (
            ("decisions", self._batch.decisions, DECISION_COLUMNS),
            ("dead_letters", self._batch.dead_letters, DEAD_LETTER_COLUMNS),
        )
        for table, rows, columns in tables:
            if rows:
                self._client.insert(table, rows, column_names=list(columns))
        # Counted only once the whole batch is in, so a retried batch is never counted twice.
        for table, rows, _ in tables:
            self._metrics.rows.labels(table=table).inc(len(rows))
        self._metrics.batch_rows.observe(len(self._batch))
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
