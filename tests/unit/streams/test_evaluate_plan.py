"""The memoised shape and the single-subject plan give exactly the decision of the uncached general path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import streams.evaluate as evaluator
from schemas.decisions import Decision
from schemas.events import DataFlow, DisclosureRequest, Fact, parse_event
from schemas.policy import Policy, load_policy
from streams import builders as b
from streams.evaluate import age_on, born_by, evaluate, evaluate_uncached
from streams.state import State

from .conftest import standard_agreements

POLICY: Policy = load_policy(Path(__file__).resolve().parents[3] / "policy")
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "replay" / "sample.jsonl"
BASE = datetime(2023, 9, 1, tzinfo=UTC)


def _same(flow: DataFlow, state: State, policy: Policy = POLICY) -> Decision:
    """Judge twice (cold and warm memo) and uncached; all three must be the same decision, byte for byte."""
    cold = evaluate(flow, state, policy)
    warm = evaluate(flow, state, policy)
    reference = evaluate_uncached(flow, state, policy)
    assert cold == reference
    assert warm == reference
    assert cold.to_json_bytes() == reference.to_json_bytes()
    return reference


def _sample_events() -> Iterator[Any]:
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        try:
            yield parse_event(line)
        except (ValidationError, ValueError):
            continue  # the sample's deliberately bad lines


def test_replay_sample_as_it_arrives_and_against_the_final_facts() -> None:
    policy = load_policy(Path(__file__).resolve().parents[3] / "policy")  # a cold memo of its own
    state = State()
    flows: list[DataFlow] = []
    for event in _sample_events():
        if isinstance(event, DataFlow):
            flows.append(event)
            _same(event, state, policy)
        else:
            state.apply(event)
    assert len(flows) > 30
    for flow in flows:
        _same(flow, state, policy)
        # The same flow once more under other options the replay uses.
        later = flow.emitted_at + timedelta(hours=3)
        fast = evaluate(flow, state, policy, decided_at=later, supersedes="d-1", revision=2)
        slow = evaluate_uncached(flow, state, policy, decided_at=later, supersedes="d-1", revision=2)
        assert fast == slow


def test_the_plan_is_what_judges_simple_single_subject_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    plan = evaluator._evaluate_one

    def spy(flow: DataFlow, *args: Any) -> Decision:
        calls.append(flow.event_id)
        return plan(flow, *args)

    monkeypatch.setattr(evaluator, "_evaluate_one", spy)
    state = State()
    for event in _sample_events():
        if not isinstance(event, DataFlow):
            state.apply(event)
    simple = [e for e in _sample_events() if isinstance(e, DataFlow) and len(e.subjects) == 1]
    for flow in simple:
        evaluate(flow, state, POLICY)
    # Most single-subject flows of the school year take the plan; police, family and aged-data flows do not.
    assert len(calls) >= len(simple) // 2
    assert "f-dan-milk" in calls
    assert "f-police-verbal" not in calls


# --- generated flows and facts --------------------------------------------------------------------------------

GRANTS = sorted((r.key, g.purpose) for r in POLICY.recipients for g in r.grants)
PERMITTED = {(r.key, g.purpose): sorted(g.categories) for r in POLICY.recipients for g in r.grants}
CATEGORIES = [*sorted(c.key for c in POLICY.categories), "identity.name", "health.allergy", "not-a-category"]
SECURE = sorted(POLICY.channels.secure)
PEOPLE = [
    ("p", "self", False),
    ("mum", "mother", True),
    ("dad", "father", False),
    ("step", "step_parent", False),
    ("fc", "foster_carer", False),
    ("la", "local_authority", False),
]

moments = st.integers(min_value=0, max_value=60 * 24 * 365 * 7).map(lambda m: BASE + timedelta(minutes=m))
grants = st.sampled_from([*GRANTS, ("no-such-recipient", "mis_sync"), ("sims", "no_such_purpose")])
people = st.sampled_from(PEOPLE)


def usually(value: Any, *others: Any) -> st.SearchStrategy[Any]:
    """`value` seven times in eight, else one of `others`: each flow is unusual in a few ways at most."""
    return st.one_of(
        st.just(value),
        st.just(value),
        st.just(value),
        st.just(value),
        st.just(value),
        st.just(value),
        st.just(value),
        st.sampled_from(others),
    )


@st.composite
def categories_for(draw: st.DrawFn, recipient: str, purpose: str) -> list[str]:
    """Mostly categories the grant permits (so the flow's fate turns on the subject's facts), else any."""
    permitted = PERMITTED.get((recipient, purpose))
    pool = permitted if permitted and draw(st.integers(0, 3)) else CATEGORIES
    return draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))


@st.composite
def facts(draw: st.DrawFn) -> Fact:
    kind = draw(
        st.sampled_from(
            [
                "consent",
                "consent",
                "consent",
                "withdrawal",
                "refusal",
                "objection",
                "born",
                "born",
                "competence",
                "standing",
                "order",
                "left",
                "agreement",
                "care",
                "enrolled",
                "terminated",
                "objection_end",
            ]
        )
    )
    when = draw(moments)
    recipient, purpose = draw(grants)
    person, relationship, pr = draw(people)
    who: dict[str, Any] = {"by": person, "relationship": relationship, "pr": pr}
    if kind == "consent":
        group = next((r.group for r in POLICY.recipients if r.key == recipient), None)
        by_class = draw(st.booleans())
        return b.consent(
            when,
            "p",
            None if by_class else recipient,
            purpose,
            draw(categories_for(recipient, purpose)),
            recipient_class=(group or "partner") if by_class else None,
            explicit=draw(st.booleans()),
            written=draw(st.booleans()),
            consent_id=f"c-{draw(st.integers(0, 4))}",
            **who,
        )
    if kind == "withdrawal":
        if draw(st.booleans()):
            return b.withdrawal(when, "p", consent_id=f"c-{draw(st.integers(0, 4))}", **who)
        return b.withdrawal(when, "p", recipient=recipient, **who)
    if kind == "refusal":
        return b.refusal(when, "p", recipient, purpose, **who)
    if kind == "objection":
        grounds = draw(st.sampled_from(["biometrics", "art21", "direct_marketing", "disclosure"]))
        return b.objection(
            when, "p", recipient, purpose, grounds=grounds, upheld=draw(st.booleans()), objection_id="o-1", **who
        )
    if kind == "objection_end":
        return b.objection_withdrawn(when, "p", "o-1")
    if kind == "born":
        born = draw(st.dates(min_value=BASE.date() - timedelta(days=365 * 30), max_value=BASE.date()))
        return b.born("p", born, when=when)
    if kind == "competence":
        return b.competence(when, "p", competent=draw(st.booleans()), purposes=draw(st.sampled_from([[], [purpose]])))
    if kind == "standing":
        return b.standing(when, "p", person, relationship, pr=pr, care=draw(st.booleans()))
    if kind == "order":
        return b.court_order(when, "p", persons=[person], recipients=draw(st.sampled_from([[], [recipient]])))
    if kind == "left":
        return b.left(when, "p")
    if kind == "enrolled":
        return b.enrolled(when, "p")
    if kind == "care":
        return b.care_order(when, "p")
    if kind == "terminated":
        return b.terminated(when, recipient, f"agr-{recipient}")
    return b.agreement(
        when,
        recipient,
        draw(st.sampled_from(["art28_contract", "dsa", "engagement_letter", "sla"])),
        agreement_id=f"agr-{recipient}",
        valid_until=draw(st.sampled_from([None, when + timedelta(days=400)])),
    )


@st.composite
def flows(draw: st.DrawFn) -> DataFlow:
    recipient, purpose = draw(grants)
    subjects = draw(usually(["p"], ["p", "q"], ["q"], ["p", "p"]))
    request = None
    if draw(st.integers(0, 5)) == 0:
        person, relationship, pr = draw(people)
        request = DisclosureRequest(
            requester=draw(st.sampled_from([person, "p"])),
            relationship=relationship,
            has_parental_responsibility=pr,
            authority=draw(st.sampled_from(["court_order", "written_sch2_para2", "verbal", "subject_access", "none"])),
            reference=draw(st.sampled_from([None, "ref-1"])),
            signed_by_inspector_or_above=draw(st.booleans()),
            names_person=True,
            names_incident=True,
            authorised_by_pupil=draw(st.booleans()),
        )
    return b.flow(
        draw(moments),
        recipient,
        purpose,
        draw(categories_for(recipient, purpose)),
        subjects=subjects,
        channel=draw(usually(draw(st.sampled_from(SECURE)), "email", "unspecified")),
        lawful_basis=draw(usually(None, "consent", "public_task", "legal_obligation")),
        destination_country=draw(usually("GB", "US", "FR")),
        record_count=draw(usually(1, 5000)),
        consideration=draw(usually("none", "cash")),
        request=request,
        emergency=draw(usually(False, True)),
        legal_hold=draw(usually(False, True)),
        to_data_subject=draw(usually(False, True)),
        data_recorded_at=draw(usually(None, BASE)),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(usually(True, False), st.lists(facts(), max_size=12), st.lists(flows(), min_size=1, max_size=4))
def test_generated_flows_get_the_uncached_decision(
    agreements: bool, history: list[Fact], judged: list[DataFlow]
) -> None:
    state = State()
    for fact in (standard_agreements(POLICY) if agreements else []) + history:
        state.apply(fact)
    for flow in judged:
        _same(flow, state)
        # Through the wire too: the stream judges the parsed copy.
        _same(DataFlow.model_validate_json(json.dumps(flow.model_dump(mode="json"))), state)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(usually(True, False), st.lists(st.one_of(facts(), flows()), min_size=2, max_size=16))
def test_facts_arriving_between_flows_reach_the_plan(agreements: bool, events: list[Fact | DataFlow]) -> None:
    # Each flow is judged on the facts so far, so anything the plan derives from a subject's records (its
    # consent index) must follow every fact that arrives afterwards.
    state = State()
    for fact in standard_agreements(POLICY) if agreements else []:
        state.apply(fact)
    for event in events:
        if isinstance(event, DataFlow):
            _same(event, state)
        else:
            state.apply(event)


def test_a_consent_given_after_a_judged_flow_counts_for_the_next() -> None:
    state = State()
    for fact in standard_agreements(POLICY):
        state.apply(fact)
    # A subject the state already holds, with a consent to something else.
    state.apply(b.born("ava", "2015-05-01"))
    state.apply(
        b.consent("2024-01-04T09:00Z", "ava", None, "promotional_photo", ["photographs"], recipient_class="publication")
    )
    music = ["identity", "contact"]
    before = b.flow("2024-06-03T10:00Z", "peripatetic-music", "music_tuition", music, subjects=["ava"])
    assert _same(before, state).reasons == ["NO_CONSENT"]
    state.apply(b.consent("2024-06-04T09:00Z", "ava", "peripatetic-music", "music_tuition", music))
    after = b.flow("2024-06-05T10:00Z", "peripatetic-music", "music_tuition", music, subjects=["ava"])
    assert _same(after, state).reasons == []


def test_born_by_agrees_with_age_on_across_leap_years() -> None:
    leap_days = [date(1988, 2, 29), date(1996, 2, 29), date(2000, 2, 29), date(2004, 2, 29), date(2012, 2, 29)]
    births = [*leap_days, *(date(1986, 1, 1) + timedelta(days=n) for n in range(0, 365 * 27, 5))]
    days = [
        *leap_days[3:],
        date(2013, 2, 28),
        date(2013, 3, 1),
        *(date(2011, 1, 1) + timedelta(days=n) for n in range(0, 365 * 5, 29)),
    ]
    for day in days:
        for years in (0, 5, 13, 18, 25):
            limit = born_by(day, years)
            for birth in births:
                assert (age_on(birth, day) >= years) == (birth.toordinal() <= limit), (birth, day, years)
    assert born_by(date(20, 6, 1), 25) == 0
