"""Arrivals: files dropped into connector outboxes and events posted over HTTP, in one arrival order.

Everything the simulator produces is a drop at a simulated time. Drops are sorted by that time (stable), so
facts precede the flows that depend on them as they would in a real day: the MIS export and consent forms in
the morning, flows during the day, sync logs and mail traces in the evening.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from producers.filesource import Draft, event_id_for
from producers.simulator.truth import Violation
from schemas.events import EventEnvelope


@dataclass
class Mark:
    """An injected violation inside a drop: which record (files) or event (HTTP) carries it."""

    violation: Violation
    record: int = 0
    index: int = 0


@dataclass
class FileDrop:
    """A file a connector will read: its bytes, what each record means, and the violations in it."""

    at: datetime
    connector: str
    name: str
    data: bytes
    intended: list[tuple[Draft, ...]]
    marks: list[Mark] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """SHA-256 of the bytes: the file's identity for `event_id_for`."""
        return hashlib.sha256(self.data).hexdigest()

    def event_id(self, record: int, index: int = 0) -> str:
        """The event id the connector gives the `index`-th event of `record`."""
        return event_id_for(self.connector, self.digest, record, index)


@dataclass
class HttpEvent:
    """An event to post: its id now, its envelope (sequence, emitted_at) once the arrival order is known."""

    at: datetime
    event_id: str
    model: type[EventEnvelope]
    fields: dict[str, Any]
    mark: Violation | None = None


Drop = FileDrop | HttpEvent


def write_atomically(path: Path, data: bytes, mtime: float | None = None) -> None:
    """Write `data` to `path` via `<path>.tmp` and a rename, so a watcher never sees a partial file.

    The modification time is set before the rename: file connectors take files oldest first, so giving each
    file its simulated arrival time makes them read the year in order.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    """Compact JSON lines, keys in insertion order."""
    return "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in rows).encode()
