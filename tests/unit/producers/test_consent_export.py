"""Consent form exports: each row's exact fact, London times, and every reason a row or file is refused."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from producers.consent_export import ConsentExport, file_format
from producers.filesource import Draft, FileRejectedError, Record
from schemas.connector_maps import ConnectorMaps
from schemas.events import (
    ConsentGiven,
    ConsentRefused,
    ConsentWithdrawn,
    ObjectionRaised,
    ObjectionWithdrawn,
)

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "tests" / "data" / "consent" / "forms-2025-autumn.csv"


@pytest.fixture(scope="module")
def fmt(maps: ConnectorMaps) -> ConsentExport:
    return file_format(maps)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def person(
    pid: str, relationship: str, pr: bool = False, care: bool = False, delegated: bool = False
) -> dict[str, Any]:
    return {
        "id": pid,
        "relationship": relationship,
        "has_parental_responsibility": pr,
        "has_care": care,
        "delegated_authority": delegated,
    }


def scope(
    recipient: str | None = None, recipient_class: str | None = None, purpose: str | None = None, cats: Any = ()
) -> dict[str, Any]:
    return {"recipient": recipient, "recipient_class": recipient_class, "purpose": purpose, "categories": list(cats)}


def pupil(pid: str) -> dict[str, str]:
    return {"kind": "pupil", "id": pid}


MUM = person("mum-1001", "mother", pr=True, care=True)
CARER = person("carer-1003", "foster_carer", care=True, delegated=True)
CHILD = person("P1001", "self")

EXPECTED = [
    Draft(
        ConsentGiven,
        {
            # 19:30 London in September is BST: 18:30 UTC.
            "occurred_at": utc(2025, 9, 10, 18, 30),
            "subject": pupil("P1001"),
            "consent_id": "C-1001-photo",
            "given_by": MUM,
            "scope": scope(
                recipient_class="publication", purpose="promotional_photo", cats=["photographs", "identity.name"]
            ),
            "explicit": False,
            "written": True,
            "method": "online_form",
        },
    ),
    Draft(
        ConsentGiven,
        {
            "occurred_at": utc(2025, 9, 10, 18, 35),
            "subject": pupil("P1001"),
            "consent_id": "C-1001-bio",
            "given_by": MUM,
            "scope": scope(
                "biometric-catering",
                purpose="biometric_catering",
                cats=["identity.name", "identity.class", "identity.school", "biometric", "financial"],
            ),
            "explicit": True,
            "written": True,
            "method": "paper_form",
        },
    ),
    Draft(
        ConsentGiven,
        {
            "occurred_at": utc(2025, 9, 11, 7, 15),
            "subject": pupil("P1001"),
            "consent_id": "F-0003",
            "given_by": person("step-1001", "step_parent", pr=True, care=True),
            "scope": scope("after-school-club", purpose="after_school_club", cats=["identity.name", "contact"]),
            "explicit": False,
            "written": True,
            "method": "online_form",
        },
    ),
    Draft(
        ConsentGiven,
        {
            "occurred_at": utc(2025, 9, 12, 9, 0),
            "subject": pupil("P1003"),
            "consent_id": "C-1003-music",
            "given_by": CARER,
            "scope": scope("peripatetic-music", purpose="music_tuition", cats=["identity", "parent_contact"]),
            "explicit": False,
            "written": True,
            "method": "paper_form",
        },
    ),
    Draft(
        ConsentRefused,
        {
            "occurred_at": utc(2025, 9, 12, 9, 5),
            "subject": pupil("P1002"),
            "refused_by": person("dad-1002", "father", pr=True),
            "scope": scope("peripatetic-music", purpose="music_tuition", cats=["identity"]),
        },
    ),
    Draft(
        ConsentGiven,
        {
            "occurred_at": utc(2025, 9, 15, 15, 0),
            "subject": {"kind": "parent", "id": "mum-1001"},
            "consent_id": "C-mum-1001-news",
            "given_by": person("mum-1001", "self"),
            "scope": scope("trust-marketing", purpose="marketing", cats=["parent_contact"]),
            "explicit": False,
            "written": True,
            "method": "online_form",
        },
    ),
    Draft(
        ObjectionRaised,
        {
            "occurred_at": utc(2025, 10, 1, 11, 0),
            "subject": pupil("P1001"),
            "objection_id": "OBJ-1001-bio",
            "objected_by": CHILD,
            "scope": scope("biometric-catering", purpose="biometric_catering"),
            "grounds": "biometrics",
            "upheld": False,
        },
    ),
    Draft(
        ObjectionWithdrawn,
        {"occurred_at": utc(2025, 10, 20, 11, 0), "subject": pupil("P1001"), "objection_id": "OBJ-1001-bio"},
    ),
    Draft(
        ConsentWithdrawn,
        {
            # 09:00 London in November is GMT: 09:00 UTC.
            "occurred_at": utc(2025, 11, 3, 9, 0),
            "subject": pupil("P1001"),
            "consent_id": "C-1001-photo",
            "withdrawn_by": MUM,
            "scope": scope(recipient_class="publication", purpose="promotional_photo"),
            "method": "email",
        },
    ),
    Draft(
        ConsentWithdrawn,
        {
            "occurred_at": utc(2025, 11, 10, 9, 0),
            "subject": pupil("P1003"),
            "withdrawn_by": CARER,
            "scope": scope("peripatetic-music", purpose="music_tuition"),
            "method": "paper_form",
        },
    ),
]

HEADER = [
    "form_id",
    "submitted_at",
    "pupil_id",
    "action",
    "consent_id",
    "recipient",
    "recipient_class",
    "purpose",
    "categories",
    "person_id",
    "relationship",
    "parental_responsibility",
    "explicit",
    "written",
    "grounds",
]
GOOD = {
    "form_id": "F-1",
    "submitted_at": "2026-01-05T10:00:00",
    "pupil_id": "P1",
    "action": "given",
    "consent_id": "C-1",
    "recipient": "peripatetic-music",
    "recipient_class": "",
    "purpose": "music_tuition",
    "categories": "identity",
    "person_id": "mum-1",
    "relationship": "mother",
    "parental_responsibility": "yes",
    "explicit": "no",
    "written": "no",
    "grounds": "",
}


def write(path: Path, rows: list[dict[str, str]], header: list[str] = HEADER) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def one(fmt: ConsentExport, tmp_path: Path, **changes: str) -> Record:
    [record] = list(fmt.records(write(tmp_path / "one.csv", [{**GOOD, **changes}]), 0, 0))
    return record


def test_the_sample_export_yields_exactly_these_facts(fmt: ConsentExport) -> None:
    records = list(fmt.records(SAMPLE, 0, 0))
    assert [r.error for r in records] == [None] * len(EXPECTED)
    assert [r.line for r in records] == list(range(1, len(EXPECTED) + 1))
    assert [d for r in records for d in r.drafts] == EXPECTED


def test_every_sample_fact_is_a_valid_event(fmt: ConsentExport) -> None:
    for record in fmt.records(SAMPLE, 0, 0):
        for draft in record.drafts:
            envelope = {
                "event_id": f"e-{record.line}",
                "emitted_at": utc(2026, 1, 1),
                "source": {"connector": "c", "sequence": 0},
            }
            event = draft.model.model_validate({**envelope, **draft.fields})
            assert event.occurred_at == draft.fields["occurred_at"]


def test_a_resume_starts_after_the_committed_position(fmt: ConsentExport) -> None:
    records = list(fmt.records(SAMPLE, 0, 0))
    resumed = list(fmt.records(SAMPLE, records[3].position, records[3].line))
    assert resumed == records[4:]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-07-01T12:00:00", utc(2026, 7, 1, 11, 0)),  # BST
        ("2026-01-15T12:00:00", utc(2026, 1, 15, 12, 0)),  # GMT
        ("2026-07-01T12:00:00Z", utc(2026, 7, 1, 12, 0)),
        ("2026-07-01T12:00:00-04:00", utc(2026, 7, 1, 16, 0)),
        ("2026-07-01", utc(2026, 6, 30, 23, 0)),  # a bare date is midnight London
        ("2026-10-25T01:30:00", utc(2026, 10, 25, 0, 30)),  # the repeated autumn hour: its first (BST) reading
    ],
)
def test_submitted_at_naive_times_are_london_local(
    fmt: ConsentExport, tmp_path: Path, text: str, expected: datetime
) -> None:
    record = one(fmt, tmp_path, submitted_at=text)
    assert record.drafts[0].fields["occurred_at"] == expected


def test_yes_no_cells_ignore_case_and_blank_means_no(fmt: ConsentExport, tmp_path: Path) -> None:
    record = one(fmt, tmp_path, parental_responsibility="YES", explicit="", written="No")
    fields = record.drafts[0].fields
    assert (fields["given_by"]["has_parental_responsibility"], fields["explicit"], fields["written"]) == (
        True,
        False,
        False,
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"action": "granted"},
            "action 'granted' is not one of given, withdrawn, refused, objection, objection_withdrawn",
        ),
        ({"action": ""}, "action is empty"),
        ({"submitted_at": "05/01/2026 10:00"}, "submitted_at '05/01/2026 10:00' is not an ISO 8601 time"),
        ({"submitted_at": ""}, "submitted_at is empty"),
        ({"pupil_id": " "}, "pupil_id is empty"),
        ({"person_id": ""}, "person_id is empty"),
        ({"relationship": "aunt"}, "relationship 'aunt' is not one of self, mother, father"),
        ({"relationship": ""}, "relationship is empty"),
        ({"parental_responsibility": "maybe"}, "parental_responsibility must be yes or no, not 'maybe'"),
        ({"explicit": "y"}, "explicit must be yes or no, not 'y'"),
        ({"written": "true"}, "written must be yes or no, not 'true'"),
        ({"recipient_class": "partner"}, "give recipient or recipient_class, not both"),
        ({"recipient": ""}, "a consent must name a recipient or a recipient_class"),
        ({"purpose": ""}, "a consent must name a purpose"),
        ({"categories": " ; "}, "a consent must name its categories"),
        ({"consent_id": "", "form_id": ""}, "form_id is empty"),
        (
            {"action": "withdrawn", "consent_id": "", "recipient": "", "purpose": "", "categories": ""},
            "a withdrawal must name the consent_id or what it withdraws",
        ),
        ({"action": "objection", "grounds": "religion"}, "grounds 'religion' is not one of biometrics, art21"),
        ({"action": "objection_withdrawn", "consent_id": ""}, "consent_id is empty"),
    ],
)
def test_a_bad_row_is_an_error_record_with_its_reason(
    fmt: ConsentExport, tmp_path: Path, changes: dict[str, str], reason: str
) -> None:
    record = one(fmt, tmp_path, **changes)
    assert record.drafts == ()
    assert record.error is not None
    assert record.error.startswith(reason)
    assert '"pupil_id"' in record.raw


def test_an_unknown_subject_kind_is_an_error_record(fmt: ConsentExport, tmp_path: Path) -> None:
    path = write(tmp_path / "kind.csv", [{**GOOD, "subject_kind": "teacher"}], [*HEADER, "subject_kind"])
    [record] = list(fmt.records(path, 0, 0))
    assert record.error == "subject_kind 'teacher' is not pupil or parent"


def test_a_row_of_the_wrong_width_is_an_error_record(fmt: ConsentExport, tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text(",".join(HEADER) + "\nF-1,2026-01-05T10:00:00,P1\n", encoding="utf-8")
    [record] = list(fmt.records(path, 0, 0))
    assert record.error == f"has 3 fields, the header has {len(HEADER)}"


def test_each_action_yields_its_fact_kind(fmt: ConsentExport, tmp_path: Path) -> None:
    rows = [
        {**GOOD, "action": action} for action in ("given", "withdrawn", "refused", "objection", "objection_withdrawn")
    ]
    kinds = [r.drafts[0].model for r in fmt.records(write(tmp_path / "all.csv", rows), 0, 0)]
    assert kinds == [ConsentGiven, ConsentWithdrawn, ConsentRefused, ObjectionRaised, ObjectionWithdrawn]


def test_optional_columns_carry_assessment_care_and_upheld(fmt: ConsentExport, tmp_path: Path) -> None:
    header = [*HEADER, "competence_assessment_id", "has_care", "upheld"]
    rows = [
        {
            **GOOD,
            "person_id": "P1",
            "relationship": "self",
            "parental_responsibility": "no",
            "competence_assessment_id": "CA-9",
        },
        {**GOOD, "action": "objection", "consent_id": "", "form_id": "F-2", "has_care": "yes", "upheld": "yes"},
    ]
    given, objection = list(fmt.records(write(tmp_path / "opt.csv", rows, header), 0, 0))
    assert given.drafts[0].fields["competence_assessment_id"] == "CA-9"
    assert objection.drafts[0].fields["objection_id"] == "F-2"
    assert objection.drafts[0].fields["objected_by"]["has_care"] is True
    assert objection.drafts[0].fields["upheld"] is True
    assert objection.drafts[0].fields["grounds"] == "art21"


def test_a_header_without_required_columns_refuses_the_file(fmt: ConsentExport, tmp_path: Path) -> None:
    path = write(tmp_path / "thin.csv", [GOOD], [c for c in HEADER if c not in ("action", "person_id")])
    with pytest.raises(FileRejectedError, match=r"thin\.csv: header lacks column\(s\) action, person_id"):
        list(fmt.records(path, 0, 0))


def test_a_header_without_any_recipient_column_refuses_the_file(fmt: ConsentExport, tmp_path: Path) -> None:
    path = write(tmp_path / "norec.csv", [GOOD], [c for c in HEADER if c not in ("recipient", "recipient_class")])
    with pytest.raises(FileRejectedError, match="lacks column recipient"):
        list(fmt.records(path, 0, 0))


def test_a_header_only_file_with_missing_columns_is_still_refused(fmt: ConsentExport, tmp_path: Path) -> None:
    path = tmp_path / "header-only.csv"
    path.write_text("pupil_id,action\n", encoding="utf-8")
    with pytest.raises(FileRejectedError, match="lacks column"):
        list(fmt.records(path, 0, 0))
