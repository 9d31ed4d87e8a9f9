"""The `ctf` connector on a real broker: flows exactly as expected, refusals aside, exactly once across a kill -9."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from producers.checkpoint import read_checkpoint
from producers.ctf import file_format
from producers.filesource import FileConnector, Record, file_digest
from pupilflow.children import settings_env
from schemas.connector_maps import ConnectorMaps
from schemas.events import DataFlow
from schemas.settings import Settings

from .conftest import committed, wait_until

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "ctf"
CORE = ["identity.dob", "identity.name", "identity.upn"]
BASIC_DETAILS = ["ethnicity", "first_language", "fsm_eligibility", "health", "identity.gender", "service_child"]
FOOTING = {"lawful_basis": "public_task", "condition": "statutory_purposes_para6", "channel": "s2s"}


def connector(settings: Settings, outbox: Path, maps: ConnectorMaps) -> FileConnector:
    return FileConnector("ctf", file_format(maps), outbox, settings.kafka_bootstrap, settings.topics)


def flows_in_kafka(settings: Settings, idle_ms: int = 1500) -> list[Any]:
    return committed(settings, settings.topics.flows, idle_ms)


def test_sample_ctfs_become_exactly_the_expected_flows_keyed_by_first_pupil(
    isolated: Settings, tmp_path: Path, maps: ConnectorMaps
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    internal = shutil.copy(DATA / "good" / "9372001_CTF_9374001_001.xml", outbox)
    external = shutil.copy(DATA / "good" / "9374001_CTF_9374102_001.xml", outbox)
    digests = {name: file_digest(Path(p))[:16] for name, p in (("internal", internal), ("external", external))}
    with connector(isolated, outbox, maps) as conn:
        summary = conn.run_once()
    assert (summary.files_done, summary.files_rejected, summary.events, summary.dead_letters) == (2, 0, 2, 0)

    records = flows_in_kafka(isolated)
    by_id = {json.loads(r.value)["event_id"]: r for r in records}
    assert len(records) == len(by_id) == 2
    expected = {
        f"ctf:{digests['internal']}:1:0": {
            "occurred_at": datetime(2025, 7, 18, 13, 32, 5, tzinfo=UTC),
            "recipient": "rose-valley",
            "subjects": [
                {"kind": "pupil", "id": "B937200119001"},
                {"kind": "pupil", "id": "Q937200119002"},
                {"kind": "pupil", "id": "E937200119003"},
            ],
            "categories": sorted(
                [*CORE, *BASIC_DETAILS, "assessment", "attendance", "identity.address", "parent_contact", "sen"]
            ),
            "purpose": "internal_transfer",
            "record_count": 3,
            **FOOTING,
        },
        f"ctf:{digests['external']}:1:0": {
            "occurred_at": datetime(2026, 1, 12, 9, 5, tzinfo=UTC),
            "recipient": "school:9374102",
            "subjects": [{"kind": "pupil", "id": "K937400113011"}],
            "categories": sorted([*CORE, *BASIC_DETAILS, "attendance", "parent_contact"]),
            "purpose": "ctf_transfer",
            "record_count": 1,
            **FOOTING,
        },
    }
    assert set(by_id) == set(expected)
    for event_id, record in by_id.items():
        flow = DataFlow.model_validate_json(record.value)
        assert flow.model_dump(include=set(expected[event_id])) == expected[event_id]
        assert record.key == flow.partition_key() == flow.subjects[0].id.encode()
        assert flow.source.connector == "ctf"
    assert sorted(json.loads(r.value)["source"]["sequence"] for r in records) == [0, 1]
    assert sorted(p.name for p in (outbox / "processed").iterdir()) == [Path(internal).name, Path(external).name]
    assert committed(isolated, isolated.topics.dlq) == []


def test_bad_ctfs_are_moved_aside_with_their_reason_and_dead_lettered_and_emit_nothing(
    isolated: Settings, tmp_path: Path, maps: ConnectorMaps
) -> None:
    outbox = tmp_path / "outbox"
    shutil.copytree(DATA / "bad", outbox)
    names = sorted(p.name for p in outbox.iterdir())
    with connector(isolated, outbox, maps) as conn:
        summary = conn.run_once()
    assert (summary.files_done, summary.files_rejected, summary.events) == (0, len(names), 0)
    assert flows_in_kafka(isolated) == []
    rejected = outbox / "rejected"
    assert sorted(p.name for p in rejected.glob("*.xml")) == names
    reasons = {name: (rejected / f"{name}.reason.txt").read_text(encoding="utf-8").strip() for name in names}
    assert reasons["9372001_CTF_9379999_001.xml"] == (
        "9372001_CTF_9379999_001.xml: <DestSchool> 9379999 is not a school in ctf.schools"
    )
    assert reasons["missing-upn.xml"] == "missing-upn.xml: <Pupil> 2 has no <UPN>"
    assert reasons["truncated.xml"].startswith("truncated.xml: not well-formed XML")
    assert reasons["entity-bomb.xml"].startswith("entity-bomb.xml: refused XML (DTDForbidden)")
    assert reasons["external-entity.xml"].startswith("external-entity.xml: refused XML (DTDForbidden)")
    letters = [json.loads(r.value) for r in committed(isolated, isolated.topics.dlq)]
    assert {letter["topic"]: letter["error"] for letter in letters} == {
        f"file:ctf/{name}": reason for name, reason in reasons.items()
    }
    assert {(letter["stage"], letter["offset"]) for letter in letters} == {("connector", 0)}
    checkpoint = read_checkpoint(isolated.kafka_bootstrap, isolated.topics.checkpoints, "ctf")
    assert checkpoint.next_sequence == 0
    assert sorted(p.rejected or "" for p in checkpoint.files.values()) == sorted(reasons.values())


class DiesAfterTheRecord:
    """The CTF format, but the process dies right after the file's one record is read (and, at batch 1, committed)."""

    patterns: tuple[str, ...] = ("*.xml",)

    def __init__(self, maps: ConnectorMaps) -> None:
        self._inner = file_format(maps)

    def records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        yield from self._inner.records(path, position, line)
        raise RuntimeError("killed before the file was marked done")


