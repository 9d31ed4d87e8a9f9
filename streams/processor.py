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
                     `<arrival watermark us>\\t<flow JSON>\\t<prior>`, the prior being what a re-judgment needs of
                     the latest decision (`_prior_json`; a whole decision's JSON, as written before, reads the same)
    f:<flow id>      a flow's entry written again when a late fact superseded its decision (overrides `b:`)
    d:<batch id>     12-byte digests of the flow ids first seen in one transaction (duplicates across history)
    w:               the event-time watermark
    q:<connector>    the connector's sequence tracker (`streams.sequences`)
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic_core import from_json, to_json

from schemas.decisions import Decision
from schemas.events import (
    AgreementTerminated,
    DataFlow,
    Event,
    EventEnvelope,
    Fact,
    NoticeVersionPublished,
    SharingAgreement,
    parse_event,
)
from schemas.policy import Policy
from streams.evaluate import SubjectLeg
from streams.openflows import DIGEST_BYTES, NEVER, OpenFlows, digest_of
from streams.replay import WAITING, Prior, Replayer
from streams.sequences import SequenceTracker
from streams.state import DEFAULT_LATENESS, SubjectState, from_us, reach, to_us

Change = tuple[bytes, bytes | None]
"""A changelog record: key and value (None deletes the key)."""


@dataclass(slots=True)
class Outcome:
    """What one event produced: its decisions (new or superseding), and a gap its sequence number revealed."""

    decisions: list[Decision] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    """Each decision's JSON, rendered once for Kafka and the changelog alike."""
    missing: int = 0
    legs: list[tuple[int, bytes]] = field(default_factory=list)
    """Leg messages for other members of a split topology (`streams.member`): partition and value."""


class StreamState(Replayer):
    """`Replayer` that also records what changed, for the changelog, and restores itself from it.

    Open flows and the ids of every flow judged live in `OpenFlows` (SQLite; a temporary file with `on_disk`),
    not on the heap: memory stays flat however many flows the lateness window holds.
    """

    def __init__(self, policy: Policy, lateness: timedelta = DEFAULT_LATENESS, *, on_disk: bool = False) -> None:
        super().__init__(policy, lateness)
        self.sequences: dict[str, SequenceTracker] = {}
        self.catching_up = False
        """Set by the worker while it reads a backlog: sequence holes are not judged lost meanwhile."""
        self.flows = OpenFlows(on_disk)
        self._dirty: dict[bytes, bytes | None] = {}
        self._fresh: dict[str, bytes] = {}  # this transaction's new flows, as `b:` lines by flow id
        self._raw: bytes | None = None
        self._opened = b""  # the JSON of the decision `_open` last rendered
        self._new_ids: list[bytes] = []  # digests of the flow ids first seen in this transaction
        # The flow ids looked up in this transaction, with their digests (`OpenFlows.add` needs one too).
        self._digests: dict[str, bytes] = {}
        self._known: set[bytes] = set()  # the digests among them judged before
        self._moved: set[str] = set()  # connectors whose sequence tracker changed since the last `changes()`
        self._watermark_moved = False
        self.tracks_sequences = True
        """False where the worker sees only some of each connector's events (a member of a split topology)."""

    def _now_us(self) -> int:
        return to_us(self.watermark) if self.watermark is not None else NEVER

    # --- deciding ---------------------------------------------------------------------------------------------

    def is_duplicate(self, event: EventEnvelope) -> bool:
        """A flow id seen before is a re-delivery; facts are idempotent by content (`State.apply`).

        Inside the lateness window a re-used id with a different payload is refused (as a replay refuses it);
        after that only a digest of the id is kept, so a late re-delivery is recognised but not compared.
        """
        if not isinstance(event, DataFlow):
            return False
        digest = self._digests.get(event.event_id)
        if digest is None:
            digest = self._digests[event.event_id] = digest_of(event.event_id)
            self._known |= self.flows.known([digest])
        if digest not in self._known:
            self._known.add(digest)  # a second copy in the same transaction is a duplicate too
            self._new_ids.append(digest)
            return False
        line = self.flows.line(event.event_id, self._now_us())
        if line is not None:
            _, seen, _ = _split(line)
            if seen != self._raw and parse_event(seen) != event:
                raise ValueError(f"event_id {event.event_id!r} reused with a different payload")
        return True

    def prefetch(self, flow_ids: Iterable[str]) -> None:
        """Look up in one query which of a batch's flow ids were judged before (else it is one query a flow)."""
        looked_up = self._digests
        fresh = {flow_id: digest_of(flow_id) for flow_id in flow_ids if flow_id not in looked_up}
        looked_up.update(fresh)
        self._known |= self.flows.known(fresh.values())

    def handle(self, event: Event, raw: bytes | None = None) -> Outcome:
        """Apply one valid event (`raw`: its JSON as received); the decisions to send, changes kept for `changes()`."""
        outcome = Outcome()
        if self.tracks_sequences:
            tracker = self.sequences.get(event.source.connector)
            if tracker is None:
                tracker = self.sequences[event.source.connector] = SequenceTracker()
            outcome.missing = tracker.see(event.source.sequence, hold=self.catching_up)
            self._moved.add(event.source.connector)
        # The raw JSON as received is kept when it is one line: tabs and newlines separate a line's fields.
        self._raw = raw if raw is not None and b"\n" not in raw and b"\t" not in raw else None
        try:
            decisions = self._decide(event)
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
        return outcome

    def _decide(self, event: Event) -> list[Decision]:
        """The decisions one event makes (`feed`; `streams.member.MemberState` also has legs to send)."""
        return self.feed(event)

    def _open(self, flow: DataFlow, decision: Decision, now: datetime, expires: int) -> None:
        flow_json = self._raw if self._raw is not None else flow.model_dump_json().encode()
        self._opened = decision.to_json_bytes()
        line = self._fresh[flow.event_id] = _line(to_us(now), flow_json, _prior_json(decision))
        self._add_open(flow, expires, line)

    def _open_as(self, flow: DataFlow, prior: Prior, now: datetime, expires: int) -> None:
        flow_json = self._raw if self._raw is not None else flow.model_dump_json().encode()
        line = self._fresh[flow.event_id] = _line(to_us(now), flow_json, _prior_line(flow.event_id, prior))
        self._add_open(flow, expires, line)

    def _add_open(self, flow: DataFlow, expires: int, line: bytes) -> None:
        """Keep a newly judged flow open in the store, with the digest its id was looked up by."""
        subjects = (s.id for s in flow.subjects)
        digest = self._digests.get(flow.event_id)
        self.flows.add(flow.event_id, flow.recipient, subjects, to_us(flow.occurred_at), expires, line, digest=digest)

    def _keep(self, flow_id: str, prior: Prior, expires: int | None = None) -> None:
        current = self.flows.line(flow_id, NEVER)
        assert current is not None, f"keeping flow {flow_id} that is not open"
        arrived, flow_json, _ = _split(current)
        line = _line(arrived, flow_json, _prior_line(flow_id, prior))
        self.flows.replace(flow_id, line, expires)
        self._dirty[b"f:" + flow_id.encode()] = line  # overrides the flow's line in its `b:` entry

    def _expire(self, horizon: int) -> None:
        pass  # flows past the horizon are dropped at `changes()`; until then every read filters on expiry

    def _affected(self, fact: Fact, now: datetime) -> list[str]:
        found = reach(fact)
        if found is None:
            return []
        to, key, since = found
        lookup = self.flows.for_recipient if to == "recipient" else self.flows.for_subject
        return lookup(key, since, to_us(now))

    def _open_flow(self, flow_id: str) -> tuple[DataFlow, Prior] | None:
        line = self.flows.line(flow_id, self._now_us())
        if line is None:
            return None
        _, flow_json, prior_json = _split(line)
        flow = parse_event(flow_json)
        assert isinstance(flow, DataFlow)
        return flow, _prior(prior_json)

    def changes(self, batch_id: str) -> list[Change]:
        """What changed since the last call, as changelog records; `batch_id` names this transaction's flows."""
        horizon = self._now_us()
        # A flow leaves the lateness window: its changelog entries go once nothing in them is open.
        for flow_id, rewritten in self.flows.drop_pending(horizon):
            self._fresh.pop(flow_id)  # closed in the transaction it arrived in: never written
            if rewritten:
                self._dirty[b"f:" + flow_id.encode()] = None
        batch_of: dict[str, bytes] = {}
        for part, chunk in enumerate(_chunks(list(self._fresh.items()), _CHUNK_BYTES) if self._fresh else ()):
            key = b"b:%s.%d" % (batch_id.encode(), part)
            self._dirty[key] = b"\n".join(line for _, line in chunk)
            batch_of.update((flow_id, key) for flow_id, _ in chunk)
        self._fresh = {}
        if self._new_ids:
            # Before `flush`: it records the digests of the flows it writes, with their rows, itself.
            self._dirty[b"d:" + batch_id.encode()] = b"".join(self._new_ids)
            self.flows.remember(self._new_ids)
            self._new_ids = []
        self.flows.flush(batch_of)
        rewritten_ids, emptied = self.flows.expire(horizon)
        for flow_id in rewritten_ids:
            self._dirty[b"f:" + flow_id.encode()] = None
        for batch in emptied:
            self._dirty[batch] = None
        if self._watermark_moved and self.watermark is not None:
            self._dirty[b"w:"] = str(to_us(self.watermark)).encode()
        self._watermark_moved = False
        for connector in self._moved:
            self._dirty[b"q:" + connector.encode()] = self.sequences[connector].to_bytes()
        self._moved.clear()
        self._digests.clear()
        self._known.clear()
        self.flows.commit()
        out = list(self._dirty.items())
        self._dirty.clear()
        return out

    def _restore_other(self, kind: bytes, name: bytes, value: bytes) -> None:
        """A changelog key of a kind this class does not write (a subclass's: `streams.member`)."""

    def open_flow(self, flow_id: str) -> DataFlow | None:
        """A flow still inside the lateness window, or None."""
        found = self._open_flow(flow_id)
        return None if found is None else found[0]

    def open_flows(self) -> int:
        """How many flows are kept open to late facts (those past the window go at the next `changes()`)."""
        return len(self.flows)

    # --- restoring --------------------------------------------------------------------------------------------

    def restore(self, records: Iterable[Change]) -> int:
        """Rebuild from changelog records in log order (latest value per key wins); returns keys restored."""
        restoring = self.restoring()
        restoring.add(records)
        return restoring.finish()

    def restoring(self) -> Restoring:
        """A restore fed in parts as the changelog is read (`Restoring.add`, then `Restoring.finish`)."""
        return Restoring(self)


class Restoring:
    """A changelog being read into a `StreamState`, in memory bounded however long the changelog is.

    The latest value of each key wins, as a compacted topic keeps it. Subject states and flow-id digests are
    applied as they are read: every version of a key is in one partition, read in order, and neither is ever
    deleted. Batches of open flows (`b:`) and their overrides (`f:`) are most of the bytes (a changelog line
    is a flow and its prior decision), so their latest values wait in a temporary SQLite file, not on the heap:
    held in a dict, 145,000 open flows took 864 MiB to restore. The rest (few keys) waits in a dict.

    At the end the batches are opened whole, in the order the worker judged them: by the arrival time of their
    first flow, then by transaction. A transaction's flows never arrived before an earlier one's (the watermark
    only moves on), so this is arrival order, as an open flow's place must be; ties keep the worker's order.
    """

    def __init__(self, state: StreamState) -> None:
        self._state = state
        self._db = sqlite3.connect("")  # a private temporary file, deleted on close
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            # One table a kind, read in `ord` (rowid) order or through an index: a range of keys out of one table,
            # ordered, went through SQLite's sorter, which held most of its rows (at 540,000 open flows, 340 MiB of
            # a 464 MiB peak). `first` is the arrival time of a batch's first flow; `ms`, `n` and `part` its place in
            # the worker's sequence of transactions, when its key says (see `_batch_place`).
            "CREATE TABLE b (ord INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, first INTEGER NOT NULL,"
            " ms INTEGER NOT NULL, n INTEGER NOT NULL, part INTEGER NOT NULL, value BLOB NOT NULL);"
            "CREATE TABLE f (ord INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, value BLOB NOT NULL);"
            # Keys of kinds this class does not write (a subclass's, `_restore_other`), which may be many.
            "CREATE TABLE o (ord INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, value BLOB NOT NULL);"
        )
        self._small: dict[bytes, bytes] = {}
        self._digest_keys = 0

    def add(self, records: Iterable[Change]) -> None:
        """Take the next records of the changelog, in log order."""
        state, db, small = self._state, self._db, self._small
        for key, value in records:
            kind = key[:2]
            if kind == b"s:":
                # An absent subject reads as an empty state, so a deleted key (the worker writes none) is one.
                subject = SubjectState.from_bytes(value) if value is not None else SubjectState()
                state.state.put_subject(key[2:].decode(), subject)
            elif kind == b"d:":
                if value is not None:
                    state.flows.remember(value[at : at + DIGEST_BYTES] for at in range(0, len(value), DIGEST_BYTES))
                    self._digest_keys += 1
            elif kind in _SMALL:
                if value is None:
                    small.pop(key, None)
                else:
                    small[key] = value
            elif kind == b"b:" and value is not None:
                # A key written again keeps its place, as in a dict; one deleted and written again goes last.
                db.execute(
                    "INSERT INTO b (key, first, ms, n, part, value) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key)"
                    " DO UPDATE SET first = excluded.first, value = excluded.value",
                    (key, int(value[: value.index(b"\t")]), *_batch_place(key), value),
                )
            else:
                # A deleted batch, a flow's later line, or a key of a kind only a subclass writes (table `o`).
                _put_row(db, _TABLES.get(kind, "o"), key, value)

    def finish(self) -> int:
        """Apply what waited, open the flows still inside the lateness window; returns the keys restored."""
        state, db = self._state, self._db
        try:
            for key, value in self._small.items():
                kind, _, name = key.partition(b":")
                if kind == b"x":
                    fact = parse_event(value)
                    assert not isinstance(fact, DataFlow)
                    state.state.apply(fact)
                elif kind == b"w":
                    state.watermark = from_us(int(value))
                elif kind == b"q":
                    state.sequences[name.decode()] = SequenceTracker.from_bytes(value)
            for key, value in db.execute("SELECT key, value FROM o ORDER BY ord"):
                kind, _, name = bytes(key).partition(b":")
                state._restore_other(kind, name, bytes(value))
            restored = len(state.state) + self._digest_keys + len(self._small)
            restored += db.execute(
                "SELECT (SELECT count(*) FROM b) + (SELECT count(*) FROM f) + (SELECT count(*) FROM o)"
            ).fetchone()[0]
            self._open(state)
        finally:
            self.close()
        return int(restored)

    def close(self) -> None:
        """Drop what waited (its temporary file goes with it); `finish` does this itself."""
        self._db.close()

    def _open(self, state: StreamState) -> None:
        """Open every flow still inside the window, batch by batch in the order they were judged."""
        db = self._db
        overrides = db.execute("SELECT count(*) FROM f").fetchone()[0]
        used: set[bytes] = set()
        opener = _Opener(state)
        db.execute("CREATE INDEX b_in_order ON b (first, ms, n, part, ord)")
        for key, value in db.execute("SELECT key, value FROM b ORDER BY first, ms, n, part, ord"):
            batch = bytes(key)
            lines = bytes(value).split(b"\n")
            ids = [_flow_id_of(line) for line in lines]
            again = state.flows.stored(ids)  # a flow id in an earlier batch too: never written so by the worker
            for flow_id, line in zip(ids, lines, strict=True):
                rewritten = False
                if overrides:
                    override = b"f:" + flow_id.encode()
                    found = db.execute("SELECT value FROM f WHERE key = ?", (override,)).fetchone()
                    if found is not None:
                        line, rewritten = bytes(found[0]), True
                        used.add(override)
                if opener.open(flow_id, line, batch, rewritten, again=flow_id in again):
                    again.add(flow_id)  # the same id later in this batch
        if len(used) < overrides:
            # An override whose batch is gone: the worker deletes both once the flow has left the window, so this
            # is expired; opened last, in arrival order, should one be open.
            left = [(bytes(k), bytes(v)) for k, v in db.execute("SELECT key, value FROM f ORDER BY ord")]
            for key, line in sorted((kv for kv in left if kv[0] not in used), key=lambda kv: _split(kv[1])[0]):
                flow_id = key[2:].decode()
                opener.open(flow_id, line, None, True, again=bool(state.flows.stored([flow_id])))
        opener.done()


