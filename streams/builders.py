"""Terse constructors of valid events, for tests, the replay sample and benchmarks.

Every builder takes the effective time first (an ISO string or a datetime; naive strings are read as UTC)
and fills the envelope with a fresh, deterministic `event_id`, unless one is given::

    flow_ = flow("2024-06-03T10:00Z", "peripatetic-music", "music_tuition", ["identity"], subjects=["p-1"])
    fact = consent("2024-06-01T09:00Z", "p-1", "peripatetic-music", "music_tuition", ["identity"],
                   by="mum-1", relationship="mother", pr=True)
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from typing import Any

from schemas.events import (
    Actor,
    AgreementTerminated,
    BirthDateRecorded,
    CareOrderRecorded,
    CompetenceAssessed,
    ConsentGiven,
    ConsentRefused,
    ConsentScope,
    ConsentWithdrawn,
    CourtOrderNotified,
    DataFlow,
    DisclosureRequest,
    NoticeVersionPublished,
    ObjectionRaised,
    ObjectionWithdrawn,
    ParentalResponsibilityRecorded,
    PupilEnrolled,
    PupilLeft,
    SharingAgreement,
    Source,
    Subject,
)

When = str | datetime
_counter = itertools.count(1)


def reset_sequences() -> None:
    """Restart the envelope sequence numbers (for reproducible generated files)."""
    global _counter
    _counter = itertools.count(1)


def at(when: When) -> datetime:
    """A UTC datetime from an ISO string (naive means UTC) or a datetime."""
    moment = when if isinstance(when, datetime) else datetime.fromisoformat(when.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _envelope(when: When, event_id: str | None, emitted: When | None, connector: str) -> dict[str, Any]:
    seq = next(_counter)
    occurred = at(when)
    return {
        "event_id": event_id or f"{connector}-{seq}",
        "occurred_at": occurred,
        "emitted_at": at(emitted) if emitted is not None else occurred,
        "source": Source(connector=connector, sequence=seq),
    }


def actor(
    person: str,
    relationship: str = "mother",
    *,
    pr: bool = False,
    care: bool = False,
    delegated: bool = False,
) -> Actor:
    """A person and their standing towards the subject."""
    return Actor.model_validate(
        {
            "id": person,
            "relationship": relationship,
            "has_parental_responsibility": pr,
            "has_care": care,
            "delegated_authority": delegated,
        }
    )


def _scope(
    recipient: str | None, purpose: str | None, categories: list[str] | None, recipient_class: str | None = None
) -> ConsentScope:
    return ConsentScope(
        recipient=recipient, recipient_class=recipient_class, purpose=purpose, categories=list(categories or [])
    )


def flow(
    when: When,
    recipient: str,
    purpose: str,
    categories: list[str],
    *,
    subjects: list[str] | None = None,
    parents: list[str] | None = None,
    event_id: str | None = None,
    emitted: When | None = None,
    request: DisclosureRequest | dict[str, Any] | None = None,
    **fields: Any,
) -> DataFlow:
    """A data flow; `subjects` are pupil ids, `parents` parent ids; other DataFlow fields by keyword."""
    people = [Subject(kind="pupil", id=s) for s in (subjects or [])]
    people += [Subject(kind="parent", id=p) for p in (parents or [])]
    if isinstance(request, dict):
        request = DisclosureRequest.model_validate(request)
    return DataFlow(
        **_envelope(when, event_id, emitted, "flows"),
        recipient=recipient,
        purpose=purpose,
        categories=categories,
        subjects=people or [Subject(kind="pupil", id="pupil-1")],
        request=request,
        **fields,
    )


def consent(
    when: When,
    subject: str,
    recipient: str | None,
    purpose: str,
    categories: list[str],
    *,
    by: str = "mum-1",
    relationship: str = "mother",
    pr: bool = True,
    delegated: bool = False,
    explicit: bool = False,
    written: bool = False,
    consent_id: str | None = None,
    recipient_class: str | None = None,
    subject_kind: str = "pupil",
    assessment: str | None = None,
    event_id: str | None = None,
    emitted: When | None = None,
) -> ConsentGiven:
    """A consent given at `when`."""
    env = _envelope(when, event_id, emitted, "consents")
    return ConsentGiven.model_validate(
        {
            **env,
            "subject": {"kind": subject_kind, "id": subject},
            "consent_id": consent_id or f"consent-{env['source'].sequence}",
            "given_by": actor(by, relationship, pr=pr, delegated=delegated),
            "scope": _scope(recipient, purpose, categories, recipient_class),
            "explicit": explicit,
            "written": written,
            "competence_assessment_id": assessment,
        }
    )


def own_consent(
    when: When, subject: str, recipient: str | None, purpose: str, categories: list[str], **kw: Any
) -> ConsentGiven:
    """A consent the pupil gives for themselves (no parental responsibility involved)."""
    return consent(when, subject, recipient, purpose, categories, by=subject, relationship="self", pr=False, **kw)


def withdrawal(
    when: When,
    subject: str,
    *,
    consent_id: str | None = None,
    recipient: str | None = None,
    purpose: str | None = None,
    categories: list[str] | None = None,
    by: str = "mum-1",
    relationship: str = "mother",
    pr: bool = True,
    subject_kind: str = "pupil",
    event_id: str | None = None,
    emitted: When | None = None,
) -> ConsentWithdrawn:
    """A withdrawal of one consent (by id) or of everything in a scope."""
    scope = None
    if consent_id is None or recipient is not None or purpose is not None:
        scope = _scope(recipient, purpose, categories)
    return ConsentWithdrawn.model_validate(
        {
            **_envelope(when, event_id, emitted, "consents"),
            "subject": {"kind": subject_kind, "id": subject},
            "consent_id": consent_id,
            "withdrawn_by": actor(by, relationship, pr=pr),
            "scope": scope,
        }
    )


def refusal(
    when: When,
    subject: str,
    recipient: str | None,
    purpose: str | None,
    categories: list[str] | None = None,
    *,
    by: str = "mum-1",
    relationship: str = "mother",
    pr: bool = True,
    event_id: str | None = None,
    emitted: When | None = None,
) -> ConsentRefused:
    """A refusal, standing until the same person consents."""
    return ConsentRefused.model_validate(
        {
            **_envelope(when, event_id, emitted, "consents"),
            "subject": {"id": subject},
            "refused_by": actor(by, relationship, pr=pr),
            "scope": _scope(recipient, purpose, categories),
        }
    )


def objection(
    when: When,
    subject: str,
    recipient: str | None,
    purpose: str | None,
    *,
    grounds: str = "art21",
    by: str = "mum-1",
    relationship: str = "mother",
    pr: bool = True,
    upheld: bool = False,
    objection_id: str | None = None,
    subject_kind: str = "pupil",
    event_id: str | None = None,
    emitted: When | None = None,
) -> ObjectionRaised:
    """An objection."""
    env = _envelope(when, event_id, emitted, "consents")
    return ObjectionRaised.model_validate(
        {
            **env,
            "subject": {"kind": subject_kind, "id": subject},
            "objection_id": objection_id or f"objection-{env['source'].sequence}",
            "objected_by": actor(by, relationship, pr=pr),
            "scope": _scope(recipient, purpose, None),
            "grounds": grounds,
            "upheld": upheld,
        }
    )


def objection_withdrawn(when: When, subject: str, objection_id: str, **kw: Any) -> ObjectionWithdrawn:
    """The end of an objection."""
    return ObjectionWithdrawn(
        **_envelope(when, kw.get("event_id"), kw.get("emitted"), "consents"),
        subject=Subject(id=subject),
        objection_id=objection_id,
    )


def agreement(
    when: When,
    recipient: str,
    kind: str = "art28_contract",
    *,
    valid_from: When | None = None,
    valid_until: When | None = None,
    agreement_id: str | None = None,
    purposes: list[str] | None = None,
    categories: list[str] | None = None,
    event_id: str | None = None,
    emitted: When | None = None,
) -> SharingAgreement:
    """An agreement signed at `when`, valid from `valid_from` (default: `when`) to `valid_until`."""
    env = _envelope(when, event_id, emitted, "contracts")
    return SharingAgreement.model_validate(
        {
            **env,
            "agreement_id": agreement_id or f"agreement-{recipient}-{env['source'].sequence}",
            "recipient": recipient,
            "agreement_type": kind,
            "valid_from": at(valid_from) if valid_from is not None else at(when),
            "valid_until": at(valid_until) if valid_until is not None else None,
            "purposes": purposes or [],
            "categories": categories or [],
        }
    )


def terminated(when: When, recipient: str, agreement_id: str, **kw: Any) -> AgreementTerminated:
    """An agreement ended early."""
    return AgreementTerminated(
        **_envelope(when, kw.get("event_id"), kw.get("emitted"), "contracts"),
        agreement_id=agreement_id,
        recipient=recipient,
    )


def born(subject: str, birth: date | str, *, when: When = "2000-01-01T00:00:00Z", **kw: Any) -> BirthDateRecorded:
    """A date of birth."""
    return BirthDateRecorded(
        **_envelope(when, kw.get("event_id"), kw.get("emitted"), "mis"),
        subject=Subject(id=subject),
        birth_date=date.fromisoformat(birth) if isinstance(birth, str) else birth,
    )


def enrolled(when: When, subject: str, school: str = "rose-valley", **kw: Any) -> PupilEnrolled:
    """A pupil joined a Trust school."""
    return PupilEnrolled(
        **_envelope(when, kw.get("event_id"), kw.get("emitted"), "mis"), subject=Subject(id=subject), school=school
    )


def left(when: When, subject: str, school: str = "rose-valley", **kw: Any) -> PupilLeft:
    """A pupil left the Trust."""
    return PupilLeft(
        **_envelope(when, kw.get("event_id"), kw.get("emitted"), "mis"),
        subject=Subject(id=subject),
        school=school,
        destination_school=kw.get("destination"),
        last_trust_school=kw.get("last_trust_school", True),
    )


def court_order(
    notified: When,
    subject: str,
    *,
    persons: list[str] | None = None,
    recipients: list[str] | None = None,
    categories: list[str] | None = None,
    made: When | None = None,
    order_id: str | None = None,
    valid_until: When | None = None,
    event_id: str | None = None,
    emitted: When | None = None,
) -> CourtOrderNotified:
    """A court order the Trust was notified of at `notified`."""
    env = _envelope(made or notified, event_id, emitted, "dsl")
    return CourtOrderNotified.model_validate(
        {
            **env,
            "subject": {"id": subject},
            "order_id": order_id or f"order-{env['source'].sequence}",
            "made_at": at(made or notified),
            "trust_notified_at": at(notified),
            "valid_until": at(valid_until) if valid_until is not None else None,
            "restricted_person_ids": persons or [],
            "restricted_recipients": recipients or [],
            "categories": categories or [],
        }
    )


def standing(
    when: When,
    subject: str,
    person: str,
    relationship: str = "father",
    *,
    pr: bool = False,
    care: bool = False,
    delegated: bool = False,
    **kw: Any,
) -> ParentalResponsibilityRecorded:
    """A person's recorded standing towards a pupil."""
    return ParentalResponsibilityRecorded(
        **_envelope(when, kw.get("event_id"), kw.get("emitted"), "mis"),
        subject=Subject(id=subject),
        person=actor(person, relationship, pr=pr, care=care, delegated=delegated),
    )


def care_order(when: When, subject: str, local_authority: str = "la-leeds", **kw: Any) -> CareOrderRecorded:
    """A care order: the local authority shares PR."""
    return CareOrderRecorded(
        **_envelope(when, kw.get("event_id"), kw.get("emitted"), "mis"),
        subject=Subject(id=subject),
        order_id=kw.get("order_id", f"care-{subject}"),
        local_authority=local_authority,
    )


def competence(
    when: When, subject: str, competent: bool = True, *, purposes: list[str] | None = None, **kw: Any
) -> CompetenceAssessed:
    """A recorded competence assessment."""
    env = _envelope(when, kw.get("event_id"), kw.get("emitted"), "dsl")
    return CompetenceAssessed(
        **env,
        subject=Subject(id=subject),
        assessment_id=kw.get("assessment_id", f"assessment-{env['source'].sequence}"),
        competent=competent,
        assessed_by=kw.get("assessed_by", "dsl-1"),
        purposes=purposes or [],
    )


def notice(when: When, version: str, **kw: Any) -> NoticeVersionPublished:
    """A new privacy notice version."""
    return NoticeVersionPublished(**_envelope(when, kw.get("event_id"), kw.get("emitted"), "dpo"), version=version)
