"""Mapping decisions and dead letters to audit-store rows."""

from __future__ import annotations

from schemas.decisions import DeadLetter, Decision

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


def decision_row(decision: Decision, payload: str, partition: int, offset: int) -> list[object]:
    """One `decisions` row; `payload` is the decision JSON exactly as it travelled on Kafka."""
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
        decision.occurred_at,
        decision.decided_at,
        decision.emitted_at,
        decision.source_connector,
        decision.source_sequence,
        decision.policy_digest,
        decision.notice_version,
        decision.supersedes,
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
