"""The consent forms of the year: who signs what, which forms are invalid, withdrawals and objections."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from producers.simulator.calendar import at_london
from producers.simulator.population import HAWTHORN, ROSE_VALLEY, Consent, Contact, Population, Pupil

KINDS: dict[str, dict[str, Any]] = {
    "photo": {
        "recipient_class": "publication",
        "purpose": "promotional_photo",
        "categories": ("photographs", "identity.name", "identity.class", "identity.school"),
    },
    "music": {"recipient": "peripatetic-music", "purpose": "music_tuition", "categories": ("identity", "contact")},
    "club": {
        "recipient": "after-school-club",
        "purpose": "after_school_club",
        "categories": ("identity", "contact", "parent_contact"),
    },
    "hub": {
        "recipient": "homework-hub",
        "purpose": "online_service",
        "categories": ("identity.name", "identity.class", "identity.school", "contact", "edtech_account"),
    },
    "biometric": {
        "recipient": "biometric-catering",
        "purpose": "biometric_catering",
        "categories": ("identity.name", "biometric"),
        "explicit": True,
        "written": True,
    },
}
"""What each consent form covers (recipient or class, purpose, categories)."""

_TAKE_UP = {
    HAWTHORN: {"photo": 0.8, "music": 0.1, "club": 0.18},
    ROSE_VALLEY: {"photo": 0.75, "music": 0.12, "club": 0.08, "hub": 0.45, "biometric": 0.6},
}
_BAD_SIGNER = 0.05
_WITHDRAWAL = 0.05
_OBJECTION = 0.05
# Forms a pupil may sign for themselves once old enough (a competence assessment is on file from 16).
_SELF_CAPABLE = ("photo", "music", "club", "hub")


@dataclass
class Form:
    """One row of a consent export: a form action and its submission time."""

    when: datetime
    values: dict[str, Any]


class ConsentPlan:
    """Every form submitted in the run, by submission date, and each pupil's resulting consents."""

    def __init__(self, rng: random.Random, population: Population, start: date, end: date, competent: set[str]):
        self.forms: dict[date, list[Form]] = {}
        self._rng = rng
        self._n = 0
        self.objections = 0
        self._biometric: list[Pupil] = []
        for pupil in population.pupils:
            first = pupil.enrolled_on if pupil.joins_midyear else start
            given = first + timedelta(days=rng.randrange(1, 5 if pupil.joins_midyear else 10))
            if given > end:
                continue
            for kind, rate in _TAKE_UP[pupil.school].items():
                if rng.random() < rate:
                    self._form(pupil, kind, given, end, pupil.id in competent)
        if not self.objections and self._biometric:
            # Every year has at least one pupil who objects, so biometric flows can break the way POFA forbids.
            pupil = self._biometric[0]
            self._object(pupil, pupil.consents["biometric"].given_on, end)

    def _next(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n:06d}"

    def _signer(self, pupil: Pupil, kind: str, on: date, competent: bool) -> tuple[Contact | None, bool]:
        """(the parent signing, or None for the pupil themselves; whether the signature is valid)."""
        age = pupil.age_on(on)
        if kind in _SELF_CAPABLE and (competent or (kind == "hub" and age >= 13)):
            return None, True
        able = [c for c in pupil.contacts if (c.pr if kind == "hub" else c.can_consent)]
        unable = [c for c in pupil.contacts if not c.can_consent]
        if kind in ("music", "club") and unable and (not able or self._rng.random() < _BAD_SIGNER):
            return unable[0], False  # a step-parent or grandparent signed: kept on file, not relied on
        return (able[0], True) if able else (None, False)

    def _form(self, pupil: Pupil, kind: str, given: date, end: date, competent: bool) -> None:
        signer, valid = self._signer(pupil, kind, given, competent)
        if signer is None and not valid:
            return  # nobody who could sign: no form
        spec = KINDS[kind]
        when = at_london(given, 18, self._rng.randrange(0, 240))
        consent = Consent(
            id=self._next("CN"),
            purpose=spec["purpose"],
            given_by=signer.id if signer else pupil.id,
            relationship=signer.relationship if signer else "self",
            pr=signer.pr if signer else False,
            delegated=signer.delegated if signer else False,
            given_on=given,
            valid=valid,
        )
        pupil.consents[kind] = consent
        self._add(when, pupil, "given", consent, spec)
        span = (end - given).days
        if valid and kind != "biometric" and span > 40 and self._rng.random() < _WITHDRAWAL:
            consent.withdrawn_on = given + timedelta(days=self._rng.randrange(20, span - 10))
            self._add(at_london(consent.withdrawn_on, 19, self._rng.randrange(0, 120)), pupil, "withdrawn", consent, {})
        if kind == "biometric" and valid and span > 40:
            self._biometric.append(pupil)
            if self._rng.random() < _OBJECTION:
                self._object(pupil, given, end)

    def _object(self, pupil: Pupil, given: date, end: date) -> None:
        """The pupil objects to biometrics some weeks after the parent consented (POFA 2012 s26(5))."""
        spec = KINDS["biometric"]
        pupil.biometric_objection = given + timedelta(days=self._rng.randrange(20, (end - given).days - 10))
        objection = Consent(
            self._next("OB"), spec["purpose"], pupil.id, "self", False, False, pupil.biometric_objection, True
        )
        scope = {"recipient": spec["recipient"], "purpose": spec["purpose"], "categories": ("biometric",)}
        self._add(at_london(objection.given_on, 16, 0), pupil, "objection", objection, scope, grounds="biometrics")
        self.objections += 1

    def _add(
        self, when: datetime, pupil: Pupil, action: str, consent: Consent, spec: dict[str, Any], grounds: str = ""
    ) -> None:
        values = {
            "form_id": self._next("F"),
            "when": when,
            "pupil": pupil.id,
            "action": action,
            "consent_id": consent.id,
            "person": consent.given_by,
            "relationship": consent.relationship,
            "pr": consent.pr,
            "delegated": consent.delegated,
            "recipient": spec.get("recipient", ""),
            "recipient_class": spec.get("recipient_class", ""),
            "purpose": spec.get("purpose", ""),
            "categories": tuple(spec.get("categories", ())),
            "explicit": bool(spec.get("explicit", False)),
            "written": bool(spec.get("written", False)),
            "grounds": grounds,
        }
        self.forms.setdefault(when.date(), []).append(Form(when, values))


