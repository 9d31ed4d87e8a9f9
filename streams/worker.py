"""The stream worker: flows and facts in, decisions, alerts and dead letters out, exactly once.

One consume-transform-produce loop over Kafka transactions. Messages are handled in arrival order across
all input partitions (`Arrivals`); each poll's decisions, violations (the alert stream), dead letters, the state changes
(`StreamState.changes`, to the compacted changelog topic) and the input offsets are sent in one transaction.
Either all of that is committed or none of it is: a worker killed at any point restarts from the last
committed transaction, restores its state from the changelog, and re-reads only uncommitted input, so no
decision is lost and none is doubled. The transactional id is fixed, so a restarted worker fences a zombie.

Why not faust's `processing_guarantee="exactly_once"`: faust-streaming's transactional mode has open reports
of crashing at start (faust-streaming#440), duplicating output across a kill (#517) and losing table updates
on `kill -9` (robinhood/faust#340). The guarantee here is the same protocol (KIP-98 transactions with the
offsets in the transaction) in about a hundred lines that the kill -9 test exercises.

The worker owns every partition of the co-partitioned flows and facts topics, so a flow about several
pupils is judged against all of their state at once (`docs/streaming.md` says how it scales out).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from schemas.decisions import DeadLetter, Decision
from schemas.errors import ServiceUnavailable
from schemas.events import DataFlow, parse_event
from schemas.policy import Policy
from schemas.settings import Settings
from streams.metrics import UNREGISTERED, WorkerMetrics
from streams.processor import StreamState

log = logging.getLogger(__name__)

Send = tuple[str, bytes | None, bytes | None]
"""One record to produce: topic, key, value."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the field path, so a connector author can fix the event."""
    parts = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"]) or "<event>"
        parts.append(f"{path}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)


def dead_letter(record: Any, error: str, stage: str = "validate") -> DeadLetter:
    """Wrap a Kafka record that could not be used, with the reason and where it came from."""
    value = record.value if isinstance(record.value, bytes) else b""
    key = record.key.decode("utf-8", "backslashreplace") if isinstance(record.key, bytes) else None
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        raw=value.decode("utf-8", "backslashreplace"),
        error=error,
        received_at=datetime.now(UTC),
        stage=stage,
    )


class Judge:
    """Turns input records into records to send, through `StreamState`; no Kafka here, so it is unit-testable."""

    def __init__(self, settings: Settings, policy: Policy, metrics: WorkerMetrics, state: StreamState) -> None:
        self.topics = settings.topics
        self.policy = policy
        self.metrics = metrics
        self.state = state
        self._groups: dict[str, str] = {}
        self._sent_at: list[tuple[float, float]] = []  # (emitted_at epoch, 1) per decision awaiting commit

    def handle(self, record: Any, out: list[Send]) -> None:
        """Judge one input record, appending what to send to `out`."""
        try:
            event = parse_event(record.value)
        except ValidationError as exc:
            self._dead(record, describe_validation_error(exc), out)
            return
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            self._dead(record, f"unreadable event: {exc}", out)
            return
        is_flow = isinstance(event, DataFlow)
        if is_flow != (record.topic == self.topics.flows):
            where = "flows" if record.topic == self.topics.flows else "facts"
            self._dead(record, f"a {event.kind!r} event on the {where} topic", out)
            return
        try:
            outcome = self.state.handle(event)
        except ValueError as exc:  # an event id reused for a different payload
            self._dead(record, str(exc), out, stage="evaluate")
            return
        self.metrics.event_in(event.kind, event.source.connector)
        if outcome.missing:
            self.metrics.gap(event.source.connector, outcome.missing)
            log.warning("connector %s: %d sequence numbers never arrived", event.source.connector, outcome.missing)
        if is_flow and not outcome.decisions:
            self.metrics.duplicates.inc()
        for decision in outcome.decisions:
            self._decided(decision, out)
        if outcome.superseding:
            for decision in outcome.decisions:
                self.metrics.supersessions.labels(verdict=decision.verdict).inc()

    def _decided(self, decision: Decision, out: list[Send]) -> None:
        flow = self.state.open_flow(decision.flow_event_id)
        key = flow.partition_key() if flow is not None else decision.flow_event_id.encode()
        payload = decision.to_json_bytes()
        out.append((self.topics.decisions, key, payload))
        self.metrics.decisions.labels(verdict=decision.verdict).inc()
        if decision.verdict == "violation":
            # The violations topic is the alert stream: one message per first violation or superseding one.
            out.append((self.topics.violations, key, payload))
            self.metrics.violation(decision.reasons[0] if decision.reasons else "UNSPECIFIED", self._group(decision))
        self._sent_at.append((decision.emitted_at.timestamp(), 1.0))

    def _group(self, decision: Decision) -> str:
        group = self._groups.get(decision.recipient)
        if group is None:
            found = self.policy.index.recipient(decision.recipient)
            group = self._groups[decision.recipient] = found.group if found is not None else UNREGISTERED
        return group

    def _dead(self, record: Any, error: str, out: list[Send], stage: str = "validate") -> None:
        letter = dead_letter(record, error, stage)
        out.append((self.topics.dlq, record.key, letter.model_dump_json().encode()))
        self.metrics.dead_letters.labels(stage=stage).inc()
        log.warning("dead letter %s[%s]@%s: %s", record.topic, record.partition, record.offset, error)

    def committed(self, now: float) -> None:
        """The transaction holding the pending decisions committed: observe their end-to-end latency."""
        observe = self.metrics.decision_latency.observe
        for emitted, _ in self._sent_at:
            observe(max(0.0, now - emitted))
        self._sent_at.clear()


