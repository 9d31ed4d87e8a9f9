"""Sync-log connector: rows and JSON lines → flows to the supplier, failing closed on what nobody mapped."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from producers.filesource import Draft, FileRejectedError, Record
from producers.synclog import SyncLogFormat, file_format
from schemas.connector_maps import ConnectorMaps
from schemas.events import DataFlow

BST = timezone(timedelta(hours=1))

SIMS_ROUTE = {
    "recipient": "sims",
    "purpose": "mis_sync",
    "lawful_basis": "public_task",
    "condition": "statutory_purposes_para6",
    "channel": "encrypted_api",
    "destination_country": "GB",
    "transfer_safeguard": "none",
}
QUIZ_ROUTE = {
    "recipient": "quizcloud",
    "purpose": "edtech",
    "lawful_basis": "public_task",
    "condition": None,
    "channel": "encrypted_api",
    "destination_country": "US",
    "transfer_safeguard": "none",
}
UNREGISTERED_FOOTING = {
    "purpose": "mis_sync",
    "lawful_basis": None,
    "condition": None,
    "channel": "unspecified",
    "destination_country": "GB",
    "transfer_safeguard": "none",
}


def maps() -> ConnectorMaps:
    """Connector maps of this test's own, so policy edits never move its expectations."""
    return ConnectorMaps.model_validate(
        {
            "ctf": {
                "schools": [{"laestab": "9372001", "name": "Hawthorn", "recipient": "hawthorn-primary"}],
                "external": {"purpose": "ctf_transfer"},
                "internal": {"purpose": "internal_transfer"},
                "core_categories": ["identity.upn"],
                "containers": {"Attendance": ["attendance"]},
            },
            "sync": {
                "fields": {
                    "upn": "identity.upn",
                    "Forename": "identity.name",
                    "surname": "identity.name",
                    "dob": "identity.dob",
                },
                "suppliers": [
                    {"names": ["SIMS", "Capita SIMS"], "route": {k: v for k, v in SIMS_ROUTE.items() if v is not None}},
                    {
                        "names": ["QuizCloud"],
                        "route": {k: v for k, v in QUIZ_ROUTE.items() if v is not None},
                        # QuizCloud calls the year group "cohort"; for everyone else it is not a known field.
                        "fields": {"cohort": "identity.class", "dob": "identity.dob_year"},
                    },
                ],
            },
            "mail": {
                "internal_domains": ["trust.org.uk"],
                "unknown_route": {"purpose": "school_updates"},
                "labels": {"Public": []},
            },
        }
    )


@pytest.fixture
def fmt() -> SyncLogFormat:
    return file_format(maps())


def flow(route: dict[str, Any], occurred_at: datetime, pupils: list[str], categories: list[str]) -> Draft:
    return Draft(
        DataFlow,
        {
            **route,
            "occurred_at": occurred_at,
            "subjects": [{"kind": "pupil", "id": p} for p in pupils],
            "categories": categories,
            "record_count": len(pupils),
        },
    )


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def read(fmt: SyncLogFormat, path: Path, position: int = 0, line: int = 0) -> list[Record]:
    return list(fmt.records(path, position, line))


HEADER = "timestamp,supplier,pupils,fields,sync_id\n"


def test_a_row_is_one_flow_on_the_suppliers_route_with_its_fields_categories(
    fmt: SyncLogFormat, tmp_path: Path
) -> None:
    path = write(tmp_path / "s.csv", HEADER + "2026-09-01T02:00:00+01:00,SIMS,P1;P2,upn;forename;surname,run-1\n")
    [record] = read(fmt, path)
    assert record.error is None
    assert record.drafts == (
        flow(SIMS_ROUTE, datetime(2026, 9, 1, 2, tzinfo=BST), ["P1", "P2"], ["identity.upn", "identity.name"]),
    )
    assert (record.line, record.position) == (1, path.stat().st_size)


