"""Row mapping, canonical hashing and chain building for the audit trail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.decisions import Decision, SubjectVerdict
from sinks.chain import GENESIS, Chain, Head, canonical, canonical_json, link_hash
from sinks.rows import (
    DECISION_COLUMNS,
    DISCLOSURE_COLUMNS,
    VIOLATION_COLUMNS,
    Millis,
    decision_row,
    disclosure_rows,
    to_millis,
    violation_row,
)

T0 = datetime(2026, 3, 2, 9, 30, 1, 123456, tzinfo=UTC)


def decision(n: int = 1, verdict: str = "violation") -> Decision:
    return Decision(
        decision_id=f"d{n}",
        flow_event_id=f"e{n}",
        verdict=verdict,
        reasons=["NO_CONSENT"],
        explanation="Parent P2 never opted in — sent anyway",
        recipient="parentmail",
        purpose="marketing",
        categories=["identity", "contact"],
        subject_ids=["P1", "P2"],
        occurred_at=T0,
        decided_at=T0,
        emitted_at=T0,
        source_connector="mail",
        source_sequence=n,
        policy_digest="sha256:abc",
        notice_version="1.0",
        supersedes="d0",
        revision=1,
        disclosures=[
            SubjectVerdict(subject_id="P1", verdict="allowed"),
            SubjectVerdict(subject_id="P2", subject_kind="parent", verdict="violation", reasons=["NO_CONSENT"]),
        ],
    )


def test_decision_row_is_stored_to_the_millisecond() -> None:
    row = decision_row(decision(), "{}", 3, 17)
    assert len(row) == len(DECISION_COLUMNS)
    occurred = row[DECISION_COLUMNS.index("occurred_at")]
    assert isinstance(occurred, Millis)
    assert occurred.to_datetime() == T0.replace(microsecond=123000)
    assert row[-2:] == [3, 17]


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2299, 12, 31),
        timezones=st.one_of(st.none(), st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))),
    )
)
def test_a_timestamp_is_stored_as_its_milliseconds_and_hashed_as_the_instant_it_is(moment: datetime) -> None:
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    cut = utc.replace(microsecond=utc.microsecond // 1000 * 1000)
    stored = to_millis(moment)
    since = cut - datetime(1970, 1, 1, tzinfo=UTC)
    assert stored == since.days * 86_400_000 + since.seconds * 1000 + since.microseconds // 1000
    assert stored.to_datetime() == cut
    # As `verify` reads it back: ClickHouse returns DateTime64 naive, in UTC.
    assert canonical_json([stored.hashed()]) == canonical_json(
        [f"{cut:%Y-%m-%dT%H:%M:%S}.{cut.microsecond // 1000:03d}Z"]
    )


def test_disclosures_carry_each_subjects_own_verdict() -> None:
    rows = disclosure_rows(decision())
    as_dicts = [dict(zip(DISCLOSURE_COLUMNS, row, strict=True)) for row in rows]
    assert [(d["subject_id"], d["subject_kind"], d["verdict"], d["reasons"]) for d in as_dicts] == [
        ("P1", "pupil", "allowed", []),
        ("P2", "parent", "violation", ["NO_CONSENT"]),
    ]
    assert {d["revision"] for d in as_dicts} == {1}
    assert {d["supersedes"] for d in as_dicts} == {"d0"}


def test_a_decision_without_per_subject_verdicts_discloses_every_subject_with_the_flows_verdict() -> None:
    bare = decision().model_copy(update={"disclosures": []})
    assert [(r[0], r[8]) for r in disclosure_rows(bare)] == [("P1", "violation"), ("P2", "violation")]


def test_only_violations_have_a_violation_row() -> None:
    row = violation_row(decision())
    assert row is not None
    assert len(row) == len(VIOLATION_COLUMNS)
    assert violation_row(decision(verdict="allowed")) is None


def test_canonical_form_is_the_same_for_the_row_written_and_the_row_read_back() -> None:
    written = decision_row(decision(), '{"x": "é"}', 0, 5)
    # ClickHouse returns DateTime64 as datetimes without a zone, arrays as lists and strings as str.
    read = [v.to_datetime().replace(tzinfo=None) if isinstance(v, Millis) else v for v in written]
    assert [type(v) for v in read].count(datetime) == 3
    assert canonical(written) == canonical(read)
    assert json.loads(canonical(written))[DECISION_COLUMNS.index("occurred_at")] == "2026-03-02T09:30:01.123Z"


def _json(values: list[object]) -> bytes:
    return json.dumps(values, separators=(",", ":")).encode("ascii")


# Every code point, lone surrogates included: what json escapes and pydantic writes raw or refuses.
_ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
_PLAIN = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**64), _ANY_TEXT, st.text(max_size=40))


@given(st.lists(st.one_of(_PLAIN, st.lists(_PLAIN, max_size=4)), max_size=24))
def test_canonical_json_is_json_dumps_byte_for_byte(values: list[object]) -> None:
    assert canonical_json(values) == _json(values)


@pytest.mark.parametrize(
    "text",
    ['quote " and backslash \\', "tab\tnewline\nnul\x00 unit separator\x1f", "DEL \x7f", "é — §", "lone \ud800"],
)
def test_canonical_json_escapes_what_json_escapes(text: str) -> None:
    values: list[object] = ["d1", text, [text, "x"], None, 7]
    assert canonical_json(values) == _json(values)
    assert canonical_json(values).isascii()


@pytest.mark.parametrize("column", DECISION_COLUMNS)
def test_changing_any_column_changes_the_hash(column: str) -> None:
    row = decision_row(decision(), "{}", 0, 5)
    i = DECISION_COLUMNS.index(column)
    changed = list(row)
    value = changed[i]
    if isinstance(value, Millis):
        changed[i] = Millis(value + 1)
    elif isinstance(value, str):
        changed[i] = value + "x"
    elif isinstance(value, int):
        changed[i] = value + 1
    elif isinstance(value, list):
        changed[i] = [*value, "x"]
    else:
        changed[i] = "x"
    assert link_hash(GENESIS, changed) != link_hash(GENESIS, row)


def test_the_hash_depends_on_the_previous_link() -> None:
    row = decision_row(decision(), "{}", 0, 5)
    assert link_hash(GENESIS, row) != link_hash("1" * 64, row)


def test_a_chain_links_each_row_to_the_previous_one_from_genesis() -> None:
    chain = Chain(2)
    rows = [chain.extend(decision_row(decision(n), "{}", 2, 10 + n)) for n in range(3)]
    assert rows[0][-2] == GENESIS
    assert rows[1][-2] == rows[0][-1]
    assert rows[2][-2] == rows[1][-1]
    assert chain.head() == Head(2, 12, str(rows[2][-1]), 3)


def test_a_chain_continued_from_a_recovered_head_builds_the_same_rows() -> None:
    whole = Chain(0)
    rows = [whole.extend(decision_row(decision(n), "{}", 0, n)) for n in range(4)]
    resumed = Chain(0, str(rows[1][-1]), 2, 1)
    again = [resumed.extend(decision_row(decision(n), "{}", 0, n)) for n in range(2, 4)]
    assert again == rows[2:]
    assert resumed.head() == whole.head()


def test_heads_round_trip_through_json_and_reject_garbage() -> None:
    head = Head(1, 99, "ab" * 32, 7)
    assert Head.from_json(json.loads(json.dumps(head.to_json()))) == head
    with pytest.raises(ValueError, match="not a chain head"):
        Head.from_json({"partition": 1})
