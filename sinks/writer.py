"""The audit sink: Kafka decisions, facts and dead letters → batched, idempotent ClickHouse inserts.

Offsets are committed only after every table of a batch is in ClickHouse and the batch's chain heads are
checkpointed, so a crash re-delivers at most the last batch. Each table is a ReplacingMergeTree keyed so that
a re-delivered message rebuilds exactly the rows it built before (the chain included: a partition's chain is
recovered from the row before the first re-delivered offset), and they replace themselves instead of counting
twice. While ClickHouse is down the sink retries with capped backoff and stops polling Kafka (back-pressure)
rather than buffering without bound.

A decision already in the trail at another offset (a worker that sent it twice) is skipped, within a window of
recent decision ids: `decisions` keeps one row per decision id, and chaining the copy would leave a hole in
the chain once ClickHouse merged the two rows.

Decisions go straight from their JSON to rows (`sinks.decision_rows`) when every field is plainly valid, and
through the pydantic model otherwise, which gives the same rows or dead-letters the message with its reasons.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from pydantic import ValidationError

from schemas.decisions import DeadLetter, Decision
from schemas.errors import RebalanceStalled, ServiceUnavailable
from schemas.events import DataFlow, parse_event
from schemas.settings import Settings, Topics
from sinks.chain import Chain, Head
from sinks.decision_rows import read_decision, rows_of
from sinks.heads import CHAIN_HEADS_FILE, HeadCheckpoints
from sinks.metrics import TABLES, SinkMetrics
from sinks.rows import (
    CHAINED_DECISION_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DISCLOSURE_COLUMNS,
    FACT_COLUMNS,
    VIOLATION_COLUMNS,
    dead_letter_row,
    fact_row,
)

log = logging.getLogger(__name__)

COLUMNS: dict[str, tuple[str, ...]] = {
    "decisions": CHAINED_DECISION_COLUMNS,
    "disclosures": DISCLOSURE_COLUMNS,
    "violations": VIOLATION_COLUMNS,
    "facts": FACT_COLUMNS,
    "dead_letters": DEAD_LETTER_COLUMNS,
}

JOIN_POLL_MS = 3_000
"""How long one poll may wait while the sink is joining its group (a join on a busy broker takes seconds)."""

INSERT_SETTINGS = {"optimize_on_insert": 0}
"""Settings of every batch insert.

`optimize_on_insert=0`: ClickHouse does not first merge each inserted block as its ReplacingMergeTree would. At
5,000 flows/s its own counters put more than a quarter of its time in that merge, which only copied rows: the
sink skips a decision sent twice, so a batch repeats a key only in the rare fact a connector sent twice. With the
local server's statistics off too, ClickHouse used 32 against 38-40 us of CPU per decision (bench/sink.py).
Repeated rows, in one block or across re-delivered ones, are replaced by background merges; reads that must be
exact use FINAL (docs/audit-store.md), as they must for re-delivered rows anyway.
"""

DUPLICATE_WINDOW = 200_000
"""How many recent decision ids the sink remembers to recognise a decision sent twice."""

_RECOVER_CHAIN = """
SELECT max(kafka_offset), argMax(row_hash, kafka_offset), uniqExact(kafka_offset)
FROM decisions
WHERE kafka_partition = {partition:UInt32} AND kafka_offset < {offset:UInt64} AND row_hash != ''
"""

_RECENT_IDS = """
SELECT decision_id, kafka_offset
FROM decisions
WHERE kafka_partition = {partition:UInt32} AND row_hash != ''
ORDER BY kafka_offset DESC
LIMIT {limit:UInt32}
"""


class HeadSink(Protocol):
    """Where chain heads are checkpointed after each batch (`sinks.heads.HeadCheckpoints`)."""

    def publish(self, heads: list[Head]) -> None:
        """Checkpoint `heads`, raising when they were not taken."""

    def latest(self) -> dict[int, Head]:
        """The latest checkpointed head of each partition."""


class _StopRequestedError(Exception):
    """Asked to stop while waiting for ClickHouse in the middle of reading a batch."""


_OFFSET_BITS = 48  # Kafka offsets are int64; 2**48 records in one partition is far beyond any trail


def _where(partition: int, offset: int) -> int:
    return partition << _OFFSET_BITS | offset


def _at(where: int) -> tuple[int, int]:
    return where >> _OFFSET_BITS, where & ((1 << _OFFSET_BITS) - 1)


@dataclass
class Batch:
    """Rows read from Kafka and not yet in ClickHouse, and the chains they extend (whose heads they reach)."""

    rows: dict[str, list[list[object]]] = field(default_factory=lambda: {table: [] for table in TABLES})
    chains: dict[int, Chain] = field(default_factory=dict)
    """Each partition's chain, as the batch's rows leave it: a chain is extended only into the open batch, so its
    head when the batch is written is the batch's. Taken then rather than after every decision (a `Head` each)."""
    messages: int = 0
    started: float | None = None

    def __len__(self) -> int:
        return self.messages

    def largest(self) -> int:
        """Rows of the fullest table: what the batch limit bounds."""
        return max(len(rows) for rows in self.rows.values())