class _Opener:
    """Opens restored flows in the open-flow store, written in parts of `_RESTORE_FLUSH`."""

    def __init__(self, state: StreamState) -> None:
        self._flows = state.flows
        self._horizon = state._now_us()
        self._lateness = state._lateness_us
        self._batch_of: dict[str, bytes] = {}
        self._waiting = 0

    def open(self, flow_id: str, line: bytes, batch: bytes | None, rewritten: bool, *, again: bool) -> bool:
        """Open one flow unless it has left the window (False); `again`: its id is open already, and keeps its place."""
        arrived, flow_json, prior_json = _split(line)
        recipient, subjects, occurred = _flow_fields(flow_json)
        # A flow waiting for a leg judged elsewhere stays open until its first decision (`streams.legs`).
        expires = WAITING if b'"waiting":' in prior_json else max(occurred, arrived) + self._lateness
        if again:
            self._flows.reopen(flow_id, line, expires, batch, rewritten=rewritten)
            if batch is not None:
                self._batch_of[flow_id] = batch
            return True
        if expires < self._horizon:
            return False  # closed before the last commit; its batch is kept only for the flows still open
        self._flows.add(flow_id, recipient, subjects, occurred, expires, line, rewritten=rewritten)
        if batch is not None:
            self._batch_of[flow_id] = batch
        self._waiting += 1
        if self._waiting >= _RESTORE_FLUSH:
            self.done()  # what waits to be written is on the heap: write it in parts
        return True

    def done(self) -> None:
        """Write what waits."""
        self._flows.flush(self._batch_of)
        self._flows.commit()
        self._batch_of, self._waiting = {}, 0


