"""What the stream processor says about a flow, and what it says about input it could not read."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field

from schemas.events import Identifier, Model, UtcDatetime

Verdict = Literal["allowed", "violation"]


class ReasonCode(StrEnum):
    """The fixed reason codes of RULES.md §1, declared most specific first (the order reasons are reported).

    Unknown recipient and sale lead (nothing else matters once they apply); marketing and photo codes lead
    their consent cause (RULES.md §1); request, court-order, entitlement, harm and objection codes are more
    specific than consent codes, which are more specific than a missing basis; minimisation comes before the
    special-category and criminal-data codes (RULES.md §1); then agreement, transfer, retention and channel.
    """

    UNKNOWN_RECIPIENT = "UNKNOWN_RECIPIENT"
    SALE_OF_DATA = "SALE_OF_DATA"
    MARKETING_WITHOUT_CONSENT = "MARKETING_WITHOUT_CONSENT"
    PHOTO_WITHOUT_PERMISSION = "PHOTO_WITHOUT_PERMISSION"
    LAW_ENFORCEMENT_REQUEST_WITHOUT_BASIS = "LAW_ENFORCEMENT_REQUEST_WITHOUT_BASIS"
    COURT_ORDER_RESTRICTION = "COURT_ORDER_RESTRICTION"
    REQUESTER_NOT_ENTITLED = "REQUESTER_NOT_ENTITLED"
    HARMFUL_DISCLOSURE = "HARMFUL_DISCLOSURE"
    OBJECTION_NOT_HONOURED = "OBJECTION_NOT_HONOURED"
    CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"
    CONSENT_GIVER_NOT_AUTHORISED = "CONSENT_GIVER_NOT_AUTHORISED"
    NO_CONSENT = "NO_CONSENT"
    NO_LAWFUL_BASIS = "NO_LAWFUL_BASIS"
    CATEGORY_NOT_PERMITTED_FOR_RECIPIENT = "CATEGORY_NOT_PERMITTED_FOR_RECIPIENT"
    SPECIAL_CATEGORY_WITHOUT_CONDITION = "SPECIAL_CATEGORY_WITHOUT_CONDITION"
    CRIMINAL_DATA_WITHOUT_CONDITION = "CRIMINAL_DATA_WITHOUT_CONDITION"
    NO_SHARING_AGREEMENT = "NO_SHARING_AGREEMENT"
    AGREEMENT_EXPIRED = "AGREEMENT_EXPIRED"
    INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD = "INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD"
    RETENTION_EXCEEDED = "RETENTION_EXCEEDED"
    INSECURE_CHANNEL = "INSECURE_CHANNEL"


REASON_ORDER: dict[str, int] = {code.value: rank for rank, code in enumerate(ReasonCode)}
"""Rank of each reason code in a report: lower comes first."""


class SubjectVerdict(Model):
    """The verdict for one data subject in a flow: one row of "who has this child's data been shared with"."""

    subject_id: Identifier
    subject_kind: Literal["pupil", "parent"] = "pupil"
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)


Stage = Literal["validate", "evaluate", "sink", "connector"]
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
    rule_ids: list[str] = Field(default_factory=list, description="RULES.md sections applied, e.g. `5.consent`.")
    facts_relied_on: list[str] = Field(
        default_factory=list, description="Consent, agreement, order and assessment ids the verdict rests on."
    )
    disclosures: list[SubjectVerdict] = Field(default_factory=list, description="One row per subject.")
    revision: int = Field(default=0, ge=0, description="0 for the first decision on a flow, +1 per supersession.")

    def to_json_bytes(self) -> bytes:
        """The same bytes as `model_dump_json().encode()`, from the compiled serializer directly (hot path)."""
        return _DECISION_SERIALIZER.to_json(self)


_DECISION_SERIALIZER = Decision.__pydantic_serializer__

DECISION_NAMESPACE = uuid.UUID("0b6f4bde-3f3e-5d61-9a1f-2f1d7c0e5a10")
"""uuid5 namespace of decision ids."""


_NAMESPACE_BYTES = DECISION_NAMESPACE.bytes
_NAMESPACE_SHA1 = hashlib.sha1(_NAMESPACE_BYTES)
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def decision_id_for(
    flow_event_id: str, policy_digest: str, reasons: list[str], facts: list[str], supersedes: str | None
) -> str:
    """A deterministic decision id: the same flow judged on the same facts under the same policy, same id.

    Exactly `uuid.uuid5(DECISION_NAMESPACE, material)`, computed without building a `UUID` (hot path).
    """
    return decision_id_of(f"{flow_event_id}|{policy_digest}|{','.join(reasons)}|{','.join(facts)}|{supersedes or ''}")


def decision_id_of(material: str) -> str:
    """`decision_id_for` from its material, the fields joined as it joins them (for callers that cache the joins)."""
    hasher = _NAMESPACE_SHA1.copy()  # the namespace prefix hashed once
    hasher.update(material.encode())
    h = hasher.hexdigest()
    # RFC 4122: version 5 in the 13th hex digit, variant 10xx in the 17th.
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


class DeadLetter(Model):
    """An input message that could not be used, kept with the reason so nothing is silently dropped."""

    # The raw message is evidence: keep it byte for byte, surrounding whitespace included.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    topic: str
    partition: int
    offset: int
    key: str | None
    raw: str = Field(description="The message value as received (UTF-8, undecodable bytes escaped).")
    error: str
    received_at: datetime
    stage: Stage = "validate"
