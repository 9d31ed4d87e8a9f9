"""The MIS connector on a real broker: pupil and standing facts exactly once, also across a crash mid-file."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producers.filesource import FileConnector, FileFormat, Record, event_id_for, file_digest
from producers.mis_export import MisExport, file_format
from schemas.connector_maps import ConnectorMaps
from schemas.settings import Settings

from .conftest import committed

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "tests" / "data" / "mis").glob("*.csv"))
HEADER = (
    "pupil_id,school,dob,enrolled_on,left_on,destination_school,contact_id,contact_relationship,"
    "contact_parental_responsibility,contact_has_care,exported_at"
)


class Exploding:
    """The MIS format, crashing (like a killed process) when it reaches record `after + 1`."""

    patterns = ("*.csv",)

    def __init__(self, inner: MisExport, after: int) -> None:
        self.inner, self.after = inner, after

    def records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        for record in self.inner.records(path, position, line):
            if record.line > self.after:
                raise RuntimeError("connector crashed")
            yield record


def connector(settings: Settings, fmt: FileFormat, outbox: Path, batch: int = 3) -> FileConnector:
    # The connector id is the test's own (its topics' prefix), so its transactional id fences no other run.
    name = "mis-" + settings.topics.facts.rsplit("-", 1)[-1].split(".")[0]
    return FileConnector(name, fmt, outbox, settings.kafka_bootstrap, settings.topics, batch_size=batch)


def expected_facts(maps: ConnectorMaps, path: Path, name: str) -> dict[str, dict[str, Any]]:
    """A file's facts by event id, as the engine builds them, without what a run decides (time, sequence)."""
    digest = file_digest(path)
    found = {}
    for record in file_format(maps).records(path, 0, 0):
        for index, draft in enumerate(record.drafts):
            event_id = event_id_for(name, digest, record.line, index)
            event = draft.model.model_validate(
                {
                    "event_id": event_id,
                    **draft.fields,
                    "emitted_at": "2026-01-01T00:00:00Z",
                    "source": {"connector": name, "sequence": 0},
                }
            )
            found[event_id] = json.loads(event.model_dump_json(exclude={"emitted_at", "source"}))
    return found


def test_the_sample_exports_become_exactly_their_facts_keyed_by_pupil(
    isolated: Settings, maps: ConnectorMaps, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    for sample in SAMPLES:
        shutil.copy(sample, outbox / sample.name)
    with connector(isolated, file_format(maps), outbox) as conn:
        summary = conn.run_once()
    expected = {k: v for sample in SAMPLES for k, v in expected_facts(maps, sample, conn.connector).items()}
    assert (summary.files_done, summary.events, summary.dead_letters) == (2, len(expected), 0)
    records = committed(isolated, isolated.topics.facts)
    facts = [json.loads(r.value) for r in records]
    assert {f["event_id"]: {k: v for k, v in f.items() if k not in ("emitted_at", "source")} for f in facts} == expected
    assert len(facts) == len(expected) == 21
    assert sorted(f["source"]["sequence"] for f in facts) == list(range(len(facts)))
    assert [r.key.decode() for r in records] == [f["subject"]["id"] for f in facts]
    kinds = Counter(f["kind"] for f in facts)
    assert kinds == {"birth_date_recorded": 6, "pupil_enrolled": 6, "pupil_left": 2, "parental_responsibility": 7}


def test_a_crash_mid_file_neither_repeats_nor_loses_a_pupils_facts(
    isolated: Settings, maps: ConnectorMaps, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    rows = [
        f"P{p},rose-valley,2012-05-01,2023-09-04,,,c{p}-{c},mother,yes,yes,2026-01-10T07:00:00"
        for p in range(4)
        for c in range(3)
    ]
    (outbox / "contacts.csv").write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    # Batches of 4 rows: rows 1-4 are committed (P0's three, P1's first) and row 5 is open when the crash comes
    # at row 6, so the restart resumes inside P1's rows.
    exploding = Exploding(file_format(maps), after=5)
    with pytest.raises(RuntimeError), connector(isolated, exploding, outbox, batch=4) as conn:
        conn.run_once()
    assert len(committed(isolated, isolated.topics.facts)) == (2 + 3) + (2 + 1)
    with connector(isolated, file_format(maps), outbox, batch=4) as conn:
        conn.run_once()
    facts = [json.loads(r.value) for r in committed(isolated, isolated.topics.facts)]
    per_pupil = Counter((f["subject"]["id"], f["kind"]) for f in facts)
    assert per_pupil == {
        (f"P{p}", kind): count
        for p in range(4)
        for kind, count in (("birth_date_recorded", 1), ("pupil_enrolled", 1), ("parental_responsibility", 3))
    }
    assert sorted(f["source"]["sequence"] for f in facts) == list(range(20))


def test_bad_rows_are_dead_lettered_and_a_bad_header_refuses_the_file(
    isolated: Settings, maps: ConnectorMaps, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    good = "P1,rose-valley,2012-05-01,2023-09-04,,,mum-1,mother,yes,yes,2026-01-10T07:00:00"
    (outbox / "a-mixed.csv").write_text(
        "\n".join(
            [
                HEADER,
                good,
                good.replace("rose-valley", "school:9374102"),
                good.replace("2012-05-01", "01/05/2012"),
                good.replace("mother,yes,yes", "mother,yes,often"),
                good.replace("P1,", "P2,").replace(",,mum-1", ",9374102,mum-1"),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    (outbox / "b-thin.csv").write_text("pupil_id,school,dob\nP1,rose-valley,2012-05-01\n", encoding="utf-8")
    with connector(isolated, file_format(maps), outbox) as conn:
        summary = conn.run_once()
    topic = f"file:{conn.connector}/a-mixed.csv"
    assert (summary.files_done, summary.files_rejected, summary.events, summary.dead_letters) == (1, 1, 3, 4)
    refusal = (
        "b-thin.csv: header lacks column(s) contact_id, contact_parental_responsibility, contact_relationship, "
        "enrolled_on, exported_at, left_on"
    )
    assert summary.rejected_reasons == [refusal]
    assert (outbox / "rejected" / "b-thin.csv.reason.txt").exists()
    letters = {
        (d["topic"], d["offset"]): d["error"]
        for d in (json.loads(r.value) for r in committed(isolated, isolated.topics.dlq))
    }
    assert letters == {
        (topic, 2): "school 'school:9374102' is not a Trust school (hawthorn-primary, rose-valley)",
        (topic, 3): "dob '01/05/2012' is not an ISO 8601 date (YYYY-MM-DD)",
        (topic, 4): "contact_has_care must be yes or no, not 'often'",
        (topic, 5): "destination_school is given but left_on is empty",
        (f"file:{conn.connector}/b-thin.csv", 0): refusal,
    }
    facts = [json.loads(r.value) for r in committed(isolated, isolated.topics.facts)]
    assert [f["kind"] for f in facts] == ["birth_date_recorded", "pupil_enrolled", "parental_responsibility"]
