"""Findings of the independent review of the evaluator, each tested from the RULES.md text it breaks.

Pupils: `ava` (born 2016-03-10), `cal` (born 2011-06-20), `ben` (born 2008-09-15), `zoe` (born 2005-01-01).
"""

from __future__ import annotations

from collections.abc import Callable

from schemas.decisions import Decision
from schemas.events import DataFlow, DisclosureRequest, Fact
from streams.builders import (
    born,
    competence,
    consent,
    flow,
    left,
    objection,
    refusal,
    standing,
    withdrawal,
)

Judge = Callable[..., Decision]

AVA = born("ava", "2016-03-10")
CAL = born("cal", "2011-06-20")
BEN = born("ben", "2008-09-15")
ZOE = born("zoe", "2005-01-01")
WHEN = "2024-06-03T10:00:00Z"


# --- 1. RULES.md §5: a competent pupil's withdrawal beats a parent's consent only for what it withdraws ----------


def test_withdrawing_one_consent_by_id_leaves_the_pupils_other_consents_standing(judge: Judge) -> None:
    # §2: consent is valid from granted_at to withdrawn_at; §5: scope names recipient, purpose and categories.
    photo = consent(
        "2024-02-01T00:00Z", "zoe", "trust-website", "promotional_photo", ["photographs"],
        by="zoe", relationship="self", pr=False, consent_id="own-photo",
    )  # fmt: skip
    lessons = consent(
        "2024-02-01T00:00Z", "zoe", "peripatetic-music", "music_tuition", ["identity"],
        by="zoe", relationship="self", pr=False, consent_id="own-music",
    )  # fmt: skip
    out = withdrawal("2024-03-01T00:00Z", "zoe", consent_id="own-music", by="zoe", relationship="self", pr=False)
    website = flow(WHEN, "trust-website", "promotional_photo", ["photographs"], subjects=["zoe"])
    assert judge(website, ZOE, photo, lessons, out).reasons == []
    music = flow(WHEN, "peripatetic-music", "music_tuition", ["identity"], subjects=["zoe"])
    assert judge(music, ZOE, photo, lessons, out).reasons == ["CONSENT_WITHDRAWN"]
    # A competent 15-year-old withdrawing her own music consent leaves her parent's photo permission in force,
    # but it still beats the parent's consent to the same music lessons.
    assessed = competence("2024-01-01T00:00Z", "ben")
    own_music = consent(
        "2024-02-01T00:00Z", "ben", "peripatetic-music", "music_tuition", ["identity"],
        by="ben", relationship="self", pr=False, consent_id="ben-music",
    )  # fmt: skip
    ben_out = withdrawal("2024-03-01T00:00Z", "ben", consent_id="ben-music", by="ben", relationship="self", pr=False)
    parent_photo = consent("2024-02-01T00:00Z", "ben", "trust-website", "promotional_photo", ["photographs"])
    parent_music = consent("2024-02-01T00:00Z", "ben", "peripatetic-music", "music_tuition", ["identity"])
    facts = (BEN, assessed, own_music, ben_out, parent_photo, parent_music)
    ben_photo = flow(WHEN, "trust-website", "promotional_photo", ["photographs"], subjects=["ben"])
    assert judge(ben_photo, *facts).reasons == []
    ben_lessons = flow(WHEN, "peripatetic-music", "music_tuition", ["identity"], subjects=["ben"])
    assert judge(ben_lessons, *facts).reasons == ["CONSENT_WITHDRAWN"]


# --- 2. RULES.md §5 Biometrics: "the written consent of one parent" ----------------------------------------------


def test_biometrics_need_a_parents_written_consent_not_the_competent_childs_own(judge: Judge) -> None:
    biometric = flow(
        WHEN, "biometric-catering", "biometric_catering", ["identity.name", "biometric"],
        subjects=["ben"], channel="encrypted_api",
    )  # fmt: skip
    own = consent(
        "2024-02-01T00:00Z", "ben", "biometric-catering", "biometric_catering", ["identity.name", "biometric"],
        by="ben", relationship="self", pr=False, explicit=True, written=True,
    )  # fmt: skip
    assessed = competence("2024-01-01T00:00Z", "ben")
    # §1: Art 9 data the recipient may receive only with explicit consent gets this code only.
    assert judge(biometric, BEN, assessed, own).reasons == ["SPECIAL_CATEGORY_WITHOUT_CONDITION"]
    parent = consent(
        "2024-02-01T00:00Z", "ben", "biometric-catering", "biometric_catering", ["identity.name", "biometric"],
        explicit=True, written=True,
    )  # fmt: skip
    assert judge(biometric, BEN, assessed, own, parent).reasons == []


# --- 3. RULES.md §6.7: only sending data to the data subject abroad is not a restricted transfer ----------------


