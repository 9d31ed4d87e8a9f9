"""The stream processor's state and logic without Kafka: `Replayer` plus a changelog to restore it from.

The worker (`streams.worker`) feeds events in, sends what comes out, and writes `changes()` to a compacted
changelog topic in the same Kafka transaction as the decisions and the input offsets. Restoring that changelog
rebuilds exactly the state the committed decisions were made on, so a worker killed at any point resumes as if
it had never stopped. Deciding is `Replayer.feed`, the very code `pupilflow replay` runs, so the stream and a
replay of the same events in the same order give the same decisions byte for byte.

Changelog keys (values are bytes; a `None` value deletes the key):

    s:<subject id>   the subject's facts (`SubjectState.to_bytes`)
    x:<event id>     a recipient or notice fact, as its JSON (few; re-applied on restore)
    b:<batch id>     the flows that arrived in one transaction and are still open to late facts, one per line:
                     `<arrival watermark us>\\t<flow JSON>\\t<latest decision JSON>`
    f:<flow id>      a flow's entry written again when a late fact superseded its decision (overrides `b:`)
    d:<batch id>     12-byte digests of the flow ids first seen in one transaction (duplicates across history)
    w:               the event-time watermark
    q:<connector>    the connector's sequence tracker (`streams.sequences`)
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from schemas.decisions import Decision
from schemas.events import (
    AgreementTerminated,
    DataFlow,
    Event,
    EventEnvelope,
    NoticeVersionPublished,
    SharingAgreement,
    parse_event,
)
from schemas.policy import Policy
from streams.replay import Replayer
from streams.sequences import SequenceTracker
from streams.state import DEFAULT_LATENESS, SubjectState, from_us, to_us
from streams.store import SubjectStore

Change = tuple[bytes, bytes | None]
"""A changelog record: key and value (None deletes the key)."""


@dataclass(slots=True)
class _Batch:
    """The flows that arrived in one transaction, and how many of them are still open."""

    key: bytes
    open: int = 0


@dataclass(slots=True)
class Outcome:
    """What one event produced: its decisions (new or superseding), and a gap its sequence number revealed."""

    decisions: list[Decision] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    """Each decision's JSON, rendered once for Kafka and the changelog alike."""
    missing: int = 0


