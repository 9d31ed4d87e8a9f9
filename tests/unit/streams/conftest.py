"""Shared fixtures for evaluator tests: the Trust's policy and a `judge` helper."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.decisions import Decision
from schemas.events import DataFlow, Fact
from schemas.policy import Policy, load_policy
from streams.builders import agreement
from streams.evaluate import evaluate
from streams.state import State

POLICY_DIR = Path(__file__).resolve().parents[3] / "policy"

Judge = Callable[..., Decision]


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(POLICY_DIR)


def standard_agreements(policy: Policy) -> list[Fact]:
    """An agreement of the needed kind, 2019 to 2030, for every registered recipient that needs one."""
    facts: list[Fact] = []
    for recipient in policy.recipients:
        kinds = {recipient.agreement} | {g.agreement for g in recipient.grants if g.agreement}
        facts += [
            agreement(
                "2019-01-01T00:00Z",
                recipient.key,
                kind,
                valid_until="2030-12-31T23:59:59Z",
                agreement_id=f"std-{recipient.key}-{kind}",
            )
            for kind in sorted(k for k in kinds if k not in (None, "none"))
        ]
    return facts


@pytest.fixture
def judge(policy: Policy) -> Judge:
    """`judge(flow, *facts, agreements=True)`: evaluate on a fresh state holding the facts."""

    def run(flow: DataFlow, *facts: Fact, agreements: bool = True) -> Decision:
        state = State()
        for fact in (standard_agreements(policy) if agreements else []) + list(facts):
            state.apply(fact)
        return evaluate(flow, state, policy)

    return run


@dataclass
class Record:
    """A Kafka record as the worker reads it (the fields of aiokafka's `ConsumerRecord` it uses)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
