"""Mapping decisions, facts and dead letters to audit-store rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.decisions import DeadLetter, Decision
from schemas.events import AgreementTerminated, Fact, SharingAgreement

DECISION_COLUMNS = (
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
    "payload",
    "kafka_partition",
    "kafka_offset",
)
"""The `decisions` columns a row's hash covers, in the order `sinks.chain.canonical` serialises them."""

CHAINED_DECISION_COLUMNS = (*DECISION_COLUMNS, "prev_hash", "row_hash")
"""Every `decisions` column the sink writes: the hashed ones, then the chain links."""

DISCLOSURE_COLUMNS = (
    "subject_id",
    "occurred_at",
    "decision_id",
    "subject_kind",
    "flow_event_id",
    "recipient",
    "purpose",
    "categories",
    "verdict",
    "reasons",
    "explanation",
    "revision",
    "supersedes",
    "decided_at",
    "policy_digest",
)

VIOLATION_COLUMNS = (
    "decision_id",
    "flow_event_id",
    "occurred_at",
    "decided_at",
    "recipient",
    "purpose",
    "categories",
    "subject_ids",
    "reasons",
    "explanation",
    "supersedes",
    "revision",
    "policy_digest",
    "notice_version",
    "source_connector",
)

FACT_COLUMNS = (
    "subject_key",
    "occurred_at",
    "event_id",
    "kind",
    "subject_id",
    "recipient",
    "emitted_at",
    "source_connector",
    "source_sequence",
    "payload",
    "kafka_partition",
    "kafka_offset",
)

DEAD_LETTER_COLUMNS = (
    "source_topic",
    "source_partition",
    "source_offset",
    "message_key",
    "raw",
    "error",
    "stage",
    "received_at",
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class Millis(int):
    """A `DateTime64(3, 'UTC')` value as ClickHouse stores it: whole milliseconds since the epoch.

    The sink's rows carry these rather than datetimes: clickhouse-connect writes integers as they are, and worked out
    each datetime's ticks in Python (about 4 us of the sink's 70-75 us a decision).
    """

    __slots__ = ()

    def to_datetime(self) -> datetime:
        """The instant as an aware UTC datetime."""
        return _EPOCH + self * _MILLISECOND

    def hashed(self) -> str:
        """The instant as `sinks.chain.canonical` writes a timestamp (`hashed_time`)."""
        return hashed_time(self.to_datetime())


def hashed_time(utc: datetime) -> str:
    """A UTC instant as the hash chain covers it: `YYYY-MM-DDTHH:MM:SS.mmmZ`, cut to the millisecond."""
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def to_millis(value: datetime) -> Millis:
    """`value` cut to the millisecond, as DateTime64(3) stores it (naive means UTC): hashed exactly as stored."""
    utc = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return Millis((utc - _EPOCH) // _MILLISECOND)


def decision_row(decision: Decision, payload: str, partition: int, offset: int) -> list[object]:
    """One `decisions` row without its chain links; `payload` is the decision JSON exactly as it travelled."""
    return [
        decision.decision_id,
        decision.flow_event_id,
        decision.verdict,
        list(decision.reasons),
        decision.explanation,
        decision.recipient,
        decision.purpose,
        list(decision.categories),
        list(decision.subject_ids),
        to_millis(decision.occurred_at),
        to_millis(decision.decided_at),
        to_millis(decision.emitted_at),
        decision.source_connector,
        decision.source_sequence,
        decision.policy_digest,
        decision.notice_version,
        decision.supersedes,
        payload,
        partition,
        offset,
    ]


def disclosure_rows(decision: Decision) -> list[list[object]]:
    """One `disclosures` row per subject of the decision, with that subject's own verdict and reasons."""
    verdicts = [(d.subject_id, d.subject_kind, d.verdict, list(d.reasons)) for d in decision.disclosures]
    if not verdicts:
        # A decision made without per-subject verdicts still disclosed every subject's data: the flow's verdict
        # stands for each of them.
        verdicts = [(s, "pupil", decision.verdict, list(decision.reasons)) for s in decision.subject_ids]
    occurred_at, decided_at = to_millis(decision.occurred_at), to_millis(decision.decided_at)
    categories = list(decision.categories)
    return [
        [
            subject_id,
            occurred_at,
            decision.decision_id,
            kind,
            decision.flow_event_id,
            decision.recipient,
            decision.purpose,
            categories,
            verdict,
            reasons,
            decision.explanation,
            decision.revision,
            decision.supersedes,
            decided_at,
            decision.policy_digest,
        ]
        for subject_id, kind, verdict, reasons in verdicts
    ]


def violation_row(decision: Decision) -> list[object] | None:
    """The `violations` row of a violation decision; None for an allowed one."""
    if decision.verdict != "violation":
        return None
    return [
        decision.decision_id,
        decision.flow_event_id,
        to_millis(decision.occurred_at),
        to_millis(decision.decided_at),
        decision.recipient,
        decision.purpose,
        list(decision.categories),
        list(decision.subject_ids),
        list(decision.reasons),
        decision.explanation,
        decision.supersedes,
        decision.revision,
        decision.policy_digest,
        decision.notice_version,
        decision.source_connector,
    ]


def fact_row(fact: Fact, payload: str, partition: int, offset: int) -> list[object]:
    """One `facts` row; `payload` is the fact JSON exactly as it travelled on Kafka."""
    subject_id: str | None = None
    recipient: str | None = None
    subject_key = ""  # Trust-wide facts (a notice version) belong to no subject or recipient
    subject = getattr(fact, "subject", None)  # every subject fact has one, no other fact does
    if subject is not None:
        subject_id = subject_key = subject.id
        scope = getattr(fact, "scope", None)
        # A consent, refusal or objection naming one recipient is also looked up by that recipient.
        recipient = scope.recipient if scope is not None else None
    elif isinstance(fact, SharingAgreement | AgreementTerminated):
        recipient = subject_key = fact.recipient
    return [
        subject_key,
        to_millis(fact.occurred_at),
        fact.event_id,
        fact.kind,
        subject_id,
        recipient,
        to_millis(fact.emitted_at),
        fact.source.connector,
        fact.source.sequence,
        payload,
        partition,
        offset,
    ]


def dead_letter_row(letter: DeadLetter) -> list[object]:
    """One `dead_letters` row."""
    return [
        letter.topic,
        letter.partition,
        letter.offset,
        letter.key,
        letter.raw,
        letter.error,
        letter.stage,
        letter.received_at,
    ]
