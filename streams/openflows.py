"""Flows still open to late facts, and the ids of every flow ever judged, kept off the Python heap (SQLite).

The stream worker must re-judge any flow of the last 48 hours when a late fact bears on it, and recognise a
re-delivered flow however old. Held as Python objects they cost about 2.5 KiB a flow (3.1 GiB after 1.1M
flows), all of it for the garbage collector to walk. Here they live in a SQLite database in a temporary file,
the way Kafka Streams keeps its state stores in RocksDB: a cache of the changelog, rebuilt from it at every
start, so it needs neither a journal nor fsync. Memory is SQLite's page cache, bounded by `cache_mib`, plus an
index from each subject to the rows of its open flows: about 200 bytes a subject and 8 a reference (30-50 MiB
with 1.5 million flows open, 2.3 subjects each, 20,000 pupils).

Reads see this process's own uncommitted writes; `commit()` only bounds how much SQLite holds in its
transaction, it is not a durability point (the Kafka transaction is).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

COMMIT_EVERY_S = 2.0
"""How often the store's SQLite transaction is committed (a cache rebuilt at every start: nothing to make durable)."""

_SCHEMA = """
CREATE TABLE flows (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    occurred INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    batch BLOB,
    rewritten INTEGER NOT NULL,
    line BLOB NOT NULL
);
CREATE INDEX flows_by_recipient ON flows (recipient, occurred);
CREATE INDEX flows_by_expiry ON flows (expires);
CREATE INDEX flows_by_batch ON flows (batch);
CREATE TABLE seen (digest BLOB PRIMARY KEY, flow INTEGER) WITHOUT ROWID;
"""
# A flow is found by its id through `seen` (its digest -> its `seq` while it is open): every flow id judged is
# recorded there anyway, and a second index on random ids (UNIQUE on `flows.id`) cost a third of the store's time
# per flow (measured: 42 against 30 us a flow with 500,000 open, writing 13.7 against 9.6 KiB of pages).
#
# A subject's flows are found through `OpenFlows._refs`, in memory, not a SQLite index: an index keyed by subject
# takes each new reference on a random page, and once it outgrew the page cache that cost about as much as the
# rest of the store (in-process, 1.5 million flows added: 47 against 23 us a flow with the index in memory).

DIGEST_BYTES = 12
"""Size of a flow-id digest: 96 bits, so two ids of one history practically never share one."""


def digest_of(flow_id: str) -> bytes:
    """The digest a flow id is recorded and found by."""
    return hashlib.blake2b(flow_id.encode(), digest_size=DIGEST_BYTES).digest()


_IN_CHUNK = 500  # host parameters per `IN (...)` query
_BY_DIGEST = "FROM seen s JOIN flows f ON f.seq = s.flow"  # the open flows a digest leads to
_BY_ID = f"{_BY_DIGEST} WHERE s.digest = ? AND f.id = ?"
NEVER = -(2**62)
"""A time before any event (us): the lower bound of "every open flow"."""


@dataclass(slots=True)
class _Pending:
    """A flow added since the last `flush`: written to SQLite in one go, at the end of its transaction."""

    seq: int
    recipient: str
    subjects: tuple[str, ...]
    occurred: int
    expires: int
    line: bytes
    digest: bytes  # of the flow id, worked out once: `remember` and `flush` both need it
    rewritten: bool = False


