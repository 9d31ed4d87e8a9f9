"""A member of the split topology (`streams.legs.Member`) on the stream worker's storage and changelog.

Its open flows, those waiting for legs among them, live in `OpenFlows` and the `b:`/`f:` changelog keys as any
worker's do (a waiting flow's line carries its legs and arrival). What it adds:

    k:<flow id>\\t<subject id>   a leg request this member answered, with its legs and their revisions, kept open
                                to late facts about their subjects (`streams.legs.Asked.to_bytes`); deleted when it
                                leaves the lateness window

so a member killed at any point restores what it had committed, as the worker does (`StreamState.restoring`).
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from schemas.decisions import Decision
from schemas.events import Event
from schemas.policy import Policy
from streams.legs import Asked, AskedKey, AskedLegs, LegRequest, LegResult, Member, SequencesSeen, encode
from streams.openflows import NEVER
from streams.processor import Change, Outcome, StreamState
from streams.sequences import SequenceTracker
from streams.state import DEFAULT_LATENESS, to_us


class MemberState(Member, StreamState):
    """`Member` whose open flows and answered requests are kept, and restored, as `StreamState` keeps a worker's."""

    def __init__(
        self,
        policy: Policy,
        partitions: int,
        owned: frozenset[int] | list[int] | range,
        lateness: timedelta = DEFAULT_LATENESS,
        *,
        on_disk: bool = False,
    ) -> None:
        """A member owning `owned` of `partitions`, its open flows in memory or (`on_disk`) a temporary file."""
        self._on_disk = AskedOnDisk(on_disk)
        super().__init__(policy, partitions, owned, lateness, asked=self._on_disk, on_disk=on_disk)
        # A connector's events are spread over every member: each sends the numbers it takes in to the member that
        # tracks that connector (`SequencesSeen`), where they are tracked as one worker tracks them.
        self.tracks_sequences = False
        self._legs_out: list[tuple[int, LegRequest | LegResult]] = []
        self._asked_dirty: set[AskedKey] = set()

    def handle(self, message: Event | LegRequest | LegResult | SequencesSeen, raw: bytes | None = None) -> Outcome:
        """Apply an event or a leg message; the decisions, and the legs to send to other members."""
        if isinstance(message, SequencesSeen):
            return self._seen(message)
        if isinstance(message, LegRequest | LegResult):
            sent = self.take(message)
            self._legs_out.extend(sent.legs)
            self._watermark_moved = True
            outcome = Outcome(sent.decisions, [d.to_json_bytes() for d in sent.decisions])
        else:
            outcome = super().handle(message, raw)
        outcome.legs = [(partition, encode(leg)) for partition, leg in self._legs_out]
        self._legs_out = []
        return outcome

    def _seen(self, seen: SequencesSeen) -> Outcome:
        """Track a connector's numbers taken in by any member; `missing` counts those that now count as lost."""
        tracker = self.sequences.get(seen.connector)
        if tracker is None:
            tracker = self.sequences[seen.connector] = SequenceTracker()
        missing = sum(tracker.see(n, hold=self.catching_up) for n in seen.sequences)
        self._moved.add(seen.connector)
        return Outcome(missing=missing)

    def _decide(self, event: Event) -> list[Decision]:
        sent = self.take(event)
        self._legs_out.extend(sent.legs)
        return sent.decisions

    def _asked_changed(self, key: AskedKey) -> None:
        self._asked_dirty.add(key)

    def _asked_closed(self, key: AskedKey) -> None:
        self._asked_dirty.add(key)

    def changes(self, batch_id: str) -> list[Change]:
        """`StreamState.changes`, and the answered requests kept, changed or closed since the last call."""
        out = super().changes(batch_id)
        for key in sorted(self._asked_dirty):
            asked = self._asked.get(key)
            out.append((_asked_key(key), None if asked is None else asked.to_bytes()))
        self._asked_dirty.clear()
        self._on_disk.commit()
        return out

    def _restore_other(self, kind: bytes, name: bytes, value: bytes) -> None:
        if kind != b"k":
            return
        flow_id, _, first = name.decode().partition("\t")
        key = (flow_id, first)
        self._keep_asked(key, Asked.from_bytes(value))
        self._asked_dirty.discard(key)  # restored as it was written


