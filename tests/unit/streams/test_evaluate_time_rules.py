"""The time rules of RULES.md §2 and the age rules of §5, written from the rules."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest

from schemas.decisions import Decision
from schemas.events import DataFlow
from schemas.policy import Policy
from streams.builders import (
    agreement,
    born,
    competence,
    consent,
    court_order,
    flow,
    own_consent,
    refusal,
    withdrawal,
)
from streams.evaluate import age_on, evaluate, london_date
from streams.state import State, to_us

Judge = Callable[..., Decision]

AVA = born("ava", "2016-03-10")
GIVEN = "2024-01-10T09:00:00Z"
MUSIC = consent(GIVEN, "ava", "peripatetic-music", "music_tuition", ["identity"], consent_id="c-music")


def music(when: str) -> DataFlow:
    return flow(when, "peripatetic-music", "music_tuition", ["identity"], subjects=["ava"])


# --- consent validity: [given_at, withdrawn_at) ----------------------------------------------------------------


def test_consent_is_valid_from_the_instant_it_is_given(judge: Judge) -> None:
    assert judge(music(GIVEN), AVA, MUSIC).reasons == []


def test_consent_given_after_the_flow_is_never_retroactive(judge: Judge) -> None:
    assert judge(music("2024-01-10T08:59:59.999999Z"), AVA, MUSIC).reasons == ["NO_CONSENT"]


def test_withdrawal_one_minute_before_the_flow(judge: Judge) -> None:
    out = withdrawal("2024-06-03T09:59:00Z", "ava", consent_id="c-music")
    assert judge(music("2024-06-03T10:00:00Z"), AVA, MUSIC, out).reasons == ["CONSENT_WITHDRAWN"]


def test_withdrawal_at_the_same_instant_defeats_the_flow(judge: Judge) -> None:
    out = withdrawal("2024-06-03T10:00:00Z", "ava", consent_id="c-music")
    assert judge(music("2024-06-03T10:00:00Z"), AVA, MUSIC, out).reasons == ["CONSENT_WITHDRAWN"]


def test_withdrawal_one_microsecond_after_the_flow_does_not(judge: Judge) -> None:
    out = withdrawal("2024-06-03T10:00:00.000001Z", "ava", consent_id="c-music")
    assert judge(music("2024-06-03T10:00:00Z"), AVA, MUSIC, out).reasons == []


def test_timestamps_are_compared_in_utc(judge: Judge) -> None:
    # 10:30+01:00 is 09:30Z: before the 09:45Z withdrawal, so the flow was covered.
    out = withdrawal("2024-06-03T09:45:00Z", "ava", consent_id="c-music")
    assert judge(music("2024-06-03T10:30:00+01:00"), AVA, MUSIC, out).reasons == []


def test_fresh_consent_after_a_withdrawal_counts_from_its_own_time(judge: Judge) -> None:
    out = withdrawal("2024-03-01T00:00Z", "ava", consent_id="c-music")
    again = consent("2024-04-01T00:00Z", "ava", "peripatetic-music", "music_tuition", ["identity"], consent_id="c-2")
    assert judge(music("2024-03-15T00:00Z"), AVA, MUSIC, out, again).reasons == ["CONSENT_WITHDRAWN"]
    assert judge(music("2024-04-01T00:00Z"), AVA, MUSIC, out, again).reasons == []


def test_late_arriving_withdrawal_changes_the_verdict_and_is_found(policy: Policy) -> None:
    state = State()
    for fact in (AVA, MUSIC, agreement("2019-01-01T00:00Z", "peripatetic-music", "dsa")):
        state.apply(fact)
    the_flow = music("2024-06-03T10:00:00Z")
    first = evaluate(the_flow, state, policy)
    assert first.verdict == "allowed"
    state.remember_flow(the_flow, the_flow.emitted_at)
    late = withdrawal("2024-06-03T09:00:00Z", "ava", consent_id="c-music", emitted="2024-06-03T12:00:00Z")
    assert state.affected_flows(late, late.emitted_at) == [the_flow.event_id]
    state.apply(late)
    second = evaluate(the_flow, state, policy, supersedes=first.decision_id, revision=1)
    assert second.reasons == ["CONSENT_WITHDRAWN"]
    assert second.supersedes == first.decision_id
    assert second.decision_id != first.decision_id


def test_late_fact_after_the_lateness_window_is_not_re_evaluated(policy: Policy) -> None:
    state = State()
    the_flow = music("2024-06-03T10:00:00Z")
    state.remember_flow(the_flow, the_flow.emitted_at)
    late = withdrawal("2024-06-03T09:00:00Z", "ava", consent_id="c-music", emitted="2024-06-10T12:00:00Z")
    assert state.affected_flows(late, late.emitted_at) == []


def test_a_fact_effective_after_the_flow_affects_nothing(policy: Policy) -> None:
    state = State()
    the_flow = music("2024-06-03T10:00:00Z")
    state.remember_flow(the_flow, the_flow.emitted_at)
    later = withdrawal("2024-06-03T11:00:00Z", "ava", consent_id="c-music")
    assert state.affected_flows(later, later.emitted_at) == []


# --- agreements: inclusive at both ends ---------------------------------------------------------------------


def sync(when: str) -> DataFlow:
    return flow(when, "sims", "mis_sync", ["identity"], subjects=["ava"])


CONTRACT = agreement(
    "2024-01-01T00:00:00Z", "sims", valid_from="2024-02-01T00:00:00Z", valid_until="2024-07-31T23:59:59Z"
)


@pytest.mark.parametrize(
    ("when", "reasons"),
    [
        ("2024-01-31T23:59:59.999999Z", ["AGREEMENT_EXPIRED"]),
        ("2024-02-01T00:00:00Z", []),
        ("2024-07-31T23:59:59Z", []),
        ("2024-07-31T23:59:59.000001Z", ["AGREEMENT_EXPIRED"]),
    ],
)
def test_agreement_valid_from_and_until_inclusive(judge: Judge, when: str, reasons: list[str]) -> None:
    assert judge(sync(when), AVA, CONTRACT, agreements=False).reasons == reasons


def test_agreement_signed_after_the_flow_does_not_cover_it_even_if_backdated(judge: Judge) -> None:
    backdated = agreement("2024-06-10T00:00Z", "sims", valid_from="2024-01-01T00:00Z")
    assert judge(sync("2024-06-03T10:00Z"), AVA, backdated, agreements=False).reasons == ["NO_SHARING_AGREEMENT"]


# --- court orders bind from trust_notified_at -------------------------------------------------------------------


def report(when: str) -> DataFlow:
    return flow(
        when,
        "family",
        "parent_report",
        ["assessment"],
        subjects=["ava"],
        request={"requester": "dad-1", "relationship": "father", "has_parental_responsibility": True},
    )


ORDER = court_order("2024-05-10T14:00:00Z", "ava", persons=["dad-1"], made="2024-05-01T10:00:00Z")


def test_court_order_made_but_not_yet_notified_does_not_bind(judge: Judge) -> None:
    assert judge(report("2024-05-05T10:00Z"), AVA, ORDER).reasons == []


def test_court_order_binds_from_the_instant_the_trust_is_notified(judge: Judge) -> None:
    assert judge(report("2024-05-10T14:00:00Z"), AVA, ORDER).reasons == ["COURT_ORDER_RESTRICTION"]


def test_court_order_notified_after_the_flow(policy: Policy) -> None:
    state = State()
    the_flow = report("2024-05-10T13:59:59Z")
    state.apply(AVA)
    state.remember_flow(the_flow, the_flow.emitted_at)
    state.apply(ORDER)
    assert evaluate(the_flow, state, policy).reasons == []
    assert state.affected_flows(ORDER, ORDER.trust_notified_at) == []


# --- ages on the London date; a birthday counts from its start -------------------------------------------------


def test_age_counts_from_the_start_of_the_birthday() -> None:
    assert age_on(date(2011, 6, 20), date(2024, 6, 19)) == 12
    assert age_on(date(2011, 6, 20), date(2024, 6, 20)) == 13


def test_leap_day_birthday_counts_from_1_march_in_common_years() -> None:
    assert age_on(date(2008, 2, 29), date(2026, 2, 28)) == 17
    assert age_on(date(2008, 2, 29), date(2026, 3, 1)) == 18


def test_london_date_in_summer_time() -> None:
    from streams.builders import at

    assert london_date(to_us(at("2024-06-19T23:30:00Z"))) == date(2024, 6, 20)
    assert london_date(to_us(at("2024-12-19T23:30:00Z"))) == date(2024, 12, 19)


CAL = born("cal", "2011-06-20")


def iss_self_consent(when: str) -> object:
    return own_consent(when, "cal", "homework-hub", "online_service", ["identity.name"])


def iss(when: str) -> DataFlow:
    return flow(when, "homework-hub", "online_service", ["identity.name"], subjects=["cal"])


def test_iss_self_consent_on_the_13th_birthday_in_london(judge: Judge) -> None:
    # 23:30Z on 19 June is 00:30 on 20 June in London (BST): the pupil is 13.
    moment = "2024-06-19T23:30:00Z"
    assert judge(iss(moment), CAL, iss_self_consent(moment)).reasons == []


def test_iss_self_consent_before_13_is_void_and_stays_void(judge: Judge) -> None:
    # 22:59Z on 19 June is 23:59 in London: still 12.
    early = iss_self_consent("2024-06-19T22:59:00Z")
    assert judge(iss("2024-06-19T22:59:30Z"), CAL, early).reasons == ["CONSENT_GIVER_NOT_AUTHORISED"]
    assert judge(iss("2025-01-01T10:00:00Z"), CAL, early).reasons == ["CONSENT_GIVER_NOT_AUTHORISED"]


def test_parent_consent_for_an_iss_under_13(judge: Judge) -> None:
    parent = consent("2024-01-01T00:00Z", "cal", "homework-hub", "online_service", ["identity.name"])
    assert judge(iss("2024-03-01T10:00Z"), CAL, parent).reasons == []


def test_pupil_13_to_17_needs_a_competence_assessment_outside_iss(judge: Judge) -> None:
    own = own_consent("2024-09-01T00:00Z", "cal", "peripatetic-music", "music_tuition", ["identity"])
    the_flow = flow("2024-10-01T10:00Z", "peripatetic-music", "music_tuition", ["identity"], subjects=["cal"])
    assert judge(the_flow, CAL, own).reasons == ["CONSENT_GIVER_NOT_AUTHORISED"]
    assessed = competence("2024-08-20T00:00Z", "cal")
    assert judge(the_flow, CAL, own, assessed).reasons == []


def test_competent_child_refusal_beats_parent_consent(judge: Judge) -> None:
    parent = consent("2024-09-01T00:00Z", "cal", "peripatetic-music", "music_tuition", ["identity"])
    no = refusal("2024-09-05T00:00Z", "cal", "peripatetic-music", "music_tuition", by="cal", relationship="self")
    the_flow = flow("2024-10-01T10:00Z", "peripatetic-music", "music_tuition", ["identity"], subjects=["cal"])
    assert judge(the_flow, CAL, parent, no).reasons == []  # not assessed as competent: the parent decides
    assessed = competence("2024-08-20T00:00Z", "cal")
    assert judge(the_flow, CAL, parent, no, assessed).reasons == ["NO_CONSENT"]


def test_competent_child_withdrawal_beats_parent_consent(judge: Judge) -> None:
    parent = consent("2024-09-01T00:00Z", "cal", "peripatetic-music", "music_tuition", ["identity"])
    out = withdrawal("2024-09-05T00:00Z", "cal", recipient="peripatetic-music", by="cal", relationship="self")
    assessed = competence("2024-08-20T00:00Z", "cal")
    the_flow = flow("2024-10-01T10:00Z", "peripatetic-music", "music_tuition", ["identity"], subjects=["cal"])
    assert judge(the_flow, CAL, parent, out, assessed).reasons == ["CONSENT_WITHDRAWN"]


BEN = born("ben", "2008-09-15")
BEN_PARENT = consent("2024-01-01T00:00Z", "ben", "peripatetic-music", "music_tuition", ["identity"])


def ben_music(when: str) -> DataFlow:
    return flow(when, "peripatetic-music", "music_tuition", ["identity"], subjects=["ben"])


def test_parental_consent_ends_on_the_18th_birthday(judge: Judge) -> None:
    # 22:59Z on 14 Sept 2026 is 23:59 BST: still 17.
    assert judge(ben_music("2026-09-14T22:59:00Z"), BEN, BEN_PARENT).reasons == []
    # 23:00Z on 14 Sept is midnight BST on 15 Sept: 18, and PR has ended.
    assert judge(ben_music("2026-09-14T23:00:00Z"), BEN, BEN_PARENT).reasons == ["CONSENT_GIVER_NOT_AUTHORISED"]


def test_adult_pupil_consents_for_themselves(judge: Judge) -> None:
    own = own_consent("2026-09-20T00:00Z", "ben", "peripatetic-music", "music_tuition", ["identity"])
    assert judge(ben_music("2026-10-01T10:00Z"), BEN, BEN_PARENT, own).reasons == []


def test_a_parent_cannot_withdraw_a_competent_pupils_own_consent(judge: Judge) -> None:
    own = own_consent("2024-09-01T00:00Z", "cal", "peripatetic-music", "music_tuition", ["identity"])
    assessed = competence("2024-08-20T00:00Z", "cal")
    parent_out = withdrawal("2024-09-05T00:00Z", "cal", recipient="peripatetic-music", by="mum-1")
    the_flow = flow("2024-10-01T10:00Z", "peripatetic-music", "music_tuition", ["identity"], subjects=["cal"])
    assert judge(the_flow, CAL, own, assessed, parent_out).reasons == []
    own_out = withdrawal("2024-09-06T00:00Z", "cal", recipient="peripatetic-music", by="cal", relationship="self")
    assert judge(the_flow, CAL, own, assessed, parent_out, own_out).reasons == ["CONSENT_WITHDRAWN"]
