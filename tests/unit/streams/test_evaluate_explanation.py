"""The explanation a DPO reads names the verdict and every fact relied on, each fact once."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from schemas.decisions import Decision
from schemas.policy import Policy
from streams.builders import born, consent, flow
from streams.replay import replay_lines

Judge = Callable[..., Decision]

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "replay" / "sample.jsonl"


def test_explanations_name_each_fact_relied_on_exactly_once(policy: Policy) -> None:
    result = replay_lines(SAMPLE.read_text(encoding="utf-8").splitlines(), policy)
    with_facts = [d for d in result.decisions if d.facts_relied_on]
    assert with_facts, "the sample should have decisions resting on consents or agreements"
    for decision in result.decisions:
        text = decision.explanation
        assert ("Allowed" in text) == (decision.verdict == "allowed"), text
        for fact in decision.facts_relied_on:
            assert len(re.findall(rf"(?<![\w-]){re.escape(fact)}(?![\w-])", text)) == 1, (fact, text)


def test_a_consent_covering_ordinary_and_art9_data_is_named_once(judge: Judge) -> None:
    given = consent(
        "2024-09-05T18:00Z",
        "ava",
        "peripatetic-music",
        "music_tuition",
        ["identity", "health"],
        explicit=True,
        consent_id="consent-ava-music",
    )
    decision = judge(
        flow(
            "2024-10-01T10:00Z",
            "peripatetic-music",
            "music_tuition",
            ["identity", "health"],
            subjects=["ava"],
            channel="encrypted_email",
        ),
        born("ava", "2016-03-10"),
        given,
    )
    assert decision.verdict == "allowed", decision.explanation
    assert decision.facts_relied_on.count("consent-ava-music") == 1
    assert decision.explanation.count("consent-ava-music") == 1, decision.explanation
