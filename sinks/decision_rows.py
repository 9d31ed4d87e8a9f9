"""Decision JSON straight to audit-store rows and their hashed form, without building a `Decision` (hot path).

`read_decision` parses a message with pydantic's own JSON parser and checks every field as `Decision` validates
it. Whenever it cannot vouch that `Decision.model_validate_json` would accept the message *and* yield exactly
the values it read (a string pydantic would strip, a datetime in another layout or zone, an unknown or missing
field, an integer out of the usual range, a nested value of another type...), it answers None and the caller
validates with pydantic, which either rejects the message with its reasons or gives the rows `rows_of` builds.
So the fast path never accepts what pydantic refuses, and tests/unit/sinks/test_decision_rows.py compares the
two paths row for row, hash for hash.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel
from pydantic_core import from_json

from schemas.decisions import Decision, SubjectVerdict
from sinks.chain import canonical, canonical_json
from sinks.rows import Millis, decision_row, disclosure_rows, to_millis, violation_row

__all__ = ["FAST_PATH", "DecisionRows", "read_decision", "rows_of"]


class DecisionRows(NamedTuple):
    """Everything one decision adds to a batch."""

    decision_id: str
    row: list[object]
    """The `decisions` row without its chain links (`DECISION_COLUMNS` order)."""
    hashed: bytes
    """`sinks.chain.canonical(row)`: what the row's hash covers."""
    disclosures: list[list[object]]
    violation: list[object] | None


def rows_of(decision: Decision, payload: str, partition: int, offset: int) -> DecisionRows:
    """The rows of a validated `Decision`: the reference `read_decision` must match exactly."""
    row = decision_row(decision, payload, partition, offset)
    return DecisionRows(decision.decision_id, row, canonical(row), disclosure_rows(decision), violation_row(decision))


_DECISION_FIELDS = {
    "decision_id",
    "flow_event_id",
    "verdict",
    "reasons",
    "explanation",
    "recipient",
    "purpose",
    "categories",
    "subject_ids",
    "occurred_at",
    "decided_at",
    "emitted_at",
    "source_connector",
    "source_sequence",
    "policy_digest",
    "notice_version",
    "supersedes",
    "rule_ids",
    "facts_relied_on",
    "disclosures",
    "revision",
}
_DECISION_DEFAULTS: dict[str, object] = {
    "reasons": [],
    "supersedes": None,
    "rule_ids": [],
    "facts_relied_on": [],
    "disclosures": [],
    "revision": 0,
}
_DECISION_REQUIRED = _DECISION_FIELDS - set(_DECISION_DEFAULTS)
_VERDICT_FIELDS = {"subject_id", "subject_kind", "verdict", "reasons"}
_VERDICT_DEFAULTS: dict[str, object] = {"subject_kind": "pupil", "reasons": []}


def _defaults(model: type[BaseModel]) -> dict[str, object]:
    return {
        name: field.get_default(call_default_factory=True)
        for name, field in model.model_fields.items()
        if not field.is_required()
    }


FAST_PATH = (
    set(Decision.model_fields) == _DECISION_FIELDS
    and _defaults(Decision) == _DECISION_DEFAULTS
    and set(SubjectVerdict.model_fields) == _VERDICT_FIELDS
    and _defaults(SubjectVerdict) == _VERDICT_DEFAULTS
)
"""Whether the checks below know the models' fields and defaults as they are: a field added or a default changed
sends every message to pydantic until the checks learn it (a unit test fails meanwhile)."""

# `Identifier` (schemas.events) as one full match: ASCII only, so its length is its length in characters.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}").fullmatch
# The layout pydantic writes UTC datetimes in; anything else (offsets, lower case, other separators) is left to it.
_UTC = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.([0-9]{1,6}))?Z").fullmatch
_VERDICTS = {"allowed", "violation"}
_KINDS = {"pupil", "parent"}
_MAX_INT = 2**63  # beyond it the worker never writes, and the pydantic path decides

_TIMES: dict[str, tuple[Millis, str]] = {}
_TIMES_LIMIT = 10_000  # repeats are near one another: within a decision, or a burst of flows


def _time(value: object) -> tuple[Millis, str] | None:
    """A UTC timestamp as the row holds it (cut to the millisecond) and as `chain.canonical` writes it."""
    if type(value) is not str:
        return None
    found = _TIMES.get(value)
    if found is None:
        match = _UTC(value)
        if match is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:  # a day or an hour out of range: pydantic words the error
            return None
        millis = ((match.group(1) or "") + "000")[:3]
        # `chain.canonical`'s form of this instant, taken from the text: the year has four digits and it is UTC.
        found = (to_millis(parsed), f"{value[:19]}.{millis}Z")
        if len(_TIMES) >= _TIMES_LIMIT:
            _TIMES.clear()
        _TIMES[value] = found
    return found


def _text(value: object) -> bool:
    # Python's strip removes every character pydantic's does (and U+001C..U+001F besides): unchanged here means
    # unchanged by pydantic.
    return type(value) is str and value.strip() == value