def holds(pupil: Pupil, kind: str, day: date) -> bool:
    """The school may rely on the pupil's `kind` consent on `day` (valid, exported, not withdrawn, PR in force)."""
    consent = pupil.consents.get(kind)
    if consent is None or not consent.valid or day <= consent.given_on + timedelta(days=1):
        return False
    if consent.withdrawn_on is not None and day >= consent.withdrawn_on:
        return False
    # A parent's consent ends at the pupil's 18th birthday (Children Act 1989 s105).
    return not (consent.relationship != "self" and pupil.age_on(day) >= 18)


def absent(pupil: Pupil, kind: str, day: date) -> bool:
    """No consent of this kind was on file on `day` (nothing given yet, nothing withdrawn)."""
    consent = pupil.consents.get(kind)
    return consent is None or consent.given_on >= day


def withdrawn(pupil: Pupil, kind: str, day: date) -> bool:
    """A valid consent was withdrawn at least two days before `day` (its withdrawal has arrived)."""
    consent = pupil.consents.get(kind)
    return bool(consent and consent.valid and consent.withdrawn_on and consent.withdrawn_on <= day - timedelta(days=2))


def unauthorised(pupil: Pupil, kind: str, day: date) -> bool:
    """The only form on file was signed by someone who could not consent, at least two days before `day`."""
    consent = pupil.consents.get(kind)
    return bool(consent and not consent.valid and consent.given_on <= day - timedelta(days=2))
