"""Properties of the evaluator and state (hypothesis): determinism, irrelevance, order independence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decisions import Decision, ReasonCode
from schemas.events import DataFlow, Fact
from schemas.policy import Policy, load_policy
from streams import builders as b
from streams.evaluate import evaluate
from streams.state import State, SubjectState

POLICY: Policy = load_policy(Path(__file__).resolve().parents[3] / "policy")
BASE = datetime(2024, 1, 1, tzinfo=UTC)
RECIPIENTS = [
    ("peripatetic-music", "music_tuition"),
    ("after-school-club", "after_school_club"),
    ("trust-website", "promotional_photo"),
    ("homework-hub", "online_service"),
    ("sims", "mis_sync"),
    ("family", "parent_report"),
    ("biometric-catering", "biometric_catering"),
]
CATEGORIES = ["identity", "identity.name", "contact", "health", "photographs", "biometric", "assessment"]
PEOPLE = [("mum-1", "mother", True), ("dad-1", "father", False), ("p", "self", False), ("fc-1", "foster_carer", False)]

moments = st.integers(min_value=0, max_value=60 * 24 * 30 * 30).map(lambda m: BASE + timedelta(minutes=m))
recipient_purpose = st.sampled_from(RECIPIENTS)
categories = st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=3, unique=True)
people = st.sampled_from(PEOPLE)


@st.composite
def facts_about(draw: st.DrawFn, subject: str = "p") -> Fact:
    kind = draw(
        st.sampled_from(
            [
                "consent",
                "withdrawal",
                "refusal",
                "objection",
                "born",
                "competence",
                "standing",
                "order",
                "agreement",
                "left",
            ]
        )
    )
    when = draw(moments)
    recipient, purpose = draw(recipient_purpose)
    person, relationship, pr = draw(people)
    if kind == "consent":
        return b.consent(
            when,
            subject,
            recipient,
            purpose,
            draw(categories),
            by=person,
            relationship=relationship,
            pr=pr,
            explicit=draw(st.booleans()),
            written=draw(st.booleans()),
            consent_id=f"c-{draw(st.integers(0, 5))}",
        )
    if kind == "withdrawal":
        if draw(st.booleans()):
            return b.withdrawal(
                when, subject, consent_id=f"c-{draw(st.integers(0, 5))}", by=person, relationship=relationship, pr=pr
            )
        return b.withdrawal(when, subject, recipient=recipient, by=person, relationship=relationship, pr=pr)
    if kind == "refusal":
        return b.refusal(when, subject, recipient, purpose, by=person, relationship=relationship, pr=pr)
    if kind == "objection":
        return b.objection(
            when,
            subject,
            recipient,
            purpose,
            grounds=draw(st.sampled_from(["biometrics", "art21"])),
            by=person,
            relationship=relationship,
            pr=pr,
            upheld=draw(st.booleans()),
        )
    if kind == "born":
        return b.born(
            subject, draw(st.dates(min_value=BASE.date().replace(year=2005), max_value=BASE.date())), when=when
        )
    if kind == "competence":
        return b.competence(when, subject, draw(st.booleans()))
    if kind == "standing":
        return b.standing(when, subject, person, relationship, pr=draw(st.booleans()))
    if kind == "order":
        return b.court_order(when, subject, persons=[person])
    if kind == "left":
        return b.left(when, subject)
    return b.agreement(
        when,
        recipient,
        draw(st.sampled_from(["art28_contract", "dsa"])),
        valid_until=when + timedelta(days=draw(st.integers(0, 400))),
    )


@st.composite
def flows(draw: st.DrawFn) -> DataFlow:
    recipient, purpose = draw(recipient_purpose)
    request = {"requester": draw(people)[0], "relationship": "mother"} if recipient == "family" else None
    return b.flow(
        draw(moments),
        recipient,
        purpose,
        draw(categories),
        subjects=["p"],
        request=request,
        channel=draw(st.sampled_from(["encrypted_email", "email"])),
        event_id="the-flow",
    )


def judged(flow: DataFlow, facts: list[Fact]) -> tuple[str, list[str], str]:
    state = State()
    for fact in facts:
        state.apply(fact)
    decision = evaluate(flow, state, POLICY)
    return decision.verdict, list(decision.reasons), decision.decision_id


@settings(max_examples=150, deadline=None)
@given(flows(), st.lists(facts_about(), max_size=12))
def test_evaluation_is_deterministic(flow: DataFlow, facts: list[Fact]) -> None:
    state = State()
    for fact in facts:
        state.apply(fact)
    first = evaluate(flow, state, POLICY)
    second = evaluate(flow, state, POLICY)
    assert first.model_dump_json() == second.model_dump_json()
    # Decisions are assembled without validation on the hot path; they must still be valid decisions.
    assert Decision.model_validate_json(first.model_dump_json()) == first
    assert judged(flow, facts) == (first.verdict, first.reasons, first.decision_id)


@settings(max_examples=150, deadline=None)
@given(flows(), st.lists(facts_about(), max_size=12), st.randoms(use_true_random=False))
def test_verdict_depends_on_effective_times_not_arrival_order(flow: DataFlow, facts: list[Fact], rnd: object) -> None:
    shuffled = list(facts)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert judged(flow, shuffled) == judged(flow, facts)


@settings(max_examples=150, deadline=None)
@given(flows(), st.lists(facts_about(), max_size=10), st.lists(facts_about("q"), min_size=1, max_size=5))
def test_facts_about_another_subject_never_change_a_verdict(
    flow: DataFlow, facts: list[Fact], unrelated: list[Fact]
) -> None:
    # Agreements are recipient facts, so only the subject facts about "q" are unrelated to the flow about "p".
    about_q = [f for f in unrelated if getattr(f, "subject", None) is not None]
    assert judged(flow, facts + about_q) == judged(flow, facts)


@settings(max_examples=100, deadline=None)
@given(flows(), st.lists(facts_about(), max_size=10))
def test_an_agreement_with_another_recipient_never_changes_a_verdict(flow: DataFlow, facts: list[Fact]) -> None:
    other = b.agreement("2020-01-01T00:00Z", "some-other-recipient", "dsa", valid_until="2035-01-01T00:00Z")
    assert judged(flow, [*facts, other]) == judged(flow, facts)


@settings(max_examples=100, deadline=None)
@given(st.lists(facts_about(), max_size=15))
def test_subject_state_round_trips_through_every_encoding(facts: list[Fact]) -> None:
    state = State()
    for fact in facts:
        state.apply(fact)
    subject = state.subject("p")
    assert SubjectState.from_bytes(subject.to_bytes()) == subject
    assert SubjectState.from_json(subject.to_json()) == subject
    assert SubjectState.unpack(subject.pack(state.vocabulary), state.vocabulary) == subject


ALL_RECIPIENTS = [r.key for r in POLICY.recipients] + ["police:x", "school:urn:1", "nobody"]
ALL_PURPOSES = [p.key for p in POLICY.purposes] + ["unheard-of"]
ALL_CATEGORIES = [c.key for c in POLICY.categories] + ["mystery.data"]
CODES = {code.value for code in ReasonCode}


@st.composite
def any_flow(draw: st.DrawFn) -> DataFlow:
    request = draw(
        st.none()
        | st.fixed_dictionaries(
            {
                "requester": st.sampled_from(["mum-1", "dad-1", "p", "pc-1"]),
                "authority": st.sampled_from(["court_order", "warrant", "written_sch2_para2", "verbal", "none"]),
                "reference": st.none() | st.just("REF-1"),
                "emergency": st.booleans(),
                "signed_by_inspector_or_above": st.booleans(),
                "names_person": st.booleans(),
                "names_incident": st.booleans(),
                "best_interests": st.booleans(),
                "pupil_objects": st.booleans(),
            }
        )
    )
    return b.flow(
        draw(moments),
        draw(st.sampled_from(ALL_RECIPIENTS)),
        draw(st.sampled_from(ALL_PURPOSES)),
        draw(st.lists(st.sampled_from(ALL_CATEGORIES), min_size=1, max_size=4)),
        subjects=draw(st.lists(st.sampled_from(["p", "q"]), min_size=1, max_size=3)),
        parents=draw(st.lists(st.sampled_from(["mum-1"]), max_size=1)),
        request=request,
        emergency=draw(st.booleans()),
        consideration=draw(st.sampled_from(["none", "none", "cash"])),
        lawful_basis=draw(st.none() | st.sampled_from(["consent", "public_task", "legal_obligation", "made-up"])),
        destination_country=draw(st.sampled_from(["GB", "IE", "US", "IN"])),
        record_count=draw(st.integers(0, 50)),
        data_recorded_at=draw(st.none() | moments),
        event_id="any-flow",
    )


@settings(max_examples=300, deadline=None)
@given(any_flow(), st.lists(facts_about(), max_size=8))
def test_any_valid_flow_gets_a_valid_decision_and_never_an_exception(flow: DataFlow, facts: list[Fact]) -> None:
    state = State()
    for fact in facts:
        state.apply(fact)
    decision = evaluate(flow, state, POLICY)
    assert set(decision.reasons) <= CODES
    assert (decision.verdict == "violation") == bool(decision.reasons)
    assert {d.subject_id for d in decision.disclosures} == {s.id for s in flow.subjects}
    assert all(set(d.reasons) <= set(decision.reasons) for d in decision.disclosures)
    assert Decision.model_validate_json(decision.model_dump_json()) == decision
