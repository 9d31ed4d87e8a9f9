"""MIS pupil exports: pupil facts once per pupil, a standing per contact, London dates, and every refusal."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from producers.filesource import Draft, FileRejectedError, Record
from producers.mis_export import MisExport, file_format
from schemas.connector_maps import ConnectorMaps
from schemas.events import BirthDateRecorded, ParentalResponsibilityRecorded, PupilEnrolled, PupilLeft

ROOT = Path(__file__).resolve().parents[3]
HAWTHORN = ROOT / "tests" / "data" / "mis" / "hawthorn-primary-2025-09.csv"
ROSE_VALLEY = ROOT / "tests" / "data" / "mis" / "rose-valley-2025-09.csv"


@pytest.fixture(scope="module")
def fmt(maps: ConnectorMaps) -> MisExport:
    return file_format(maps)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def pupil(pid: str) -> dict[str, str]:
    return {"kind": "pupil", "id": pid}


# 07:00 London on 1 September 2025 (BST).
EXPORTED = utc(2025, 9, 1, 6, 0)


def born(pid: str, day: date, at: datetime = EXPORTED) -> Draft:
    return Draft(BirthDateRecorded, {"occurred_at": at, "subject": pupil(pid), "birth_date": day})


def enrolled(pid: str, at: datetime, school: str = "hawthorn-primary") -> Draft:
    return Draft(PupilEnrolled, {"occurred_at": at, "subject": pupil(pid), "school": school})


def standing(
    pid: str, person: str, relationship: str, pr: bool, care: bool, delegated: bool = False, at: datetime = EXPORTED
) -> Draft:
    actor = {
        "id": person,
        "relationship": relationship,
        "has_parental_responsibility": pr,
        "has_care": care,
        "delegated_authority": delegated,
    }
    return Draft(ParentalResponsibilityRecorded, {"occurred_at": at, "subject": pupil(pid), "person": actor})


def left(pid: str, destination: str | None, last: bool) -> Draft:
    fields = {
        # 22 July 2025 starts at 23:00 UTC the day before (BST).
        "occurred_at": utc(2025, 7, 21, 23, 0),
        "subject": pupil(pid),
        "school": "hawthorn-primary",
        "destination_school": destination,
        "last_trust_school": last,
    }
    return Draft(PupilLeft, fields)


EXPECTED_HAWTHORN = [
    [
        born("P1001", date(2016, 4, 12)),
        enrolled("P1001", utc(2020, 9, 6, 23, 0)),
        standing("P1001", "mum-1001", "mother", pr=True, care=True),
    ],
    [standing("P1001", "step-1001", "step_parent", pr=False, care=True)],
    [
        born("P1003", date(2017, 1, 30)),
        enrolled("P1003", utc(2021, 9, 5, 23, 0)),
        standing("P1003", "carer-1003", "foster_carer", pr=False, care=True, delegated=True),
    ],
    [
        born("P1004", date(2014, 3, 3)),
        enrolled("P1004", utc(2018, 9, 2, 23, 0)),
        left("P1004", "school:9374102", last=True),
    ],
    [
        born("P1005", date(2014, 6, 1)),
        enrolled("P1005", utc(2018, 9, 2, 23, 0)),
        left("P1005", "rose-valley", last=False),
        standing("P1005", "mum-1005", "mother", pr=True, care=True),
    ],
]

HEADER = [
    "pupil_id",
    "school",
    "dob",
    "enrolled_on",
    "left_on",
    "destination_school",
    "contact_id",
    "contact_relationship",
    "contact_parental_responsibility",
    "contact_has_care",
    "exported_at",
]
GOOD = {
    "pupil_id": "P1",
    "school": "rose-valley",
    "dob": "2012-05-01",
    "enrolled_on": "2023-09-04",
    "left_on": "",
    "destination_school": "",
    "contact_id": "mum-1",
    "contact_relationship": "mother",
    "contact_parental_responsibility": "yes",
    "contact_has_care": "yes",
    "exported_at": "2026-01-10T07:00:00",
}


def write(path: Path, rows: list[dict[str, str]], header: list[str] = HEADER) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read(fmt: MisExport, tmp_path: Path, *rows: dict[str, str]) -> list[Record]:
    return list(fmt.records(write(tmp_path / "export.csv", list(rows)), 0, 0))


def kinds(record: Record) -> list[str]:
    return [d.model.__name__ for d in record.drafts]


def test_the_sample_export_yields_exactly_these_facts(fmt: MisExport) -> None:
    records = list(fmt.records(HAWTHORN, 0, 0))
    assert [r.error for r in records] == [None] * 5
    assert [list(r.drafts) for r in records] == EXPECTED_HAWTHORN


def test_the_second_sample_gives_each_pupil_its_facts_once(fmt: MisExport) -> None:
    at = utc(2025, 9, 8, 6, 0)
    records = list(fmt.records(ROSE_VALLEY, 0, 0))
    assert [list(r.drafts) for r in records] == [
        [
            born("P1002", date(2011, 10, 3), at),
            enrolled("P1002", utc(2022, 9, 4, 23, 0), "rose-valley"),
            standing("P1002", "dad-1002", "father", pr=True, care=False, at=at),
        ],
        [standing("P1002", "mum-1002", "mother", pr=True, care=True, at=at)],
        [
            born("P1005", date(2014, 6, 1), at),
            enrolled("P1005", utc(2025, 9, 2, 23, 0), "rose-valley"),
            standing("P1005", "mum-1005", "mother", pr=True, care=True, at=at),
        ],
    ]


def test_a_resume_after_a_pupils_first_row_does_not_repeat_its_facts(fmt: MisExport) -> None:
    records = list(fmt.records(HAWTHORN, 0, 0))
    resumed = list(fmt.records(HAWTHORN, records[0].position, records[0].line))
    assert resumed == records[1:]
    assert kinds(resumed[0]) == ["ParentalResponsibilityRecorded"]


def test_pupil_facts_come_from_the_first_usable_row(fmt: MisExport, tmp_path: Path) -> None:
    bad, good, again = read(fmt, tmp_path, {**GOOD, "contact_has_care": "sometimes"}, GOOD, GOOD)
    assert bad.error == "contact_has_care must be yes or no, not 'sometimes'"
    assert kinds(good) == ["BirthDateRecorded", "PupilEnrolled", "ParentalResponsibilityRecorded"]
    assert kinds(again) == ["ParentalResponsibilityRecorded"]


def test_a_row_without_a_contact_gives_only_pupil_facts(fmt: MisExport, tmp_path: Path) -> None:
    first, second = read(
        fmt,
        tmp_path,
        {**GOOD, "contact_id": "", "contact_relationship": "", "contact_parental_responsibility": ""},
        {**GOOD, "contact_id": "", "contact_relationship": "", "contact_parental_responsibility": ""},
    )
    assert kinds(first) == ["BirthDateRecorded", "PupilEnrolled"]
    assert (second.drafts, second.error) == ((), None)


@pytest.mark.parametrize(
    ("destination", "expected", "last"),
    [
        ("9372001", "hawthorn-primary", False),  # a Trust school's DfE number
        ("9999999", "school:9999999", True),
        ("school:8884010", "school:8884010", True),
        ("", None, True),
    ],
)
def test_a_leavers_destination_is_a_register_key(
    fmt: MisExport, tmp_path: Path, destination: str, expected: str | None, last: bool
) -> None:
    [record] = read(fmt, tmp_path, {**GOOD, "left_on": "2026-02-13", "destination_school": destination})
    fields = record.drafts[2].fields
    assert record.drafts[2].model is PupilLeft
    # 13 February is GMT: the day starts at midnight UTC.
    assert fields["occurred_at"] == utc(2026, 2, 13, 0, 0)
    assert (fields["destination_school"], fields["last_trust_school"]) == (expected, last)


def test_delegated_authority_is_read_when_the_column_exists(fmt: MisExport, tmp_path: Path) -> None:
    row = {**GOOD, "contact_relationship": "Foster Carer", "contact_parental_responsibility": "no"}
    path = write(
        tmp_path / "carer.csv",
        [{**row, "contact_delegated_authority": "Yes"}],
        [*HEADER, "contact_delegated_authority"],
    )
    [record] = list(fmt.records(path, 0, 0))
    person: dict[str, Any] = record.drafts[-1].fields["person"]
    assert (person["relationship"], person["has_parental_responsibility"], person["delegated_authority"]) == (
        "foster_carer",
        False,
        True,
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"pupil_id": ""}, "pupil_id is empty"),
        ({"school": ""}, "school is empty"),
        ({"school": "school:9374102"}, "school 'school:9374102' is not a Trust school (hawthorn-primary, rose-valley)"),
        ({"school": "9374001"}, "school '9374001' is not a Trust school"),
        ({"dob": "1/5/2012"}, "dob '1/5/2012' is not an ISO 8601 date (YYYY-MM-DD)"),
        ({"dob": ""}, "dob is empty"),
        ({"enrolled_on": "2023-02-30"}, "enrolled_on '2023-02-30' is not an ISO 8601 date"),
        ({"left_on": "soon"}, "left_on 'soon' is not an ISO 8601 date"),
        ({"exported_at": "yesterday"}, "exported_at 'yesterday' is not an ISO 8601 time"),
        ({"dob": "2024-01-01"}, "dob 2024-01-01 is after enrolled_on 2023-09-04"),
        ({"left_on": "2023-09-01"}, "left_on 2023-09-01 is before enrolled_on 2023-09-04"),
        ({"destination_school": "rose-valley"}, "destination_school is given but left_on is empty"),
        ({"contact_id": ""}, "contact_relationship is given but contact_id is empty"),
        ({"contact_relationship": "neighbour"}, "contact_relationship 'neighbour' is not one of self, mother"),
        ({"contact_parental_responsibility": "unknown"}, "contact_parental_responsibility must be yes or no"),
    ],
)
def test_a_bad_row_is_an_error_record_with_its_reason(
    fmt: MisExport, tmp_path: Path, changes: dict[str, str], reason: str
) -> None:
    [record] = read(fmt, tmp_path, {**GOOD, **changes})
    assert record.drafts == ()
    assert record.error is not None
    assert record.error.startswith(reason)
    assert '"pupil_id"' in record.raw


def test_a_later_row_that_contradicts_the_pupils_first_row_is_an_error(fmt: MisExport, tmp_path: Path) -> None:
    first, second = read(fmt, tmp_path, GOOD, {**GOOD, "dob": "2012-05-02", "contact_id": "dad-1"})
    assert first.error is None
    assert second.error == "dob differ(s) from pupil P1's first row (record 1)"


def test_a_header_without_required_columns_refuses_the_file(fmt: MisExport, tmp_path: Path) -> None:
    path = write(tmp_path / "thin.csv", [GOOD], [c for c in HEADER if c not in ("school", "exported_at")])
    with pytest.raises(FileRejectedError, match=r"thin\.csv: header lacks column\(s\) exported_at, school"):
        list(fmt.records(path, 0, 0))
