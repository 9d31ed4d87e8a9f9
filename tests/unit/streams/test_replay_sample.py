"""Replay of the sample school year: every reason code, duplicates, late facts, bad lines."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from schemas.decisions import ReasonCode
from schemas.policy import Policy
from streams.builders import agreement, consent, flow, withdrawal
from streams.replay import Replayer, ReplayResult, compare, replay_lines, summarise

DATA = Path(__file__).resolve().parents[2] / "data" / "replay"
SAMPLE = DATA / "sample.jsonl"

EXPECTED = {
    "f-sims-sync": [],
    "f-ava-music-sep": [],
    "f-dan-milk": [],
    "f-dan-allergy": [],
    "f-census": [],
    "f-fay-safeguarding": [],
    "f-dan-anaphylaxis": [],
    "f-mathsquest": [],
    "f-unknown": ["UNKNOWN_RECIPIENT"],
    "f-sale": ["SALE_OF_DATA"],
    "f-pta-email": ["MARKETING_WITHOUT_CONSENT"],
    "f-sports-day-photo": ["PHOTO_WITHOUT_PERMISSION"],
    "f-police-verbal": ["LAW_ENFORCEMENT_REQUEST_WITHOUT_BASIS"],
    "f-gran-report": ["REQUESTER_NOT_ENTITLED"],
    "f-fay-sar": ["HARMFUL_DISCLOSURE"],
    "f-fay-club-step": ["CONSENT_GIVER_NOT_AUTHORISED"],
    "f-dan-club": ["NO_CONSENT"],
    "f-census-consent": ["NO_LAWFUL_BASIS"],
    "f-milk-behaviour": ["CATEGORY_NOT_PERMITTED_FOR_RECIPIENT"],
    "f-music-health": ["SPECIAL_CATEGORY_WITHOUT_CONDITION"],
    "f-ofsted-yot": ["CATEGORY_NOT_PERMITTED_FOR_RECIPIENT", "CRIMINAL_DATA_WITHOUT_CONDITION"],
    "f-no-contract": ["NO_SHARING_AGREEMENT"],
    "f-ict-lapsed": ["AGREEMENT_EXPIRED"],
    "f-quizcloud": ["INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD"],
    "f-old-cctv": ["RETENTION_EXCEEDED"],
    "f-ehcp-email": ["INSECURE_CHANNEL"],
    "f-ben-club-18": ["CONSENT_GIVER_NOT_AUTHORISED"],
    "f-cal-iss": [],
    "f-cal-bio": ["OBJECTION_NOT_HONOURED"],
    "f-cal-report-dec": [],
    "f-cal-report-jan": ["COURT_ORDER_RESTRICTION"],
    "f-ava-music-jan": ["CONSENT_WITHDRAWN"],
    "f-ava-music-after": ["CONSENT_WITHDRAWN"],
    "f-eve-ctf": [],
    "f-eve-cp-file": [],
    "f-eve-stale-sync": ["RETENTION_EXCEEDED"],
}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_sample", DATA / "make_sample.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(policy: Policy) -> ReplayResult:
    with SAMPLE.open(encoding="utf-8") as lines:
        return replay_lines(lines, policy)


def test_sample_file_is_the_generated_story() -> None:
    assert SAMPLE.read_text(encoding="utf-8") == _generator().render()


def test_final_verdicts_are_as_the_story_says(result: ReplayResult) -> None:
    final = {flow_id: list(d.reasons) for flow_id, d in result.final().items()}
    assert final == EXPECTED


def test_sample_covers_every_reason_code(result: ReplayResult) -> None:
    seen = {code for d in result.final().values() for code in d.reasons}
    assert seen == {code.value for code in ReasonCode}


def test_redelivered_flow_gets_one_decision(result: ReplayResult) -> None:
    assert result.duplicates == 1
    assert [d.flow_event_id for d in result.decisions].count("f-census") == 1


def test_invalid_lines_are_reported_with_line_numbers_and_do_not_stop_the_run(result: ReplayResult) -> None:
    assert [r.line for r in result.rejects] == [6, 21, 85]
    assert "flow.recipient: Field required" in result.rejects[0].reason
    assert "Invalid JSON" in result.rejects[1].reason
    assert "timezone" in result.rejects[2].reason
    assert "f-eve-stale-sync" in result.final()


def test_late_withdrawal_supersedes_the_earlier_decision(result: ReplayResult) -> None:
    on_flow = [d for d in result.decisions if d.flow_event_id == "f-ava-music-jan"]
    assert [d.verdict for d in on_flow] == ["allowed", "violation"]
    first, second = on_flow
    assert second.supersedes == first.decision_id
    assert second.revision == 1
    assert second.decision_id != first.decision_id


def test_court_order_notified_after_a_flow_does_not_reopen_it(result: ReplayResult) -> None:
    on_flow = [d for d in result.decisions if d.flow_event_id == "f-cal-report-dec"]
    assert [d.verdict for d in on_flow] == ["allowed"]


def test_bulk_marketing_names_the_parent_without_an_opt_in(result: ReplayResult) -> None:
    decision = result.final()["f-pta-email"]
    verdicts = {d.subject_id: d.verdict for d in decision.disclosures}
    assert verdicts == {"mum-ava": "allowed", "mum-fay": "violation"}


def test_replay_is_deterministic(policy: Policy, result: ReplayResult) -> None:
    with SAMPLE.open(encoding="utf-8") as lines:
        again = replay_lines(lines, policy)
    assert [d.model_dump_json() for d in again.decisions] == [d.model_dump_json() for d in result.decisions]


def test_summary_counts_final_verdicts(result: ReplayResult) -> None:
    summary = summarise(result)
    assert summary.flows == len(EXPECTED)
    assert summary.by_verdict == {"allowed": 12, "violation": 24}
    assert summary.superseded == 1
    assert "CONSENT_WITHDRAWN" in summary.render()


def test_event_id_reused_with_a_different_payload_is_rejected(policy: Policy) -> None:
    one = flow("2024-06-03T10:00Z", "sims", "mis_sync", ["identity"], subjects=["ava"], event_id="same")
    other = flow("2024-06-03T10:00Z", "sims", "mis_sync", ["identity", "contact"], subjects=["ava"], event_id="same")
    result = replay_lines([one.model_dump_json(), other.model_dump_json()], policy)
    assert len(result.decisions) == 1
    assert result.rejects[0].line == 2
    assert "reused" in result.rejects[0].reason


def test_a_late_consent_can_turn_a_violation_into_allowed(policy: Policy) -> None:
    replayer = Replayer(policy)
    replayer.feed(agreement("2019-01-01T00:00Z", "peripatetic-music", "dsa"))
    the_flow = flow("2024-06-03T10:00Z", "peripatetic-music", "music_tuition", ["identity"], subjects=["ava"])
    [first] = replayer.feed(the_flow)
    assert first.reasons == ["NO_CONSENT"]
    late = consent(
        "2024-06-01T00:00Z", "ava", "peripatetic-music", "music_tuition", ["identity"], emitted="2024-06-03T18:00Z"
    )
    [second] = replayer.feed(late)
    assert second.verdict == "allowed"
    assert second.supersedes == first.decision_id
    # Re-delivering the same consent changes nothing and emits nothing.
    assert replayer.feed(late) == []
    # An unrelated withdrawal (effective after the flow) emits nothing either.
    assert replayer.feed(withdrawal("2024-06-04T00:00Z", "ava", recipient="peripatetic-music")) == []


def test_compare_lists_flows_judged_differently(result: ReplayResult) -> None:
    assert compare(result, result) == []


def test_a_late_agreement_reopens_flows_to_that_recipient_only(policy: Policy) -> None:
    replayer = Replayer(policy)
    sync = flow("2024-06-03T10:00Z", "sims", "mis_sync", ["identity"], subjects=["ava"], channel="encrypted_api")
    other = flow("2024-06-03T10:00Z", "cpoms", "safeguarding_records", ["identity"], subjects=["ava"])
    [first] = replayer.feed(sync)
    [unrelated] = replayer.feed(other)
    assert first.reasons == ["NO_SHARING_AGREEMENT"]
    # The contract was signed the day before but only keyed in that evening.
    late = agreement("2024-06-02T09:00Z", "sims", emitted="2024-06-03T18:00Z", valid_until="2027-06-01T00:00Z")
    produced = replayer.feed(late)
    assert [d.flow_event_id for d in produced] == [sync.event_id]
    assert produced[0].verdict == "allowed"
    assert produced[0].supersedes == first.decision_id
    assert unrelated.reasons == ["NO_SHARING_AGREEMENT"]


def test_streaming_replay_keeps_only_outcomes_and_agrees_with_the_full_one(policy: Policy) -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    full = replay_lines(lines, policy)
    streamed: list[str] = []
    ticks: list[int] = []
    lean = replay_lines(
        lines,
        policy,
        on_decision=lambda d: streamed.append(d.model_dump_json()),
        keep_decisions=False,
        progress=lambda line, _result: ticks.append(line),
        progress_every=20,
    )
    assert lean.decisions == []
    assert streamed == [d.model_dump_json() for d in full.decisions]
    assert lean.outcomes == full.outcomes
    assert summarise(lean) == summarise(full)
    assert compare(full, lean) == []
    assert ticks == [20, 40, 60, 80, len(lines)]
