"""The stream worker: flows and facts in, decisions, alerts and dead letters out, exactly once.

One consume-transform-produce loop over Kafka transactions. Messages are handled in arrival order within
each group of same-numbered flows and facts partitions (`Arrivals`); the decisions, violations (the alert
stream), dead letters, state changes (`StreamState.changes`, to the compacted changelog topic) and input
positions (`streams.positions`, to the changelog too) of each batch released are sent in one transaction.
Either all of that is committed or none of it is: a worker killed at any point restarts from the last
committed transaction, restores its state from the changelog, and re-reads only uncommitted input, so no
decision is lost and none is doubled. The transactional id is fixed, so a restarted worker fences a zombie.

Why not faust's `processing_guarantee="exactly_once"`: faust-streaming's transactional mode has open reports
of crashing at start (faust-streaming#440), duplicating output across a kill (#517) and losing table updates
on `kill -9` (robinhood/faust#340). The guarantee here is the same protocol (KIP-98 transactions with the
input positions in the transaction) on aiokafka, faust's own Kafka client, in a loop small enough to read whole and
exercised by the kill -9 test. aiokafka rather than kafka-python: its batch API and C record codec cost about
a third of kafka-python's per-record send, and it needs no I/O thread contending for the GIL.

By default the worker owns every partition of the co-partitioned flows and facts topics, so a flow about
several pupils is judged against all of their state at once. With `worker_members` > 1 it is one member of a
split topology (`streams.member`): it owns a share of the partitions, exchanges legs of flows with the other
members on the legs topic, and reads the shared facts whole (`docs/streaming.md`, "Scaling").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas.decisions import DeadLetter, Decision
from schemas.errors import ConfigurationError, ServiceUnavailable, TransactionStalled
from schemas.events import DataFlow, parse_event
from schemas.policy import Policy
from schemas.settings import Settings
from streams.legs import SHARED_FACTS, SequencesSeen, decode, encode, partition_of
from streams.member import MemberState
from streams.metrics import UNREGISTERED, Tally, WorkerMetrics
from streams.positions import POSITIONS, decode_positions, encode_positions, positions_key
from streams.processor import Change, Outcome, StreamState
from streams.replay import describe

log = logging.getLogger(__name__)

BACKLOG = 1_000
"""Records behind (in one partition, or buffered) from which the worker counts as catching up on a backlog."""

Send = tuple[str, bytes | None, bytes | None]
"""One record to produce: topic, key, value."""


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
        self._sent_at: list[float] = []  # emitted_at (epoch seconds) of each decision awaiting commit
        self.tally = Tally()
        """What the batch judged since the last `take_tally` adds to the counters once its transaction commits."""
        self.split = settings.worker_members > 1
        self._legs: list[tuple[int, bytes]] = []
        self._seen: dict[str, list[int]] = {}  # a member's share of each connector's numbers, for its tracker
        self._partitions = settings.topics.partitions

    def handle(self, record: Any, out: list[Send]) -> None:
        """Judge one input record, appending what to send to `out` (leg messages go to `take_legs`)."""
        if record.topic == self.topics.legs:
            self._leg(record, out)
            return
        try:
            event = parse_event(record.value)
        except ValidationError as exc:
            self._dead(record, f"invalid event: {describe(exc)}", out)
            return
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            self._dead(record, f"unreadable event: {exc}", out)
            return
        is_flow = isinstance(event, DataFlow)
        if is_flow != (record.topic == self.topics.flows):
            where = "flows" if record.topic == self.topics.flows else "facts"
            self._dead(record, f"a {event.kind!r} event on the {where} topic", out)
            return
        shared = isinstance(event, SHARED_FACTS)
        if self.split and shared and record.topic == self.topics.facts:
            # Every member applies recipient and notice facts: they come back to each, this one too, from there.
            out.append((self.topics.shared_facts, record.key, record.value))
            self.tally.events_in[(event.kind, event.source.connector)] += 1
            self._seen.setdefault(event.source.connector, []).append(event.source.sequence)
            return
        skipped = self.state.duplicates
        try:
            outcome = self.state.handle(event, record.value)
        except ValueError as exc:  # an event id reused for a different payload
            self._dead(record, str(exc), out, stage="evaluate")
            return
        self._legs.extend(outcome.legs)
        if record.topic != self.topics.shared_facts:  # counted once, where it came in
            self.tally.events_in[(event.kind, event.source.connector)] += 1
            if self.split:
                self._seen.setdefault(event.source.connector, []).append(event.source.sequence)
        if outcome.missing:
            self._gap(event.source.connector, outcome.missing)
        if self.state.duplicates > skipped:  # a flow with no decision may be waiting for legs judged elsewhere
            self.tally.duplicates += 1
        self._emit(outcome, out)

    def _leg(self, record: Any, out: list[Send]) -> None:
        """A leg request or result from another member of the split topology."""
        try:
            message = decode(record.value if isinstance(record.value, bytes) else b"")
        except ValueError as exc:
            self._dead(record, f"unreadable leg message: {exc}", out)
            return
        if not isinstance(self.state, MemberState):
            self._dead(record, "a leg message to a worker that is not a member of a split topology", out)
            return
        outcome = self.state.handle(message)
        if isinstance(message, SequencesSeen) and outcome.missing:
            self._gap(message.connector, outcome.missing)
        self._legs.extend(outcome.legs)
        self._emit(outcome, out)

    def _gap(self, connector: str, missing: int) -> None:
        self.tally.gaps[connector] += missing
        log.warning("connector %s: %d sequence numbers never arrived", connector, missing)

    def _emit(self, outcome: Outcome, out: list[Send]) -> None:
        """The decisions an event or a leg message produced, each to its topics and counted."""
        for decision, payload in zip(outcome.decisions, outcome.payloads, strict=True):
            self._decided(decision, payload, out)
            if decision.supersedes is not None:
                self.tally.supersessions[decision.verdict] += 1

    def take_legs(self) -> list[tuple[int, bytes]]:
        """The leg messages to send since the last call: (partition of the legs topic, value).

        With them, per connector, the sequence numbers of the events taken in since: to the partition its name is
        keyed to, whose member tracks them.
        """
        legs, self._legs = self._legs, []
        for connector, numbers in self._seen.items():
            partition = partition_of(connector.encode(), self._partitions)
            legs.append((partition, encode(SequencesSeen(connector, tuple(numbers)))))
        self._seen = {}
        return legs

    def _decided(self, decision: Decision, payload: bytes, out: list[Send]) -> None:
        key = decision.subject_ids[0].encode()  # the flow's own key: its first subject
        out.append((self.topics.decisions, key, payload))
        self.tally.decisions[decision.verdict] += 1
        if decision.verdict == "violation":
            # The violations topic is the alert stream: one message per first violation or superseding one.
            out.append((self.topics.violations, key, payload))
            reason = decision.reasons[0] if decision.reasons else "UNSPECIFIED"
            self.tally.violations[(reason, self._group(decision))] += 1
        self._sent_at.append(decision.emitted_at.timestamp())

    def _group(self, decision: Decision) -> str:
        group = self._groups.get(decision.recipient)
        if group is None:
            found = self.policy.index.recipient(decision.recipient)
            group = self._groups[decision.recipient] = found.group if found is not None else UNREGISTERED
        return group

    def _dead(self, record: Any, error: str, out: list[Send], stage: str = "validate") -> None:
        letter = dead_letter(record, error, stage)
        out.append((self.topics.dlq, record.key, letter.model_dump_json().encode()))
        self.tally.dead_letters[stage] += 1
        log.warning("dead letter %s[%s]@%s: %s", record.topic, record.partition, record.offset, error)

    def take_tally(self) -> Tally:
        """What the events judged since the last call add to the counters: the next transaction's to count."""
        tally, self.tally = self.tally, Tally()
        return tally

    def take_pending(self) -> list[float]:
        """The `emitted_at` of each decision made since the last call: the ones the next transaction holds."""
        pending, self._sent_at = self._sent_at, []
        return pending

    def committed(self, emitted: list[float], now: float) -> None:
        """The transaction holding these decisions committed at `now`: observe their end-to-end latency."""
        observe = self.metrics.decision_latency.observe
        for at in emitted:
            observe(max(0.0, now - at))