# A UTC timestamp as pydantic writes it; any other form a connector sent is left to pydantic to read.
_UTC_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z").fullmatch


def _flow_fields(flow_json: bytes) -> tuple[str, tuple[str, ...], int]:
    """Recipient, subject ids and occurrence (us) of a flow the worker validated before it wrote its line.

    Read as plain JSON when the values are already as validation leaves them (no surrounding whitespace to strip,
    a UTC timestamp), which they are unless a connector sent them otherwise: pydantic costs a quarter of a
    restore, and the line was valid when the worker wrote it.
    """
    # Keys only: pydantic_core keeps every short string it parses in a cache otherwise (16,384 of them), each flow's
    # ids a new one, which the restore's heap check saw grow with the flows restored.
    d = from_json(flow_json, cache_strings="keys")
    recipient, occurred = d.get("recipient"), d.get("occurred_at")
    subjects = d.get("subjects")
    if (
        _plain(recipient)
        and type(occurred) is str
        and _UTC_TEXT(occurred)
        and type(subjects) is list
        and all(type(s) is dict and _plain(s.get("id")) for s in subjects)
    ):
        try:
            return recipient, tuple(s["id"] for s in subjects), to_us(datetime.fromisoformat(occurred))
        except ValueError:
            pass  # a day or an hour out of range: pydantic says what is wrong
    flow = parse_event(flow_json)
    assert isinstance(flow, DataFlow)
    return flow.recipient, tuple(s.id for s in flow.subjects), to_us(flow.occurred_at)


