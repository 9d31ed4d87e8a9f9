"""Pupils and their families: who is on roll, their ages, needs, contacts and who may speak for them.

Ids look like the real thing so connectors parse them as they would a school's exports: a pupil's id is a
UPN (check letter + the school's LAESTAB + a serial), which is also what the mail-trace connector finds in
subject lines; a contact's id is the MIS's contact id.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from producers.simulator.calendar import academic_year

HAWTHORN = "hawthorn-primary"
"""Hawthorn Primary Academy (ages 3-11)."""
ROSE_VALLEY = "rose-valley"
"""Rose Valley Academy (ages 11-18)."""
LAESTAB = {HAWTHORN: "9372001", ROSE_VALLEY: "9374001"}
"""The DfE numbers of the Trust's schools (policy/connectors.yaml `ctf.schools`)."""
OTHER_SCHOOLS = {
    "school:9372105": "9372105",
    "school:9373301": "9373301",
    "school:9374102": "9374102",
    "school:8884010": "8884010",
}
"""Schools outside the Trust that pupils move to (register id → LAESTAB)."""
PRIMARY_DESTINATIONS = ("school:9372105", "school:9373301")
SECONDARY_DESTINATIONS = ("school:9374102", "school:8884010")

# Year groups by age on 31 August: Hawthorn has nursery (3) to Year 6 (10), Rose Valley Year 7 (11) to 13 (17).
YEAR_GROUPS = {HAWTHORN: ["N", "R", "1", "2", "3", "4", "5", "6"], ROSE_VALLEY: ["7", "8", "9", "10", "11", "12", "13"]}
_AGE_ON_31_AUGUST = {"N": 3, "R": 4, **{str(n): n + 4 for n in range(1, 14)}}
# Sixth forms are smaller than the main school.
_WEIGHT = {"12": 0.6, "13": 0.55}
_CHECK_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"
_FORENAMES = (
    "Amara",
    "Ben",
    "Chloe",
    "Dev",
    "Ella",
    "Finn",
    "Grace",
    "Hari",
    "Isla",
    "Jack",
    "Kai",
    "Lily",
    "Maya",
    "Noah",
    "Olive",
    "Priya",
    "Quinn",
    "Rory",
    "Sana",
    "Theo",
    "Uma",
    "Vik",
    "Willow",
    "Yusuf",
    "Zara",
)
_SURNAMES = (
    "Ahmed",
    "Brown",
    "Clarke",
    "Davies",
    "Evans",
    "Fraser",
    "Green",
    "Hughes",
    "Iqbal",
    "Jones",
    "Khan",
    "Lewis",
    "Mistry",
    "Nowak",
    "Owen",
    "Patel",
    "Roberts",
    "Singh",
    "Taylor",
    "Walker",
    "Wright",
    "Young",
)
_ETHNICITIES = ("WBRI", "WOTH", "AIND", "APKN", "BAFR", "MWBC", "CHNE", "REFU")
_LANGUAGES = ("ENG", "ENG", "ENG", "ENG", "PAN", "URD", "POL", "BEN")


def upn(laestab: str, serial: int) -> str:
    """A Unique Pupil Number: DfE check letter + LAESTAB + a 5-digit serial (13 characters)."""
    digits = f"{laestab}{serial % 100_000:05d}"
    check = sum(int(d) * w for d, w in zip(digits, range(2, 14), strict=True)) % 23
    return _CHECK_LETTERS[check] + digits


@dataclass
class Contact:
    """A person the MIS records for a pupil, and their standing (Education Act 1996 s576, Children Act 1989)."""

    id: str
    relationship: str
    pr: bool
    care: bool = False
    delegated: bool = False
    marketing_opt_in: bool = False

    @property
    def can_consent(self) -> bool:
        """May give consent for the child (RULES.md §5): PR, or a foster carer's delegated authority."""
        return self.pr or (self.relationship == "foster_carer" and self.delegated)

    @property
    def education_parent(self) -> bool:
        """An education-law parent: a natural parent, a PR holder or anyone with care."""
        return self.pr or self.care or self.relationship in ("mother", "father", "parent")


@dataclass
class Pupil:
    """One child on roll (or joining or leaving during the year)."""

    id: str
    school: str
    year_group: str
    forename: str
    surname: str
    dob: date
    enrolled_on: date
    contacts: list[Contact]
    fsm: bool = False
    sen: bool = False
    allergy: bool = False
    ethnicity: str = "WBRI"
    language: str = "ENG"
    left_on: date | None = None
    destination: str | None = None
    joins_midyear: bool = False
    # Consent choices: purpose key -> (who gave it, whether the form is valid, withdrawal date if any).
    consents: dict[str, Consent] = field(default_factory=dict)
    biometric_objection: date | None = None
    court_order: date | None = None

    def age_on(self, day: date) -> int:
        """Whole years on `day` (a birthday counts from its start)."""
        return day.year - self.dob.year - ((day.month, day.day) < (self.dob.month, self.dob.day))

    def on_roll(self, day: date) -> bool:
        """On roll on `day` (enrolled, and not yet at the leaving date)."""
        return self.enrolled_on <= day and (self.left_on is None or day < self.left_on)

    def parent_with_pr(self) -> Contact | None:
        """The first contact with parental responsibility."""
        return next((c for c in self.contacts if c.pr), None)

    def report_recipient(self) -> Contact | None:
        """Who gets the pupil's reports: the first education-law parent not barred by a court order."""
        return next(
            (c for c in self.contacts if c.education_parent and not (self.court_order and c.relationship == "father")),
            None,
        )