class StreamState(Replayer):
    """`Replayer` that also records what changed, for the changelog, and restores itself from it."""

    def __init__(self, policy: Policy, lateness: timedelta = DEFAULT_LATENESS) -> None:
        super().__init__(policy, lateness)
        self.sequences: dict[str, SequenceTracker] = {}
        self._dirty: dict[bytes, bytes | None] = {}
        self._fresh: dict[str, bytes] = {}  # this transaction's new flows, as `b:` lines by flow id
        self._batch_of: dict[str, _Batch] = {}
        self._rewritten: set[str] = set()  # flows with their own `f:` entry
        # Open flows as their changelog line (arrival, flow JSON, latest decision JSON), parsed only when a late
        # fact re-judges one: about a quarter of the memory of the pydantic objects a replay keeps.
        self._lines: dict[str, bytes] = {}
        self._raw: bytes | None = None
        self._opened = b""  # the JSON of the decision `_open` last rendered
        # Every flow id ever judged, as a 12-byte digest in a compact store (about 40 bytes a flow), so a flow
        # re-delivered long after its lateness window closed is still recognised.
        self._seen = SubjectStore()
        self._new_ids: list[bytes] = []
        self._moved: set[str] = set()  # connectors whose sequence tracker changed since the last `changes()`
        self._watermark_moved = False

    # --- deciding ---------------------------------------------------------------------------------------------

    def is_duplicate(self, event: EventEnvelope) -> bool:
        """A flow already open to re-evaluation is a re-delivery; facts are idempotent by content (`State.apply`).

        Inside the lateness window a re-used id with a different payload is refused (as a replay refuses it);
        after that only a digest of the id is kept, so a late re-delivery is recognised but not compared.
        """
        if not isinstance(event, DataFlow):
            return False
        line = self._lines.get(event.event_id)
        if line is not None:
            _, known, _ = _split(line)
            if known != self._raw and parse_event(known) != event:
                raise ValueError(f"event_id {event.event_id!r} reused with a different payload")
            return True
        digest = _digest(event.event_id)
        key = digest.hex()
        if key in self._seen:
            return True  # judged before its window closed; the payload is no longer kept to compare
        self._seen.put(key, b"")
        self._new_ids.append(digest)
        return False

    def handle(self, event: Event, raw: bytes | None = None) -> Outcome:
        """Apply one valid event (`raw`: its JSON as received); the decisions to send, changes kept for `changes()`."""
        outcome = Outcome()
        tracker = self.sequences.get(event.source.connector)
        if tracker is None:
            tracker = self.sequences[event.source.connector] = SequenceTracker()
        outcome.missing = tracker.see(event.source.sequence)
        self._moved.add(event.source.connector)
        # The raw JSON as received is kept when it is one line: tabs and newlines separate a line's fields.
        self._raw = raw if raw is not None and b"\n" not in raw and b"\t" not in raw else None
        try:
            decisions = self.feed(event)
        finally:
            self._raw = None
        outcome.decisions = decisions
        self._watermark_moved = True
        if isinstance(event, DataFlow):
            if decisions:
                outcome.payloads = [self._opened]  # rendered once, by `_open`
            return outcome
        outcome.payloads = [d.to_json_bytes() for d in decisions]
        if isinstance(event, SharingAgreement | AgreementTerminated | NoticeVersionPublished):
            self._dirty[b"x:" + event.event_id.encode()] = event.model_dump_json().encode()
        else:
            subject = event.subject.id
            self._dirty[b"s:" + subject.encode()] = self.state.subject(subject).to_bytes()
        for decision in decisions:
            flow_id = decision.flow_event_id
            self._rewritten.add(flow_id)
            self._dirty[b"f:" + flow_id.encode()] = self._lines[flow_id]
        return outcome

    def _open(self, flow: DataFlow, decision: Decision) -> None:
        arrived = to_us(self.watermark) if self.watermark is not None else 0
        flow_json = self._raw if self._raw is not None else flow.model_dump_json().encode()
        self._opened = decision.to_json_bytes()
        self._lines[flow.event_id] = self._fresh[flow.event_id] = _line(arrived, flow_json, self._opened)

    def _open_flow(self, flow_id: str) -> tuple[DataFlow, Decision] | None:
        line = self._lines.get(flow_id)
        if line is None:
            return None
        _, flow_json, decision_json = _split(line)
        flow = parse_event(flow_json)
        assert isinstance(flow, DataFlow)
        return flow, Decision.model_validate_json(decision_json)

    def _supersede(self, flow_id: str, decision: Decision) -> None:
        arrived, flow_json, _ = _split(self._lines[flow_id])
        self._lines[flow_id] = _line(arrived, flow_json, decision.to_json_bytes())

    def _close(self, flow_id: str) -> None:
        """A flow left the lateness window: drop its changelog entries once nothing in them is open."""
        self._lines.pop(flow_id, None)
        if self._fresh.pop(flow_id, None) is not None:
            return  # closed in the transaction it arrived in: never written, so nothing to delete
        if flow_id in self._rewritten:
            self._rewritten.discard(flow_id)
            self._dirty[b"f:" + flow_id.encode()] = None
        batch = self._batch_of.pop(flow_id, None)
        if batch is not None:
            batch.open -= 1
            if batch.open <= 0:
                self._dirty[batch.key] = None

    def changes(self, batch_id: str) -> list[Change]:
        """What changed since the last call, as changelog records; `batch_id` names this transaction's flows."""
        if self._fresh:
            for part, chunk in enumerate(_chunks(list(self._fresh.items()), _CHUNK_BYTES)):
                key = b"b:%s.%d" % (batch_id.encode(), part)
                self._dirty[key] = b"\n".join(line for _, line in chunk)
                batch = _Batch(key, len(chunk))
                for flow_id, _ in chunk:
                    self._batch_of[flow_id] = batch
            self._fresh = {}
        if self._watermark_moved and self.watermark is not None:
            self._dirty[b"w:"] = str(to_us(self.watermark)).encode()
        self._watermark_moved = False
        for connector in self._moved:
            self._dirty[b"q:" + connector.encode()] = self.sequences[connector].to_bytes()
        self._moved.clear()
        if self._new_ids:
            self._dirty[b"d:" + batch_id.encode()] = b"".join(self._new_ids)
            self._new_ids = []
        out = list(self._dirty.items())
        self._dirty.clear()
        return out

    def discard_changes(self) -> None:
        """Forget unsent changes (the transaction they belonged to was aborted; the process restarts)."""
        self._dirty.clear()
        self._fresh = {}
        self._new_ids = []
        self._moved.clear()
        self._watermark_moved = False

    def open_flow(self, flow_id: str) -> DataFlow | None:
        """A flow still inside the lateness window, or None."""
        found = self._open_flow(flow_id)
        return None if found is None else found[0]

    def open_flows(self) -> int:
        """How many flows are still inside the lateness window."""
        return len(self._lines)

    # --- restoring --------------------------------------------------------------------------------------------

    def restore(self, records: Iterable[Change]) -> int:
        """Rebuild from changelog records in log order (latest value per key wins); returns keys restored."""
        latest: dict[bytes, bytes] = {}
        for key, value in records:
            if value is None:
                latest.pop(key, None)
            else:
                latest[key] = value
        entries: dict[str, bytes] = {}
        overrides: dict[str, bytes] = {}
        batches: dict[bytes, list[str]] = {}
        for key, value in latest.items():
            kind, _, name = key.partition(b":")
            if kind == b"s":
                self.state.put_subject(name.decode(), SubjectState.from_bytes(value))
            elif kind == b"x":
                fact = parse_event(value)
                assert not isinstance(fact, DataFlow)
                self.state.apply(fact)
            elif kind == b"w":
                self.watermark = from_us(int(value))
            elif kind == b"q":
                self.sequences[name.decode()] = SequenceTracker.from_bytes(value)
            elif kind == b"b":
                ids = batches.setdefault(key, [])
                for line in value.split(b"\n"):
                    flow_id = _flow_id_of(line)
                    entries[flow_id] = line
                    ids.append(flow_id)
            elif kind == b"d":
                for at in range(0, len(value), _DIGEST):
                    self._seen.put(value[at : at + _DIGEST].hex(), b"")
            elif kind == b"f":
                overrides[name.decode()] = value
        entries.update(overrides)
        horizon = to_us(self.watermark) if self.watermark is not None else None
        for flow_id, line in sorted(entries.items(), key=lambda kv: _split(kv[1])[0]):
            arrived, flow_json, _ = _split(line)
            flow = parse_event(flow_json)
            assert isinstance(flow, DataFlow)
            expires = max(to_us(flow.occurred_at), arrived) + self._lateness_us
            if horizon is not None and expires < horizon:
                continue  # closed before the last commit; its batch is kept only for the flows still open
            self.state.remember_flow(flow, from_us(arrived))
            self._lines[flow_id] = line
            heapq.heappush(self._expiry, (expires, flow_id))
            if flow_id in overrides:
                self._rewritten.add(flow_id)
        for key, ids in batches.items():
            batch = _Batch(key, 0)
            for flow_id in ids:
                if flow_id in self._lines:
                    self._batch_of[flow_id] = batch
                    batch.open += 1
        return len(latest)


_DIGEST = 12
_CHUNK_BYTES = 512 * 1024
"""Largest `b:` value: Kafka refuses records over its 1 MiB default (`message.max.bytes`)."""


def _chunks(entries: list[tuple[str, bytes]], limit: int) -> list[list[tuple[str, bytes]]]:
    chunks: list[list[tuple[str, bytes]]] = [[]]
    size = 0
    for entry in entries:
        if size + len(entry[1]) > limit and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += len(entry[1]) + 1
    return chunks


def _digest(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode(), digest_size=_DIGEST).digest()


def _line(arrived: int, flow_json: bytes, decision_json: bytes) -> bytes:
    return b"%d\t%s\t%s" % (arrived, flow_json, decision_json)


def _split(line: bytes) -> tuple[int, bytes, bytes]:
    arrived, flow_json, decision_json = line.split(b"\t", 2)
    return int(arrived), flow_json, decision_json


def _flow_id_of(line: bytes) -> str:
    # The decision names its flow; reading one field is cheaper than parsing the flow.
    decision_json = line.split(b"\t", 2)[2]
    marker = b'"flow_event_id":"'
    start = decision_json.index(marker) + len(marker)
    return decision_json[start : decision_json.index(b'"', start)].decode()