def _plain(value: object) -> bool:
    return type(value) is str and value.strip() == value


def _batch_place(key: bytes) -> tuple[int, int, int]:
    """Where a `b:<ms>-<n>.<part>` key's transaction falls among the worker's (ms, then n), and its part.

    Keys of another form (tests name their batches freely), or with numbers beyond SQLite's 64-bit integers, sort
    as (0, 0, 0): their read order decides.
    """
    name, _, part = key[2:].rpartition(b".")
    ms, _, n = name.partition(b"-")
    if all(x.isdigit() and len(x) <= 18 for x in (ms, n, part)):
        return int(ms), int(n), int(part)
    return 0, 0, 0


_SMALL = (b"x:", b"w:", b"q:")
"""Changelog kinds few enough to wait on the heap during a restore."""
_TABLES = {b"b:": "b", b"f:": "f"}
"""The restore's table of each changelog kind it keeps by key (`o`: any kind a subclass writes)."""


def _put_row(db: sqlite3.Connection, table: str, key: bytes, value: bytes | None) -> None:
    """Keep `key`'s latest value in one of the restore's tables; a tombstone (None) removes it."""
    if value is None:
        db.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
    else:
        db.execute(
            f"INSERT INTO {table} (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


_RESTORE_FLUSH = 10_000
"""Flows opened at restore between two writes to the open-flow store."""
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


def _line(arrived: int, flow_json: bytes, prior_json: bytes) -> bytes:
    return b"%d\t%s\t%s" % (arrived, flow_json, prior_json)


def _prior_json(decision: Decision) -> bytes:
    """The fields of a decision's JSON that a re-judgment needs (`_prior`), and the flow id: a fifth of its bytes.

    The decision itself is in the decisions topic; the changelog, which holds every open flow for the lateness
    window and is read whole at every start, keeps only this.
    """
    return to_json(
        {
            "decision_id": decision.decision_id,
            "flow_event_id": decision.flow_event_id,
            "verdict": decision.verdict,
            "reasons": decision.reasons,
            "disclosures": [{"subject_id": d.subject_id, "reasons": d.reasons} for d in decision.disclosures],
            "revision": decision.revision,
        }
    )


def _prior_line(flow_id: str, prior: Prior) -> bytes:
    """`_prior_json` from a `Prior`, with the legs and arrival of a flow judged in part elsewhere (`streams.legs`)."""
    verdict, reasons, disclosures = prior.verdicts
    d: dict[str, object] = {
        "decision_id": prior.decision_id,
        "flow_event_id": flow_id,
        "verdict": verdict,
        "reasons": reasons,
        "disclosures": [{"subject_id": subject, "reasons": codes} for subject, codes in disclosures],
        "revision": prior.revision,
    }
    if prior.legs:
        d["legs"] = [leg.to_dict() for leg in prior.legs]
    if prior.waiting is not None:
        d["waiting"] = to_us(prior.waiting)
    return to_json(d)


def _prior(prior_json: bytes) -> Prior:
    """The `Prior` in a line: from `_prior_json`, or a whole decision's JSON (lines written before it)."""
    d = from_json(prior_json, cache_strings="keys")
    waiting = d.get("waiting")
    return Prior(
        d["decision_id"],
        d.get("revision", 0),
        (
            d["verdict"],
            tuple(d.get("reasons", ())),
            tuple((v["subject_id"], tuple(v.get("reasons", ()))) for v in d.get("disclosures", ())),
        ),
        tuple(SubjectLeg.from_dict(leg) for leg in d.get("legs", ())),
        None if waiting is None else from_us(waiting),
    )


def _split(line: bytes) -> tuple[int, bytes, bytes]:
    arrived, flow_json, decision_json = line.split(b"\t", 2)
    return int(arrived), flow_json, decision_json


def _flow_id_of(line: bytes) -> str:
    # The prior names its flow; reading one field is cheaper than parsing the flow.
    prior_json = line.split(b"\t", 2)[2]
    marker = b'"flow_event_id":"'
    start = prior_json.index(marker) + len(marker)
    return prior_json[start : prior_json.index(b'"', start)].decode()
