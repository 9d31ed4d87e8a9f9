"""The sink's fast decision reader gives exactly the rows and hashes the pydantic path gives, or stands aside.

The reference is the sink's path before the fast one: `Decision.model_validate_json`, then `sinks.rows`, then
`sinks.chain.canonical`. Compared on the replay sample, hand-made edge cases, the same decisions in other JSON
spellings, generated decisions, and messages pydantic refuses (which the fast path must never accept).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.decisions import Decision, ReasonCode, SubjectVerdict
from schemas.events import Model
from schemas.policy import Policy
from sinks.chain import GENESIS, Chain, canonical
from sinks.decision_rows import FAST_PATH, DecisionRows, read_decision
from sinks.rows import CHAINED_DECISION_COLUMNS, decision_row, disclosure_rows, violation_row
from streams.replay import replay_lines

from .test_writer import FakeClient, FakeConsumer, Record, make_sink

SAMPLE = Path(__file__).resolve().parents[3] / "tests" / "data" / "replay" / "sample.jsonl"
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DECISIONS = "pupilflow.decisions"


def reference(value: bytes, partition: int, offset: int) -> DecisionRows:
    """The rows as the sink built them before the fast path: a validated `Decision` mapped by `sinks.rows`."""
    raw = value.decode("utf-8", "backslashreplace")
    decision = Decision.model_validate_json(value)
    row = decision_row(decision, raw, partition, offset)
    return DecisionRows(decision.decision_id, row, canonical(row), disclosure_rows(decision), violation_row(decision))


def typed(value: object) -> object:
    """`value` with the type of every part spelled out: equal only if values, types and time zones all are."""
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(item) for item in value])
    return (type(value).__name__, repr(value))


def check(value: bytes, partition: int = 1, offset: int = 42) -> bool:
    """Assert the fast path agrees with the reference (or stands aside); True when it took the message."""
    raw = value.decode("utf-8", "backslashreplace")
    got = read_decision(value, raw, partition, offset)
    try:
        expected = reference(value, partition, offset)
    except ValidationError:
        assert got is None, f"accepted what pydantic refuses: {value!r}"
        return False
    if got is None:
        return False
    assert typed(got) == typed(expected)
    assert got.hashed == canonical(got.row)
    assert Chain(partition).extend(got.row, got.hashed) == Chain(partition).extend(expected.row)
    return True


def decision(**overrides: Any) -> Decision:
    values: dict[str, Any] = {
        "decision_id": "0b7c6f1e-2d1a-5b3c-8d4e-5f6a7b8c9d0e",
        "flow_event_id": "f-1",
        "verdict": "allowed",
        "reasons": [],
        "explanation": "On 2026-03-02 identity went to the DfE for the census. Allowed under legal_obligation.",
        "recipient": "dfe",
        "purpose": "census_return",
        "categories": ["identity", "attendance"],
        "subject_ids": ["P1"],
        "occurred_at": T0,
        "decided_at": T0,
        "emitted_at": T0,
        "source_connector": "sims",
        "source_sequence": 7,
        "policy_digest": "sha256:abc",
        "notice_version": "1.0",
        "rule_ids": ["4.register", "2.basis"],
        "facts_relied_on": ["agr-dfe"],
        "disclosures": [SubjectVerdict(subject_id="P1", verdict="allowed")],
    }
    values.update(overrides)
    return Decision(**values)


def edited(d: Decision, **changes: Any) -> bytes:
    """`d`'s JSON with fields replaced (a value of ... removes the field), as pydantic would not write it."""
    fields = json.loads(d.to_json_bytes())
    for name, value in changes.items():
        if value is ...:
            del fields[name]
        else:
            fields[name] = value
    return json.dumps(fields, ensure_ascii=False).encode()


def test_the_fast_path_knows_every_field_of_the_models() -> None:
    assert FAST_PATH


def test_replay_sample_decisions_take_the_fast_path_to_the_reference_rows(register: Policy) -> None:
    decisions = replay_lines(SAMPLE.read_text().splitlines(), register).decisions
    assert len(decisions) > 30
    assert any(d.supersedes for d in decisions)
    assert any(len(d.subject_ids) > 1 and d.verdict == "violation" for d in decisions)
    for n, d in enumerate(decisions):
        value = d.to_json_bytes()
        assert check(value, partition=n % 3, offset=1000 + n)
        # The same decision spelled otherwise: ASCII escapes, spaces and newlines, keys in another order.
        fields = json.loads(value)
        assert check(json.dumps(fields, indent=1).encode(), offset=n)
        assert check(json.dumps(dict(reversed(fields.items()))).encode(), offset=n)


