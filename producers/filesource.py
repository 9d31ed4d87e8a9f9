"""The engine every file connector runs on: watch an outbox, turn files into events, deliver exactly once.

A connector format (CTF, sync log, mail trace, consent export...) only parses: it turns a file into
`Record`s, each carrying zero or more `Draft` events or the reason it is unusable. This module does the rest:

- each file is identified by the SHA-256 of its content, so a re-dropped export is recognised;
- events are sent in batches, each batch in one Kafka transaction together with the connector's checkpoint
  (file position, record number, next sequence number), so a kill at any moment re-emits nothing delivered
  and loses nothing undelivered;
- every event gets the connector id and the next per-connector sequence number in `source`, and an
  `event_id` derived from the file and record, so even a replay outside the checkpoint dedupes downstream;
- an unusable record goes to the dead-letter topic with its line and reason, in the same transaction;
- an unusable file (malformed XML, wrong header) is refused whole before anything of it is sent, moved to
  `rejected/` with a `.reason.txt`, and dead-lettered; a finished file is moved to `processed/`.

Drop files into the outbox atomically (write elsewhere, then rename); names starting with `.` or ending in
`.tmp` / `.part` are ignored until renamed.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from producers.checkpoint import ConnectorCheckpoint, FileProgress, read_checkpoint
from producers.emitter import Emitter
from schemas.decisions import DeadLetter
from schemas.errors import PupilflowError
from schemas.events import EventEnvelope
from schemas.settings import Topics

_IGNORED_SUFFIXES = (".tmp", ".part", ".reason.txt")

# A sync of a whole school lists every pupil in one cell; the csv module's 128 KiB default would refuse it.
csv.field_size_limit(64 * 1024 * 1024)


class FileRejectedError(PupilflowError):
    """A whole input file is unusable; the message says why (and where)."""


@dataclass(frozen=True)
class Draft:
    """An event a connector read, before it has its `source`, `emitted_at` and (usually) `event_id`."""

    model: type[EventEnvelope]
    fields: dict[str, Any]


@dataclass(frozen=True)
class Record:
    """One record of an input file: the events it yields, or why it is unusable."""

    line: int = field(metadata={"doc": "1-based record (or line) number, for messages."})
    position: int = field(metadata={"doc": "Byte offset just after the record: where a resume starts."})
    drafts: tuple[Draft, ...] = ()
    error: str | None = None
    raw: str = ""


class FileFormat(Protocol):
    """What a connector format provides: which files it reads and how to read one from a position."""

    patterns: tuple[str, ...]

    def records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        """The records of `path` after byte `position` (record number `line`); raise `FileRejectedError` if unusable."""
        ...


@dataclass
class RunSummary:
    """What one pass over the outbox did."""

    files_done: int = 0
    files_rejected: int = 0
    files_skipped: int = 0
    events: int = 0
    dead_letters: int = 0
    rejected_reasons: list[str] = field(default_factory=list)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (its identity: a renamed re-export is the same file)."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def event_id_for(connector: str, digest: str, line: int, index: int = 0) -> str:
    """The `event_id` of the `index`-th event of record `line` of the file with SHA-256 `digest`."""
    return f"{connector}:{digest[:16]}:{line}:{index}"


def csv_records(path: Path, position: int, line: int) -> Iterator[tuple[int, int, dict[str, str]]]:
    """(record number, end position, row by lower-cased header) for each CSV row after `position`.

    The header is always read from the start of the file, so a resume mid-file maps columns the same way.
    Quoted fields may span lines; positions are exact because the reader never reads ahead of a row.
    """
    with path.open("rb") as handle:
        offset = 0

        def lines() -> Iterator[str]:
            nonlocal offset
            while True:
                raw = handle.readline()
                if not raw:
                    return
                offset += len(raw)
                try:
                    yield raw.decode("utf-8-sig" if offset == len(raw) else "utf-8")
                except UnicodeDecodeError as exc:
                    raise FileRejectedError(f"{path.name}: byte {offset - len(raw) + exc.start}: not UTF-8") from None

        reader = csv.reader(lines())
        try:
            header = next(reader)
        except StopIteration:
            raise FileRejectedError(f"{path.name}: empty file, expected a CSV header") from None
        except csv.Error as exc:
            raise FileRejectedError(f"{path.name}: header is not CSV: {exc}") from None
        columns = [name.strip().lower() for name in header]
        if position > offset:
            handle.seek(position)
            offset = position
        number = line
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise FileRejectedError(f"{path.name}: record {number + 1}: not CSV: {exc}") from None
            number += 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                yield number, offset, {"__error__": f"has {len(row)} fields, the header has {len(columns)}"}
                continue
            yield number, offset, dict(zip(columns, row, strict=True))


def require_columns(path: Path, columns: set[str], required: set[str]) -> None:
    """Refuse a CSV whose header lacks any of `required`, naming what is missing."""
    missing = sorted(required - columns)
    if missing:
        raise FileRejectedError(f"{path.name}: header lacks column(s) {', '.join(missing)}")


class FileConnector:
    """Runs one connector format over its outbox folder, delivering each event exactly once into Kafka."""

    def __init__(
        self,
        connector: str,
        fmt: FileFormat,
        outbox: Path,
        bootstrap_servers: str,
        topics: Topics,
        *,
        batch_size: int = 2000,
        progress: Callable[[str], None] | None = None,
        progress_every_s: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.connector = connector
        self.fmt = fmt
        self.outbox = outbox
        self._bootstrap = bootstrap_servers
        self._topics = topics
        self._batch_size = batch_size
        self._progress = progress
        self._progress_every_s = progress_every_s
        self._clock = clock
        self._emitter: Emitter | None = None
        self._checkpoint: ConnectorCheckpoint | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def open(self) -> None:
        """Fence any earlier instance of this connector, then load its committed checkpoint."""
        for sub in ("processed", "rejected"):
            (self.outbox / sub).mkdir(parents=True, exist_ok=True)
        # The transactional id is the connector's: starting it fences a zombie and aborts its open batch,
        # which must happen before the checkpoint is read or that batch's checkpoint could be missed.
        self._emitter = Emitter(
            self._bootstrap,
            self._topics,
            client_id=f"pupilflow-{self.connector}",
            transactional_id=f"pupilflow-connector-{self.connector}",
        )
        self._checkpoint = read_checkpoint(self._bootstrap, self._topics.checkpoints, self.connector)

    def close(self) -> None:
        """Abort anything uncommitted and close the producer."""
        if self._emitter is not None:
            self._emitter.close()
            self._emitter = None

    def __enter__(self) -> FileConnector:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def checkpoint(self) -> ConnectorCheckpoint:
        """The last committed checkpoint."""
        if self._checkpoint is None:
            raise RuntimeError("connector not open")
        return self._checkpoint

    # -- work ------------------------------------------------------------------------------------------

    def pending_files(self) -> list[Path]:
        """Files waiting in the outbox, oldest first (then by name)."""
        found = []
        for pattern in self.fmt.patterns:
            for path in self.outbox.glob(pattern):
                if path.is_file() and not path.name.startswith(".") and not path.name.endswith(_IGNORED_SUFFIXES):
                    found.append(path)
        return sorted(set(found), key=lambda p: (p.stat().st_mtime, p.name))

    def run_once(self) -> RunSummary:
        """Process every file in the outbox now; returns what was done."""
        summary = RunSummary()
        files = self.pending_files()
        for number, path in enumerate(files, start=1):
            self._process(path, summary, f"[{number}/{len(files)}]")
        return summary

    def run(self, poll_seconds: float, stop: Callable[[], bool]) -> RunSummary:
        """Watch the outbox until `stop()` is true, processing files as they arrive."""
        total = RunSummary()
        while not stop():
            summary = self.run_once()
            for name in ("files_done", "files_rejected", "files_skipped", "events", "dead_letters"):
                setattr(total, name, getattr(total, name) + getattr(summary, name))
            total.rejected_reasons.extend(summary.rejected_reasons)
            if not summary.files_done and not summary.files_rejected:
                time.sleep(poll_seconds)
        return total

    def _process(self, path: Path, summary: RunSummary, label: str) -> None:
        digest = file_digest(path)
        known = self.checkpoint.files.get(digest)
        if known is not None and (known.done or known.rejected):
            # Delivered (or refused) before: the move after the commit was all that was missing.
            self._move(path, "rejected" if known.rejected else "processed", known.rejected)
            summary.files_skipped += 1
            return
        start = known or FileProgress(name=path.name)
        size = max(path.stat().st_size, 1)
        state = _Batch(self.checkpoint.next_sequence, start)
        last_report = time.monotonic()
        try:
            emitter = self._require_emitter()
            emitter.begin()
            for record in self.fmt.records(path, start.position, start.line):
                self._take(record, path, digest, state, summary)
                if state.count >= self._batch_size:
                    self._commit(digest, state)
                    emitter.begin()
                if self._progress and time.monotonic() - last_report >= self._progress_every_s:
                    last_report = time.monotonic()
                    self._progress(
                        f"{self.connector} {label} {path.name}: {state.progress.line} records, "
                        f"{100 * state.progress.position / size:.0f}%"
                    )
        except FileRejectedError as exc:
            self._require_emitter().abort()
            # The aborted batch never happened: its sequence numbers and position are free again.
            state.sequence = self.checkpoint.next_sequence
            state.progress = self.checkpoint.files.get(digest, start)
            if state.committed_any:
                # Part of the file is already delivered: refuse only the rest, and say so.
                reason = f"{exc} (after record {state.progress.line}; earlier records were delivered)"
            else:
                reason = str(exc)
            self._reject(path, digest, reason, state)
            summary.files_rejected += 1
            summary.rejected_reasons.append(reason)
            return
        except BaseException:
            self._abort_quietly()
            raise
        state.progress = state.progress.model_copy(update={"done": True, "finished_at": self._clock()})
        self._commit(digest, state)
        self._move(path, "processed", None)
        summary.files_done += 1
        if self._progress:
            self._progress(f"{self.connector} {label} {path.name}: done, {state.progress.line} records")

    def _take(self, record: Record, path: Path, digest: str, state: _Batch, summary: RunSummary) -> None:
        emitter = self._require_emitter()
        if record.error is not None:
            self._dead_letter(path, record.line, record.raw, record.error)
            summary.dead_letters += 1
        else:
            now = self._clock()
            for index, draft in enumerate(record.drafts):
                values = {
                    "event_id": event_id_for(self.connector, digest, record.line, index),
                    **draft.fields,
                    "emitted_at": now,
                    "source": {"connector": self.connector, "sequence": state.sequence},
                }
                try:
                    event = draft.model.model_validate(values)
                except ValidationError as exc:
                    self._dead_letter(path, record.line, record.raw, _describe(exc))
                    summary.dead_letters += 1
                    continue
                emitter.emit(event)  # type: ignore[arg-type]
                state.sequence += 1
                summary.events += 1
        state.count += 1
        state.progress = state.progress.model_copy(update={"position": record.position, "line": record.line})

    def _commit(self, digest: str, state: _Batch) -> None:
        emitter = self._require_emitter()
        checkpoint = self.checkpoint.with_file(digest, state.progress, state.sequence)
        emitter.send_raw(self._topics.checkpoints, self.connector.encode(), checkpoint.model_dump_json().encode())
        emitter.commit()
        self._checkpoint = checkpoint
        state.count = 0
        state.committed_any = True

    def _reject(self, path: Path, digest: str, reason: str, state: _Batch) -> None:
        emitter = self._require_emitter()
        emitter.begin()
        self._dead_letter(path, 0, "", reason)
        state.progress = state.progress.model_copy(update={"rejected": reason, "finished_at": self._clock()})
        self._commit(digest, state)
        self._move(path, "rejected", reason)
        print(f"{self.connector}: rejected {path.name}: {reason}", file=sys.stderr)

    def _dead_letter(self, path: Path, line: int, raw: str, error: str) -> None:
        letter = DeadLetter(
            topic=f"file:{self.connector}/{path.name}",
            partition=0,
            offset=line,
            key=None,
            raw=raw,
            error=error,
            received_at=self._clock(),
            stage="connector",
        )
        self._require_emitter().send_raw(self._topics.dlq, None, letter.model_dump_json().encode())

    def _move(self, path: Path, where: str, reason: str | None) -> None:
        target = self.outbox / where / path.name
        if target.exists():
            target = target.with_name(f"{path.stem}.{int(time.time() * 1000)}{path.suffix}")
        shutil.move(str(path), target)
        if reason is not None:
            target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")

    def _abort_quietly(self) -> None:
        # The original error matters more than a failed abort.
        with contextlib.suppress(Exception):
            self._require_emitter().abort()

    def _require_emitter(self) -> Emitter:
        if self._emitter is None:
            raise RuntimeError("connector not open")
        return self._emitter


@dataclass
class _Batch:
    sequence: int
    progress: FileProgress
    count: int = 0
    committed_any: bool = False


def _describe(exc: ValidationError) -> str:
    """A validation error as `field.path: message; ...` (what a connector author needs to fix the input)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<event>'}: {err['msg']}" for err in exc.errors(include_url=False)
    )
