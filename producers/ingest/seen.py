"""The event ids the ingest API has delivered, so a repeated POST is answered without sending again.

An id is recorded only after Kafka confirmed delivery. The window: a crash between Kafka's confirmation and
the record (or a 503 for events Kafka later did take) lets a retry send an event a second time; the stream
dedupes by `event_id`, so that costs a message, never a second decision.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterable
from pathlib import Path

_SCHEMA = "CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY, recorded_at INTEGER NOT NULL) WITHOUT ROWID"
_INDEX = "CREATE INDEX IF NOT EXISTS seen_recorded_at ON seen (recorded_at)"
# Well under SQLite's bound-parameter limit on every build still in use.
_CHUNK = 900


class SeenStore:
    """Delivered event ids in a SQLite file, with the time each was recorded (for pruning)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL survives a process crash; a power cut can lose the last records, i.e. allow one re-send.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.execute(_INDEX)
        self._db.commit()

    @classmethod
    def in_home(cls, home: Path) -> SeenStore:
        """The store of a pupilflow home (`<home>/ingest/seen.sqlite3`)."""
        return cls(home / "ingest" / "seen.sqlite3")

    def seen(self, event_ids: Collection[str]) -> set[str]:
        """Those of `event_ids` already recorded."""
        ids = list(event_ids)
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT event_id FROM seen WHERE event_id IN ({marks})", chunk)
                found.update(row[0] for row in rows)
        return found

    def record(self, event_ids: Iterable[str]) -> None:
        """Record ids Kafka has confirmed."""
        now = int(time.time())
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", ((i, now) for i in event_ids))
            self._db.commit()

    def prune(self, older_than_s: float) -> int:
        """Forget ids recorded more than `older_than_s` seconds ago; returns how many."""
        with self._lock:
            count = self._db.execute("DELETE FROM seen WHERE recorded_at < ?", (int(time.time() - older_than_s),))
            self._db.commit()
            return count.rowcount

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