class AuditSink:
    """Consumes decisions, facts and dead letters and lands them in ClickHouse in batches."""

    def __init__(
        self,
        consumer: Any,
        client: Any,
        topics: Topics,
        metrics: SinkMetrics,
        *,
        heads: HeadSink | None = None,
        max_rows: int = 10_000,
        max_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        duplicate_window: int = DUPLICATE_WINDOW,
        rebalance_stall_seconds: float = 20.0,
        group_state: Callable[[], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """A sink reading through `consumer` (subscribed with `rebalance_listener()`) into `client`."""
        self._consumer = consumer
        self._client = client
        self._topics = topics
        self._dlq_topic, self._facts_topic = topics.dlq, topics.facts
        self._metrics = metrics
        self._heads = heads
        self._max_rows = max_rows
        self._max_seconds = max_seconds
        self._max_backoff = max_backoff_seconds
        self._window = duplicate_window
        self._clock = clock
        self._sleep = sleep
        self._batch = Batch()
        self._chains: dict[int, Chain] = {}
        # Where each recent decision id was, as one int (`_where`): a tuple per decision would be one more object
        # for every full collection to walk, 200,000 of them once the window is full.
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._should_stop: Callable[[], bool] = lambda: False
        self._collector = _CollectorPause()
        self._rebalance_stall = rebalance_stall_seconds
        self._group_state = group_state
        self._rebalancing_since: float | None = None
        self.assigned_once = False
        """Whether a rebalance ever completed for this sink (progress, for counting stalls in a row)."""

    def rebalance_listener(self) -> ConsumerRebalanceListener:
        """Flushes the batch before partitions are taken away, and forgets chains it may no longer own."""
        self._rebalancing_since = self._clock()  # asked for at subscribe: the first join starts now
        return _Rebalance(self)

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Poll, batch and flush until `should_stop()`; then try once to flush what is left, and return."""
        self._should_stop = should_stop
        self._collector.allowed = True
        try:
            while not should_stop():
                self.poll_once()
                if self._due():
                    self.flush(should_stop)
                self._check_rebalance()
            self.flush(lambda: True)
        except _StopRequestedError:
            log.error("stopped while ClickHouse was unavailable; %d messages stay uncommitted", len(self._batch))
        finally:
            self._collector.allowed = False
            self._collector.resume()

    def _check_rebalance(self) -> None:
        """Raise `RebalanceStalled` when a rebalance the broker has finished never reached this consumer.

        kafka-python 3.0.12 was seen (CI, twice) never taking the SyncGroup answer of a second join that
        the broker had sent: the sink sat without partitions, and stopped heartbeating, until restarted.
        """
        since = self._rebalancing_since
        if since is None or self._clock() - since < self._rebalance_stall:
            return
        state = self._group_state() if self._group_state is not None else None
        if state in (None, "PreparingRebalance", "Dead"):
            # Unknown (no answer, or no coordinator yet), or still waiting for other members to rejoin (one may be
            # flushing to a ClickHouse that is down): a new consumer would wait just the same. Ask again later.
            self._rebalancing_since = self._clock()
            return
        raise RebalanceStalled(
            f"no partitions {self._clock() - since:.0f}s into a rebalance while the broker has the group {state}"
        )

    def poll_once(self, timeout_ms: int = 200) -> int:
        """Read what Kafka has (up to the batch limit) into the batch; returns the number of messages."""
        room = max(1, self._max_rows - self._batch.largest())
        if self._rebalancing_since is not None:
            # Joining the group happens inside poll. kafka-python 3.0.12 drops a join that completes between two
            # polls and joins again (a second rebalance); there is no batch to flush meanwhile, so wait longer.
            timeout_ms = max(timeout_ms, JOIN_POLL_MS)
        records = self._consumer.poll(timeout_ms=timeout_ms, max_records=room)
        count = 0
        for batch in records.values():
            for record in batch:
                self.add(record)
                count += 1
        return count

    def add(self, record: Any) -> None:
        """Turn one Kafka record into rows of the right tables (unreadable ones become dead letters)."""
        batch = self._batch
        if batch.started is None:
            batch.started = self._clock()
            self._collector.pause()
        batch.messages += 1
        value: bytes = record.value or b""
        raw = value.decode("utf-8", "backslashreplace")
        topic = record.topic
        try:
            if topic == self._dlq_topic:
                batch.rows["dead_letters"].append(dead_letter_row(DeadLetter.model_validate_json(value)))
            elif topic == self._facts_topic:
                fact = parse_event(value)
                if isinstance(fact, DataFlow):
                    self._reject(record, raw, "sink could not read message: a data flow on the facts topic")
                    return
                batch.rows["facts"].append(fact_row(fact, raw, record.partition, record.offset))
            else:
                self._add_decision(value, raw, record.partition, record.offset)
        except ValidationError as exc:
            self._reject(record, raw, f"sink could not read message: {exc.errors(include_url=False)[:3]}")

    def _add_decision(self, value: bytes, raw: str, partition: int, offset: int) -> None:
        # Rows straight from the JSON when every field is plainly valid; anything else is pydantic's to judge
        # (its ValidationError dead-letters the message), and gives the very same rows when it accepts.
        decision = read_decision(value, raw, partition, offset)
        if decision is None:
            decision = rows_of(Decision.model_validate_json(value), raw, partition, offset)
        chain = self._chain(partition, offset)
        if offset <= chain.offset:
            return  # already chained by this process: in ClickHouse or in this batch
        where = self._seen.get(decision.decision_id)
        here = _where(partition, offset)
        if where is not None and where != here:
            self._metrics.duplicates.inc()
            log.info("decision %s at %d/%d: already at %d/%d", decision.decision_id, partition, offset, *_at(where))
            return
        self._remember(decision.decision_id, here)
        rows = self._batch.rows
        rows["decisions"].append(chain.extend(decision.row, decision.hashed))
        rows["disclosures"].extend(decision.disclosures)
        if decision.violation is not None:
            rows["violations"].append(decision.violation)
        self._batch.chains[partition] = chain

    def _reject(self, record: Any, raw: str, error: str) -> None:
        self._metrics.rejected.inc()
        letter = DeadLetter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", "backslashreplace") if record.key else None,
            raw=raw,
            error=error,
            received_at=datetime.now(UTC),
            stage="sink",
        )
        self._batch.rows["dead_letters"].append(dead_letter_row(letter))

    def _remember(self, decision_id: str, where: int) -> None:
        self._seen[decision_id] = where
        self._seen.move_to_end(decision_id)
        while len(self._seen) > self._window:
            self._seen.popitem(last=False)

    def _chain(self, partition: int, offset: int) -> Chain:
        """The partition's chain, recovered from ClickHouse the first time the partition is seen."""
        chain = self._chains.get(partition)
        if chain is None:
            found: list[Chain] = []
            if not self._retrying(lambda: found.append(self._recover(partition, offset)), self._should_stop):
                raise _StopRequestedError
            chain = self._chains[partition] = found[0]
        return chain

    def _recover(self, partition: int, offset: int) -> Chain:
        # The row before the first offset to come: a batch re-delivered after a crash rebuilds identical rows.
        params = {"partition": partition, "offset": offset}
        last_offset, last_hash, rows = self._client.query(_RECOVER_CHAIN, parameters=params).result_rows[0]
        chain = Chain(partition, last_hash, int(rows), int(last_offset)) if rows else Chain(partition)
        head = self._heads.latest().get(partition) if self._heads is not None else None
        committed = head is not None and head.offset < offset
        if head is not None and committed and (head.offset, head.row_hash) != (chain.offset, chain.prev_hash):
            # Committed rows the checkpoint vouches for are not in ClickHouse as checkpointed (a tail deleted or
            # rewritten). Chaining on from what is left would hide that from verify; chain on from the checkpoint.
            log.error(
                "partition %d: the audit store ends at offset %d, the checkpointed head is at offset %d (%s); "
                "continuing the chain from the checkpoint",
                partition,
                chain.offset,
                head.offset,
                head.row_hash,
            )
            chain = Chain(partition, head.row_hash, head.rows_in_chain, head.offset)
        recent = self._client.query(_RECENT_IDS, parameters={"partition": partition, "limit": self._window})
        for decision_id, at in reversed(recent.result_rows):
            self._remember(decision_id, _where(partition, int(at)))
        log.info("partition %d: chain continues from offset %d (%d rows)", partition, chain.offset, chain.rows)
        return chain

    def _due(self) -> bool:
        if not self._batch:
            return False
        started = self._batch.started if self._batch.started is not None else self._clock()
        return self._batch.largest() >= self._max_rows or self._clock() - started >= self._max_seconds

    def flush(self, should_stop: Callable[[], bool]) -> bool:
        """Insert the batch and checkpoint its heads (retrying with backoff on failure), then commit offsets."""
        if not self._batch:
            return True
        if not self._retrying(self._write, should_stop):
            log.error("ClickHouse unavailable at shutdown; %d messages stay uncommitted in Kafka", len(self._batch))
            return False
        self._consumer.commit()
        self._batch = Batch()
        self._collector.resume()
        return True

    def _retrying(self, action: Callable[[], None], should_stop: Callable[[], bool]) -> bool:
        backoff = 0.5
        while True:
            try:
                action()
                return True
            except Exception as exc:  # any transport or server error: keep the batch, retry later
                if should_stop():
                    return False
                self._metrics.retries.inc()
                log.warning("audit store unavailable (%s); retrying in %.1fs", exc, backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    def _write(self) -> None:
        timings = []
        for table in TABLES:
            rows = self._batch.rows[table]
            if rows:
                started = time.perf_counter()
                self._client.insert(table, rows, column_names=list(COLUMNS[table]), settings=INSERT_SETTINGS)
                timings.append((table, len(rows), time.perf_counter() - started))
        if self._heads is not None and self._batch.chains:
            self._heads.publish([chain.head() for chain in self._batch.chains.values()])
        # Counted only once the whole batch is in, so a retried batch is never counted twice.
        for table, count, seconds in timings:
            series = self._metrics.table[table]
            series.rows.inc(count)
            series.batch_rows.observe(count)
            series.batch_seconds.observe(seconds)


class _CollectorPause:
    """Python's cyclic garbage collector, paused while a batch is open (within `AuditSink.run` only).

    A batch is tens of thousands of row lists that hold no reference cycles, yet the collector traverses them
    again each time they age into an older generation: about a fifth of the sink's CPU, measured. Paused, they
    are freed by reference counting when the batch is dropped; the collector then resumes where it left off.
    """

    def __init__(self) -> None:
        self.allowed = False
        self._paused = False

    def pause(self) -> None:
        """Pause collection, unless not allowed or someone else already switched it off."""
        if self.allowed and not self._paused and gc.isenabled():
            gc.disable()
            self._paused = True

    def resume(self) -> None:
        """Resume collection if `pause` paused it."""
        if self._paused:
            gc.enable()
            self._paused = False


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: AuditSink) -> None:
        self._sink = sink

    def on_partitions_revoked(self, revoked: Any) -> None:
        # Rows of a partition read here must be committed here: its next owner recovers the chain from ClickHouse.
        self._sink.flush(self._sink._should_stop)
        self._sink._chains.clear()
        self._sink._rebalancing_since = self._sink._clock()  # after the flush: a slow ClickHouse is not a stall

    def on_partitions_assigned(self, assigned: Any) -> None:
        # Another sink may have extended these chains meanwhile.
        self._sink._chains.clear()
        self._sink._rebalancing_since = None
        self._sink.assigned_once = True


def sink_consumer(settings: Settings, client_id: str = "pupilflow-sink") -> KafkaConsumer:
    """The Kafka consumer the sink reads through: its own group, offsets committed only after each insert."""
    return KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        group_id=settings.sink_group,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Only committed transactions' decisions and facts are part of the trail.
        isolation_level="read_committed",
        max_poll_interval_ms=600_000,
        **fetch_options(settings),
    )


def fetch_options(settings: Settings) -> dict[str, int]:
    """How long, and for how many bytes, the broker may hold the sink's fetches (`sink_fetch_wait_ms`)."""
    if settings.sink_fetch_wait_ms == 0:
        return {"fetch_min_bytes": 1}  # an answer as soon as anything is there (kafka-python's default)
    # Without a wait the broker answers a fetch as soon as one worker transaction commits, 30-50 times a second at
    # 2,000 decisions/s: the sink spent 30-32% of a core, 24-26% with fetches held up to 100 ms (bench/pipeline.py).
    # A backlog fills the 1 MiB at once, so only a quiet stream waits.
    return {"fetch_min_bytes": 1024 * 1024, "fetch_max_wait_ms": settings.sink_fetch_wait_ms}


def chain_heads(settings: Settings, home: Path) -> HeadCheckpoints:
    """The chain-head checkpoints of these settings, their file under `home`."""
    return HeadCheckpoints.connect(settings.kafka_bootstrap, settings.topics.chain_heads, home / CHAIN_HEADS_FILE)


def group_state(admin: Any, group: str) -> Callable[[], str | None]:
    """Asks the broker for the state of `group` ("Stable", "PreparingRebalance", ...); None when it cannot say."""

    def state() -> str | None:
        try:
            found = admin.describe_groups([group]).get(group) or {}
        except KafkaError as exc:
            log.warning("cannot describe consumer group %s: %s", group, exc)
            return None
        value = found.get("group_state")
        return str(value) if value else None

    return state


def subscribed_sink(
    consumer: Any,
    client: Any,
    settings: Settings,
    metrics: SinkMetrics,
    heads: HeadSink | None,
    *,
    state: Callable[[], str | None] | None = None,
) -> AuditSink:
    """The sink of these settings, checkpointing chain heads to `heads`, with `consumer` subscribed for it."""
    sink = AuditSink(
        consumer,
        client,
        settings.topics,
        metrics,
        heads=heads,
        max_rows=settings.sink_batch_max_rows,
        max_seconds=settings.sink_batch_max_seconds,
        rebalance_stall_seconds=settings.sink_rebalance_stall_seconds,
        group_state=state,
    )
    topics = settings.topics
    wanted = [topics.decisions, topics.facts, topics.dlq]
    consumer.subscribe(wanted, listener=sink.rebalance_listener())
    # Metadata of the subscribed topics before the first poll, so that the first join assigns every partition.
    # Without it the consumer joins with none, learns the partitions, and joins again at every start.
    missing = set(wanted) - consumer.topics()
    if missing:
        raise ServiceUnavailable(f"topics {sorted(missing)} do not exist in Kafka (run `pupilflow topics`)")
    return sink
