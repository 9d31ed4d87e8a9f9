# ruff: noqa: RUF001  (the phrases quote the notice verbatim, en dashes and curly quotes included)
"""Every recipient, category and purpose the privacy notice v1.0 names is in the policy register.

The lists below were extracted by hand from /work/shared/seed/privacy-notice.txt (also copied to
tests/data/privacy-notice.txt so the test runs anywhere). Each phrase must appear in the notice, and some
policy entry of the right kind must claim it in its `notice_terms`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from schemas.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parents[3]
NOTICE = ROOT / "tests" / "data" / "privacy-notice.txt"

NOTICE_RECIPIENTS = [
    "Our local authority",
    "The Department for Education",
    "The pupil's family and representatives",
    "Schools within The Rose Learning Trust",
    "Educators and examining bodies",
    "Our regulator – Ofsted",
    "Financial Organisations",
    "Our auditors",
    "Survey and research organisations",
    "Health authorities such as the School Nurse and other medical professionals",
    "Health and social welfare organisations",
    "Professional advisers",
    "consultants",
    "Charities and voluntary organisations in support of pupils' needs",
    "Police forces",
    "courts and tribunals",
    "Professional bodies",
    "Schools that the pupils attend after leaving us",
    "Our ICT support suppliers who support us with SIMS and other ICT",
    "School meal providers where relevant allergy information is vital",
    "Suppliers and service providers",
    "SIMS – our school information management system",
    "CPOMS – safeguarding and behaviour management system",
    "Parent Pay – our parent communication and payment systems",
    "Free School Meal Eligibility Team",
    "Education software in support of teaching and learning",
    "Assessment software in support of pupil assessment",
    "Microsoft Outlook email communication system",
    "Cool Milk",
    "peripatetic music teachers",
    "Other third-party partners",
    "school photographers",
]

NOTICE_CATEGORIES = [
    "Contact details, contact preferences",
    "date of birth",
    "identification documents",
    "Results of internal assessments and externally set tests",
    "Pupil and curricular records",
    "Characteristics, such as ethnic background",
    "eligibility for free school meals",
    "special educational needs",
    "Exclusion information",
    "information contained in an ECHP",
    "Details of any medical conditions, including physical and mental health",
    "Attendance information such as sessions attended, number of absences, absence reasons and any previous "
    "schools attended",
    "Behavioural information such as exclusions and any relevant alternative provision put in place",
    "Safeguarding information (such as court orders and professional involvement)",
    "Details of any support received, including care packages, plans and support providers",
    "Assessment and attainment information such as Key Stage 1 and phonics results, Key Stage 2 results",
    "School trip information such as consents",
    "current medical issues",
    "voluntary contributions made",
    "Provision of educational software in support of teaching and learning",
    "Information to enable the pupil to be provided with a school meal",
    "Information required in order to meet our statutory requirements for statutory returns and audit",
    "Photographs",
    "We use CCTV in various locations around our school sites",
]

NOTICE_PURPOSES = [
    "Provide you with an education including extra-curricular activities",
    "Look after your week being (safeguarding pupils' welfare and provide appropriate pastoral and where "
    "necessary, medical care",
    "Monitor pupils' progress and educational needs",
    "Enable pupils to take part in national or other assessments",
    "to publish the results of public examinations",
    "Maintain relationships with the school community",
    "Help us with the management planning and forecasting",
    "research and statistical analysis",
    "Monitor use of the Trust's IT system",
    "Receive information about current and prospective pupils from any educational institution that they attend",
    "Confirm the identity of prospective pupils and their parents",
    "Use photographic or video images of pupils in learning journeys or in school displays",
    "Photographs for promotional use",
    "Create invoices and process payments for services such as school meals, school trips",
    "For security purposes",
    "for regulatory and legal purposes",
    "Receive reports from any organisations that may be working with your child",
    "to obtain appropriate professional advice and insurance",
    "To keep you updated about the running of the school",
    "marketing information by email or text",
    "We commission school photographers to take photos of pupils",
    "statutory data collections such as the school census and early years' census",
    "Common Transfer File",
    "peripatetic music teachers",
    "providing services such as after school clubs",
    "to enable free milk for reception/nursery pupils",
    "School meal providers where relevant allergy information is vital",
]


@functools.cache
def _policy() -> Policy:
    return load_policy(ROOT / "policy")


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("’", "'")).strip()


def _claimed(phrase: str, terms: list[str]) -> bool:
    return any(_squash(phrase) == _squash(term) for term in terms)


@pytest.mark.parametrize("phrase", NOTICE_RECIPIENTS + NOTICE_CATEGORIES + NOTICE_PURPOSES)
def test_phrase_is_quoted_from_the_notice(phrase: str) -> None:
    assert _squash(phrase) in _squash(NOTICE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("phrase", NOTICE_RECIPIENTS)
def test_every_notice_recipient_is_registered(phrase: str) -> None:
    policy = _policy()
    assert _claimed(phrase, [t for r in policy.recipients for t in r.notice_terms])


@pytest.mark.parametrize("phrase", NOTICE_CATEGORIES)
def test_every_notice_category_is_in_the_taxonomy(phrase: str) -> None:
    policy = _policy()
    assert _claimed(phrase, [t for c in policy.categories for t in c.notice_terms])


@pytest.mark.parametrize("phrase", NOTICE_PURPOSES)
def test_every_notice_purpose_is_registered(phrase: str) -> None:
    policy = _policy()
    assert _claimed(phrase, [t for p in policy.purposes for t in p.notice_terms])


def test_every_policy_notice_term_is_quoted_from_the_notice() -> None:
    policy = _policy()
    notice = _squash(NOTICE.read_text(encoding="utf-8"))
    terms = [
        t for group in (policy.recipients, policy.categories, policy.purposes) for e in group for t in e.notice_terms
    ]
    assert [t for t in terms if _squash(t) not in notice] == []
