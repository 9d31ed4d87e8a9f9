"""The files each connector reads (docs/connectors.md), built record by record, with what each record means.

Every builder keeps, beside each record it renders, the events the record is meant to yield (`Draft`s, in the
order the connector emits them). Nothing downstream needs them to run; they let an offline check judge a file
whose connector is not installed, and let a test compare a connector's reading with the simulator's intent.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from xml.sax.saxutils import escape

from producers.filesource import Draft
from producers.simulator.calendar import LONDON, midnight
from schemas.connector_maps import ConnectorMaps, Footing
from schemas.events import (
    BirthDateRecorded,
    ConsentGiven,
    ConsentRefused,
    ConsentWithdrawn,
    DataFlow,
    ObjectionRaised,
    ObjectionWithdrawn,
    ParentalResponsibilityRecorded,
    PupilEnrolled,
    PupilLeft,
)

SYNCLOG_HEADER = ("timestamp", "supplier", "pupils", "fields", "sync_id")
"""docs/connectors.md `synclog` columns."""
MAILTRACE_HEADER = ("time", "message_id", "sender", "recipients", "subject", "attachments", "sensitivity")
"""docs/connectors.md `mailtrace` columns."""
CONSENT_HEADER = (
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
    "delegated_authority",
    "explicit",
    "written",
    "method",
    "grounds",
)
"""docs/connectors.md `consent` columns."""
MIS_HEADER = (
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
)
"""docs/connectors.md `mis` columns."""
HEADERS = {"synclog": SYNCLOG_HEADER, "mailtrace": MAILTRACE_HEADER, "consent": CONSENT_HEADER, "mis": MIS_HEADER}
"""The CSV header of each CSV connector."""

TRUST_SCHOOLS = ("hawthorn-primary", "rose-valley")


def local_iso(moment: datetime) -> str:
    """ISO 8601 London time with its offset (unambiguous across the clock change)."""
    return moment.astimezone(LONDON).isoformat(timespec="seconds")


def yes(flag: bool) -> str:
    """The exports' yes/no."""
    return "yes" if flag else "no"


def slug(text: str) -> str:
    """Lower-case, with runs of anything but letters and digits as one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", text.strip().lower()).strip("-") or "unnamed"


def _footing(f: Footing) -> dict[str, Any]:
    return f.model_dump(exclude_none=True)


@dataclass
class CsvFile:
    """One CSV export being built: its rows and, per row, the events the row means."""

    connector: str
    name: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    intended: list[tuple[Draft, ...]] = field(default_factory=list)

    def add(self, values: dict[str, str], drafts: tuple[Draft, ...]) -> int:
        """Append a row (missing columns empty); returns its 1-based record number."""
        self.rows.append(tuple(values.get(column, "") for column in self.header))
        self.intended.append(drafts)
        return len(self.rows)

    def render(self) -> bytes:
        """The file's bytes: header, then rows, `\\n` line ends, UTF-8."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return buffer.getvalue().encode("utf-8")


