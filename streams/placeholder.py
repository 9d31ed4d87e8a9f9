"""PLACEHOLDER decision, used only until the policy engine (`streams.evaluate`) is wired into the worker.

It allows every flow whose recipient and categories are non-empty and records that no policy was applied.
It exists so the foundation can prove the pipeline end to end; it must never be mistaken for a verdict.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from schemas.decisions import Decision
from schemas.events import DataFlow

PLACEHOLDER_DIGEST = "placeholder-no-policy"
_NAMESPACE = uuid.UUID("6f1c1a52-5b0e-4c55-9d5e-0f6a7c1d2e3f")


def placeholder_decision(flow: DataFlow, decided_at: datetime) -> Decision:
    """A clearly marked non-verdict: `allowed`, reason `PLACEHOLDER`, policy digest `placeholder-no-policy`."""
    return Decision(
        decision_id=str(uuid.uuid5(_NAMESPACE, f"{flow.event_id}|{PLACEHOLDER_DIGEST}")),
        flow_event_id=flow.event_id,
        verdict="allowed",
        reasons=["PLACEHOLDER"],
        explanation="Placeholder decision: no policy was applied to this flow.",
        recipient=flow.recipient,
        purpose=flow.purpose,
        categories=list(flow.categories),
        subject_ids=[s.id for s in flow.subjects],
        occurred_at=flow.occurred_at,
        decided_at=decided_at,
        emitted_at=flow.emitted_at,
        source_connector=flow.source.connector,
        source_sequence=flow.source.sequence,
        policy_digest=PLACEHOLDER_DIGEST,
        notice_version="none",
    )