def arrival_key(record: Any) -> tuple[int, bytes]:
    """Order of arrival: the producer timestamp, then the event's own `emitted_at` text for events in the same ms."""
    value = record.value if isinstance(record.value, bytes) else b""
    at = value.find(b'"emitted_at":"')
    stamp = value[at + 14 : value.find(b'"', at + 14)] if at >= 0 else b""
    return record.timestamp, stamp


class Arrivals:
    """Per-partition buffers merged into one arrival order across every input partition (as Kafka Streams does).

    A record is released only when every input partition either has a buffered record to compare it with or has
    nothing more to fetch, so a fact is not overtaken by a flow sent after it just because the flows partition
    was fetched first. A partition that stays behind longer than `max_idle_s` stops holding the others up.
    """

    def __init__(self, partitions: list[Any], caught_up: Callable[[Any], bool], max_idle_s: float = 0.05) -> None:
        self._buffers: dict[Any, deque[tuple[tuple[int, bytes], Any]]] = {tp: deque() for tp in partitions}
        self._caught_up = caught_up
        self._max_idle = max_idle_s
        self._blocked_since: float | None = None

    def add(self, records: dict[Any, list[Any]]) -> None:
        """Buffer one poll's records."""
        for tp, batch in records.items():
            self._buffers[tp].extend((arrival_key(r), r) for r in batch)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def release(self, now: float) -> list[Any]:
        """The records that can be handled now, in arrival order."""
        out: list[Any] = []
        buffers = self._buffers
        while True:
            heads = [b for b in buffers.values() if b]
            if not heads:
                self._blocked_since = None
                return out
            waiting = any(not b and not self._caught_up(tp) for tp, b in buffers.items())
            if waiting:
                if self._blocked_since is None:
                    self._blocked_since = now
                if now - self._blocked_since < self._max_idle:
                    return out
            out.append(min(heads, key=lambda b: b[0][0]).popleft()[1])