class OpenFlows:
    """Open flows (their changelog line, recipient, subjects, times) and the digests of every flow id judged.

    New flows wait in memory until `flush` writes a whole transaction's worth with one statement per table;
    every read looks at them too, so callers never see the difference.
    """

    def __init__(
        self,
        on_disk: bool = False,
        cache_mib: int = 64,
        commit_every_s: float = COMMIT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """An empty store: in memory, or `on_disk` in a private temporary file that SQLite deletes on close.

        SQLite puts that file in `$SQLITE_TMPDIR` or `$TMPDIR` (else /var/tmp or /tmp) and unlinks it at once,
        so nothing is left behind even after `kill -9`; the data is rebuilt from the changelog at every start.
        """
        self._db = sqlite3.connect("" if on_disk else ":memory:", check_same_thread=False)
        self._db.executescript(
            f"PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=MEMORY;"
            f"PRAGMA cache_size=-{cache_mib * 1024};" + _SCHEMA
        )
        self._stored = 0
        self._seq = 0
        self._commit_every, self._clock = commit_every_s, clock
        self._committed = clock()
        self._pending: dict[str, _Pending] = {}
        self._pending_by_subject: dict[str, list[str]] = {}
        self._pending_by_recipient: dict[str, list[str]] = {}
        # subject -> the `seq` of each flow written that bears on it, ascending; expired ones go in `_prune`
        self._refs: dict[str, array[int]] = {}
        self._closed: list[int] = []  # seqs expired since the last `_prune`

    def __len__(self) -> int:
        """How many flows are kept (some may have expired since the last `expire`)."""
        return self._stored + len(self._pending)

    # --- flows ------------------------------------------------------------------------------------------------

    def add(
        self,
        flow_id: str,
        recipient: str,
        subjects: Iterable[str],
        occurred: int,
        expires: int,
        line: bytes,
        *,
        rewritten: bool = False,
        digest: bytes | None = None,
    ) -> None:
        """Keep a flow open until `expires` (us), findable by its recipient and by each of its subjects.

        `digest` is `digest_of(flow_id)` where the caller has it already.
        """
        self._seq += 1
        unique = tuple(dict.fromkeys(subjects))
        if digest is None:
            digest = digest_of(flow_id)
        self._pending[flow_id] = _Pending(self._seq, recipient, unique, occurred, expires, line, digest, rewritten)
        for subject in unique:
            self._pending_by_subject.setdefault(subject, []).append(flow_id)
        self._pending_by_recipient.setdefault(recipient, []).append(flow_id)

    def pending(self) -> list[str]:
        """The flows added since the last `flush`, in arrival order."""
        return list(self._pending)

    def drop_pending(self, horizon: int) -> list[tuple[str, bool]]:
        """Forget unflushed flows that expired before `horizon`: (id, rewritten) of each."""
        gone = [(flow_id, p.rewritten) for flow_id, p in self._pending.items() if p.expires < horizon]
        for flow_id, _ in gone:
            p = self._pending.pop(flow_id)
            for subject in p.subjects:
                self._pending_by_subject[subject].remove(flow_id)
            self._pending_by_recipient[p.recipient].remove(flow_id)
        return gone

    def flush(self, batch_of: Mapping[str, bytes]) -> None:
        """Write every pending flow, each with the changelog key (`b:`) that holds its first line."""
        if not self._pending:
            return
        pending = self._pending
        self._db.executemany(
            "INSERT INTO flows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (p.seq, flow_id, p.recipient, p.occurred, p.expires, batch_of.get(flow_id), int(p.rewritten), p.line)
                for flow_id, p in pending.items()
            ],
        )
        refs = self._refs
        for p in pending.values():
            for subject in p.subjects:
                seqs = refs.get(subject)
                if seqs is None:
                    seqs = refs[subject] = array("q")
                seqs.append(p.seq)
        self._db.executemany(
            "INSERT INTO seen VALUES (?, ?) ON CONFLICT (digest) DO UPDATE SET flow = excluded.flow",
            [(p.digest, p.seq) for p in pending.values()],
        )
        self._stored += len(pending)
        self._pending = {}
        self._pending_by_subject = {}
        self._pending_by_recipient = {}

    def stored(self, flow_ids: list[str]) -> set[str]:
        """Which of these flow ids are already kept, written or pending (one query per 500)."""
        found = {flow_id for flow_id in flow_ids if flow_id in self._pending}
        wanted = set(flow_ids)
        for at in range(0, len(flow_ids), _IN_CHUNK):
            chunk = [digest_of(flow_id) for flow_id in flow_ids[at : at + _IN_CHUNK]]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT f.id {_BY_DIGEST} WHERE s.digest IN ({marks})"
            found.update(flow_id for (flow_id,) in self._db.execute(query, chunk) if flow_id in wanted)
        return found

    def _row(self, flow_id: str) -> int:
        """The row of a written flow (the caller knows it is kept)."""
        found = self._db.execute(f"SELECT f.seq {_BY_ID}", (digest_of(flow_id), flow_id)).fetchone()
        assert found is not None, f"flow {flow_id} is not kept"
        return int(found[0])

    def reopen(self, flow_id: str, line: bytes, expires: int, batch: bytes | None, *, rewritten: bool) -> None:
        """A kept flow's later line, expiry and batch; it keeps its place (restore: a flow id in two batches)."""
        p = self._pending.get(flow_id)
        if p is not None:
            p.line, p.expires, p.rewritten = line, expires, rewritten
            return
        seq = self._row(flow_id)
        self._db.execute(
            "UPDATE flows SET line = ?, expires = ?, batch = coalesce(?, batch), rewritten = ? WHERE seq = ?",
            (line, expires, batch, int(rewritten), seq),
        )

    def line(self, flow_id: str, now: int) -> bytes | None:
        """The flow's line while it is open at `now` (us), else None."""
        p = self._pending.get(flow_id)
        if p is not None:
            return p.line if p.expires >= now else None
        found = self._db.execute(f"SELECT f.line {_BY_ID} AND f.expires >= ?", (digest_of(flow_id), flow_id, now))
        found = found.fetchone()
        return None if found is None else bytes(found[0])

    def replace(self, flow_id: str, line: bytes, expires: int | None = None) -> None:
        """A superseding decision: the flow's new line, which now has a changelog entry of its own.

        `expires` moves the end of its window (a flow that waited for legs judged elsewhere, decided at last).
        """
        p = self._pending.get(flow_id)
        if p is not None:
            p.line, p.rewritten = line, True
            if expires is not None:
                p.expires = expires
            return
        seq = self._row(flow_id)
        if expires is None:
            self._db.execute("UPDATE flows SET line = ?, rewritten = 1 WHERE seq = ?", (line, seq))
            return
        self._db.execute("UPDATE flows SET line = ?, rewritten = 1, expires = ? WHERE seq = ?", (line, expires, seq))

    def for_subject(self, subject: str, since: int | None, now: int) -> list[str]:
        """Open flows about a subject that occurred at or after `since` (all when None), in arrival order."""
        low = NEVER if since is None else since
        seqs = self._refs.get(subject, array("q"))
        found: list[str] = []
        for at in range(0, len(seqs), _IN_CHUNK):
            chunk = seqs[at : at + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id FROM flows WHERE seq IN ({marks}) AND expires >= ? AND occurred >= ? ORDER BY seq",
                (*chunk, now, low),
            )
            found.extend(flow_id for (flow_id,) in rows)
        for flow_id in self._pending_by_subject.get(subject, ()):
            p = self._pending[flow_id]
            if p.expires >= now and p.occurred >= low:
                found.append(flow_id)
        return found

    def for_recipient(self, recipient: str, since: int | None, now: int) -> list[str]:
        """Open flows to a recipient that occurred at or after `since` (all when None), by occurrence then id."""
        low = NEVER if since is None else since
        rows = self._db.execute(
            "SELECT occurred, id FROM flows WHERE recipient = ? AND occurred >= ? AND expires >= ?",
            (recipient, low, now),
        ).fetchall()
        for flow_id in self._pending_by_recipient.get(recipient, ()):
            p = self._pending[flow_id]
            if p.expires >= now and p.occurred >= low:
                rows.append((p.occurred, flow_id))
        return [flow_id for _, flow_id in sorted(rows)]

    def expire(self, horizon: int) -> tuple[list[str], list[bytes]]:
        """Drop written flows that expired before `horizon` (us): (those rewritten, batches left empty)."""
        db = self._db
        closed = db.execute("SELECT seq, id, batch, rewritten FROM flows WHERE expires < ?", (horizon,)).fetchall()
        if not closed:
            return [], []
        db.execute("DELETE FROM flows WHERE expires < ?", (horizon,))
        self._stored -= len(closed)
        self._closed.extend(seq for seq, _, _, _ in closed)
        if len(self._closed) * 4 >= self._stored:
            self._prune()
        rewritten = [flow_id for _, flow_id, _, again in closed if again]
        touched = sorted({bytes(batch) for _, _, batch, _ in closed if batch})
        emptied = [b for b in touched if db.execute("SELECT 1 FROM flows WHERE batch = ?", (b,)).fetchone() is None]
        return rewritten, emptied

    def _prune(self) -> None:
        """Drop the references to expired flows (once a fifth of those held are, so each costs O(1) overall)."""
        lowest = self._db.execute("SELECT min(seq) FROM flows").fetchone()[0]
        if lowest is None:
            lowest = self._seq + 1
        # Flows mostly close in the order they were written: those before the oldest open one are one slice off
        # the front of each list. The rest (a flow kept open longer by a late fact, one waiting for legs) are few.
        scattered = {seq for seq in self._closed if seq > lowest}
        self._closed = []
        for subject in list(self._refs):
            seqs = self._refs[subject]
            cut = bisect_left(seqs, lowest)
            if cut == len(seqs):
                del self._refs[subject]
                continue
            if cut:
                del seqs[:cut]
            if scattered and not scattered.isdisjoint(seqs):
                kept = array("q", (seq for seq in seqs if seq not in scattered))
                if kept:
                    self._refs[subject] = kept
                else:
                    del self._refs[subject]

    def references(self) -> int:
        """How many subject references to written flows are held in memory (tests and diagnostics)."""
        return sum(len(seqs) for seqs in self._refs.values())

    def ids(self) -> list[str]:
        """Every open flow id, in arrival order (tests and diagnostics)."""
        return [flow_id for (flow_id,) in self._db.execute("SELECT id FROM flows ORDER BY seq")] + list(self._pending)

    # --- every flow ever judged ------------------------------------------------------------------------------

    def known(self, digests: Iterable[bytes]) -> set[bytes]:
        """Which of these flow-id digests were recorded before (one query per 500)."""
        wanted = list(dict.fromkeys(digests))
        found: set[bytes] = set()
        for at in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[at : at + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                bytes(d) for (d,) in self._db.execute(f"SELECT digest FROM seen WHERE digest IN ({marks})", chunk)
            )
        return found

    def remember(self, digests: Iterable[bytes]) -> None:
        """Record flow-id digests (first seen in this transaction, or restored from the changelog).

        Those of the flows waiting for `flush` are left to it: it records each with the flow's row, in one write.
        """
        waiting = {p.digest for p in self._pending.values()}
        self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?, NULL)", [(d,) for d in digests if d not in waiting])

    def commit(self) -> None:
        """End SQLite's transaction when `commit_every_s` have passed since the last; durability is the changelog's.

        Reads on this connection see what is not committed yet, and with no journal a commit only writes the
        dirty pages to the file: fewer commits write a page touched by many batches once. Committing after
        every batch cost about a fifth of the time of judging a flow (measured in-process, 200-flow batches).
        """
        if self._clock() - self._committed >= self._commit_every:
            self._db.commit()
            self._committed = self._clock()

    def close(self) -> None:
        """Release the database."""
        self._db.close()
