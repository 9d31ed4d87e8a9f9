"""MIS pupil data exports (CSV) → birth date, enrolment, leaving and parental-responsibility facts.

An export has one row per pupil and contact (docs/connectors.md `mis`). A pupil's own facts come from the
first row of the pupil in the file, once; every row with a contact records that person's standing, which the
evaluator trusts over what a consent form claims (RULES.md §5 "Who may consent"). Dates are London dates: a
pupil enrolled on a day is enrolled from midnight London of that day.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from producers.csvrows import (
    RowError,
    check_header,
    london_date,
    london_instant,
    london_midnight,
    optional,
    relationship,
    required,
    yes_no,
)
from producers.filesource import Draft, Record, csv_records
from schemas.connector_maps import ConnectorMaps
from schemas.events import BirthDateRecorded, ParentalResponsibilityRecorded, PupilEnrolled, PupilLeft

REQUIRED_COLUMNS = frozenset(
    {
        "pupil_id",
        "school",
        "dob",
        "enrolled_on",
        "left_on",
        "exported_at",
        "contact_id",
        "contact_relationship",
        "contact_parental_responsibility",
    }
)
"""Columns an MIS export must have (`destination_school`, `contact_has_care`, `contact_delegated_authority`
may be absent: blank)."""

PUPIL_COLUMNS = ("school", "dob", "enrolled_on", "left_on", "destination_school")
"""The pupil's own columns: every row of a pupil repeats them."""

Seen = dict[str, tuple[int, tuple[str, ...]]]
"""Each pupil a file has had facts for: the record number of its first usable row and that row's values."""


class MisExport:
    """The `mis` connector format: pupil facts once per pupil, a standing fact per contact row."""

    patterns = ("*.csv",)

    def __init__(self, maps: ConnectorMaps) -> None:
        self._maps = maps
        self.trust_schools = frozenset(s.recipient for s in maps.ctf.schools if s.trust_school)

    def records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        """The facts of each row after byte `position`; a header without the required columns refuses the file."""
        check_header(path, REQUIRED_COLUMNS)
        first: Seen = {}
        # Whether a pupil's facts are due depends on every row before it, so a resumed file is read again from
        # the start (rows before `position` only rebuild `first`): no pupil's facts twice, none skipped.
        for number, end, row in csv_records(path, 0, 0):
            record = self.record(number, end, row, first)
            if end > position:
                yield record

    def record(self, number: int, end: int, row: dict[str, str], first: Seen) -> Record:
        """Row `number` as a `Record`; `first` maps each pupil already seen to its first usable row and values."""
        if "__error__" in row:
            return Record(number, end, error=row["__error__"])
        raw = json.dumps(row, ensure_ascii=False)
        try:
            drafts = self.parse_row(number, row, first)
        except RowError as exc:
            return Record(number, end, error=str(exc), raw=raw)
        return Record(number, end, drafts=drafts, raw=raw)

    def parse_row(self, number: int, row: dict[str, str], first: Seen) -> tuple[Draft, ...]:
        """The facts row `number` adds (pupil facts only on the pupil's first usable row); raises `RowError`."""
        pupil = required(row, "pupil_id")
        subject = {"kind": "pupil", "id": pupil}
        school = required(row, "school")
        if school not in self.trust_schools:
            raise RowError(f"school {school!r} is not a Trust school ({', '.join(sorted(self.trust_schools))})")
        born = london_date(row.get("dob", ""), "dob")
        enrolled = london_date(row.get("enrolled_on", ""), "enrolled_on")
        left_text = optional(row, "left_on")
        left = london_date(left_text, "left_on") if left_text else None
        destination = optional(row, "destination_school")
        exported = london_instant(row.get("exported_at", ""), "exported_at")
        if born > enrolled:
            raise RowError(f"dob {born} is after enrolled_on {enrolled}")
        if left is not None and left < enrolled:
            raise RowError(f"left_on {left} is before enrolled_on {enrolled}")
        if destination is not None and left is None:
            raise RowError("destination_school is given but left_on is empty")
        standing = self._standing(row)
        values = tuple(row.get(c, "").strip() for c in PUPIL_COLUMNS)
        seen = first.get(pupil)
        if seen is not None:
            if seen[1] != values:
                differ = [c for c, a, b in zip(PUPIL_COLUMNS, seen[1], values, strict=True) if a != b]
                raise RowError(f"{', '.join(differ)} differ(s) from pupil {pupil}'s first row (record {seen[0]})")
            pupil_facts: tuple[Draft, ...] = ()
        else:
            first[pupil] = (number, values)
            pupil_facts = self._pupil_facts(subject, school, born, enrolled, left, destination, exported)
        if standing is None:
            return pupil_facts
        fact = Draft(ParentalResponsibilityRecorded, {"occurred_at": exported, "subject": subject, "person": standing})
        return (*pupil_facts, fact)

    def _pupil_facts(
        self,
        subject: dict[str, str],
        school: str,
        born: date,
        enrolled: date,
        left: date | None,
        destination: str | None,
        exported: datetime,
    ) -> tuple[Draft, ...]:
        facts = [
            Draft(BirthDateRecorded, {"occurred_at": exported, "subject": subject, "birth_date": born}),
            Draft(PupilEnrolled, {"occurred_at": london_midnight(enrolled), "subject": subject, "school": school}),
        ]
        if left is not None:
            target = self.destination(destination) if destination else None
            fields: dict[str, Any] = {
                "occurred_at": london_midnight(left),
                "subject": subject,
                "school": school,
                "destination_school": target,
                # A move to another Trust school is still in the Trust: the pupil has not left it.
                "last_trust_school": target not in self.trust_schools,
            }
            facts.append(Draft(PupilLeft, fields))
        return tuple(facts)

    def destination(self, value: str) -> str:
        """A destination as a register key: a DfE number becomes its school's key (`school:<number>` if unknown)."""
        if value.isdigit() and len(value) == 7:
            known = self._maps.school(value)
            return known.recipient if known is not None else f"school:{value}"
        return value

    @staticmethod
    def _standing(row: dict[str, str]) -> dict[str, Any] | None:
        contact = optional(row, "contact_id")
        if contact is None:
            if optional(row, "contact_relationship"):
                raise RowError("contact_relationship is given but contact_id is empty")
            return None
        return {
            "id": contact,
            "relationship": relationship(row.get("contact_relationship", ""), "contact_relationship"),
            "has_parental_responsibility": yes_no(row, "contact_parental_responsibility"),
            "has_care": yes_no(row, "contact_has_care"),
            "delegated_authority": yes_no(row, "contact_delegated_authority"),
        }


def file_format(maps: ConnectorMaps) -> MisExport:
    """The `mis` format, checking schools against the Trust's schools in the connector maps."""
    return MisExport(maps)