EDGE_CASES = {
    "superseding": decision(supersedes="d-earlier", revision=3, verdict="violation", reasons=["CONSENT_WITHDRAWN"]),
    "several reasons": decision(
        verdict="violation",
        reasons=["SALE_OF_DATA", "NO_CONSENT", "INSECURE_CHANNEL"],
        disclosures=[SubjectVerdict(subject_id="P1", verdict="violation", reasons=["SALE_OF_DATA", "NO_CONSENT"])],
    ),
    "multi-subject, mixed verdicts": decision(
        verdict="violation",
        reasons=["PHOTO_WITHOUT_PERMISSION"],
        subject_ids=["P1", "P2", "M1"],
        disclosures=[
            SubjectVerdict(subject_id="P1", verdict="allowed"),
            SubjectVerdict(subject_id="P2", verdict="violation", reasons=["PHOTO_WITHOUT_PERMISSION"]),
            SubjectVerdict(subject_id="M1", subject_kind="parent", verdict="allowed"),
        ],
    ),
    "no per-subject verdicts": decision(subject_ids=["P1", "P2"], disclosures=[]),
    "a violation without per-subject verdicts": decision(
        verdict="violation",
        reasons=["NO_SHARING_AGREEMENT", "RETENTION_EXCEEDED"],
        subject_ids=["P1", "P2"],
        disclosures=[],
    ),
    "no subjects, no categories": decision(subject_ids=[], categories=[], disclosures=[]),
    "unicode and escapes": decision(
        explanation="Zoë's photo → “newsletter” 📸 \\ back\\slash\ttab\nnewline \u2028 \x00\x1f\x7f end",
        subject_ids=["Zoë", "P\u00a0"],
        categories=["photographs", "ß"],
        disclosures=[],
        notice_version="2.0 \u2013 été",
        source_connector="mailtrace ✉",
    ),
    "empty explanation": decision(explanation=""),
    "microseconds": decision(
        occurred_at=T0.replace(microsecond=123456),
        decided_at=T0.replace(microsecond=999999),
        emitted_at=T0.replace(microsecond=500),
    ),
    "times given in other zones": decision(
        occurred_at=datetime(2026, 3, 2, 10, 30, 0, 250000, tzinfo=timezone(timedelta(hours=1))),
        decided_at=datetime(2026, 3, 1, 23, 59, 59, 999000, tzinfo=timezone(timedelta(hours=-11))),
    ),
    "first and last instants": decision(
        occurred_at=datetime(1000, 1, 1, tzinfo=UTC), emitted_at=datetime(9999, 12, 31, 23, 59, 59, 999999, UTC)
    ),
    "large numbers": decision(source_sequence=2**63 - 1, revision=2**62),
}


@pytest.mark.parametrize("name", EDGE_CASES)
def test_edge_cases_take_the_fast_path_to_the_reference_rows(name: str) -> None:
    assert check(EDGE_CASES[name].to_json_bytes())


def test_other_json_spellings_of_a_valid_decision_are_read_alike_or_left_to_pydantic() -> None:
    d = EDGE_CASES["multi-subject, mixed verdicts"]
    fast = [
        json.dumps(json.loads(d.to_json_bytes()), ensure_ascii=True).encode(),  # \u escapes, surrogate pairs too
        edited(EDGE_CASES["unicode and escapes"]).replace("📸".encode(), b"\\ud83d\\udcf8"),
        edited(d, supersedes=..., rule_ids=..., facts_relied_on=..., revision=...),
        edited(decision(), reasons=..., disclosures=...),
        edited(d, disclosures=[{"subject_id": "P1", "verdict": "allowed"}]),
        edited(d, occurred_at="2026-03-02T09:30:00.1Z", decided_at="2026-03-02T09:30:00.12345Z"),
        d.to_json_bytes()[:-1] + b',"explanation":"the last of two wins, as in pydantic"}',
    ]
    slow = [
        edited(d, explanation="  padded, so pydantic strips it  "),
        edited(d, reasons=[" PHOTO_WITHOUT_PERMISSION"], categories=["photographs\n"]),
        edited(d, explanation="ends with a separator pydantic keeps\x1c"),
        edited(d, decision_id=" d-1"),
        edited(d, decision_id="d-1\n"),
        edited(d, occurred_at="2026-03-02T09:30:00+00:00"),
        edited(d, occurred_at="2026-03-02T10:30:00+01:00"),
        edited(d, occurred_at="2026-03-02t09:30:00z"),
        edited(d, occurred_at="2026-03-02 09:30:00Z"),
        edited(d, occurred_at="2026-03-02T09:30:00.1234567Z"),
        edited(d, occurred_at="2026-03-02T09:30Z"),
        edited(d, occurred_at="0999-03-02T09:30:00Z"),
        edited(d, occurred_at=1_772_443_800),
        edited(d, source_sequence=5.0),
        edited(d, source_sequence="5"),
        edited(d, source_sequence=True),
        edited(d, source_sequence=-3),
        edited(d, source_sequence=2**70),
        edited(d, revision="1"),
    ]
    for value in fast:
        assert check(value), value
    for value in slow:
        Decision.model_validate_json(value)  # valid, only not plainly so
        assert not check(value), value