def event_id_of(value: Any) -> str | None:
    """The `event_id` of a compact JSON event, found without parsing it (None when not found that way)."""
    if not isinstance(value, bytes):
        return None
    at = value.find(b'"event_id":"')
    if at < 0:
        return None
    end = value.find(b'"', at + 12)
    return value[at + 12 : end].decode("utf-8", "replace") if end > 0 else None


def arrival_key(record: Any) -> tuple[int, float]:
    """Order of arrival: the producer timestamp, then the event's own `emitted_at` for events in the same ms."""
    value = record.value if isinstance(record.value, bytes) else b""
    at = value.find(b'"emitted_at":"')
    if at < 0:
        return record.timestamp, 0.0
    try:
        # Compared as instants: "10:00:00Z" and "10:00:00.5Z" do not sort as text does.
        emitted = datetime.fromisoformat(value[at + 14 : value.find(b'"', at + 14)].decode()).timestamp()
    except (ValueError, UnicodeDecodeError):
        emitted = 0.0  # an unreadable event: the judge dead-letters it in its place
    return record.timestamp, emitted


class Arrivals:
    """Per-partition buffers released in arrival order within each group of partitions (a Kafka Streams task).

    The worker groups the flows and facts partitions of the same number: they hold the same subjects. Within a
    group, the head record is released only when every partition of the group with nothing buffered has nothing
    more to fetch either, so a fact is never overtaken by a flow of the same subject sent after it just because
    the flows partition was fetched first. Groups do not wait for each other, so a busy partition never stalls
    the rest. (An agreement, keyed by recipient, can still be overtaken by a flow of another partition; applying
    it late re-judges the flows it bears on, as any late fact does.) A partition whose end is still unknown
    (never fetched) holds its group up for at most `max_unknown_s`. A partition with `high` records buffered
    is paused until it drains below `low`, so buffers never grow without bound.
    """

    def __init__(
        self,
        partitions: list[Any],
        *,
        group_of: Callable[[Any], Any] = lambda tp: 0,
        high: int = 4_000,
        low: int = 1_000,
        max_unknown_s: float = 1.0,
        max_stale_s: float = 1.0,
    ) -> None:
        self._buffers: dict[Any, deque[tuple[tuple[int, float], Any]]] = {tp: deque() for tp in partitions}
        self._groups: dict[Any, list[Any]] = {}
        for tp in partitions:
            self._groups.setdefault(group_of(tp), []).append(tp)
        self.high, self.low = high, low
        self._max_unknown = max_unknown_s
        self._unknown_since: dict[Any, float] = {}
        self._max_stale = max_stale_s
        self._stale_since: dict[Any, float] = {}
        self.paused: set[Any] = set()

    def add(self, records: dict[Any, list[Any]]) -> None:
        """Buffer one poll's records."""
        for tp, batch in records.items():
            self._buffers[tp].extend((arrival_key(r), r) for r in batch)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def empty(self) -> list[Any]:
        """The partitions with nothing buffered in a group that has something buffered (their fetch state matters)."""
        buffers = self._buffers
        out = []
        for members in self._groups.values():
            if any(buffers[tp] for tp in members):
                out += [tp for tp in members if not buffers[tp]]
        return out

    def flow_control(self) -> tuple[list[Any], list[Any]]:
        """(partitions to pause, partitions to resume) for the buffers' fill levels."""
        pause = [tp for tp, b in self._buffers.items() if len(b) >= self.high and tp not in self.paused]
        resume = [tp for tp in self.paused if len(self._buffers[tp]) < self.low]
        self.paused.update(pause)
        self.paused.difference_update(resume)
        return pause, resume

    def release(
        self, caught_up: dict[Any, bool | None], now: float, fetched_at: dict[Any, int | None] | None = None
    ) -> list[Any]:
        """The records that can be handled now, in arrival order within each group.

        `caught_up[tp]` for each partition of `empty()`: True when it has nothing more to fetch, False when it
        has, None when that is not known yet. `fetched_at[tp]` (ms) is when the broker last said so: a record
        produced after that moment may have company in that partition that the answer could not yet include,
        so it waits for a fresher answer (at most `max_stale_s`, which bounds what producer clock skew can do;
        a live broker answers every fetch within the consumer's 20 ms fetch wait).
        """
        out: list[Any] = []
        for group, members in self._groups.items():
            self._release_group(group, members, caught_up, fetched_at or {}, now, out)
        return out

    def _release_group(
        self,
        group: Any,
        members: list[Any],
        caught_up: dict[Any, bool | None],
        fetched_at: dict[Any, int | None],
        now: float,
        out: list[Any],
    ) -> None:
        buffers = [self._buffers[tp] for tp in members]
        states = [caught_up.get(tp) for tp, b in zip(members, buffers, strict=True) if not b]
        if len(states) == len(members):
            self._unknown_since.pop(group, None)
            return  # nothing buffered
        if any(state is False for state in states):
            return
        if any(state is None for state in states):
            since = self._unknown_since.setdefault(group, now)
            if now - since < self._max_unknown:
                return
        else:
            self._unknown_since.pop(group, None)
        waiting_on = len(members) - len(states)  # the partitions with something buffered
        answered = [fetched_at.get(tp) for tp, b in zip(members, buffers, strict=True) if not b]
        fresh_until = min((t for t in answered if t is not None), default=None) if fetched_at else None
        while True:
            heads = [b for b in buffers if b]
            if len(heads) < waiting_on or not heads:
                return  # a partition ran dry during this release: its fetch state must be asked again
            head = min(heads, key=lambda b: b[0][0])
            if fresh_until is not None and head[0][0][0] > fresh_until:
                since = self._stale_since.setdefault(group, now)
                if now - since < self._max_stale:
                    return
            self._stale_since.pop(group, None)
            out.append(head.popleft()[1])


