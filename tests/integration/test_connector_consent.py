"""The consent connector on a real broker: the sample's facts exactly once, dead letters, refusals, kill -9."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from producers.consent_export import file_format
from producers.filesource import FileConnector, event_id_for, file_digest
from schemas.connector_maps import ConnectorMaps
from schemas.settings import Settings

from .conftest import committed, connect_process, kill_after_first_commit

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "consent" / "forms-2025-autumn.csv"


def unique_id() -> str:
    # Each test's own connector id, so its transactional id never fences another run's connector.
    return f"consent-{uuid.uuid4().hex[:8]}"


def run(settings: Settings, maps: ConnectorMaps, outbox: Path, connector: str) -> Any:
    with FileConnector(
        connector, file_format(maps), outbox, settings.kafka_bootstrap, settings.topics, batch_size=4
    ) as conn:
        return conn.run_once()


def expected_facts(maps: ConnectorMaps, path: Path, connector: str) -> list[dict[str, Any]]:
    """The sample's facts as the engine builds them, without `emitted_at` (the one field a run decides)."""
    digest = file_digest(path)
    facts = []
    for record in file_format(maps).records(path, 0, 0):
        for index, draft in enumerate(record.drafts):
            event = draft.model.model_validate(
                {
                    "event_id": event_id_for(connector, digest, record.line, index),
                    **draft.fields,
                    "emitted_at": "2026-01-01T00:00:00Z",
                    "source": {"connector": connector, "sequence": len(facts)},
                }
            )
            facts.append(json.loads(event.model_dump_json(exclude={"emitted_at"})))
    return facts


def test_the_sample_export_becomes_exactly_its_facts_keyed_by_subject(
    isolated: Settings, maps: ConnectorMaps, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    connector = unique_id()
    summary = run(isolated, maps, outbox, connector)
    assert (summary.files_done, summary.events, summary.dead_letters) == (1, 10, 0)
    records = committed(isolated, isolated.topics.facts)
    facts = [json.loads(r.value) for r in records]
    assert [{k: v for k, v in f.items() if k != "emitted_at"} for f in facts] == expected_facts(maps, SAMPLE, connector)
    assert [r.key.decode() for r in records] == [f["subject"]["id"] for f in facts]
    assert [f["kind"] for f in facts].count("consent_given") == 5
    assert committed(isolated, isolated.topics.flows) == []
    assert (outbox / "processed" / SAMPLE.name).exists()


def test_bad_rows_are_dead_lettered_with_their_reasons_and_the_rest_delivered(
    isolated: Settings, maps: ConnectorMaps, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    header, good = lines[0], lines[1]
    bad_rows = [
        good.replace(",given,", ",granted,"),
        good.replace("2025-09-10T19:30:00", "10/09/2025 19:30"),
        good.replace(",P1001,", ",,"),
        good.replace("Mother,yes,yes", "Mother,perhaps,yes"),
        "F-9,2025-09-10T19:30:00,P1001",
    ]
    (outbox / "mixed.csv").write_text("\n".join([header, good, *bad_rows, good]) + "\n", encoding="utf-8")
    connector = unique_id()
    summary = run(isolated, maps, outbox, connector)
    assert (summary.events, summary.dead_letters) == (2, 5)
    letters = {
        letter["offset"]: letter for letter in (json.loads(r.value) for r in committed(isolated, isolated.topics.dlq))
    }
    assert {n: letters[n]["error"] for n in letters} == {
        2: "action 'granted' is not one of given, withdrawn, refused, objection, objection_withdrawn",
        3: "submitted_at '10/09/2025 19:30' is not an ISO 8601 time",
        4: "pupil_id is empty",
        5: "parental_responsibility must be yes or no, not 'perhaps'",
        6: "has 3 fields, the header has 19",
    }
    assert {letter["topic"] for letter in letters.values()} == {f"file:{connector}/mixed.csv"}
    assert all(letter["stage"] == "connector" for letter in letters.values())
    assert '"action": "granted"' in letters[2]["raw"]
    facts = [json.loads(r.value) for r in committed(isolated, isolated.topics.facts)]
    assert [f["kind"] for f in facts] == ["consent_given", "consent_given"]


def test_a_header_without_required_columns_is_refused_whole(
    isolated: Settings, maps: ConnectorMaps, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "old-form.csv").write_text(
        "form_id,submitted_at,pupil_id,action,recipient,purpose\nF-1,2025-09-10T19:30:00,P1,given,trust-website,x\n",
        encoding="utf-8",
    )
    summary = run(isolated, maps, outbox, unique_id())
    assert summary.files_rejected == 1
    reason = (
        "old-form.csv: header lacks column(s) categories, consent_id, parental_responsibility, person_id, relationship"
    )
    assert summary.rejected_reasons == [reason]
    assert (outbox / "rejected" / "old-form.csv.reason.txt").read_text(encoding="utf-8") == reason + "\n"
    assert committed(isolated, isolated.topics.facts) == []
    [letter] = [json.loads(r.value) for r in committed(isolated, isolated.topics.dlq)]
    assert (letter["offset"], letter["error"]) == (0, reason)


ROWS = 20_000
BATCH = 200


def write_backfill(path: Path) -> None:
    """A large export: one consent per pupil, every row good."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["form_id", "submitted_at", "pupil_id", "action", "consent_id", "recipient_class", "purpose",
             "categories", "person_id", "relationship", "parental_responsibility", "written"]
        )  # fmt: skip
        for n in range(ROWS):
            writer.writerow(
                [f"F-{n}", "2025-09-10T19:30:00", f"P{n:06d}", "given", f"C-{n}", "publication", "promotional_photo",
                 "photographs;identity.name", f"parent-{n}", "mother", "yes", "yes"]
            )  # fmt: skip


def test_kill_9_mid_backfill_then_restart_delivers_every_event_exactly_once(isolated: Settings, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    export = outbox / "backfill.csv"
    write_backfill(export)
    digest = file_digest(export)
    connector = unique_id()
    log = tmp_path / "connect.log"

    delivered = kill_after_first_commit(
        isolated,
        isolated.topics.facts,
        lambda: connect_process(isolated, "consent", outbox, log, connector=connector, batch=BATCH),
    )
    # Whole batches only: the batch open at the kill was never committed.
    assert 0 < delivered < ROWS
    assert delivered % BATCH == 0
    assert export.exists()

    second = connect_process(isolated, "consent", outbox, log, connector=connector, batch=BATCH)
    assert second.wait(timeout=300) == 0, log.read_text(encoding="utf-8")

    events = [json.loads(r.value) for r in committed(isolated, isolated.topics.facts)]
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)) == ROWS
    assert set(ids) == {event_id_for(connector, digest, n, 0) for n in range(1, ROWS + 1)}
    assert sorted(e["source"]["sequence"] for e in events) == list(range(ROWS))
    assert sorted(e["subject"]["id"] for e in events) == [f"P{n:06d}" for n in range(ROWS)]
    assert (outbox / "processed" / "backfill.csv").exists()
    assert committed(isolated, isolated.topics.dlq) == []