def test_every_draft_is_a_valid_flow_once_the_engine_adds_the_envelope(fmt: SyncLogFormat, tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", HEADER + "2026-09-01T02:00:00,Zap App,P1,upn;shoe size,\n")
    [record] = read(fmt, path)
    envelope = {"event_id": "s:ab:1:0", "emitted_at": datetime.now(UTC), "source": {"connector": "s", "sequence": 0}}
    event = DataFlow.model_validate({**envelope, **record.drafts[0].fields})
    assert event.recipient == "unregistered:zap-app"
    assert event.categories == ["identity.upn", "unmapped.shoe-size"]
    assert event.occurred_at == datetime(2026, 9, 1, 1, tzinfo=UTC)


def test_a_time_without_an_offset_is_london_time_in_summer_and_in_winter(fmt: SyncLogFormat, tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.csv",
        HEADER + "2026-07-01T09:00:00,SIMS,P1,upn,\n"
        "2026-12-01T09:00:00,SIMS,P1,upn,\n"
        "2026-12-01T09:00:00Z,SIMS,P1,upn,\n",
    )
    times = [r.drafts[0].fields["occurred_at"].astimezone(UTC) for r in read(fmt, path)]
    assert times == [
        datetime(2026, 7, 1, 8, tzinfo=UTC),
        datetime(2026, 12, 1, 9, tzinfo=UTC),
        datetime(2026, 12, 1, 9, tzinfo=UTC),
    ]


def test_supplier_names_and_field_names_match_case_insensitively_and_a_suppliers_own_fields_come_first(
    fmt: SyncLogFormat, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "s.csv",
        HEADER + "2026-12-01T09:00:00,  capita sims ,P1,FORENAME;Surname,\n"
        "2026-12-01T09:00:00,quizcloud,P1,cohort;DOB;forename,\n",
    )
    first, second = read(fmt, path)
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert first.drafts == (flow(SIMS_ROUTE, at, ["P1"], ["identity.name"]),)
    assert second.drafts == (flow(QUIZ_ROUTE, at, ["P1"], ["identity.class", "identity.dob_year", "identity.name"]),)


def test_an_unknown_supplier_is_an_unregistered_recipient_with_a_footing_that_claims_nothing(
    fmt: SyncLogFormat, tmp_path: Path
) -> None:
    path = write(tmp_path / "s.csv", HEADER + "2026-12-01T09:00:00,Clàss Dojo (EU),P1,upn,\n")
    [record] = read(fmt, path)
    route = {"recipient": "unregistered:class-dojo-eu", **UNREGISTERED_FOOTING}
    assert record.drafts == (flow(route, datetime(2026, 12, 1, 9, tzinfo=UTC), ["P1"], ["identity.upn"]),)


def test_an_unmapped_field_is_an_unmapped_category_never_a_drop(fmt: SyncLogFormat, tmp_path: Path) -> None:
    # `cohort` is QuizCloud's own field: for SIMS it is as unknown as `Medical Notes`.
    path = write(tmp_path / "s.csv", HEADER + "2026-12-01T09:00:00,SIMS,P1,Medical Notes;cohort;upn;medical notes,\n")
    [record] = read(fmt, path)
    assert record.drafts[0].fields["categories"] == ["unmapped.medical-notes", "unmapped.cohort", "identity.upn"]


def test_pupils_are_trimmed_and_counted_once(fmt: SyncLogFormat, tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", HEADER + "2026-12-01T09:00:00,SIMS, P1 ;P2;;P1,upn,\n")
    [record] = read(fmt, path)
    assert record.drafts == (flow(SIMS_ROUTE, datetime(2026, 12, 1, 9, tzinfo=UTC), ["P1", "P2"], ["identity.upn"]),)


def test_bad_csv_rows_are_error_records_with_their_reason_and_the_rest_is_read(
    fmt: SyncLogFormat, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "s.csv",
        HEADER + "2026-12-01T09:00:00,SIMS,,upn,\n"
        "yesterday,SIMS,P1,upn,\n"
        "2026-12-01T09:00:00,SIMS,P1\n"
        "2026-12-01T09:00:00,SIMS,P1,;,\n"
        "2026-12-01T09:00:00, ,P1,upn,\n"
        "2026-12-01T09:00:00,SIMS,P9,upn,\n",
    )
    records = read(fmt, path)
    assert [(r.line, r.error) for r in records] == [
        (1, "no pupils synced"),
        (2, "timestamp 'yesterday' is not ISO 8601"),
        (3, "has 3 fields, the header has 5"),
        (4, "no fields synced"),
        (5, "no supplier"),
        (6, None),
    ]
    assert '"timestamp": "yesterday"' in records[1].raw


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"time,app,pupil_ids,fields\nT,SIMS,P1,upn\n", "lacks column(s) pupils, supplier, timestamp"),
        (b"", "empty file"),
        (b"timestamp,supplier,pupils,fi\xe9lds\n", "not UTF-8"),
    ],
)
def test_a_file_without_the_sync_log_header_is_refused_whole(
    fmt: SyncLogFormat, tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(content)
    with pytest.raises(FileRejectedError, match=re.escape(reason)):
        read(fmt, path)


def test_a_header_only_file_with_the_columns_in_any_order_has_no_records(fmt: SyncLogFormat, tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", "\ufeffFields,Pupils,Supplier,Timestamp,Extra\n")
    assert read(fmt, path) == []


def test_json_lines_give_the_same_flows_as_csv(fmt: SyncLogFormat, tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.jsonl",
        '{"timestamp": "2026-09-01T02:00:00", "supplier": "SIMS", "pupils": ["P1", " P2", "P1"], '
        '"fields": ["upn", "Forename"], "sync_id": 7, "extra": null}\n',
    )
    [record] = read(fmt, path)
    assert record.drafts == (
        flow(SIMS_ROUTE, datetime(2026, 9, 1, 2, tzinfo=BST), ["P1", "P2"], ["identity.upn", "identity.name"]),
    )
    assert record.raw.startswith('{"timestamp"')


def test_bad_json_lines_are_error_records_with_their_reason(fmt: SyncLogFormat, tmp_path: Path) -> None:
    good = '{"timestamp": "2026-09-01T02:00:00", "supplier": "SIMS", "pupils": ["P1"], "fields": ["upn"]}'
    lines = [
        good[:-1],
        '["P1"]',
        '{"timestamp": "2026-09-01T02:00:00", "supplier": "SIMS", "fields": ["upn"]}',
        good.replace('["P1"]', '"P1"'),
        good.replace('"SIMS"', "3"),
        good.replace('["P1"]', "[]"),
        good.replace('["upn"]', '[""]'),
        good.replace("2026-09-01T02:00:00", "01/09/2026"),
    ]
    path = tmp_path / "s.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n" + good.replace("SIMS", "Zo\xeb").encode("latin-1") + b"\n")
    records = read(fmt, path)
    assert [(r.line, r.error) for r in records] == [
        (1, "not JSON: Expecting ',' delimiter at column 93"),
        (2, "expected a JSON object, got list"),
        (3, "missing key(s) pupils"),
        (4, "pupils and fields must be arrays of strings"),
        (5, "timestamp and supplier must be strings"),
        (6, "no pupils synced"),
        (7, "no fields synced"),
        (8, "timestamp '01/09/2026' is not ISO 8601"),
        (9, "not UTF-8 at byte 52 of the line"),
    ]
    assert records[0].raw == good[:-1]
    assert "Zo\ufffd" in records[8].raw


def test_json_line_positions_are_exact_byte_offsets_so_a_resume_reads_exactly_the_rest(
    fmt: SyncLogFormat, tmp_path: Path
) -> None:
    row = '{{"timestamp": "2026-09-01T02:00:00Z", "supplier": "SIMS", "pupils": ["P{}"], "fields": ["upn"]}}'
    # A BOM, CRLF endings, a blank line, non-ASCII text and no final newline: each would skew a character count.
    content = "\ufeff" + row.format(1) + "\r\n\r\n" + row.format(2).replace("SIMS", "Sìms") + "\n" + row.format(3)
    path = write(tmp_path / "s.jsonl", content)
    records = read(fmt, path)
    assert [r.line for r in records] == [1, 3, 4]
    assert records[-1].position == path.stat().st_size
    for done, record in enumerate(records):
        rest = read(fmt, path, record.position, record.line)
        assert rest == records[done + 1 :]


def test_csv_resume_from_a_records_position_reads_exactly_the_rest(fmt: SyncLogFormat, tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", HEADER + "".join(f"2026-12-01T09:00:00,SIMS,P{i},upn,\n" for i in range(5)))
    records = read(fmt, path)
    assert read(fmt, path, records[1].position, records[1].line) == records[2:]


def test_the_connector_reads_csv_and_json_lines() -> None:
    assert file_format(maps()).patterns == ("*.csv", "*.jsonl")