class Formats:
    """Row builders for each connector, reading policy/connectors.yaml for what a row means."""

    def __init__(self, maps: ConnectorMaps) -> None:
        self.maps = maps
        self._pupil_pattern = re.compile(maps.mail.pupil_id_pattern)

    # -- synclog ------------------------------------------------------------------------------------------

    def sync_row(
        self, file: CsvFile, when: datetime, supplier: str, pupils: list[str], fields: list[str], sync_id: str
    ) -> int:
        """A supplier sync; returns its record number."""
        known = self.maps.supplier(supplier)
        categories: list[str] = []
        for name in fields:
            key = self.maps.sync.category(known, name) if known is not None else self.maps.sync.fields.get(name)
            categories.append(key if key is not None else f"unmapped.{slug(name)}")
        if known is not None:
            footing: dict[str, Any] = {"recipient": known.route.recipient, **_footing(known.route)}
        else:
            footing = {"recipient": f"unregistered:{slug(supplier)}", "purpose": "mis_sync"}
        flow = {
            "occurred_at": when,
            **footing,
            "subjects": [{"kind": "pupil", "id": p} for p in pupils],
            "categories": list(dict.fromkeys(categories)),
            "record_count": len(pupils),
        }
        values = {
            "timestamp": local_iso(when),
            "supplier": supplier,
            "pupils": ";".join(pupils),
            "fields": ";".join(fields),
            "sync_id": sync_id,
        }
        return file.add(values, (Draft(DataFlow, flow),))

    # -- mailtrace ----------------------------------------------------------------------------------------

    def mail_row(
        self,
        file: CsvFile,
        when: datetime,
        message_id: str,
        sender: str,
        recipients: list[str],
        subject: str,
        attachments: list[str],
        label: str,
    ) -> int:
        """An outbound message; returns its record number (its flows are one per external domain)."""
        mail = self.maps.mail
        drafts: list[Draft] = []
        domains = list(dict.fromkeys(r.rsplit("@", 1)[1].lower() for r in recipients))
        external = [d for d in domains if not any(d == i or d.endswith("." + i) for i in mail.internal_domains)]
        categories = mail.labels.get(label, ["unclassified"]) if label else ["unclassified"]
        if external and categories:
            found = self._pupil_pattern.findall(" ".join([subject, *attachments]))
            subjects = list(dict.fromkeys(found)) or [f"unidentified:{message_id}"]
            for domain in external:
                mapped = self.maps.mail_domain(domain)
                footing = (
                    {"recipient": mapped.route.recipient, **_footing(mapped.route)}
                    if mapped is not None
                    else {"recipient": f"email:{domain}", **_footing(mail.unknown_route)}
                )
                flow = {
                    "occurred_at": when,
                    **footing,
                    "subjects": [{"kind": "pupil", "id": s} for s in subjects],
                    "categories": list(categories),
                    "record_count": len(subjects),
                }
                drafts.append(Draft(DataFlow, flow))
        values = {
            "time": local_iso(when),
            "message_id": message_id,
            "sender": sender,
            "recipients": ";".join(recipients),
            "subject": subject,
            "attachments": ";".join(attachments),
            "sensitivity": label,
        }
        return file.add(values, tuple(drafts))

    # -- consent ------------------------------------------------------------------------------------------

    @staticmethod
    def consent_row(
        file: CsvFile,
        *,
        form_id: str,
        when: datetime,
        pupil: str,
        action: str,
        consent_id: str,
        person: str,
        relationship: str,
        pr: bool,
        delegated: bool = False,
        recipient: str = "",
        recipient_class: str = "",
        purpose: str = "",
        categories: tuple[str, ...] = (),
        explicit: bool = False,
        written: bool = False,
        method: str = "online_form",
        grounds: str = "",
    ) -> int:
        """A consent form action; returns its record number."""
        actor = {
            "id": person,
            "relationship": relationship,
            "has_parental_responsibility": pr,
            "delegated_authority": delegated,
        }
        scope: dict[str, Any] = {"purpose": purpose or None, "categories": list(categories)}
        if recipient:
            scope["recipient"] = recipient
        if recipient_class:
            scope["recipient_class"] = recipient_class
        base = {"occurred_at": when, "subject": {"kind": "pupil", "id": pupil}}
        draft: Draft
        if action == "given":
            draft = Draft(
                ConsentGiven,
                {
                    **base,
                    "consent_id": consent_id,
                    "given_by": actor,
                    "scope": scope,
                    "explicit": explicit,
                    "written": written,
                    "method": method,
                },
            )
        elif action == "withdrawn":
            draft = Draft(ConsentWithdrawn, {**base, "consent_id": consent_id, "withdrawn_by": actor, "method": method})
        elif action == "refused":
            draft = Draft(ConsentRefused, {**base, "refused_by": actor, "scope": scope})
        elif action == "objection":
            draft = Draft(
                ObjectionRaised,
                {
                    **base,
                    "objection_id": consent_id,
                    "objected_by": actor,
                    "scope": scope,
                    "grounds": grounds or "art21",
                },
            )
        else:
            draft = Draft(ObjectionWithdrawn, {**base, "objection_id": consent_id})
        values = {
            "form_id": form_id,
            "submitted_at": local_iso(when),
            "pupil_id": pupil,
            "action": action,
            "consent_id": consent_id,
            "recipient": recipient,
            "recipient_class": recipient_class,
            "purpose": purpose,
            "categories": ";".join(categories),
            "person_id": person,
            "relationship": relationship,
            "parental_responsibility": yes(pr),
            "delegated_authority": yes(delegated),
            "explicit": yes(explicit),
            "written": yes(written),
            "method": method,
            "grounds": grounds,
        }
        return file.add(values, (draft,))

    # -- mis ----------------------------------------------------------------------------------------------

    @staticmethod
    def mis_rows(file: CsvFile, exported_at: datetime, pupil: Any) -> None:
        """One row per contact of `pupil` (one row without a contact if it has none)."""
        first: list[Draft] = [
            Draft(
                BirthDateRecorded,
                {"occurred_at": exported_at, "subject": {"kind": "pupil", "id": pupil.id}, "birth_date": pupil.dob},
            ),
            Draft(
                PupilEnrolled,
                {
                    "occurred_at": midnight(pupil.enrolled_on),
                    "subject": {"kind": "pupil", "id": pupil.id},
                    "school": pupil.school,
                },
            ),
        ]
        left = pupil.left_on if pupil.left_on is not None and pupil.left_on <= exported_at.date() else None
        if left is not None:
            first.append(
                Draft(
                    PupilLeft,
                    {
                        "occurred_at": midnight(left),
                        "subject": {"kind": "pupil", "id": pupil.id},
                        "school": pupil.school,
                        "destination_school": pupil.destination,
                        "last_trust_school": pupil.destination not in TRUST_SCHOOLS,
                    },
                )
            )
        base = {
            "pupil_id": pupil.id,
            "school": pupil.school,
            "dob": pupil.dob.isoformat(),
            "enrolled_on": pupil.enrolled_on.isoformat(),
            "left_on": left.isoformat() if left else "",
            "destination_school": (pupil.destination or "") if left else "",
            "exported_at": local_iso(exported_at),
        }
        contacts = pupil.contacts or [None]
        for number, contact in enumerate(contacts):
            drafts = list(first) if number == 0 else []
            values = dict(base)
            if contact is not None:
                values.update(
                    contact_id=contact.id,
                    contact_relationship=contact.relationship,
                    contact_parental_responsibility=yes(contact.pr),
                    contact_has_care=yes(contact.care),
                )
                person = {
                    "id": contact.id,
                    "relationship": contact.relationship,
                    "has_parental_responsibility": contact.pr,
                    "has_care": contact.care,
                    "delegated_authority": contact.delegated,
                }
                drafts.append(
                    Draft(
                        ParentalResponsibilityRecorded,
                        {"occurred_at": exported_at, "subject": {"kind": "pupil", "id": pupil.id}, "person": person},
                    )
                )
            file.add(values, tuple(drafts))