def test_a_file_whose_flow_committed_before_a_crash_is_finished_without_a_second_flow(
    isolated: Settings, tmp_path: Path, maps: ConnectorMaps
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    path = Path(shutil.copy(DATA / "good" / "9374001_CTF_9374102_001.xml", outbox))
    event_id = f"ctf:{file_digest(path)[:16]}:1:0"
    dying = FileConnector(
        "ctf", DiesAfterTheRecord(maps), outbox, isolated.kafka_bootstrap, isolated.topics, batch_size=1
    )
    with pytest.raises(RuntimeError), dying:
        dying.run_once()
    assert path.exists()
    assert len(flows_in_kafka(isolated)) == 1
    with connector(isolated, outbox, maps) as conn:
        summary = conn.run_once()
    assert (summary.files_done, summary.events) == (1, 0)
    events = [json.loads(r.value) for r in flows_in_kafka(isolated)]
    assert [(e["event_id"], e["source"]["sequence"]) for e in events] == [(event_id, 0)]
    assert (outbox / "processed" / path.name).exists()
    assert read_checkpoint(isolated.kafka_bootstrap, isolated.topics.checkpoints, "ctf").next_sequence == 1


# -- kill -9 mid-backfill ---------------------------------------------------------------------------------

SCHOOLS = (("937", "2001"), ("937", "4001"))
DESTINATIONS = (("937", "4001"), ("937", "2105"), ("937", "3301"), ("937", "4102"), ("888", "4010"))


def write_ctf(outbox: Path, number: int) -> tuple[Path, str, int]:
    """A CTF of 1-4 pupils with UPNs no other file has; returns its path, first UPN and pupil count."""
    src, dest = SCHOOLS[number % 2], DESTINATIONS[number % len(DESTINATIONS)]
    if dest == src:
        dest = ("937", "2001")
    upns = [f"A{number:08d}{i:03d}{i}" for i in range(1 + number % 4)]
    pupils = "".join(
        f"<Pupil><UPN>{upn}</UPN><Surname>Pupil{number}</Surname><Forename>N{i}</Forename><DOB>2014-02-03</DOB>"
        f"<BasicDetails><NCyearActual>6</NCyearActual></BasicDetails>"
        f"<Attendance><YearData><Year>2025</Year><SessionsPossible>300</SessionsPossible></YearData></Attendance>"
        "</Pupil>"
        for i, upn in enumerate(upns)
    )
    text = (
        '<?xml version="1.0" encoding="UTF-8"?><CTfile><Header>'
        "<Document><Type>CTF</Type><Stage>Transfer</Stage></Document><CTFversion>25.0</CTFversion>"
        f"<DateTime>2025-07-{1 + number % 28:02d}T10:{number % 60:02d}:00</DateTime>"
        "<DocumentName>Common Transfer File</DocumentName>"
        f"<SourceSchool><LEA>{src[0]}</LEA><Estab>{src[1]}</Estab><SchoolName>Trust school</SchoolName>"
        "<AcademicYear>2024</AcademicYear></SourceSchool>"
        f"<DestSchool><LEA>{dest[0]}</LEA><Estab>{dest[1]}</Estab></DestSchool><SuppID>s{number}</SuppID>"
        f"</Header><CTFpupilData>{pupils}</CTFpupilData></CTfile>"
    )
    final = outbox / f"{src[0]}{src[1]}_CTF_{dest[0]}{dest[1]}_{number:03d}.xml"
    # Written elsewhere and renamed, as the outbox contract asks.
    partial = final.with_name(final.name + ".part")
    partial.write_text(text, encoding="utf-8")
    partial.rename(final)
    return final, upns[0], len(upns)


def connect_once(isolated: Settings, outbox: Path, log: Path) -> subprocess.Popen[bytes]:
    # A CTF is one record and the engine commits at every file's end, so a transaction never spans files;
    # --batch 1 adds a commit between the flow and the file's "done" mark, a second place for the kill to land.
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pupilflow.cli",
                "connect",
                "ctf",
                "--once",
                "--batch",
                "1",
                "--outbox",
                str(outbox),
            ],
            cwd=ROOT,
            env=settings_env(isolated),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_kill_9_mid_backfill_then_restart_delivers_every_flow_exactly_once(isolated: Settings, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    files = [write_ctf(outbox, n) for n in range(400)]
    first_upn = {f"ctf:{file_digest(path)[:16]}:1:0": upn for path, upn, _ in files}
    pupils = {f"ctf:{file_digest(path)[:16]}:1:0": count for path, _, count in files}
    log = tmp_path / "connect.log"

    first = connect_once(isolated, outbox, log)
    try:
        # A file reaches processed/ only after its flow's transaction committed, and watching the folder is
        # far quicker than reading the topic, so the kill lands early in the backfill.
        wait_until(
            lambda: first.poll() is not None or len(list((outbox / "processed").glob("*.xml"))) >= 5,
            timeout=120,
            interval=0.02,
            what="the first files of the backfill delivered",
        )
        assert first.poll() is None, f"the backfill finished before it could be killed:\n{log.read_text()}"
        first.send_signal(signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    at_kill = flows_in_kafka(isolated)
    assert 5 <= len(at_kill) < len(files)
    assert any(p.suffix == ".xml" for p in outbox.iterdir()), "some files must still wait in the outbox"

    second = connect_once(isolated, outbox, log)
    assert second.wait(timeout=300) == 0, log.read_text()

    records = flows_in_kafka(isolated)
    events = [json.loads(r.value) for r in records]
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)) == len(files)
    assert set(ids) == set(first_upn)
    assert sorted(e["source"]["sequence"] for e in events) == list(range(len(files)))
    for record, event in zip(records, events, strict=True):
        assert record.key == first_upn[event["event_id"]].encode()
        assert event["record_count"] == len(event["subjects"]) == pupils[event["event_id"]]
    # What was committed before the kill is still there, unchanged and not repeated.
    assert {json.loads(r.value)["event_id"] for r in at_kill} <= set(ids)
    assert not list(outbox.glob("*.xml"))
    assert len(list((outbox / "processed").glob("*.xml"))) == len(files)
    assert not list((outbox / "rejected").iterdir())
    checkpoint = read_checkpoint(isolated.kafka_bootstrap, isolated.topics.checkpoints, "ctf")
    assert checkpoint.next_sequence == len(files)