REFUSED = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b'"a string"',
    b'{"decision_id": "x"}',
    edited(decision(), decision_id=...),
    edited(decision(), verdict=...),
    edited(decision(), surprise="an unknown field"),
    edited(decision(), verdict="maybe"),
    edited(decision(), verdict=" allowed"),
    edited(decision(), verdict=["allowed"]),
    edited(decision(), decision_id=""),
    edited(decision(), decision_id="has space"),
    edited(decision(), decision_id="-leading-dash"),
    edited(decision(), decision_id="x" * 201),
    edited(decision(), recipient="dfé"),
    edited(decision(), purpose=None),
    edited(decision(), explanation=None),
    edited(decision(), explanation=["a list"]),
    edited(decision(), reasons=[1]),
    edited(decision(), reasons="NO_CONSENT"),
    edited(decision(), categories=None),
    edited(decision(), subject_ids=[None]),
    edited(decision(), rule_ids=[2]),
    edited(decision(), facts_relied_on={"a": 1}),
    edited(decision(), supersedes=5),
    edited(decision(), occurred_at="2026-03-02T09:30:00"),
    edited(decision(), occurred_at="2026-02-30T09:30:00Z"),
    edited(decision(), occurred_at="2026-03-02T24:00:00Z"),
    edited(decision(), occurred_at="2026-12-31T23:59:60Z"),
    edited(decision(), occurred_at="yesterday"),
    edited(decision(), decided_at=None),
    edited(decision(), source_sequence=None),
    edited(decision(), source_sequence=1.5),
    edited(decision(), revision=-1),
    edited(decision(), disclosures=[{"subject_id": "P1"}]),
    edited(decision(), disclosures=[{"subject_id": "P1", "verdict": "allowed", "extra": 1}]),
    edited(decision(), disclosures=[{"subject_id": "P 1", "verdict": "allowed"}]),
    edited(decision(), disclosures=[{"subject_id": "P1", "verdict": "allowed", "subject_kind": "teacher"}]),
    edited(decision(), disclosures=[{"subject_id": "P1", "verdict": "allowed", "reasons": [None]}]),
    edited(decision(), disclosures=[{"subject_id": "P1", "verdict": "allowed", "subject_kind": ["pupil"]}]),
    edited(decision(), disclosures=[{"subject_id": "P1", "verdict": {"allowed": True}}]),
    edited(decision(), disclosures=["P1"]),
    edited(decision(), disclosures={"subject_id": "P1", "verdict": "allowed"}),
    decision().to_json_bytes().replace(b'"sims"', b'"si\xffms"'),  # not UTF-8
    decision().to_json_bytes().replace(b'"sims"', b'"\\ud800"'),  # a lone surrogate
    decision().to_json_bytes().replace(b'"source_sequence":7', b'"source_sequence":NaN'),
    decision().to_json_bytes() + b"{}",
]


@pytest.mark.parametrize("value", REFUSED)
def test_what_pydantic_refuses_the_fast_path_never_accepts(value: bytes) -> None:
    with pytest.raises(ValidationError):
        Decision.model_validate_json(value)
    assert read_decision(value, value.decode("utf-8", "backslashreplace"), 0, 0) is None


def test_the_sink_dead_letters_what_pydantic_refuses_with_its_reasons() -> None:
    records = [Record(DECISIONS, 0, n, None, value) for n, value in enumerate(REFUSED)]
    consumer, client = FakeConsumer(records), FakeClient()
    sink, metrics, _, _ = make_sink(consumer, client, max_seconds=0)
    sink.poll_once()
    sink.flush(lambda: False)
    letters = client.tables["dead_letters"]
    assert len(letters) == len(REFUSED)
    assert "decisions" not in client.tables
    assert metrics.rejected._value.get() == len(REFUSED)
    assert all(row[5].startswith("sink could not read message: [{") for row in letters)
    assert [row[4] for row in letters] == [value.decode("utf-8", "backslashreplace") for value in REFUSED]