class AskedOnDisk(AskedLegs):
    """`AskedLegs` in SQLite (a private temporary file with `on_disk`), a cache of the changelog as `OpenFlows` is.

    A bulk flow's request holds the whole flow, and a census return answered for 250 pupils is kept for the
    lateness window: on the heap, that grew each worker by about 1 MiB a second in `bench/pipeline.py --members 2`.
    """

    _SCHEMA = """
    CREATE TABLE asked (
        flow TEXT NOT NULL, first TEXT NOT NULL, seq INTEGER NOT NULL, expires INTEGER NOT NULL, value BLOB NOT NULL,
        PRIMARY KEY (flow, first)
    ) WITHOUT ROWID;
    CREATE INDEX asked_by_expiry ON asked (expires);
    CREATE TABLE asked_subjects (
        subject TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, flow TEXT NOT NULL, first TEXT NOT NULL,
        occurred INTEGER NOT NULL, expires INTEGER NOT NULL, PRIMARY KEY (subject, seq, at)
    ) WITHOUT ROWID;
    CREATE INDEX asked_subjects_by_expiry ON asked_subjects (expires);
    """

    def __init__(self, on_disk: bool = False) -> None:
        """None yet; in memory, or in a temporary file SQLite deletes on close."""
        self._db = sqlite3.connect("" if on_disk else ":memory:", check_same_thread=False)
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=MEMORY;" + self._SCHEMA
        )
        self._seq = 0
        self._earliest = _NONE_KEPT  # the earliest end of a kept request's window: `expire` asks SQLite only then

    def __contains__(self, key: AskedKey) -> bool:
        return self._db.execute("SELECT 1 FROM asked WHERE flow = ? AND first = ?", key).fetchone() is not None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM asked").fetchone()[0])

    def get(self, key: AskedKey) -> Asked | None:
        """The answered request, while it is kept."""
        found = self._db.execute("SELECT value FROM asked WHERE flow = ? AND first = ?", key).fetchone()
        return None if found is None else Asked.from_bytes(bytes(found[0]))

    def put(self, key: AskedKey, asked: Asked) -> None:
        """Keep a request answered now, or one whose legs changed."""
        value = asked.to_bytes()
        if self._db.execute("UPDATE asked SET value = ? WHERE flow = ? AND first = ?", (value, *key)).rowcount:
            return
        self._seq += 1
        self._db.execute("INSERT INTO asked VALUES (?, ?, ?, ?, ?)", (*key, self._seq, asked.expires, value))
        self._earliest = min(self._earliest, asked.expires)
        occurred = to_us(asked.request.flow.occurred_at)
        self._db.executemany(
            "INSERT OR IGNORE INTO asked_subjects VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (subject.id, self._seq, at, *key, occurred, asked.expires)
                for at, subject in enumerate(asked.request.subjects)
            ],
        )

    def affected(self, subject_id: str, now: int, since: int | None) -> list[tuple[AskedKey, int]]:
        """Kept requests with a leg of the subject, open at `now`, about flows occurred at or after `since`."""
        rows = self._db.execute(
            "SELECT flow, first, at FROM asked_subjects WHERE subject = ? AND expires >= ? AND occurred >= ?"
            " ORDER BY seq, at",
            (subject_id, now, NEVER if since is None else since),
        )
        return [((flow, first), at) for flow, first, at in rows]

    def expire(self, horizon: int) -> list[AskedKey]:
        """Forget the requests whose window closed before `horizon`; their keys."""
        if horizon <= self._earliest:
            return []  # called as the clock moves, at every message: most calls close nothing
        closed = [(f, k) for f, k in self._db.execute("SELECT flow, first FROM asked WHERE expires < ?", (horizon,))]
        self._db.execute("DELETE FROM asked WHERE expires < ?", (horizon,))
        self._db.execute("DELETE FROM asked_subjects WHERE expires < ?", (horizon,))
        earliest = self._db.execute("SELECT min(expires) FROM asked").fetchone()[0]
        self._earliest = _NONE_KEPT if earliest is None else int(earliest)
        return closed

    def commit(self) -> None:
        """End SQLite's transaction (no durability: the changelog has it)."""
        self._db.commit()


_NONE_KEPT = 2**62


def _asked_key(key: AskedKey) -> bytes:
    return f"k:{key[0]}\t{key[1]}".encode()
