"""The `mailtrace` connector on a real broker: mail that leaves → exact flows; bad rows and files refused with why."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from producers.checkpoint import read_checkpoint
from producers.filesource import FileConnector, file_digest
from producers.mailtrace import file_format
from schemas.connector_maps import ConnectorMaps
from schemas.settings import Settings

from .conftest import committed

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "mailtrace"
P1, P2, P3 = "H801200000011", "H801200000022", "H801200000033"


def run(settings: Settings, tmp_path: Path, maps: ConnectorMaps, name: str) -> tuple[Path, str, Any]:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    digest = file_digest(Path(shutil.copy(DATA / name, outbox)))
    conn = FileConnector("mailtrace", file_format(maps), outbox, settings.kafka_bootstrap, settings.topics)
    with conn:
        summary = conn.run_once()
    return outbox, digest, summary


def flow_view(event: dict[str, Any]) -> tuple[Any, ...]:
    """What a flow says, without the send time."""
    return (
        event["event_id"],
        event["recipient"],
        event["purpose"],
        event["channel"],
        datetime.fromisoformat(event["occurred_at"]),
        [s["id"] for s in event["subjects"]],
        event["categories"],
    )


def test_sample_trace_becomes_one_flow_per_external_recipient_of_mail_that_leaves(
    isolated: Settings, tmp_path: Path, maps: ConnectorMaps
) -> None:
    outbox, digest, summary = run(isolated, tmp_path, maps, "outbound.csv")
    assert (summary.files_done, summary.events, summary.dead_letters) == (1, 6, 0)
    records = committed(isolated, isolated.topics.flows)
    events = [json.loads(r.value) for r in records]
    eid = f"mailtrace:{digest[:16]}"
    sen = ["identity", "sen"]
    personal = ["identity.name", "parent_contact"]
    ehcp_at = datetime(2026, 10, 5, 9, tzinfo=UTC)
    tutor_at = datetime(2026, 12, 5, 13, tzinfo=UTC)
    # Message 1 stays inside the Trust and message 4 is labelled Public: neither is a flow.
    assert sorted(flow_view(e) for e in events) == sorted(
        [
            (f"{eid}:2:0", "local-authority", "safeguarding", "encrypted_email", ehcp_at, [P1, P2], sen),
            (f"{eid}:2:1", "school-nurse", "public_health_programme", "encrypted_email", ehcp_at, [P1, P2], sen),
            (
                f"{eid}:3:0",
                "email:gmail.com",
                "school_updates",
                "email",
                datetime(2026, 10, 5, 10, tzinfo=UTC),
                ["unidentified:m3.trip@hawthornprimary.org.uk"],
                ["unclassified"],
            ),
            (f"{eid}:5:0", "email:tutors.example.com", "school_updates", "email", tutor_at, [P3], personal),
            (f"{eid}:5:1", "local-authority", "safeguarding", "encrypted_email", tutor_at, [P3], personal),
            (
                f"{eid}:6:0",
                "email:research.example.org",
                "school_updates",
                "email",
                datetime(2026, 12, 5, 14, tzinfo=UTC),
                [P3],
                ["unclassified"],
            ),
        ]
    )
    assert sorted(e["source"]["sequence"] for e in events) == list(range(6))
    assert (outbox / "processed" / "outbound.csv").exists()
    # The messages that made no flow still moved the checkpoint: the file is done, not re-read.
    checkpoint = read_checkpoint(isolated.kafka_bootstrap, isolated.topics.checkpoints, "mailtrace")
    assert checkpoint.files[digest].done
    assert checkpoint.files[digest].line == 6


def test_bad_rows_are_dead_lettered_with_their_reason_and_the_good_ones_flow(
    isolated: Settings, tmp_path: Path, maps: ConnectorMaps
) -> None:
    _, _, summary = run(isolated, tmp_path, maps, "malformed.csv")
    assert (summary.files_done, summary.events, summary.dead_letters) == (1, 1, 5)
    letters = [json.loads(r.value) for r in committed(isolated, isolated.topics.dlq)]
    assert {letter["offset"]: letter["error"] for letter in letters} == {
        2: "time '5 Oct 2026 09:00' is not ISO 8601",
        3: "no recipients",
        4: "recipient 'not an address' is not an email address",
        5: "has 4 fields, the header has 7",
        6: "names no pupil and has no message_id to stand for them",
    }
    assert {letter["topic"] for letter in letters} == {"file:mailtrace/malformed.csv"}
    [flow] = [json.loads(r.value) for r in committed(isolated, isolated.topics.flows)]
    assert (flow["recipient"], flow["subjects"], flow["categories"]) == (
        "parentpay",
        [{"kind": "pupil", "id": P1}],
        ["identity.name", "parent_contact"],
    )


def test_a_file_with_the_wrong_header_is_refused_whole_with_its_reason(
    isolated: Settings, tmp_path: Path, maps: ConnectorMaps
) -> None:
    outbox, _, summary = run(isolated, tmp_path, maps, "wrong-header.csv")
    assert (summary.files_rejected, summary.events) == (1, 0)
    reason = "wrong-header.csv: header lacks column(s) attachments, message_id, recipients, sender, sensitivity"
    assert (outbox / "rejected" / "wrong-header.csv.reason.txt").read_text(encoding="utf-8") == reason + "\n"
    assert committed(isolated, isolated.topics.flows) == []
    [letter] = [json.loads(r.value) for r in committed(isolated, isolated.topics.dlq)]
    assert (letter["offset"], letter["error"]) == (0, reason)