def _identifier(value: object) -> bool:
    return type(value) is str and _IDENTIFIER(value) is not None


def _texts(value: object) -> bool:
    if type(value) is not list:
        return False
    # A loop, not all(...): a generator costs more than the check itself on these short lists (hot path).
    for item in value:  # noqa: SIM110
        if type(item) is not str or item.strip() != item:
            return False
    return True


def _strings(value: object) -> bool:
    if type(value) is not list:
        return False
    for item in value:  # noqa: SIM110
        if type(item) is not str:
            return False
    return True


def _count(value: object) -> bool:
    return type(value) is int and 0 <= value < _MAX_INT


def read_decision(value: bytes, payload: str, partition: int, offset: int) -> DecisionRows | None:
    """The rows of decision JSON `value` (`payload` is its text), or None when only pydantic may judge it."""
    if not FAST_PATH:
        return None
    try:
        d: Any = from_json(value)
    except ValueError:
        return None
    if type(d) is not dict or not _DECISION_FIELDS.issuperset(d) or not d.keys() >= _DECISION_REQUIRED:
        return None
    decision_id, flow_event_id, verdict = d["decision_id"], d["flow_event_id"], d["verdict"]
    recipient, purpose, explanation = d["recipient"], d["purpose"], d["explanation"]
    categories, subject_ids, reasons = d["categories"], d["subject_ids"], d.get("reasons", [])
    connector, sequence = d["source_connector"], d["source_sequence"]
    digest, notice = d["policy_digest"], d["notice_version"]
    supersedes, revision = d.get("supersedes"), d.get("revision", 0)
    occurred, decided, emitted = _time(d["occurred_at"]), _time(d["decided_at"]), _time(d["emitted_at"])
    if not (
        _identifier(decision_id)
        and _identifier(flow_event_id)
        and _identifier(recipient)
        and _identifier(purpose)
        and type(verdict) is str
        and verdict in _VERDICTS
        and _texts(reasons)
        and _text(explanation)
        and _texts(categories)
        and _texts(subject_ids)
        and occurred is not None
        and decided is not None
        and emitted is not None
        and _text(connector)
        and _count(sequence)
        and _text(digest)
        and _text(notice)
        and (supersedes is None or _text(supersedes))
        and _strings(d.get("rule_ids", []))
        and _strings(d.get("facts_relied_on", []))
        and _count(revision)
    ):
        return None
    verdicts = _subject_verdicts(d.get("disclosures", []))
    if verdicts is None:
        return None
    if not verdicts:
        # As `sinks.rows.disclosure_rows`: without per-subject verdicts the flow's verdict stands for each subject.
        verdicts = [(subject, "pupil", verdict, reasons) for subject in subject_ids]
    occurred_at, occurred_text = occurred
    decided_at, decided_text = decided
    emitted_at, emitted_text = emitted
    row: list[object] = [
        decision_id,
        flow_event_id,
        verdict,
        reasons,
        explanation,
        recipient,
        purpose,
        categories,
        subject_ids,
        occurred_at,
        decided_at,
        emitted_at,
        connector,
        sequence,
        digest,
        notice,
        supersedes,
        payload,
        partition,
        offset,
    ]
    # `chain.canonical(row)`: the same serialiser over the same values, each timestamp (columns 9-11) already in its
    # hashed form.
    hashed = canonical_json([*row[:9], occurred_text, decided_text, emitted_text, *row[12:]])
    disclosures: list[list[object]] = [
        [
            subject_id,
            occurred_at,
            decision_id,
            kind,
            flow_event_id,
            recipient,
            purpose,
            categories,
            subject_verdict,
            subject_reasons,
            explanation,
            revision,
            supersedes,
            decided_at,
            digest,
        ]
        for subject_id, kind, subject_verdict, subject_reasons in verdicts
    ]
    violation: list[object] | None = None
    if verdict == "violation":
        violation = [
            decision_id,
            flow_event_id,
            occurred_at,
            decided_at,
            recipient,
            purpose,
            categories,
            subject_ids,
            reasons,
            explanation,
            supersedes,
            revision,
            digest,
            notice,
            connector,
        ]
    return DecisionRows(decision_id, row, hashed, disclosures, violation)


def _subject_verdicts(value: object) -> list[tuple[str, str, str, list[str]]] | None:
    """(subject id, kind, verdict, reasons) of each `SubjectVerdict` in `value`; None unless all are plainly valid."""
    if type(value) is not list:
        return None
    verdicts = []
    for item in value:
        if type(item) is not dict or not _VERDICT_FIELDS.issuperset(item):
            return None
        subject_id: Any = item.get("subject_id")
        kind, verdict, reasons = item.get("subject_kind", "pupil"), item.get("verdict"), item.get("reasons", [])
        if not (
            _identifier(subject_id)
            and type(kind) is str
            and kind in _KINDS
            and type(verdict) is str
            and verdict in _VERDICTS
            and _texts(reasons)
        ):
            return None
        verdicts.append((subject_id, kind, verdict, reasons))
    return verdicts