def test_to_data_subject_flag_does_not_excuse_a_transfer_to_an_organisation(judge: Judge) -> None:
    # QuizCloud is US-hosted and not certified to the UK Extension of the DPF.
    app = flow(WHEN, "quizcloud", "edtech", ["identity.name", "edtech_account"], subjects=["ava"], to_data_subject=True)
    assert judge(app, AVA).reasons == ["INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD"]
    asked_by_pupil = app.model_copy(update={"request": _request("ava")})
    assert judge(asked_by_pupil, AVA).reasons == ["INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD"]
    # A parent abroad is not the data subject of the child's report, whatever the connector claims.
    to_parent = flow(
        WHEN, "family", "parent_report", ["assessment"], subjects=["cal"], destination_country="IN",
        to_data_subject=True, request={"requester": "mum-1", "relationship": "mother",
                                       "has_parental_responsibility": True},
    )  # fmt: skip
    assert judge(to_parent, CAL).reasons == ["INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD"]
    # The pupil's own SAR answered to them abroad is not a restricted transfer.
    own_sar = flow(
        WHEN, "family", "subject_access", ["assessment"], subjects=["zoe"], destination_country="IN",
        to_data_subject=True, request={"requester": "zoe", "relationship": "self"},
    )  # fmt: skip
    assert judge(own_sar, ZOE).reasons == []


def _request(requester: str) -> DisclosureRequest:
    return DisclosureRequest(requester=requester, relationship="self")


# --- 4. RULES.md §6.13, §4 Other schools, §3: the CP file goes separately, to the DSL; it may hold Art 10 data ----


def cp_file(categories: list[str], **kw: object) -> DataFlow:
    return flow(WHEN, "school:urn:100234", "cp_file_transfer", categories, subjects=["cal"], **kw)


def test_cp_file_transfer_is_judged_by_its_purpose_and_may_carry_criminal_offence_data(judge: Judge) -> None:
    with_allegation = cp_file(
        ["identity", "safeguarding.cp_file", "criminal.allegation"], channel="cpoms_transfer", addressed_to_dsl=True
    )
    assert judge(with_allegation, CAL).reasons == []
    # A CP file transfer not addressed to the DSL breaks the rule whatever the safeguarding category is called.
    not_to_dsl = cp_file(["identity", "safeguarding"], channel="s2s")
    assert judge(not_to_dsl, CAL).reasons == ["INSECURE_CHANNEL"]
    # Bundled with the main file: not separate, and outside the CP file's permitted set.
    bundled = cp_file(["identity", "safeguarding", "attendance"], channel="s2s", addressed_to_dsl=True)
    assert judge(bundled, CAL).reasons == ["CATEGORY_NOT_PERMITTED_FOR_RECIPIENT", "INSECURE_CHANNEL"]


# --- 5. RULES.md §6.11 and §4 Family: every flow to the family needs an entitled requester -------------------


def updates(subject: str, request: dict[str, object] | None) -> DataFlow:
    return flow(
        WHEN, "family", "school_updates", ["identity", "attendance"], subjects=[subject], channel="encrypted_email",
        request=request,
    )  # fmt: skip


def test_school_updates_to_the_family_need_an_entitled_requester(judge: Judge) -> None:
    # "A non-parent with no PR and no care of the child gets nothing."
    neighbour = updates("cal", {"requester": "neighbour-1", "relationship": "other"})
    assert judge(neighbour, CAL).reasons == ["REQUESTER_NOT_ENTITLED"]
    # "Adult pupils (18+): nothing without their consent, except an emergency."
    mother = {"requester": "mum-1", "relationship": "mother", "has_parental_responsibility": True}
    assert judge(updates("zoe", mother), ZOE).reasons == ["REQUESTER_NOT_ENTITLED"]
    assert judge(updates("zoe", {**mother, "authorised_by_pupil": True}), ZOE).reasons == []
    # Fail closed: a disclosure to the family that does not say who received it.
    assert judge(updates("cal", None), CAL).reasons == ["REQUESTER_NOT_ENTITLED"]
    # "Every education-law parent gets reports": a father without PR still gets the running of the school.
    assert judge(updates("cal", {"requester": "dad-1", "relationship": "father"}), CAL).reasons == []


# --- 6. RULES.md §6.6: leaver flows only for the listed purposes; supplier syncs drop pupils after 30 days -------


def test_a_legal_obligation_basis_does_not_keep_a_leavers_data_flowing(judge: Judge) -> None:
    gone = left("2023-07-20T00:00Z", "cal", "rose-valley")
    sync = flow(WHEN, "sims", "mis_sync", ["identity", "assessment"], subjects=["cal"], lawful_basis="legal_obligation")
    assert judge(sync, CAL, gone).reasons == ["RETENTION_EXCEEDED"]
    # legal_obligation comes first in these grants, so it was the default basis; the purpose decides.
    mother = {"requester": "mum-1", "relationship": "mother", "has_parental_responsibility": True}
    report = flow(WHEN, "family", "parent_report", ["assessment"], subjects=["cal"], request=mother)
    assert judge(report, CAL, gone).reasons == ["RETENTION_EXCEEDED"]
    fsm = flow(WHEN, "local-authority", "fsm_eligibility_check", ["identity", "fsm_eligibility"], subjects=["cal"])
    assert judge(fsm, CAL, gone).reasons == ["RETENTION_EXCEEDED"]
    # A statutory return and a SAR remain allowed for a leaver.
    census = flow(WHEN, "dfe", "census_return", ["identity", "attendance"], subjects=["cal"], channel="dfe_collect")
    assert judge(census, CAL, gone).reasons == []
    sar = flow(WHEN, "family", "subject_access", ["assessment"], subjects=["cal"], request=mother)
    assert judge(sar, CAL, gone).reasons == []


