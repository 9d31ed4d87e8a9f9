"""Decision ids are deterministic uuid5 values; trusted construction equals validation."""

from __future__ import annotations

import uuid

from schemas.decisions import DECISION_NAMESPACE, REASON_ORDER, Decision, ReasonCode, SubjectVerdict, decision_id_for
from sinks.rows import DECISION_COLUMNS


def test_decision_id_is_uuid5_of_the_material() -> None:
    material = "flow-1|sha256:ab|NO_CONSENT|c-1,a-2|"
    expected = str(uuid.uuid5(DECISION_NAMESPACE, material))
    assert decision_id_for("flow-1", "sha256:ab", ["NO_CONSENT"], ["c-1", "a-2"], None) == expected


def test_decision_id_changes_with_what_the_verdict_rests_on() -> None:
    base = decision_id_for("flow-1", "sha256:ab", [], ["c-1"], None)
    assert base == decision_id_for("flow-1", "sha256:ab", [], ["c-1"], None)
    assert base != decision_id_for("flow-1", "sha256:cd", [], ["c-1"], None)
    assert base != decision_id_for("flow-1", "sha256:ab", ["NO_CONSENT"], [], None)
    assert base != decision_id_for("flow-1", "sha256:ab", [], ["c-1"], base)


def test_reason_codes_are_the_fixed_list_of_rules_section_1() -> None:
    assert len(ReasonCode) == 21
    assert REASON_ORDER["UNKNOWN_RECIPIENT"] < REASON_ORDER["SALE_OF_DATA"]
    assert REASON_ORDER["MARKETING_WITHOUT_CONSENT"] < REASON_ORDER["CONSENT_WITHDRAWN"]
    assert REASON_ORDER["CATEGORY_NOT_PERMITTED_FOR_RECIPIENT"] < REASON_ORDER["SPECIAL_CATEGORY_WITHOUT_CONDITION"]


def test_trusted_construction_equals_validation() -> None:
    values = {"subject_id": "ava", "subject_kind": "pupil", "verdict": "violation", "reasons": ["NO_CONSENT"]}
    assert SubjectVerdict.trusted(**values) == SubjectVerdict.model_validate(values)
    partial = SubjectVerdict.trusted(subject_id="ava", verdict="allowed")
    assert partial.reasons == []
    assert partial.subject_kind == "pupil"


def test_decision_keeps_the_sink_columns() -> None:
    # Every audit-store column except the Kafka coordinates and the raw payload is a Decision field.
    from_decision = [c for c in DECISION_COLUMNS if c not in {"payload", "kafka_partition", "kafka_offset"}]
    assert len(from_decision) == len(DECISION_COLUMNS) - 3
    assert set(from_decision) <= set(Decision.model_fields)