class StreamWorker:
    """The Kafka edge: restore state, then poll → judge → one transaction per poll, until told to stop."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        metrics: WorkerMetrics,
        *,
        max_records: int = 2_000,
        poll_ms: int = 50,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.topics = settings.topics
        self.state = StreamState(policy, timedelta(hours=settings.lateness_hours))
        self.judge = Judge(settings, policy, metrics, self.state)
        self.max_records = max_records
        self.poll_ms = poll_ms
        self.group = settings.consumer_group
        bootstrap = settings.kafka_bootstrap.split(",")
        try:
            self.consumer = KafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=self.group,
                client_id="pupilflow-worker",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            self.producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id="pupilflow-worker",
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                compression_type="gzip",
                batch_size=256 * 1024,
                # Fixed: a restarted worker fences the one it replaces and aborts its open transaction.
                transactional_id=f"{self.group}-0",
                transaction_timeout_ms=60_000,
            )
            self.producer.init_transactions()
        except KafkaError as exc:
            raise ServiceUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
        self.inputs = [
            TopicPartition(topic, p)
            for topic in (self.topics.flows, self.topics.facts)
            for p in sorted(self.consumer.partitions_for_topic(topic) or ())
        ]
        if not self.inputs:
            raise ServiceUnavailable(f"topics {self.topics.flows} and {self.topics.facts} do not exist")
        self._transactions = 0

    def restore(self, progress: Callable[[int], None] | None = None) -> int:
        """Read the whole changelog (committed records only) into the state; returns the keys restored."""
        reader = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap.split(","),
            client_id="pupilflow-worker-restore",
            enable_auto_commit=False,
            isolation_level="read_committed",
            group_id=None,
        )
        try:
            changelog = self.topics.changelog
            parts = [TopicPartition(changelog, p) for p in reader.partitions_for_topic(changelog) or ()]
            reader.assign(parts)
            reader.seek_to_beginning(*parts)
            ends = reader.end_offsets(parts)
            records: list[tuple[bytes, bytes | None]] = []
            pending = {tp for tp in parts if ends[tp] > 0}
            while pending:
                for batch in reader.poll(timeout_ms=500, max_records=50_000).values():
                    records.extend((r.key, r.value) for r in batch)
                for tp in list(pending):
                    if reader.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if progress is not None:
                    progress(len(records))
        finally:
            reader.close()
        restored = self.state.restore(records)
        self.metrics.restored_keys.set(restored)
        self.metrics.open_flows.set(self.state.open_flows())
        return restored

    def start_consuming(self) -> None:
        """Assign every input partition and resume from the group's committed offsets."""
        self.consumer.assign(self.inputs)
        for tp in self.inputs:
            committed = self.consumer.committed(tp)
            if committed is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Poll and process until `should_stop()`; each poll is one transaction."""
        self.start_consuming()
        arrivals = Arrivals(self.inputs, self._caught_up)
        lag_every = 0
        while not should_stop():
            room = max(1, self.max_records - len(arrivals))
            arrivals.add(self.consumer.poll(timeout_ms=self.poll_ms, max_records=room))
            ready = arrivals.release(time.monotonic())
            if ready:
                self.process(ready)
            lag_every += 1
            if lag_every >= 20:
                lag_every = 0
                self._observe_lag()

    def _caught_up(self, tp: TopicPartition) -> bool:
        highwater = self.consumer.highwater(tp)
        return highwater is not None and self.consumer.position(tp) >= highwater

    def process(self, records: list[Any]) -> None:
        """Judge records in arrival order and commit everything they produced in one transaction."""
        started = time.perf_counter()
        out: list[Send] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        count = 0
        for record in records:
            self.judge.handle(record, out)
            offsets[TopicPartition(record.topic, record.partition)] = OffsetAndMetadata(record.offset + 1, "", -1)
            count += 1
        self._transactions += 1
        changes = self.state.changes(f"{int(time.time() * 1000)}-{self._transactions}")
        producer = self.producer
        producer.begin_transaction()
        for topic, key, value in out:
            producer.send(topic, key=key, value=value)
        for key, value in changes:
            producer.send(self.topics.changelog, key=key, value=value)
        producer.send_offsets_to_transaction(offsets, self.group)
        producer.commit_transaction()
        self.judge.committed(time.time())
        self.metrics.transaction_seconds.observe(time.perf_counter() - started)
        self.metrics.transaction_events.observe(count)
        self.metrics.open_flows.set(self.state.open_flows())
        for connector, tracker in self.state.sequences.items():
            self.metrics.sequence_missing.labels(connector=connector).set(tracker.missing())

    def _observe_lag(self) -> None:
        try:
            ends = self.consumer.end_offsets(self.inputs)
        except KafkaError:
            return
        lag: dict[str, int] = {self.topics.flows: 0, self.topics.facts: 0}
        for tp in self.inputs:
            position = self.consumer.position(tp)
            lag[tp.topic] += max(0, ends.get(tp, 0) - (position or 0))
        for topic, value in lag.items():
            self.metrics.consumer_lag.labels(topic=topic).set(value)

    def close(self) -> None:
        """Close the Kafka clients (an open transaction, if any, is aborted by the broker or the next start)."""
        self.consumer.close()
        self.producer.close(timeout=10)