class Outbox:
    """Records for one transaction, gathered per topic partition and sent as whole batches (aiokafka's fast path)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._batches: dict[tuple[str, int], Any] = {}
        self._sent: list[Any] = []

    async def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        """Queue one record; a full batch is sent straight away."""
        batch = self._batches.get((topic, partition))
        if batch is None:
            batch = self._batches[(topic, partition)] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            self._sent.append(await self._producer.send_batch(batch, topic, partition=partition))
            batch = self._batches[(topic, partition)] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes does not fit in a Kafka batch")

    async def flush(self) -> None:
        """Send every partly filled batch, without waiting for the broker (`delivered`)."""
        for (topic, partition), batch in self._batches.items():
            if batch.record_count():
                self._sent.append(await self._producer.send_batch(batch, topic, partition=partition))
        self._batches.clear()

    async def delivered(self) -> None:
        """Wait until the broker has every record sent; raises the first failure."""
        sent, self._sent = self._sent, []
        await asyncio.gather(*sent)


TURN_SECONDS = 0.001
"""Judging time between two turns of the event loop while a transaction is in flight.

Each of the transaction's round trips waits for the next turn to go on, so this bounds what judging adds to a
commit. With a turn every 64 records instead (about 10 ms of judging, more for a flow about many pupils), a
batch of fewer was judged without one, and each round trip could wait for all of it. Mean commit, send to
commit (`bench/pipeline.py`): 13.5 ms at 2,000 flows/s against 11.6 ms with this; with a backlog at 5,000
flows/s, 323 ms against 162 ms.
"""


@dataclass
class _InFlight:
    """A batch's transaction, sent and not yet known to be committed."""

    commit: asyncio.Future[None]
    since: float  # monotonic, when it was sent: the stall watchdog counts from here
    events: int
    emitted: list[float]  # emitted_at of each decision it holds
    tally: Tally  # what its batch adds to the counters
    committed_at: list[float]  # once it has committed: when, wall time then monotonic
    positions: dict[TopicPartition, int]  # the input positions it commits


