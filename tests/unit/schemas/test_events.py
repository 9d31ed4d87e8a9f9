"""Wire events: the envelope, the discriminated union, UTC normalisation and strictness."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.events import (
    ConsentGiven,
    CourtOrderNotified,
    DataFlow,
    SharingAgreement,
    effective_at,
    parse_event,
)

ENVELOPE = {
    "event_id": "e-1",
    "occurred_at": "2024-06-03T10:00:00+01:00",
    "emitted_at": "2024-06-03T09:00:01Z",
    "source": {"connector": "mis", "sequence": 7},
}


def event(**fields: object) -> str:
    return json.dumps({**ENVELOPE, **fields})


def test_a_flow_keeps_the_original_fields_and_partition_key() -> None:
    flow = parse_event(
        event(kind="flow", recipient="sims", subjects=[{"id": "p-1"}], categories=["identity"], purpose="mis_sync")
    )
    assert isinstance(flow, DataFlow)
    assert flow.partition_key() == b"p-1"
    assert flow.destination_country == "GB"
    assert flow.record_count == 1
    assert flow.consideration == "none"


def test_datetimes_are_normalised_to_utc() -> None:
    flow = parse_event(
        event(kind="flow", recipient="sims", subjects=[{"id": "p-1"}], categories=["identity"], purpose="x")
    )
    assert flow.occurred_at == datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
    assert flow.occurred_at.utcoffset() is not None
    assert flow.occurred_at.tzinfo is UTC


def test_naive_datetimes_are_rejected() -> None:
    raw = json.dumps(
        {
            **ENVELOPE,
            "occurred_at": "2024-06-03T10:00:00",
            "kind": "flow",
            "recipient": "sims",
            "subjects": [{"id": "p"}],
            "categories": ["identity"],
            "purpose": "x",
        }
    )
    with pytest.raises(ValidationError):
        parse_event(raw)


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        parse_event(
            event(
                kind="flow", recipient="sims", subjects=[{"id": "p"}], categories=["identity"], purpose="x", surprise=1
            )
        )


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_event(event(kind="gossip"))


def test_consent_given_parses_and_is_keyed_by_subject() -> None:
    fact = parse_event(
        event(
            kind="consent_given",
            subject={"id": "p-9"},
            consent_id="c-1",
            given_by={"id": "m-1", "relationship": "mother", "has_parental_responsibility": True},
            scope={"recipient": "peripatetic-music", "purpose": "music_tuition", "categories": ["identity"]},
        )
    )
    assert isinstance(fact, ConsentGiven)
    assert fact.partition_key() == b"p-9"
    assert effective_at(fact) == fact.occurred_at


def test_consent_must_name_purpose_recipient_and_categories() -> None:
    with pytest.raises(ValidationError, match="purpose"):
        parse_event(
            event(
                kind="consent_given",
                subject={"id": "p"},
                consent_id="c",
                given_by={"id": "m", "relationship": "mother"},
                scope={"recipient": "r", "categories": ["identity"]},
            )
        )
    with pytest.raises(ValidationError, match="not both"):
        parse_event(
            event(
                kind="consent_given",
                subject={"id": "p"},
                consent_id="c",
                given_by={"id": "m", "relationship": "mother"},
                scope={"recipient": "r", "recipient_class": "partner", "purpose": "x", "categories": ["a"]},
            )
        )


def test_withdrawal_must_name_a_consent_or_a_scope() -> None:
    with pytest.raises(ValidationError, match="consent_id or the scope"):
        parse_event(
            event(kind="consent_withdrawn", subject={"id": "p"}, withdrawn_by={"id": "m", "relationship": "mother"})
        )


def test_agreement_is_keyed_by_recipient_and_ordered() -> None:
    fact = parse_event(
        event(
            kind="sharing_agreement",
            agreement_id="a-1",
            recipient="sims",
            agreement_type="art28_contract",
            valid_from="2024-01-01T00:00:00Z",
            valid_until="2025-01-01T00:00:00Z",
        )
    )
    assert isinstance(fact, SharingAgreement)
    assert fact.partition_key() == b"sims"
    with pytest.raises(ValidationError, match="before valid_from"):
        parse_event(
            event(
                kind="sharing_agreement",
                agreement_id="a-1",
                recipient="sims",
                agreement_type="dsa",
                valid_from="2025-01-01T00:00:00Z",
                valid_until="2024-01-01T00:00:00Z",
            )
        )


def test_court_order_is_effective_from_trust_notification() -> None:
    fact = parse_event(
        event(
            kind="court_order",
            subject={"id": "p"},
            order_id="o-1",
            made_at="2024-01-01T00:00:00Z",
            trust_notified_at="2024-02-01T08:30:00+00:00",
            restricted_person_ids=["dad-1"],
        )
    )
    assert isinstance(fact, CourtOrderNotified)
    assert effective_at(fact) == datetime(2024, 2, 1, 8, 30, tzinfo=UTC)


def test_every_fact_kind_has_a_partition_key() -> None:
    from typing import get_args

    from schemas.events import Fact

    for cls in get_args(Fact):
        assert callable(getattr(cls, "partition_key", None)), cls
