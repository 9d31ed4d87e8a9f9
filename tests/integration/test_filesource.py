"""The file-connector engine on a real broker: transactions, checkpoints, resume, rejects and dead letters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.checkpoint import read_checkpoint
from producers.filesource import (
    Draft,
    FileConnector,
    Record,
    csv_records,
    file_digest,
    require_columns,
)
from schemas.events import BirthDateRecorded
from schemas.settings import Settings

from .conftest import committed

pytestmark = pytest.mark.kafka


class BirthDates:
    """A minimal format: `pupil_id,dob,exported_at` rows → BirthDateRecorded facts."""

    patterns = ("*.csv",)

    def __init__(self, explode_after: int | None = None) -> None:
        self.explode_after = explode_after

    def records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        for number, end, row in csv_records(path, position, line):
            if self.explode_after is not None and number > self.explode_after:
                raise RuntimeError("connector crashed")
            if "__error__" in row:
                yield Record(number, end, error=row["__error__"])
                continue
            require_columns(path, set(row), {"pupil_id", "dob", "exported_at"})
            fields = {
                "occurred_at": row["exported_at"],
                "subject": {"kind": "pupil", "id": row["pupil_id"]},
                "birth_date": row["dob"],
            }
            yield Record(number, end, drafts=(Draft(BirthDateRecorded, fields),), raw=json.dumps(row))


def write_csv(path: Path, rows: int, start: int = 0) -> Path:
    lines = ["pupil_id,dob,exported_at"]
    lines += [f"P{start + i:05d},2015-03-{1 + i % 28:02d},2026-09-01T08:00:00+01:00" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def connector(settings: Settings, outbox: Path, fmt: BirthDates | None = None, batch: int = 7) -> FileConnector:
    return FileConnector(
        "births", fmt or BirthDates(), outbox, settings.kafka_bootstrap, settings.topics, batch_size=batch
    )


def test_a_file_becomes_sequenced_events_and_moves_to_processed(isolated: Settings, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    digest = file_digest(write_csv(outbox / "export.csv", 20))
    with connector(isolated, outbox) as conn:
        summary = conn.run_once()
    assert (summary.files_done, summary.events, summary.dead_letters) == (1, 20, 0)
    events = [json.loads(r.value) for r in committed(isolated, isolated.topics.facts)]
    assert sorted(e["source"]["sequence"] for e in events) == list(range(20))
    assert {e["event_id"] for e in events} == {f"births:{digest[:16]}:{n}:0" for n in range(1, 21)}
    assert (outbox / "processed" / "export.csv").exists()
    assert not (outbox / "export.csv").exists()
    checkpoint = read_checkpoint(isolated.kafka_bootstrap, isolated.topics.checkpoints, "births")
    assert checkpoint.next_sequence == 20
    assert checkpoint.files[digest].done


def test_a_redropped_file_is_not_emitted_twice_and_sequences_continue(isolated: Settings, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    write_csv(outbox / "monday.csv", 5)
    with connector(isolated, outbox) as conn:
        conn.run_once()
    write_csv(outbox / "monday-again.csv", 5)  # the same content under another name
    write_csv(outbox / "tuesday.csv", 3, start=100)
    with connector(isolated, outbox) as conn:
        summary = conn.run_once()
    assert (summary.files_done, summary.files_skipped, summary.events) == (1, 1, 3)
    events = [json.loads(r.value) for r in committed(isolated, isolated.topics.facts)]
    assert sorted(e["source"]["sequence"] for e in events) == list(range(8))


def test_a_crash_mid_file_resumes_after_the_last_committed_batch(isolated: Settings, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    write_csv(outbox / "big.csv", 50)
    with pytest.raises(RuntimeError), connector(isolated, outbox, BirthDates(explode_after=23)) as conn:
        conn.run_once()
    assert (outbox / "big.csv").exists()
    # 3 batches of 7 were committed before the crash; the open batch (records 22-23) was aborted.
    assert len(committed(isolated, isolated.topics.facts)) == 21
    with connector(isolated, outbox) as conn:
        summary = conn.run_once()
    assert summary.events == 29
    events = [json.loads(r.value) for r in committed(isolated, isolated.topics.facts)]
    assert sorted(e["subject"]["id"] for e in events) == [f"P{i:05d}" for i in range(50)]
    assert sorted(e["source"]["sequence"] for e in events) == list(range(50))


def test_bad_records_are_dead_lettered_and_the_file_goes_on(isolated: Settings, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "mixed.csv").write_text(
        "pupil_id,dob,exported_at\n"
        "P1,2015-01-01,2026-09-01T08:00:00Z\n"
        "P2,not-a-date,2026-09-01T08:00:00Z\n"
        "P3,2015-01-01\n"
        "P4,2015-01-01,2026-09-01T08:00:00Z\n",
        encoding="utf-8",
    )
    with connector(isolated, outbox) as conn:
        summary = conn.run_once()
    assert (summary.events, summary.dead_letters) == (2, 2)
    letters = [json.loads(r.value) for r in committed(isolated, isolated.topics.dlq)]
    # Offsets are record numbers: the header is not a record.
    assert sorted(letter["offset"] for letter in letters) == [2, 3]
    by_record = {letter["offset"]: letter for letter in letters}
    assert "birth_date" in by_record[2]["error"]
    assert by_record[2]["stage"] == "connector"
    assert by_record[3]["error"] == "has 2 fields, the header has 3"
    assert by_record[2]["topic"] == "file:births/mixed.csv"


def test_an_unreadable_file_is_refused_whole(isolated: Settings, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "wrong.csv").write_text("pupil,birthday\nP1,2015-01-01\n", encoding="utf-8")
    with connector(isolated, outbox) as conn:
        summary = conn.run_once()
    assert summary.files_rejected == 1
    assert summary.events == 0
    assert "lacks column(s) dob, exported_at, pupil_id" in summary.rejected_reasons[0]
    reason = (outbox / "rejected" / "wrong.csv.reason.txt").read_text(encoding="utf-8")
    assert "dob" in reason
    assert committed(isolated, isolated.topics.facts) == []
    assert [json.loads(r.value)["offset"] for r in committed(isolated, isolated.topics.dlq)] == [0]