class StreamWorker:
    """The Kafka edge: restore state, then poll → judge → one transaction per batch of arrivals, until stopped."""

    def __init__(
        self, settings: Settings, policy: Policy, metrics: WorkerMetrics, *, max_records: int = 2_000, poll_ms: int = 50
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.topics = settings.topics
        lateness = timedelta(hours=settings.lateness_hours)
        members, member = settings.worker_members, settings.worker_member
        self.split = members > 1
        partitions = settings.topics.partitions
        self.owned = [p for p in range(partitions) if p % members == member]
        """The partitions of the co-partitioned topics this worker owns: all of them unless it is one of several."""
        self.state: StreamState = (
            MemberState(policy, partitions, self.owned, lateness, on_disk=True)
            if self.split
            else StreamState(policy, lateness, on_disk=True)
        )
        self.judge = Judge(settings, policy, metrics, self.state)
        self.max_records = max_records
        self.poll_ms = poll_ms
        # A member reads the shared facts whole, from a position of its own: its offsets are its own group's.
        self.group = f"{settings.consumer_group}-member-{member}" if self.split else settings.consumer_group
        self.changelog = self.topics.member_changelog if self.split else self.topics.changelog
        self._bootstrap = settings.kafka_bootstrap.split(",")
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.inputs: list[TopicPartition] = []
        self._partitions: dict[str, int] = {}
        self._transactions = 0
        self.committed = 0
        """Transactions this worker committed (progress: a restart after one starts its count of failures afresh)."""
        self._placed: dict[tuple[str, bytes | None], int] = {}  # (topic, key) -> partition: murmur2 once a key
        self._in_flight: _InFlight | None = None
        self._arrivals: Arrivals | None = None
        self._lag_seen = 0.0  # monotonic, when consumer lag was last observed
        self.clock: Callable[[], float] = time.perf_counter
        """What judging time is measured with (`TURN_SECONDS`)."""
        self._positions_key = positions_key(self.group)
        self._resume: dict[TopicPartition, int] = {}  # the input positions the restored changelog holds
        self._positions: dict[TopicPartition, int] = {}  # after the last transaction sent
        self._unshared: dict[TopicPartition, int] | None = None  # committed, not yet given to the consumer group
        self._shared_at = 0.0  # monotonic, when they were last given
        self._sharing: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Connect; the transactional producer fences any earlier worker and aborts what it left open."""
        try:
            self.consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=self.group,
                client_id="pupilflow-worker",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_partition_fetch_bytes=4 * 1024 * 1024,
                # A fetch the broker holds open delays every partition in it: decisions must follow flows
                # within tens of milliseconds (measured with bench/pipeline.py at 1,000-2,000 flows/s).
                fetch_max_wait_ms=20,
                # Answered at once by default; gathering 16 KiB first cut the CPU of the worker and the broker
                # at 2,000 flows/s, but the decision p99 did not follow (docs/streaming.md, "Measured").
                fetch_min_bytes=self.settings.worker_fetch_min_bytes,
            )
            await self.consumer.start()
            self.producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id="pupilflow-worker",
                acks="all",
                enable_idempotence=True,
                linger_ms=0,  # batches are built whole by `Outbox`; nothing gains from waiting
                # Measured on loopback (bench/pipeline.py): gzip halved the worker's throughput for bytes
                # that never leave the machine; set `worker_compression` where the broker is remote.
                compression_type=self.settings.worker_compression,
                max_batch_size=512 * 1024,
                # Fixed: a restarted worker fences the one it replaces and aborts its open transaction.
                transactional_id=f"{self.group}-0",
                transaction_timeout_ms=60_000,
                # A retriable answer to a record (the broker's check that its partition is in the transaction
                # found the transaction changing: NOT_ENOUGH_REPLICAS) is retried after 100 ms by default, which
                # made that commit 100 ms longer; seen when the input offsets joined the transaction beside them.
                retry_backoff_ms=10,
            )
            await self.producer.start()
        except KafkaError as exc:
            raise ServiceUnavailable(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc}") from exc
        t = self.topics
        topics = [t.flows, t.facts, t.decisions, t.violations, t.dlq, self.changelog]
        if self.split:
            topics += [t.legs, t.shared_facts]
        for topic in topics:
            try:
                found = await self.producer.partitions_for(topic)
            except KafkaError as exc:
                raise ServiceUnavailable(f"topic {topic} is not available (run `pupilflow topics`): {exc}") from exc
            self._partitions[topic] = len(found)
        if self._partitions[t.flows] != self._partitions[t.facts]:
            # Arrival order is kept per partition number: flows and facts of one subject must share it.
            raise ConfigurationError(
                f"topics {t.flows} ({self._partitions[t.flows]} partitions) and {t.facts} "
                f"({self._partitions[t.facts]}) must have the same number of partitions"
            )
        if self.split:
            # A member's partitions were chosen from `topics.partitions`: the topics must have that many.
            sized = (t.flows, t.facts, t.legs, self.changelog)
            if any(self._partitions[x] != t.partitions for x in sized):
                found = ", ".join(f"{x} ({self._partitions[x]})" for x in sized)
                raise ConfigurationError(
                    f"a split topology needs {t.partitions} partitions (topics.partitions) in: {found}"
                )
            self.inputs = [TopicPartition(x, p) for x in (t.flows, t.facts, t.legs) for p in self.owned]
            self.inputs += [TopicPartition(t.shared_facts, p) for p in range(self._partitions[t.shared_facts])]
        else:
            self.inputs = [TopicPartition(x, p) for x in (t.flows, t.facts) for p in range(self._partitions[x])]

    async def restore(self, progress: Callable[[int], None] | None = None) -> int:
        """Read the whole changelog (committed records only) into the state; returns the keys restored."""
        reader = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id="pupilflow-worker-restore",
            enable_auto_commit=False,
            isolation_level="read_committed",
            group_id=None,
        )
        await reader.start()
        self._resume = {}
        restoring = self.state.restoring()
        read = 0
        try:
            changelog = self.changelog
            owned = self.owned if self.split else range(self._partitions[changelog])
            parts = [TopicPartition(changelog, p) for p in owned]
            reader.assign(parts)
            await reader.seek_to_beginning(*parts)
            ends = await reader.end_offsets(parts)
            pending = {tp for tp in parts if ends[tp] > 0}
            while pending:
                for batch in (await reader.getmany(timeout_ms=500, max_records=50_000)).values():
                    restoring.add(self._state_records(batch))
                    read += len(batch)
                for tp in list(pending):
                    if await reader.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if progress is not None:
                    progress(read)
        except BaseException:
            restoring.close()
            raise
        finally:
            await reader.stop()
        restored = restoring.finish()
        if self._resume:
            log.info("input positions from the changelog: %s", encode_positions(self._resume).decode())
        self.metrics.restored_keys.set(restored)
        self.metrics.open_flows.set(self.state.open_flows())
        return restored

    def _state_records(self, batch: list[Any]) -> Iterator[Change]:
        """The state's records of a changelog batch; the input positions among them are kept aside (`_resume`)."""
        for record in batch:
            key = record.key
            if key[:2] != POSITIONS:
                yield key, record.value
            elif key == self._positions_key:  # another group's (a renamed one's) are not this worker's
                try:
                    self._resume = {} if record.value is None else decode_positions(record.value)
                except ValueError as exc:
                    raise ConfigurationError(
                        f"changelog {self.changelog} partition {record.partition} offset {record.offset}: {exc}"
                    ) from exc

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and process until `stop` is set; each batch of released arrivals is one transaction.

        A batch is judged while the transaction of the one before it is still committing: judging is CPU,
        committing is three broker round trips in turn, and done one after the other every decision waited for
        both. The worker goes on polling until that commit, judging into the batch whatever arrives meanwhile
        (`_take_while_committing`). Transactions still run one at a time and in order: a batch's transaction
        begins only once the one before has committed, so its input positions and changelog records always follow
        the earlier ones. If that earlier one fails, the worker restarts from the changelog, dropping what it
        judged since.
        """
        consumer = self.consumer
        assert consumer is not None, "start() first"
        consumer.assign(self.inputs)
        await self._seek_inputs()
        # Flows, facts and legs partitions of the same number hold the same subjects: one arrival order each. The
        # shared facts are a group of their own: one arriving late re-judges what it bears on, as any late fact.
        shared = self.topics.shared_facts
        self._arrivals = Arrivals(self.inputs, group_of=lambda tp: -1 if tp.topic == shared else tp.partition)
        try:
            while not stop.is_set():
                ready = await self._take(await consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_records))
                if ready:
                    await self.process(ready)
            await self._settle()  # stopping: let the last transaction finish rather than leave it to be aborted
            await self._share_positions(force=True)
        finally:
            if self._in_flight is not None:
                self._in_flight.commit.cancel()
                self._in_flight = None
            if self._sharing is not None:
                self._sharing.cancel()

    async def _seek_inputs(self) -> None:
        """Seek each input partition to where the restored state leaves off.

        The changelog's positions go with the state restored from it. The consumer group's offsets are read only
        for a partition they do not cover: a changelog written before positions were kept in it (the group's
        offsets were then committed in the state's transaction), or a partition never read.
        """
        consumer = self.consumer
        assert consumer is not None
        self._positions = {}
        for tp in self.inputs:
            at = self._resume.get(tp)
            if at is None:
                at = await consumer.committed(tp)
            if at is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, at)
                self._positions[tp] = at

    async def _take(self, fetched: dict[TopicPartition, list[Any]]) -> list[Any]:
        """Buffer what a poll fetched; the records that can be judged now, in arrival order (`Arrivals`)."""
        consumer, arrivals = self.consumer, self._arrivals
        assert consumer is not None, "start() first"
        assert arrivals is not None, "run() first"
        arrivals.add(fetched)
        pause, resume = arrivals.flow_control()
        if pause:
            consumer.pause(*pause)
        if resume:
            consumer.resume(*resume)
        empty = arrivals.empty()
        caught_up = {tp: await self._caught_up(tp) for tp in empty}
        fetched_at = {tp: consumer.last_poll_timestamp(tp) for tp in empty}
        lags = await self._lags()
        self.state.catching_up = max(lags.values(), default=0) >= BACKLOG or len(arrivals) >= BACKLOG
        if time.monotonic() - self._lag_seen >= 1.0:
            self._lag_seen = time.monotonic()
            self._observe_lag(lags)
        await self._settle(done_only=True)
        await self._share_positions()
        return arrivals.release(caught_up, time.monotonic(), fetched_at)

    async def _take_while_committing(self) -> list[Any]:
        """Poll until the transaction in flight commits or records can be judged; those records, or none.

        While a transaction commits (three broker round trips in turn) the poll goes on, so that flows that arrive
        meanwhile join the next transaction. Polled only between batches, they waited in the consumer's buffer for
        the end of the cycle, and the consumer fetches nothing more for a partition with records buffered: a flow
        then waited one to two commit cycles before it was even judged.
        """
        flight, consumer = self._in_flight, self.consumer
        assert consumer is not None
        if flight is None or flight.commit.done():
            return []
        left = self.settings.worker_stall_seconds - (time.monotonic() - flight.since)
        poll = asyncio.ensure_future(consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_records))
        await asyncio.wait({flight.commit, poll}, timeout=max(0.0, left), return_when=asyncio.FIRST_COMPLETED)
        if not poll.done():
            # Nothing is lost: aiokafka's getmany awaits only before it drains its buffer, never after.
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
        if poll.cancelled():
            return []
        return await self._take(poll.result())

    async def _caught_up(self, tp: TopicPartition) -> bool | None:
        assert self.consumer is not None
        end = self.consumer.last_stable_offset(tp)
        if end is None:
            end = self.consumer.highwater(tp)
        if end is None:
            return None
        return bool(await self.consumer.position(tp) >= end)

    async def process(self, records: list[Any]) -> None:
        """Judge records in arrival order, then send everything they produced as one transaction (not awaited)."""
        out: list[Send] = []
        offsets: dict[TopicPartition, int] = {}
        events = 0
        while records:
            await self._judge(records, out, offsets)
            events += len(records)
            if events >= self.max_records:
                break  # a backlog: each commit would otherwise wait for a larger batch, without end
            # Flows that arrive while the transaction before commits join this one, judged as they arrive.
            records = await self._take_while_committing()
        await self._settle()
        self._transactions += 1
        changes = self.state.changes(f"{int(time.time() * 1000)}-{self._transactions}")
        # Every input partition's position, not only this batch's: the latest record of the key is all a restart
        # reads (the topic is compacted).
        self._positions.update(offsets)
        changes.append((self._positions_key, encode_positions(self._positions)))
        committed_at: list[float] = []
        legs = self.judge.take_legs()
        self._in_flight = _InFlight(
            commit=asyncio.ensure_future(self._commit(out, changes, committed_at, legs)),
            since=time.monotonic(),
            events=events,
            emitted=self.judge.take_pending(),
            tally=self.judge.take_tally(),
            committed_at=committed_at,
            positions=dict(self._positions),
        )

    async def _judge(self, records: list[Any], out: list[Send], offsets: dict[TopicPartition, int]) -> None:
        """Judge records in arrival order into `out`, and note the offset after each partition's last."""
        flows = self.topics.flows
        self.state.prefetch(i for r in records if r.topic == flows and (i := event_id_of(r.value)) is not None)
        clock = self.clock
        turn = clock() + TURN_SECONDS
        for record in records:
            self.judge.handle(record, out)
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            if self._in_flight is not None and clock() >= turn:
                await asyncio.sleep(0)  # the transaction in flight takes its broker's answers meanwhile
                turn = clock() + TURN_SECONDS

    async def _settle(self, *, done_only: bool = False) -> None:
        """Wait for the transaction in flight (only if it is done, or overdue, with `done_only`) and account for it."""
        flight = self._in_flight
        if flight is None:
            return
        stall = self.settings.worker_stall_seconds
        left = stall - (time.monotonic() - flight.since)
        if done_only and not flight.commit.done() and left > 0:
            return
        # Not `wait_for`: it waits for a cancelled commit to finish cancelling, and a Kafka request being
        # retried may not finish for a request timeout or more (aiokafka's default is 40 s, retried).
        await asyncio.wait({flight.commit}, timeout=max(0.0, left))
        self._in_flight = None
        if not flight.commit.done():
            flight.commit.cancel()
            # Waiting longer would hold every decision back; the caller restarts the worker from its last commit.
            raise TransactionStalled(f"a transaction of {flight.events} events did not commit within {stall:g}s")
        flight.commit.result()  # raises what made it fail
        self.committed += 1
        self._unshared = flight.positions
        self.metrics.add(flight.tally)
        self.judge.committed(flight.emitted, flight.committed_at[0])
        self.metrics.transaction_seconds.observe(flight.committed_at[1] - flight.since)
        self.metrics.transaction_events.observe(flight.events)
        self.metrics.open_flows.set(self.state.open_flows())
        for connector, tracker in self.state.sequences.items():
            self.metrics.sequence_missing.labels(connector=connector).set(tracker.missing())

    async def _commit(
        self, out: list[Send], changes: list[Change], committed_at: list[float], legs: list[tuple[int, bytes]]
    ) -> None:
        """Send one batch's records, leg messages and changelog changes (its input positions too) as one transaction."""
        producer = self.producer
        assert producer is not None, "start() first"
        changelog = self.changelog
        # A member writes its state only to the partitions it owns, and reads back only those.
        changelog_partitions = self.owned if self.split else range(self._partitions[changelog])
        await producer.begin_transaction()
        outbox = Outbox(producer)
        placed = self._placed
        if len(placed) > 100_000:
            placed.clear()  # keys are subjects and recipients: a bounded, much repeated set
        for topic, key, value in out:
            partition = placed.get((topic, key))
            if partition is None:
                partition = placed[(topic, key)] = partition_of(key or b"", self._partitions[topic])
            await outbox.add(topic, partition, key, value)
        for partition, value in legs:
            await outbox.add(self.topics.legs, partition, None, value)
        for key, value in changes:
            await outbox.add(changelog, changelog_partitions[zlib.crc32(key) % len(changelog_partitions)], key, value)
        await outbox.flush()
        # aiokafka sends EndTxn without waiting for records still in flight: the commit waits for them itself.
        await outbox.delivered()
        await producer.commit_transaction()
        # The decisions are visible now, whenever the loop next looks: wall time for their latency, monotonic for
        # the transaction's own.
        committed_at.extend((time.time(), time.monotonic()))

    async def _share_positions(self, *, force: bool = False) -> None:
        """Give the committed input positions to the consumer group, at most once a second (`force`: now, awaited).

        Only for monitoring (consumer lag as Kafka's tools and `bench/pipeline.py` read it): the worker resumes
        from the changelog's positions. So a failure is logged, not raised, and tried again a second later.
        """
        if force and self._sharing is not None:
            await asyncio.wait({self._sharing}, timeout=5.0)  # one on its way holds older positions: let it land
        positions = self._unshared
        if positions is None or (self._sharing is not None and not self._sharing.done()):
            return
        if not force and time.monotonic() - self._shared_at < 1.0:
            return
        self._unshared = None
        self._shared_at = time.monotonic()
        self._sharing = asyncio.ensure_future(self._give_positions(positions))
        if force:
            await asyncio.wait({self._sharing}, timeout=5.0)

    async def _give_positions(self, positions: dict[TopicPartition, int]) -> None:
        consumer = self.consumer
        assert consumer is not None
        try:
            await consumer.commit(positions)
        except KafkaError as exc:
            log.warning("input positions not committed to consumer group %s (monitoring only): %s", self.group, exc)
            if self._unshared is None:
                self._unshared = positions

    async def _lags(self) -> dict[TopicPartition, int]:
        """Records not yet fetched, per input partition whose end is known."""
        consumer = self.consumer
        assert consumer is not None
        lags = {}
        for tp in self.inputs:
            end = consumer.last_stable_offset(tp) or consumer.highwater(tp)
            if end is not None:
                lags[tp] = max(0, end - await consumer.position(tp))
        return lags

    def _observe_lag(self, lags: dict[TopicPartition, int]) -> None:
        lag: dict[str, int] = {tp.topic: 0 for tp in self.inputs}
        for tp, behind in lags.items():
            lag[tp.topic] += behind
        for topic, value in lag.items():
            self.metrics.consumer_lag.labels(topic=topic).set(value)

    async def close(self) -> None:
        """Stop the Kafka clients (an open transaction is aborted by the broker, or fenced by the next start)."""
        consumer, producer = self.consumer, self.producer
        self.consumer = self.producer = None  # closing twice is harmless
        self.state.flows.close()
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()
