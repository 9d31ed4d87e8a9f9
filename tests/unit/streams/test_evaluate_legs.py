"""Judged subject by subject, each on a state holding only that subject's facts, a flow gets `evaluate`'s decision.

This is what lets a flow about several pupils be checked where each pupil's state lives: `judge_subject` reads
nothing but the one subject's state, and `combine` adds the flow-level checks (recipient and notice state).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import AgreementTerminated, DataFlow, Fact, NoticeVersionPublished, SharingAgreement
from streams.evaluate import combine, evaluate, judge_subject
from streams.state import State

from .conftest import standard_agreements
from .test_evaluate_plan import POLICY, _sample_events, facts, flows, usually

RECIPIENT_FACTS = (SharingAgreement, AgreementTerminated, NoticeVersionPublished)


class SplitState:
    """All of the state in one place, and the same facts split: per subject, and the recipients' on their own."""

    def __init__(self) -> None:
        self.everything = State()
        self.recipients = State()
        self.subjects: dict[str, State] = {}

    def apply(self, fact: Fact) -> None:
        self.everything.apply(fact)
        if isinstance(fact, RECIPIENT_FACTS):
            self.recipients.apply(fact)
        else:
            self.subjects.setdefault(fact.subject.id, State()).apply(fact)

    def both_ways(self, flow: DataFlow) -> tuple[bytes, bytes]:
        """(the decision on all of the state, the decision combined from one leg per subject)."""
        legs = {s.id: judge_subject(flow, s, self.subjects.get(s.id, State()), POLICY) for s in flow.subjects}
        split = combine(flow, list(legs.values()), self.recipients, POLICY)
        return evaluate(flow, self.everything, POLICY).to_json_bytes(), split.to_json_bytes()


def about(fact: Fact, subject: str) -> Fact:
    if isinstance(fact, RECIPIENT_FACTS):
        return fact
    renamed: Any = fact.model_copy(update={"subject": fact.subject.model_copy(update={"id": subject})})
    return renamed


def test_the_replay_sample_split_by_subject_decides_as_a_whole() -> None:
    state = SplitState()
    several = 0
    for event in _sample_events():
        if isinstance(event, DataFlow):
            whole, split = state.both_ways(event)
            assert split == whole, event.event_id
            several += len({s.id for s in event.subjects}) > 1
        else:
            state.apply(event)
    assert several >= 3  # the sample has flows about several people


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    usually(True, False),
    st.lists(facts(), max_size=10),
    st.lists(facts(), max_size=10),
    st.lists(flows(), min_size=1, max_size=4),
)
def test_generated_flows_split_by_subject_decide_as_a_whole(
    agreements: bool, about_p: list[Fact], about_q: list[Fact], judged: list[DataFlow]
) -> None:
    state = SplitState()
    for fact in [*(standard_agreements(POLICY) if agreements else []), *about_p, *(about(f, "q") for f in about_q)]:
        state.apply(fact)
    for flow in judged:
        whole, split = state.both_ways(flow)
        assert split == whole
