"""`decide_json` writes exactly the bytes of the reference decision's `to_json_bytes`, whatever the flow."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError, to_json

from schemas.decisions import Decision, SubjectVerdict
from schemas.events import DataFlow, Fact, parse_flow
from schemas.policy import Policy, load_policy
from streams import builders as b
from streams import render
from streams.evaluate import decide_json, evaluate_uncached
from streams.state import State, to_us

from .conftest import standard_agreements
from .test_evaluate_plan import POLICY, facts, flows, usually
from .test_evaluate_plan import _sample_events as sample_events

POLICY_DIR = Path(__file__).resolve().parents[3] / "policy"


def _same_bytes(flow: DataFlow, state: State, policy: Policy = POLICY, **options: Any) -> bytes:
    """Render cold and warm (fresh and memoised fragments); both must be the reference's bytes."""
    reference = evaluate_uncached(flow, state, policy, **options).to_json_bytes()
    assert decide_json(flow, state, policy, **options) == reference
    assert decide_json(flow, state, policy, **options) == reference
    return reference


def test_replay_sample_as_it_arrives_and_against_the_final_facts() -> None:
    policy = load_policy(POLICY_DIR)  # a cold memo of its own
    state = State()
    judged: list[DataFlow] = []
    for event in sample_events():
        if isinstance(event, DataFlow):
            judged.append(event)
            _same_bytes(event, state, policy)
        else:
            state.apply(event)
    assert len(judged) > 30
    for flow in judged:
        _same_bytes(flow, state, policy)
        # The options the replay uses for superseding decisions, and a decided_at in another zone.
        later = flow.emitted_at + timedelta(hours=3, microseconds=120)
        _same_bytes(flow, state, policy, decided_at=later, supersedes="d-1", revision=2)
        _same_bytes(flow, state, policy, decided_at=later.astimezone(timezone(timedelta(hours=-5))))


def test_a_published_notice_version_is_the_one_rendered() -> None:
    state = State()
    for fact in standard_agreements(POLICY):
        state.apply(fact)
    state.apply(b.born("ava", "2015-05-01"))
    state.apply(b.notice("2024-03-01T00:00Z", '2.0 "spring"'))
    before = b.flow("2024-02-03T10:00Z", "sims", "mis_sync", ["identity", "attendance"], subjects=["ava"])
    after = b.flow("2024-06-03T10:00Z", "sims", "mis_sync", ["identity", "attendance"], subjects=["ava"])
    assert json.loads(_same_bytes(before, state))["notice_version"] == POLICY.trust.notice_version
    assert json.loads(_same_bytes(after, state))["notice_version"] == '2.0 "spring"'


def test_register_text_that_needs_escaping_is_escaped_as_pydantic_does(tmp_path: Path) -> None:
    # The explanation quotes the register's names: a quote, a backslash, a control character, non-ASCII.
    shutil.copytree(POLICY_DIR, tmp_path / "policy")
    recipients = tmp_path / "policy" / "recipients.yaml"
    text = recipients.read_text(encoding="utf-8")
    odd = 'name: "SIMS \\"MIS\\" \\\\ caf\\u00e9 \\t\\u0001 \\u2028"'
    assert "name: SIMS school information management system" in text
    recipients.write_text(text.replace("name: SIMS school information management system", odd), encoding="utf-8")
    policy = load_policy(tmp_path / "policy")
    state = State()
    for fact in standard_agreements(policy):
        state.apply(fact)
    state.apply(b.born("ava", "2015-05-01"))
    flow = b.flow("2024-06-03T10:00:00.25+01:00", "sims", "mis_sync", ["identity"], subjects=["ava"])
    assert "caf\u00e9" in json.loads(_same_bytes(flow, state, policy))["explanation"]


# --- generated flows and facts (the generators of test_evaluate_plan) ------------------------------------------

offsets = st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-7, minutes=-30))])


@st.composite
def on_the_wire(draw: st.DrawFn, flow: DataFlow) -> DataFlow:
    """The flow as a connector might send it: other offsets, sub-second times, emitted later or at once."""
    raw = flow.model_dump(mode="json")
    occurred = flow.occurred_at + timedelta(microseconds=draw(st.sampled_from([0, 0, 1, 500_000, 999_999])))
    emitted = occurred + draw(st.sampled_from([timedelta(0), timedelta(0), timedelta(seconds=90, microseconds=7)]))
    raw["occurred_at"] = occurred.astimezone(draw(offsets)).isoformat()
    raw["emitted_at"] = emitted.astimezone(draw(offsets)).isoformat()
    return parse_flow(json.dumps(raw))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(usually(True, False), st.lists(facts(), max_size=12), st.lists(flows(), min_size=1, max_size=4), st.data())