# --- 7. RULES.md §2 (facts at occurred_at) and §5: 13-17 consent needs a recorded competence assessment ---------


def test_a_cited_competence_assessment_must_predate_the_consent_and_cover_its_purpose(judge: Judge) -> None:
    own = consent(
        "2024-02-01T00:00Z", "ben", "peripatetic-music", "music_tuition", ["identity"],
        by="ben", relationship="self", pr=False, assessment="a1",
    )  # fmt: skip
    lessons = flow("2024-03-01T10:00Z", "peripatetic-music", "music_tuition", ["identity"], subjects=["ben"])
    recorded_later = competence("2024-07-01T00:00Z", "ben", assessment_id="a1")
    assert judge(lessons, BEN, own, recorded_later).reasons == ["CONSENT_GIVER_NOT_AUTHORISED"]
    other_purpose = competence("2024-01-01T00:00Z", "ben", assessment_id="a1", purposes=["health_referral"])
    assert judge(lessons, BEN, own, other_purpose).reasons == ["CONSENT_GIVER_NOT_AUTHORISED"]
    in_time = competence("2024-01-01T00:00Z", "ben", assessment_id="a1", purposes=["music_tuition"])
    assert judge(lessons, BEN, own, in_time).reasons == []


# --- 8. RULES.md §4 register: "Cool Milk: name, DOB, class, school (FSM flag for over-5s)" ----------------------


def test_cool_milk_gets_the_fsm_flag_only_for_pupils_aged_five_or_over(judge: Judge) -> None:
    milk = ["identity.name", "identity.dob", "identity.class", "identity.school"]
    noa = born("noa", "2019-06-03")  # five on the day of the flow

    def to_cool_milk(categories: list[str], when: str = WHEN) -> DataFlow:
        return flow(when, "cool-milk", "free_milk", categories, subjects=["noa"], channel="encrypted_api")

    assert judge(to_cool_milk([*milk, "fsm_eligibility"], "2024-06-02T10:00Z"), noa).reasons == [
        "CATEGORY_NOT_PERMITTED_FOR_RECIPIENT"
    ]
    assert judge(to_cool_milk(milk, "2024-06-02T10:00Z"), noa).reasons == []
    assert judge(to_cool_milk([*milk, "fsm_eligibility"]), noa).reasons == []
    # Fail closed: without a date of birth nobody can show the pupil is over five.
    assert judge(to_cool_milk([*milk, "fsm_eligibility"])).reasons == ["CATEGORY_NOT_PERMITTED_FOR_RECIPIENT"]


# --- 9. RULES.md §5 Biometrics: "no parent objecting, and no objection from the child" ---------------------------


def test_only_the_child_and_parents_can_object_to_biometrics(judge: Judge) -> None:
    biometric = flow(
        WHEN, "biometric-catering", "biometric_catering", ["identity.name", "biometric"],
        subjects=["ava"], channel="encrypted_api",
    )  # fmt: skip
    parent = consent(
        "2024-01-01T00:00Z", "ava", "biometric-catering", "biometric_catering", ["identity.name", "biometric"],
        explicit=True, written=True,
    )  # fmt: skip

    def objects(by: str, relationship: str, **kw: bool) -> Fact:
        return objection(
            "2024-03-01T00:00Z", "ava", "biometric-catering", None, grounds="biometrics", by=by,
            relationship=relationship, pr=False, **kw,
        )  # fmt: skip

    assert judge(biometric, AVA, parent, objects("neighbour-1", "other")).reasons == []
    no = refusal(
        "2024-03-01T00:00Z", "ava", "biometric-catering", None, by="neighbour-1", relationship="other", pr=False
    )
    assert judge(biometric, AVA, parent, no).reasons == []
    # Any parent binds, with or without PR; so does anyone with care of the child (an education-law parent).
    assert judge(biometric, AVA, parent, objects("dad-2", "father")).reasons == ["OBJECTION_NOT_HONOURED"]
    gran = standing("2023-09-01T00:00Z", "ava", "gran-1", "grandparent", care=True)
    assert judge(biometric, AVA, parent, gran, objects("gran-1", "grandparent")).reasons == ["OBJECTION_NOT_HONOURED"]
    assert judge(biometric, AVA, parent, objects("ava", "self")).reasons == ["OBJECTION_NOT_HONOURED"]