@dataclass
class Consent:
    """A consent form on file: who signed it, whether they could, when, and when it was withdrawn."""

    id: str
    purpose: str
    given_by: str
    relationship: str
    pr: bool
    delegated: bool
    given_on: date
    valid: bool
    withdrawn_on: date | None = None

    def held(self, day: date) -> bool:
        """A valid consent the school can rely on on `day` (given before, not yet withdrawn)."""
        return self.valid and self.given_on < day and (self.withdrawn_on is None or day <= self.withdrawn_on)


@dataclass
class Population:
    """Every pupil of both schools over the year, with lookups the schedule needs."""

    pupils: list[Pupil]

    def at(self, school: str, day: date) -> list[Pupil]:
        """Pupils on roll at `school` on `day`, in a stable order."""
        return [p for p in self.pupils if p.school == school and p.on_roll(day)]

    def by_id(self, pupil_id: str) -> Pupil:
        """The pupil with this id."""
        return next(p for p in self.pupils if p.id == pupil_id)


def _birth_date(rng: random.Random, year: int, group: str) -> date:
    age = _AGE_ON_31_AUGUST[group]
    first = date(year - age - 1, 9, 1)
    return first + timedelta(days=rng.randrange(365))


def _contacts(rng: random.Random, serial: int) -> list[Contact]:
    roll = rng.random()
    base = f"C{serial:07d}"
    if roll < 0.02:
        return [Contact(f"{base}-1", "foster_carer", pr=False, care=True, delegated=True)]
    if roll < 0.05:
        return [Contact(f"{base}-1", "grandparent", pr=False, care=True)]
    contacts = [Contact(f"{base}-1", "mother", pr=True)]
    second = rng.random()
    if second < 0.7:
        contacts.append(Contact(f"{base}-2", "father", pr=True))
    elif second < 0.82:
        contacts.append(Contact(f"{base}-2", "step_parent", pr=False, care=True))
    elif second < 0.88:
        contacts.append(Contact(f"{base}-2", "father", pr=False))
    return contacts


def build_population(rng: random.Random, start: date, days: int, sizes: dict[str, int]) -> Population:
    """Pupils for each school, spread over its year groups, with some joining and leaving during the run."""
    year = academic_year(start)
    end = start + timedelta(days=max(days - 1, 0))
    pupils: list[Pupil] = []
    serial = 0
    for school, size in sizes.items():
        groups = YEAR_GROUPS[school]
        weights = [_WEIGHT.get(g, 1.0) for g in groups]
        total = sum(weights)
        quota = [max(1, round(size * w / total)) for w in weights]
        for group, count in zip(groups, quota, strict=True):
            for _ in range(count):
                serial += 1
                dob = _birth_date(rng, year, group)
                joins = group not in ("12", "13") and rng.random() < 0.02 and days > 30
                first_day = date(year, 9, 1)
                enrolled = (
                    start + timedelta(days=rng.randrange(14, max(days - 14, 15)))
                    if joins
                    else first_day - timedelta(days=365 * rng.randrange(0, 2) + 1)
                )
                pupil = Pupil(
                    id=upn(LAESTAB[school], serial),
                    school=school,
                    year_group=group,
                    forename=rng.choice(_FORENAMES),
                    surname=rng.choice(_SURNAMES),
                    dob=dob,
                    enrolled_on=enrolled,
                    contacts=_contacts(rng, serial),
                    fsm=rng.random() < 0.22,
                    sen=rng.random() < 0.14,
                    allergy=rng.random() < 0.08,
                    ethnicity=rng.choice(_ETHNICITIES),
                    language=rng.choice(_LANGUAGES),
                    joins_midyear=joins,
                )
                for contact in pupil.contacts:
                    contact.marketing_opt_in = contact.can_consent and rng.random() < 0.4
                if not joins and days > 45 and rng.random() < 0.02:
                    pupil.left_on = start + timedelta(days=rng.randrange(20, days - 20))
                    pupil.destination = rng.choice(
                        PRIMARY_DESTINATIONS if school == HAWTHORN else SECONDARY_DESTINATIONS
                    )
                if rng.random() < 0.01 and any(c.relationship == "father" and c.pr for c in pupil.contacts):
                    pupil.court_order = start + timedelta(days=rng.randrange(10, max(days - 5, 11)))
                pupils.append(pupil)
    # The end of the year: Year 6 moves on (most to Rose Valley), Year 13 leaves school.
    summer_end = date(year + 1, 7, 22)
    if start <= summer_end <= end:
        for pupil in pupils:
            if pupil.left_on is None and pupil.year_group in ("6", "13"):
                pupil.left_on = summer_end
                if pupil.year_group == "6":
                    pupil.destination = ROSE_VALLEY if rng.random() < 0.75 else rng.choice(SECONDARY_DESTINATIONS)
    return Population(pupils)