def test_generated_flows_render_the_reference_bytes(
    agreements: bool, history: list[Fact], judged: list[DataFlow], data: st.DataObject
) -> None:
    state = State()
    for fact in (standard_agreements(POLICY) if agreements else []) + history:
        state.apply(fact)
    for flow in judged:
        _same_bytes(flow, state)
        _same_bytes(data.draw(on_the_wire(flow)), state)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(usually(True, False), st.lists(st.one_of(facts(), flows()), min_size=2, max_size=16))
def test_facts_arriving_between_flows_reach_the_rendered_decision(
    agreements: bool, events: list[Fact | DataFlow]
) -> None:
    state = State()
    for fact in standard_agreements(POLICY) if agreements else []:
        state.apply(fact)
    for event in events:
        if isinstance(event, DataFlow):
            _same_bytes(event, state)
        else:
            state.apply(event)


# --- the fragments themselves -------------------------------------------------------------------------------

_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


@given(st.text())
def test_strings_are_escaped_as_pydantic_escapes_them(text: str) -> None:
    try:
        expected = to_json(text)
    except PydanticSerializationError:  # lone surrogates: pydantic cannot write them, nor can encode()
        return
    assert render.string(text).encode() == expected
    assert render.strings([text, text[::-1]]).encode() == to_json([text, text[::-1]])


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from([UTC, None])),
    st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), None]),
)
def test_datetimes_are_written_as_pydantic_writes_them(moment: datetime, other: timezone | None) -> None:
    assert render.datetime_json(moment).encode() == _DATETIME.dump_json(moment)
    if moment.tzinfo is UTC:
        assert render.datetime_json(moment, to_us(moment)).encode() == _DATETIME.dump_json(moment)
        if other is not None:
            moved = moment.astimezone(other)
            assert render.datetime_json(moved).encode() == _DATETIME.dump_json(moved)


texts = st.text(max_size=30)
ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,20}\Z")
moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(
    texts, texts, ids, ids, st.lists(ids, min_size=1, max_size=3), st.lists(texts, max_size=3),
    st.lists(st.sampled_from(["NO_CONSENT", "INSECURE_CHANNEL", "SALE_OF_DATA"]), unique=True, max_size=2),
    texts, ids, ids, st.sampled_from(["pupil", "parent"]), moments, moments, st.sampled_from([None, "d-1"]),
    st.integers(0, 5), texts, st.lists(ids, min_size=1, max_size=4), st.integers(0, 2**40), ids,
)  # fmt: skip
def test_decision_one_is_the_decision_s_bytes(
    head: str, basis: str, recipient: str, purpose: str, categories: list[str], facts_: list[str],
    reasons: list[str], because: str, event_id: str, subject_id: str, subject_kind: str, occurred: datetime,
    emitted: datetime, supersedes: str | None, revision: int, notice: str, rules: list[str], sequence: int,
    connector: str,
) -> None:  # fmt: skip
    for text in (head, basis, because, notice, *facts_):
        try:
            to_json(text)
        except PydanticSerializationError:  # lone surrogates: no serializer writes them
            return
    shape = render.ShapeJson(head, basis, recipient, purpose, categories, tuple(rules[:1]), "sha256:ab")
    codes = render.CodesJson(reasons, because)
    relied = f" It relied on {', '.join(facts_)}." if facts_ else ""
    verdict = "violation" if reasons else "allowed"
    middle = f"Violation: {because}." if reasons else f"Allowed under {basis}."
    decision = Decision.trusted_from(
        {
            "decision_id": "0b6f4bde-3f3e-5d61-9a1f-2f1d7c0e5a10", "flow_event_id": event_id, "verdict": verdict,
            "reasons": reasons, "explanation": f"On 2024-06-03 {head} {middle}{relied}", "recipient": recipient,
            "purpose": purpose, "categories": categories, "subject_ids": [subject_id], "occurred_at": occurred,
            "decided_at": emitted, "emitted_at": emitted, "source_connector": connector, "source_sequence": sequence,
            "policy_digest": "sha256:ab", "notice_version": notice, "supersedes": supersedes, "rule_ids": rules,
            "facts_relied_on": facts_,
            "disclosures": [
                SubjectVerdict.trusted_from(
                    {"subject_id": subject_id, "subject_kind": subject_kind, "verdict": verdict, "reasons": reasons}
                )
            ],
            "revision": revision,
        }
    )  # fmt: skip
    rendered = render.decision_one(
        shape, codes, "0b6f4bde-3f3e-5d61-9a1f-2f1d7c0e5a10", event_id, "2024-06-03", facts_, shape.rule_ids(rules),
        subject_id, subject_kind, occurred, to_us(occurred), None, emitted, connector, sequence, notice, supersedes,
        revision,
    )  # fmt: skip
    assert rendered == decision.to_json_bytes()
