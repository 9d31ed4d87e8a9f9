"""What the stream processor says about a flow, and what it says about input it could not read."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.events import Identifier, Model, UtcDatetime

Verdict = Literal["allowed", "violation"]
Stage = Literal["validate", "evaluate", "sink"]
"""Where in the pipeline a message was found unusable."""


class Decision(Model):
    """The verdict on one data flow, with the reasons, the policy it was made under and what it relied on."""

    decision_id: Identifier
    flow_event_id: Identifier
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list, description="Reason codes, most specific first.")
    explanation: str
    recipient: Identifier
    purpose: Identifier
    categories: list[str]
    subject_ids: list[str]
    occurred_at: UtcDatetime
    decided_at: UtcDatetime
    emitted_at: UtcDatetime
    source_connector: str
    source_sequence: int
    policy_digest: str
    notice_version: str
    supersedes: str | None = None


class DeadLetter(Model):
    """An input message that could not be used, kept with the reason so nothing is silently dropped."""

    topic: str
    partition: int
    offset: int
    key: str | None
    raw: str = Field(description="The message value as received (UTF-8, undecodable bytes escaped).")
    error: str
    received_at: datetime
    stage: Stage = "validate"
