"""Consent form exports (CSV) → consent, withdrawal, refusal and objection facts (docs/connectors.md `consent`).

One row is one form answer and yields one fact, effective at `submitted_at`. The facts carry what the
evaluator needs to judge who answered (RULES.md §5): the person's relationship to the pupil, whether they
claim parental responsibility, care or delegated authority, and whether a consent was explicit and written.
Whatever the form claims, the Trust's own record of a person's standing (the `mis` connector) overrides it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from producers.csvrows import (
    RowError,
    check_header,
    london_instant,
    optional,
    relationship,
    required,
    rows_to_records,
    yes_no,
)
from producers.filesource import Draft, FileRejectedError, Record
from producers.textfields import split_list
from schemas.connector_maps import ConnectorMaps
from schemas.events import (
    ConsentGiven,
    ConsentRefused,
    ConsentWithdrawn,
    ObjectionRaised,
    ObjectionWithdrawn,
)

REQUIRED_COLUMNS = frozenset(
    {
        "form_id",
        "submitted_at",
        "pupil_id",
        "action",
        "consent_id",
        "purpose",
        "categories",
        "person_id",
        "relationship",
        "parental_responsibility",
    }
)
"""Columns a consent export must have (the rest are optional; an absent column reads as blank)."""

ACTIONS = ("given", "withdrawn", "refused", "objection", "objection_withdrawn")
"""The `action` values a consent export may carry."""

GROUNDS = ("biometrics", "art21", "direct_marketing", "disclosure")
"""The `grounds` an objection may give (blank: `art21`)."""


class ConsentExport:
    """The `consent` connector format: consent form exports, one fact per row."""

    patterns = ("*.csv",)

    def records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        """The facts of each row after byte `position`; a header without the required columns refuses the file."""
        header = check_header(path, REQUIRED_COLUMNS)
        if not {"recipient", "recipient_class"} & header:
            raise FileRejectedError(f"{path.name}: header lacks column recipient (or recipient_class)")
        yield from rows_to_records(path, position, line, parse_row)


def file_format(maps: ConnectorMaps) -> ConsentExport:
    """The `consent` format (consent forms name register keys themselves: it needs no connector map)."""
    return ConsentExport()


def parse_row(row: dict[str, str]) -> tuple[Draft, ...]:
    """The one fact a consent export row records; raises `RowError` naming what is wrong."""
    action = row.get("action", "").strip().lower()
    if action not in ACTIONS:
        shown = row.get("action", "").strip()
        raise RowError(f"action {shown!r} is not one of {', '.join(ACTIONS)}" if shown else "action is empty")
    kind = (optional(row, "subject_kind") or "pupil").lower()
    if kind not in ("pupil", "parent"):
        raise RowError(f"subject_kind {kind!r} is not pupil or parent")
    base: dict[str, Any] = {
        "occurred_at": london_instant(row.get("submitted_at", ""), "submitted_at"),
        "subject": {"kind": kind, "id": required(row, "pupil_id")},
    }
    if action == "objection_withdrawn":
        return (Draft(ObjectionWithdrawn, {**base, "objection_id": required(row, "consent_id")}),)
    person = _actor(row)
    scope = _scope(row)
    # The form's own id stands in for the consent (or objection) id when the export leaves it blank.
    own_id = optional(row, "consent_id") or required(row, "form_id")
    method = {"method": m} if (m := optional(row, "method")) else {}
    if action == "given":
        if scope["recipient"] is None and scope["recipient_class"] is None:
            raise RowError("a consent must name a recipient or a recipient_class")
        if scope["purpose"] is None:
            raise RowError("a consent must name a purpose")
        if not scope["categories"]:
            raise RowError("a consent must name its categories")
        assessment = optional(row, "competence_assessment_id")
        fields = {
            **base,
            "consent_id": own_id,
            "given_by": person,
            "scope": scope,
            "explicit": yes_no(row, "explicit"),
            "written": yes_no(row, "written"),
            **({"competence_assessment_id": assessment} if assessment else {}),
            **method,
        }
        return (Draft(ConsentGiven, fields),)
    if action == "withdrawn":
        consent_id = optional(row, "consent_id")
        names_scope = any(scope[k] for k in ("recipient", "recipient_class", "purpose", "categories"))
        if consent_id is None and not names_scope:
            raise RowError("a withdrawal must name the consent_id or what it withdraws (recipient, purpose...)")
        fields = {
            **base,
            **({"consent_id": consent_id} if consent_id else {}),
            "withdrawn_by": person,
            **({"scope": scope} if names_scope else {}),
            **method,
        }
        return (Draft(ConsentWithdrawn, fields),)
    if action == "refused":
        return (Draft(ConsentRefused, {**base, "refused_by": person, "scope": scope}),)
    grounds = (optional(row, "grounds") or "art21").lower()
    if grounds not in GROUNDS:
        raise RowError(f"grounds {grounds!r} is not one of {', '.join(GROUNDS)}")
    fields = {
        **base,
        "objection_id": own_id,
        "objected_by": person,
        "scope": scope,
        "grounds": grounds,
        "upheld": yes_no(row, "upheld"),
    }
    return (Draft(ObjectionRaised, fields),)


def _actor(row: dict[str, str]) -> dict[str, Any]:
    return {
        "id": required(row, "person_id"),
        "relationship": relationship(row.get("relationship", ""), "relationship"),
        "has_parental_responsibility": yes_no(row, "parental_responsibility"),
        "has_care": yes_no(row, "has_care"),
        "delegated_authority": yes_no(row, "delegated_authority"),
    }


def _scope(row: dict[str, str]) -> dict[str, Any]:
    recipient, recipient_class = optional(row, "recipient"), optional(row, "recipient_class")
    if recipient is not None and recipient_class is not None:
        raise RowError("give recipient or recipient_class, not both")
    return {
        "recipient": recipient,
        "recipient_class": recipient_class,
        "purpose": optional(row, "purpose"),
        "categories": split_list(row.get("categories", "")),
    }