@dataclass
class CtfFile:
    """One Common Transfer File: pupils moving from a Trust school to one destination."""

    name: str
    source_laestab: str
    dest_laestab: str
    dest_recipient: str
    written_at: datetime
    pupils: list[Any]
    internal: bool

    def render(self) -> bytes:
        """CTF XML (the subset of the DfE schema the connector reads, with the usual header fields)."""
        local = self.written_at.astimezone(LONDON).replace(tzinfo=None).isoformat(timespec="seconds")
        out = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            "<CTfile>",
            "  <Header>",
            "    <DocumentName>Common Transfer File</DocumentName>",
            "    <CTFversion>23.0</CTFversion>",
            f"    <DateTime>{local}</DateTime>",
            "    <DocumentQualifier>full</DocumentQualifier>",
            "    <SourceSchool>",
            f"      <LEA>{self.source_laestab[:3]}</LEA>",
            f"      <Estab>{self.source_laestab[3:]}</Estab>",
            "    </SourceSchool>",
            "    <DestSchool>",
            f"      <LEA>{self.dest_laestab[:3]}</LEA>",
            f"      <Estab>{self.dest_laestab[3:]}</Estab>",
            "    </DestSchool>",
            "  </Header>",
            "  <CTFpupilData>",
        ]
        for p in self.pupils:
            out += [
                "    <Pupil>",
                f"      <UPN>{p.id}</UPN>",
                f"      <Surname>{escape(p.surname)}</Surname>",
                f"      <Forename>{escape(p.forename)}</Forename>",
                f"      <DOB>{p.dob.isoformat()}</DOB>",
                "      <BasicDetails>",
                f"        <Ethnicity>{p.ethnicity}</Ethnicity>",
                f"        <FirstLanguage><Language><LanguageType>F</LanguageType><Code>{p.language}</Code>"
                "</Language></FirstLanguage>",
                f"        <FSMeligible>{'true' if p.fsm else 'false'}</FSMeligible>",
                "      </BasicDetails>",
                "      <Attendance><YearData><Year>2025</Year><SessionsPossible>380</SessionsPossible>"
                "</YearData></Attendance>",
                "      <Assessments><Result><Subject>MAT</Subject><Result>EXS</Result></Result></Assessments>",
            ]
            if p.sen:
                out.append(
                    "      <SENhistory><SEN><StartDate>2024-09-01</StartDate><SENprovision>K</SENprovision>"
                    "</SEN></SENhistory>"
                )
            out.append("      <Contacts><Contact><Order>1</Order><Relationship>PAR</Relationship></Contact></Contacts>")
            out.append("    </Pupil>")
        out += ["  </CTFpupilData>", "</CTfile>", ""]
        return "\n".join(out).encode("utf-8")

    def intended(self, maps: ConnectorMaps) -> tuple[Draft, ...]:
        """The one flow a CTF file means: to the destination school, about every pupil in it."""
        containers = ["BasicDetails", "Attendance", "Assessments"]
        if any(p.sen for p in self.pupils):
            containers.append("SENhistory")
        containers.append("Contacts")
        categories = list(maps.ctf.core_categories)
        for name in containers:
            categories += maps.ctf.containers.get(name, [])
        footing = maps.ctf.internal if self.internal else maps.ctf.external
        flow = {
            "occurred_at": self.written_at,
            "recipient": self.dest_recipient,
            **_footing(footing),
            "subjects": [{"kind": "pupil", "id": p.id} for p in self.pupils],
            "categories": list(dict.fromkeys(categories)),
            "record_count": len(self.pupils),
        }
        return (Draft(DataFlow, flow),)


def iso_date(day: date) -> str:
    """A date as the exports write it."""
    return day.isoformat()
