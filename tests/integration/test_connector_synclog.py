"""The `synclog` connector on a real broker: exact flows, dead letters, refusals, and exactly once across kill -9."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from producers.checkpoint import read_checkpoint
from producers.filesource import FileConnector, file_digest
from producers.synclog import file_format
from schemas.connector_maps import ConnectorMaps
from schemas.settings import Settings

from .conftest import committed, connect_process, kill_after_first_commit

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "synclog"
P1, P2, P3 = "H801200000011", "H801200000022", "H801200000033"


def connector(settings: Settings, outbox: Path, maps: ConnectorMaps) -> FileConnector:
    return FileConnector("synclog", file_format(maps), outbox, settings.kafka_bootstrap, settings.topics, batch_size=2)


def outbox_with(tmp_path: Path, *names: str) -> tuple[Path, dict[str, str]]:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    digests = {name: file_digest(Path(shutil.copy(DATA / name, outbox)))[:16] for name in names}
    return outbox, digests


def flow_view(event: dict[str, Any]) -> dict[str, Any]:
    """What a flow says, without the send time."""
    return {
        "event_id": event["event_id"],
        "recipient": event["recipient"],
        "purpose": event["purpose"],
        "lawful_basis": event["lawful_basis"],
        "channel": event["channel"],
        "destination_country": event["destination_country"],
        "occurred_at": datetime.fromisoformat(event["occurred_at"]),
        "subjects": [s["id"] for s in event["subjects"]],
        "categories": event["categories"],
        "record_count": event["record_count"],
    }


def expected(
    event_id: str, route: tuple[str, str, str | None, str, str], at: datetime, pupils: list[str], categories: list[str]
) -> dict[str, Any]:
    recipient, purpose, basis, channel, country = route
    return {
        "event_id": event_id,
        "recipient": recipient,
        "purpose": purpose,
        "lawful_basis": basis,
        "channel": channel,
        "destination_country": country,
        "occurred_at": at,
        "subjects": pupils,
        "categories": categories,
        "record_count": len(pupils),
    }


def test_sample_sync_logs_become_exactly_the_expected_flows(
    isolated: Settings, tmp_path: Path, maps: ConnectorMaps
) -> None:
    outbox, digest = outbox_with(tmp_path, "nightly.csv", "apps.jsonl")
    with connector(isolated, outbox, maps) as conn:
        summary = conn.run_once()
    assert (summary.files_done, summary.files_rejected, summary.events, summary.dead_letters) == (2, 0, 6, 0)
    records = committed(isolated, isolated.topics.flows)
    events = [json.loads(r.value) for r in records]
    night, apps = f"synclog:{digest['nightly.csv']}", f"synclog:{digest['apps.jsonl']}"
    sims = ("sims", "mis_sync", "public_task", "encrypted_api", "GB")
    assert sorted((flow_view(e) for e in events), key=lambda f: f["event_id"]) == sorted(
        [
            expected(
                f"{night}:1:0",
                sims,
                datetime(2026, 9, 1, 1, tzinfo=UTC),
                [P1, P2, P3],
                ["identity.upn", "identity.name", "identity.dob", "sen"],
            ),
            expected(
                f"{night}:2:0",
                ("cool-milk", "free_milk", "public_task", "encrypted_api", "GB"),
                datetime(2026, 9, 1, 5, 30, tzinfo=UTC),
                [P1, P2],
                ["identity.name", "identity.dob", "identity.class", "fsm_eligibility"],
            ),
            expected(
                f"{night}:3:0",
                ("meal-provider", "school_meals", "public_task", "encrypted_api", "GB"),
                datetime(2026, 12, 1, 7, tzinfo=UTC),
                [P3],
                ["identity.name", "health.allergy"],
            ),
            # Nobody registered "Class Dojo!", and nobody mapped "Behaviour Notes": both fail closed downstream.
            expected(
                f"{night}:4:0",
                ("unregistered:class-dojo", "mis_sync", None, "unspecified", "GB"),
                datetime(2026, 12, 2, 8, 15, tzinfo=UTC),
                [P1],
                ["identity.name", "photographs", "unmapped.behaviour-notes"],
            ),
            expected(
                f"{apps}:1:0",
                ("mathsquest", "edtech", "public_task", "encrypted_api", "US"),
                datetime(2026, 12, 1, 18, tzinfo=UTC),
                [P1, P2],
                ["edtech_account", "identity.class"],
            ),
            # Line 2 of apps.jsonl is blank: line numbers stay the file's own.
            expected(
                f"{apps}:3:0",
                ("quizcloud", "edtech", "public_task", "encrypted_api", "US"),
                datetime(2026, 6, 1, 17, 5, tzinfo=UTC),
                [P3],
                ["edtech_account", "assessment", "unmapped.reading-age"],
            ),
        ],
        key=lambda f: f["event_id"],
    )
    assert sorted(e["source"]["sequence"] for e in events) == list(range(6))
    assert {r.key.decode() for r in records} <= {P1, P2, P3}
    assert sorted(p.name for p in (outbox / "processed").iterdir()) == ["apps.jsonl", "nightly.csv"]


def test_bad_rows_and_lines_are_dead_lettered_with_their_reason_and_the_good_ones_flow(
    isolated: Settings, tmp_path: Path, maps: ConnectorMaps
) -> None:
    outbox, _ = outbox_with(tmp_path, "malformed.csv", "malformed.jsonl")
    with connector(isolated, outbox, maps) as conn:
        summary = conn.run_once()
    assert (summary.files_done, summary.events, summary.dead_letters) == (2, 2, 13)
    letters = [json.loads(r.value) for r in committed(isolated, isolated.topics.dlq)]
    reasons = {(letter["topic"], letter["offset"]): letter["error"] for letter in letters}
    csv_topic, jsonl_topic = "file:synclog/malformed.csv", "file:synclog/malformed.jsonl"
    # A pupil id that is no identifier passes the connector and is caught by the event's own validation.
    assert reasons.pop((csv_topic, 7)).startswith("subjects.0.id: String should match pattern")
    assert reasons == {
        (csv_topic, 2): "no pupils synced",
        (csv_topic, 3): "timestamp 'yesterday' is not ISO 8601",
        (csv_topic, 4): "has 3 fields, the header has 4",
        (csv_topic, 5): "no fields synced",
        (csv_topic, 6): "no supplier",
        (jsonl_topic, 2): "not JSON: Expecting ',' delimiter at column 103",
        (jsonl_topic, 3): "expected a JSON object, got list",
        (jsonl_topic, 4): "missing key(s) pupils",
        (jsonl_topic, 5): "pupils and fields must be arrays of strings",
        (jsonl_topic, 6): "no pupils synced",
        (jsonl_topic, 7): "timestamp '01/09/2026 02:00' is not ISO 8601",
        (jsonl_topic, 8): "not UTF-8 at byte 52 of the line",
    }
    assert all(letter["stage"] == "connector" for letter in letters)
    flows = [json.loads(r.value) for r in committed(isolated, isolated.topics.flows)]
    assert sorted((f["recipient"], f["subjects"][0]["id"]) for f in flows) == [("sims", P1), ("sims", P1)]


def test_a_file_with_the_wrong_header_is_refused_whole_with_its_reason(
    isolated: Settings, tmp_path: Path, maps: ConnectorMaps
) -> None:
    outbox, _ = outbox_with(tmp_path, "wrong-header.csv")
    with connector(isolated, outbox, maps) as conn:
        summary = conn.run_once()
    assert (summary.files_rejected, summary.events) == (1, 0)
    reason = (outbox / "rejected" / "wrong-header.csv.reason.txt").read_text(encoding="utf-8")
    assert reason == "wrong-header.csv: header lacks column(s) pupils, supplier, timestamp\n"
    assert committed(isolated, isolated.topics.flows) == []
    [letter] = [json.loads(r.value) for r in committed(isolated, isolated.topics.dlq)]
    assert (letter["offset"], letter["error"]) == (0, reason.strip())


def write_big_sync_log(path: Path, rows: int, pupils_per_row: int) -> None:
    lines = ["timestamp,supplier,pupils,fields,sync_id"]
    for i in range(rows):
        pupils = ";".join(f"H{(i * pupils_per_row + j) % 900_000:012d}" for j in range(pupils_per_row))
        lines.append(f"2026-09-01T02:{i % 60:02d}:00,SIMS,{pupils},upn;forename;surname;dob,run-{i}")
    # Written elsewhere and renamed in, as the outbox contract asks.
    staging = path.with_name(path.name + ".part")
    staging.write_text("\n".join(lines) + "\n", encoding="utf-8")
    staging.rename(path)


def test_kill_9_mid_backfill_then_restart_delivers_every_event_exactly_once(isolated: Settings, tmp_path: Path) -> None:
    rows = 20_000
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    big = outbox / "backfill.csv"
    write_big_sync_log(big, rows, pupils_per_row=30)
    digest = file_digest(big)[:16]
    log = tmp_path / "connect.log"

    delivered_before = kill_after_first_commit(
        isolated, isolated.topics.flows, lambda: connect_process(isolated, "synclog", outbox, log)
    )
    assert 0 < delivered_before < rows, f"kill landed outside the backfill ({delivered_before} of {rows} delivered)"
    assert big.exists()  # the file was not finished, so it was not moved

    second = connect_process(isolated, "synclog", outbox, log)
    assert second.wait(timeout=300) == 0, log.read_text(encoding="utf-8")

    events = [json.loads(r.value) for r in committed(isolated, isolated.topics.flows)]
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)) == rows
    assert set(ids) == {f"synclog:{digest}:{n}:0" for n in range(1, rows + 1)}
    assert sorted(e["source"]["sequence"] for e in events) == list(range(rows))
    checkpoint = read_checkpoint(isolated.kafka_bootstrap, isolated.topics.checkpoints, "synclog")
    assert checkpoint.next_sequence == rows
    assert (outbox / "processed" / "backfill.csv").exists()
    output = log.read_text(encoding="utf-8")
    assert f"backfill.csv: done, {rows} records" in output
    emitted_on_restart = int(output.rsplit(" event(s) emitted", 1)[0].rsplit(" ", 1)[1])
    assert emitted_on_restart <= rows - delivered_before