def test_the_sink_lands_exactly_the_rows_of_the_pydantic_path(register: Policy) -> None:
    values = [d.to_json_bytes() for d in replay_lines(SAMPLE.read_text().splitlines(), register).decisions]
    # Each its own decision: the sink skips a decision id it has already chained at another offset.
    values += [
        d.model_copy(update={"decision_id": f"edge-{n}"}).to_json_bytes() for n, d in enumerate(EDGE_CASES.values())
    ]
    values.append(edited(EDGE_CASES["several reasons"], decision_id="d-padded", explanation=" padded "))
    records = [Record(DECISIONS, n % 2, n // 2, None, value) for n, value in enumerate(values)]
    consumer, client = FakeConsumer(records), FakeClient()
    sink, _, _, _ = make_sink(consumer, client, max_seconds=0)
    sink.poll_once()
    sink.flush(lambda: False)

    chains = {0: Chain(0), 1: Chain(1)}
    expected: dict[str, list[object]] = {"decisions": [], "disclosures": [], "violations": []}
    for record in records:
        rows = reference(record.value, record.partition, record.offset)
        expected["decisions"].append(chains[record.partition].extend(rows.row))
        expected["disclosures"].extend(rows.disclosures)
        if rows.violation is not None:
            expected["violations"].append(rows.violation)
    for table, rows in expected.items():
        assert typed(client.tables[table]) == typed(rows), table
    first = client.tables["decisions"][0]
    assert first[CHAINED_DECISION_COLUMNS.index("prev_hash")] == GENESIS


def test_python_strips_every_character_pydantic_strips() -> None:
    """What makes "unchanged by str.strip" a safe test for "unchanged by pydantic" (U+001C..U+001F aside)."""

    class Text(Model):
        text: str

    for code in range(0x10000):
        if 0xD800 <= code < 0xE000:
            continue
        for text in (f"{chr(code)}x", f"x{chr(code)}"):
            if Text(text=text).text != text:
                assert text.strip() != text, hex(code)


IDENTIFIERS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,30}", fullmatch=True)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
TIMES = st.datetimes(min_value=datetime(1001, 1, 1), max_value=datetime(9998, 12, 31), timezones=ZONES)
CODES = st.lists(st.sampled_from([code.value for code in ReasonCode]), max_size=4)
VERDICTS = st.builds(
    SubjectVerdict,
    subject_id=IDENTIFIERS,
    subject_kind=st.sampled_from(["pupil", "parent"]),
    verdict=st.sampled_from(["allowed", "violation"]),
    reasons=CODES,
)
DECISIONS_GENERATED = st.builds(
    Decision,
    decision_id=IDENTIFIERS,
    flow_event_id=IDENTIFIERS,
    verdict=st.sampled_from(["allowed", "violation"]),
    reasons=CODES,
    explanation=st.text(max_size=60),
    recipient=IDENTIFIERS,
    purpose=IDENTIFIERS,
    categories=st.lists(st.text(max_size=12), max_size=4),
    subject_ids=st.lists(st.text(max_size=12), max_size=4),
    occurred_at=TIMES,
    decided_at=TIMES,
    emitted_at=TIMES,
    source_connector=st.text(max_size=12),
    source_sequence=st.integers(0, 2**63 - 1),
    policy_digest=st.text(max_size=12),
    notice_version=st.text(max_size=6),
    supersedes=st.none() | st.text(max_size=12),
    rule_ids=st.lists(st.text(max_size=8), max_size=3),
    facts_relied_on=st.lists(st.text(max_size=8), max_size=3),
    disclosures=st.lists(VERDICTS, max_size=3),
    revision=st.integers(0, 5),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=DECISIONS_GENERATED, partition=st.integers(0, 63), offset=st.integers(0, 2**40))
def test_generated_decisions_give_the_reference_rows(d: Decision, partition: int, offset: int) -> None:
    value = d.to_json_bytes()
    took = check(value, partition, offset)
    check(json.dumps(json.loads(value), ensure_ascii=True).encode(), partition, offset)
    # Only text pydantic left alone but str.strip would not (U+001C..U+001F at an edge) may stand aside.
    texts = [d.explanation, d.source_connector, d.policy_digest, d.notice_version, d.supersedes or ""]
    texts += [*d.categories, *d.subject_ids]
    assert took or any(text.strip() != text for text in texts)
