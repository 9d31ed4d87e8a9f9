"""One test (or more) per reason code of RULES.md §1, written from the rules, with the expected report order.

Pupils used throughout: `ava` (Hawthorn, born 2016-03-10), `ben` (Rose Valley, born 2008-09-15),
`cal` (Rose Valley, born 2011-06-20).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from schemas.decisions import Decision
from schemas.events import DataFlow, Fact
from streams.builders import (
    agreement,
    born,
    consent,
    court_order,
    flow,
    left,
    objection,
    refusal,
    standing,
    withdrawal,
)

Judge = Callable[..., Decision]

AVA = born("ava", "2016-03-10")
BEN = born("ben", "2008-09-15")
CAL = born("cal", "2011-06-20")
WHEN = "2024-06-03T10:00:00Z"


def music(**kw: Any) -> DataFlow:
    return flow(WHEN, "peripatetic-music", "music_tuition", kw.pop("categories", ["identity"]), subjects=["ava"], **kw)


MUSIC_CONSENT = consent(
    "2024-01-10T09:00Z", "ava", "peripatetic-music", "music_tuition", ["identity", "contact"], consent_id="c-music"
)


def test_allowed_flow_has_no_reasons_and_names_what_it_relied_on(judge: Judge) -> None:
    decision = judge(music(), AVA, MUSIC_CONSENT)
    assert decision.verdict == "allowed"
    assert decision.reasons == []
    assert "c-music" in decision.facts_relied_on
    assert "std-peripatetic-music-dsa" in decision.facts_relied_on
    assert decision.disclosures[0].subject_id == "ava"
    assert decision.disclosures[0].verdict == "allowed"


def test_unknown_recipient(judge: Judge) -> None:
    decision = judge(flow(WHEN, "acme-data-broker", "education", ["identity"], subjects=["ava"]), AVA)
    assert decision.reasons == ["UNKNOWN_RECIPIENT"]


def test_sale_even_with_consent(judge: Judge) -> None:
    decision = judge(music(consideration="commission"), AVA, MUSIC_CONSENT)
    assert decision.reasons == ["SALE_OF_DATA"]


def test_sale_to_an_unregistered_buyer_reports_both(judge: Judge) -> None:
    decision = judge(flow(WHEN, "list-broker", "marketing", ["parent_contact"], consideration="cash"), AVA)
    assert decision.reasons == ["UNKNOWN_RECIPIENT", "SALE_OF_DATA"]


def test_photographer_selling_prints_to_parents_is_not_a_sale_by_the_trust(judge: Judge) -> None:
    decision = judge(
        flow(
            WHEN,
            "school-photographer",
            "school_photos",
            ["identity.name", "identity.class", "photographs"],
            subjects=["ava"],
        ),
        AVA,
    )
    assert decision.reasons == []


def marketing(**kw: Any) -> DataFlow:
    return flow(WHEN, "trust-marketing", "marketing", ["parent_contact"], parents=["mum-1"], **kw)


OPT_IN = consent(
    "2024-02-01T00:00Z",
    "mum-1",
    "trust-marketing",
    "marketing",
    ["parent_contact"],
    by="mum-1",
    relationship="self",
    subject_kind="parent",
    consent_id="optin-1",
)


def test_marketing_without_opt_in_leads_with_its_own_code_only(judge: Judge) -> None:
    assert judge(marketing()).reasons == ["MARKETING_WITHOUT_CONSENT"]


def test_marketing_with_opt_in_is_allowed(judge: Judge) -> None:
    assert judge(marketing(), OPT_IN).reasons == []


def test_marketing_after_opt_out_adds_consent_withdrawn_second(judge: Judge) -> None:
    opt_out = withdrawal(
        "2024-05-01T00:00Z", "mum-1", consent_id="optin-1", by="mum-1", relationship="self", subject_kind="parent"
    )
    assert judge(marketing(), OPT_IN, opt_out).reasons == ["MARKETING_WITHOUT_CONSENT", "CONSENT_WITHDRAWN"]


def test_marketing_opt_out_by_objection_takes_effect_immediately(judge: Judge) -> None:
    opt_out = objection(
        WHEN,
        "mum-1",
        "trust-marketing",
        "marketing",
        grounds="direct_marketing",
        by="mum-1",
        relationship="self",
        subject_kind="parent",
    )
    assert judge(marketing(), OPT_IN, opt_out).reasons == ["MARKETING_WITHOUT_CONSENT", "CONSENT_WITHDRAWN"]


def test_marketing_opt_in_given_by_someone_else_is_not_authorised(judge: Judge) -> None:
    by_other = consent(
        "2024-02-01T00:00Z",
        "mum-1",
        "trust-marketing",
        "marketing",
        ["parent_contact"],
        by="pta-chair",
        relationship="other",
        subject_kind="parent",
    )
    assert judge(marketing(), by_other).reasons == ["MARKETING_WITHOUT_CONSENT", "CONSENT_GIVER_NOT_AUTHORISED"]


def test_operational_messages_are_not_marketing(judge: Judge) -> None:
    decision = judge(flow(WHEN, "parentpay", "school_updates", ["parent_contact"], parents=["mum-1"]))
    assert decision.reasons == []


def test_handing_the_marketing_list_to_a_third_party_is_never_allowed(judge: Judge) -> None:
    decision = judge(flow(WHEN, "after-school-club", "marketing", ["parent_contact"], parents=["mum-1"]), OPT_IN)
    assert decision.reasons == ["NO_LAWFUL_BASIS"]


PHOTO_CATS = ["photographs", "identity.name"]


def photo_permission(pupil: str, **kw: Any) -> Fact:
    return consent(
        "2024-01-01T00:00Z",
        pupil,
        None,
        "promotional_photo",
        PHOTO_CATS,
        recipient_class="publication",
        by=f"parent-of-{pupil}",
        **kw,
    )


def test_group_photo_with_one_pupil_lacking_permission_names_that_pupil(judge: Judge) -> None:
    pupils = ["ava", "ben", "cal"]
    facts = [AVA, BEN, CAL, photo_permission("ava"), photo_permission("cal")]
    decision = judge(flow(WHEN, "trust-website", "promotional_photo", PHOTO_CATS, subjects=pupils), *facts)
    assert decision.verdict == "violation"
    assert decision.reasons == ["PHOTO_WITHOUT_PERMISSION"]
    by_subject = {d.subject_id: d for d in decision.disclosures}
    assert by_subject["ben"].reasons == ["PHOTO_WITHOUT_PERMISSION"]
    assert by_subject["ava"].verdict == "allowed"
    assert by_subject["cal"].verdict == "allowed"
    assert "ben" in decision.explanation


def test_learning_journey_photos_in_sims_need_no_permission(judge: Judge) -> None:
    decision = judge(flow(WHEN, "sims", "learning_journey", ["photographs", "identity.name"], subjects=["ava"]), AVA)
    assert decision.reasons == []


def test_promotional_photo_after_withdrawal(judge: Judge) -> None:
    permission = photo_permission("ava", consent_id="photo-ava")
    withdrawn = withdrawal("2024-05-01T00:00Z", "ava", consent_id="photo-ava", by="parent-of-ava")
    decision = judge(
        flow(WHEN, "school-newsletter", "promotional_photo", PHOTO_CATS, subjects=["ava"]), AVA, permission, withdrawn
    )
    assert decision.reasons == ["PHOTO_WITHOUT_PERMISSION", "CONSENT_WITHDRAWN"]


POLICE_CATS = ["identity", "attendance"]


def police(request: dict[str, object] | None, **kw: Any) -> DataFlow:
    return flow(WHEN, "police:west-yorkshire", "law_enforcement", POLICE_CATS, subjects=["ben"], request=request, **kw)


def test_police_request_without_a_written_request(judge: Judge) -> None:
    decision = judge(police({"requester": "pc-101", "authority": "verbal"}), BEN)
    assert decision.reasons == ["LAW_ENFORCEMENT_REQUEST_WITHOUT_BASIS"]


def test_police_request_with_no_request_at_all(judge: Judge) -> None:
    assert judge(police(None), BEN).reasons == ["LAW_ENFORCEMENT_REQUEST_WITHOUT_BASIS"]


def test_written_sch2_request_signed_by_an_inspector_is_a_basis(judge: Judge) -> None:
    request = {
        "requester": "insp-7",
        "authority": "written_sch2_para2",
        "reference": "WY-2024-118",
        "signed_by_inspector_or_above": True,
        "names_person": True,
        "names_incident": True,
        "named_subject_ids": ["ben"],
    }
    decision = judge(police(request), BEN)
    assert decision.reasons == []
    assert "WY-2024-118" in decision.facts_relied_on


def test_written_request_signed_below_inspector_is_not_enough(judge: Judge) -> None:
    request = {
        "requester": "sgt-3",
        "authority": "written_sch2_para2",
        "reference": "WY-1",
        "signed_by_inspector_or_above": False,
        "names_person": True,
        "names_incident": True,
    }
    assert judge(police(request), BEN).reasons == ["LAW_ENFORCEMENT_REQUEST_WITHOUT_BASIS"]


def test_police_emergency_needs_no_form(judge: Judge) -> None:
    request = {"requester": "pc-101", "authority": "none", "emergency": True}
    assert judge(police(request), BEN).reasons == []


def test_police_trawl_of_a_year_group_is_not_minimal(judge: Judge) -> None:
    request = {
        "requester": "insp-7",
        "authority": "written_sch2_para2",
        "reference": "WY-9",
        "signed_by_inspector_or_above": True,
        "names_person": True,
        "names_incident": True,
        "named_subject_ids": ["ben"],
    }
    trawl = flow(
        WHEN,
        "police:west-yorkshire",
        "law_enforcement",
        POLICE_CATS,
        subjects=["ben", "cal"],
        request=request,
        channel="encrypted_email",
    )
    decision = judge(trawl, BEN, CAL)
    assert decision.reasons == ["CATEGORY_NOT_PERMITTED_FOR_RECIPIENT"]
    assert {d.subject_id: d.verdict for d in decision.disclosures} == {"ben": "allowed", "cal": "violation"}


def test_court_order_with_the_order_reference_is_a_legal_obligation(judge: Judge) -> None:
    order = flow(
        WHEN,
        "court:leeds-family",
        "court_order_compliance",
        ["identity", "attendance"],
        subjects=["ben"],
        request={"requester": "court:leeds-family", "authority": "court_order", "reference": "FD24P001"},
    )
    assert judge(order, BEN).reasons == []


def family(purpose: str = "parent_report", categories: list[str] | None = None, **request: Any) -> DataFlow:
    return flow(
        WHEN,
        "family",
        purpose,
        categories or ["assessment", "attendance"],
        subjects=["cal"],
        request={"requester": "dad-1", **request},
    )


def test_court_order_restricting_a_parent(judge: Judge) -> None:
    order = court_order("2024-05-01T09:00Z", "cal", persons=["dad-1"], order_id="PSO-1")
    decision = judge(family(relationship="father", has_parental_responsibility=True), CAL, order)
    assert decision.reasons == ["COURT_ORDER_RESTRICTION"]
    assert "PSO-1" in decision.facts_relied_on


def test_court_order_limited_to_address_does_not_block_reports(judge: Judge) -> None:
    order = court_order("2024-05-01T09:00Z", "cal", persons=["dad-1"], categories=["identity.address"])
    assert judge(family(relationship="father", has_parental_responsibility=True), CAL, order).reasons == []
    address = family(categories=["identity.address"], relationship="father", has_parental_responsibility=True)
    assert judge(address, CAL, order).reasons == ["COURT_ORDER_RESTRICTION"]


def test_every_education_law_parent_gets_reports(judge: Judge) -> None:
    # A father without PR is still a natural parent (Education Act 1996 s576).
    assert judge(family(relationship="father"), CAL).reasons == []
    # A step-parent with care of the child is a parent in education law.
    assert judge(family(relationship="step_parent", has_care=True), CAL).reasons == []


def test_non_parent_without_pr_or_care_gets_nothing(judge: Judge) -> None:
    assert judge(family(relationship="grandparent"), CAL).reasons == ["REQUESTER_NOT_ENTITLED"]


def test_recorded_standing_overrides_the_request_claim(judge: Judge) -> None:
    record = standing("2020-01-01T00:00Z", "cal", "dad-1", "other", pr=False)
    assert judge(family(relationship="father"), CAL, record).reasons == ["REQUESTER_NOT_ENTITLED"]


def test_non_pr_parent_cannot_make_a_sar(judge: Judge) -> None:
    sar = family("subject_access", relationship="father", has_parental_responsibility=False)
    assert judge(sar, CAL).reasons == ["REQUESTER_NOT_ENTITLED"]


def test_pr_parent_sar_for_a_child_who_is_not_competent(judge: Judge) -> None:
    sar = family("subject_access", relationship="father", has_parental_responsibility=True)
    assert judge(sar, CAL).reasons == []


def test_competent_child_objects_to_parent_sar(judge: Judge) -> None:
    from streams.builders import competence

    sar = family(
        "subject_access",
        relationship="father",
        has_parental_responsibility=True,
        authorised_by_pupil=False,
        pupil_objects=True,
    )
    assert judge(sar, CAL, competence("2024-05-01T00:00Z", "cal")).reasons == ["REQUESTER_NOT_ENTITLED"]
    best = family(
        "subject_access",
        relationship="father",
        has_parental_responsibility=True,
        pupil_objects=True,
        best_interests=True,
    )
    assert judge(best, CAL, competence("2024-05-01T00:00Z", "cal")).reasons == []


def test_adult_pupil_reports_need_their_authorisation(judge: Judge) -> None:
    adult = flow(
        "2026-10-01T10:00Z",
        "family",
        "parent_report",
        ["assessment"],
        subjects=["ben"],
        request={"requester": "mum-9", "relationship": "mother", "has_parental_responsibility": True},
    )
    assert judge(adult, BEN).reasons == ["REQUESTER_NOT_ENTITLED"]
    authorised = flow(
        "2026-10-01T10:00Z",
        "family",
        "parent_report",
        ["assessment"],
        subjects=["ben"],
        request={"requester": "mum-9", "relationship": "mother", "authorised_by_pupil": True},
    )
    assert judge(authorised, BEN).reasons == []


def test_child_abuse_data_withheld_from_a_parent(judge: Judge) -> None:
    sar = flow(
        WHEN,
        "family",
        "subject_access",
        ["safeguarding"],
        subjects=["cal"],
        channel="encrypted_email",
        contains_child_abuse_data=True,
        request={"requester": "dad-1", "relationship": "father", "has_parental_responsibility": True},
    )
    assert judge(sar, CAL).reasons == ["HARMFUL_DISCLOSURE"]


def test_serious_harm_test(judge: Judge) -> None:
    sar = family("subject_access", relationship="mother", has_parental_responsibility=True)
    harmful = sar.model_copy(update={"serious_harm": True})
    assert judge(harmful, CAL).reasons == ["HARMFUL_DISCLOSURE"]


BIO = ["identity.name", "biometric"]


def biometric_flow() -> DataFlow:
    return flow(WHEN, "biometric-catering", "biometric_catering", BIO, subjects=["ava"], channel="encrypted_api")


BIO_CONSENT = consent(
    "2024-01-01T00:00Z", "ava", "biometric-catering", "biometric_catering", BIO, explicit=True, written=True
)


def test_biometrics_with_written_parent_consent(judge: Judge) -> None:
    assert judge(biometric_flow(), AVA, BIO_CONSENT).reasons == []


def test_child_objection_to_biometrics_overrides_parent_consent(judge: Judge) -> None:
    child = objection(
        "2024-03-01T00:00Z",
        "ava",
        "biometric-catering",
        "biometric_catering",
        grounds="biometrics",
        by="ava",
        relationship="self",
        pr=False,
    )
    assert judge(biometric_flow(), AVA, BIO_CONSENT, child).reasons == ["OBJECTION_NOT_HONOURED"]


def test_other_parent_objecting_to_biometrics(judge: Judge) -> None:
    dad = refusal(
        "2024-03-01T00:00Z", "ava", "biometric-catering", "biometric_catering", by="dad-2", relationship="father"
    )
    assert judge(biometric_flow(), AVA, BIO_CONSENT, dad).reasons == ["OBJECTION_NOT_HONOURED"]


def test_biometrics_without_written_consent(judge: Judge) -> None:
    verbal = consent("2024-01-01T00:00Z", "ava", "biometric-catering", "biometric_catering", BIO, explicit=True)
    assert judge(biometric_flow(), AVA, verbal).reasons == ["SPECIAL_CATEGORY_WITHOUT_CONDITION"]


def test_consent_withdrawn_before_the_flow(judge: Judge) -> None:
    out = withdrawal("2024-03-01T00:00Z", "ava", consent_id="c-music")
    assert judge(music(), AVA, MUSIC_CONSENT, out).reasons == ["CONSENT_WITHDRAWN"]


def test_withdrawal_by_scope_ends_matching_consents(judge: Judge) -> None:
    out = withdrawal("2024-03-01T00:00Z", "ava", recipient="peripatetic-music")
    assert judge(music(), AVA, MUSIC_CONSENT, out).reasons == ["CONSENT_WITHDRAWN"]


def test_parent_without_pr_cannot_consent(judge: Judge) -> None:
    step = consent(
        "2024-01-10T09:00Z",
        "ava",
        "peripatetic-music",
        "music_tuition",
        ["identity"],
        by="step-1",
        relationship="step_parent",
        pr=False,
    )
    assert judge(music(), AVA, step).reasons == ["CONSENT_GIVER_NOT_AUTHORISED"]


def test_foster_carer_needs_delegated_authority(judge: Judge) -> None:
    def carer(delegated: bool) -> Fact:
        return consent(
            "2024-01-10T09:00Z",
            "ava",
            "peripatetic-music",
            "music_tuition",
            ["identity"],
            by="fc-1",
            relationship="foster_carer",
            pr=False,
            delegated=delegated,
        )

    assert judge(music(), AVA, carer(False)).reasons == ["CONSENT_GIVER_NOT_AUTHORISED"]
    assert judge(music(), AVA, carer(True)).reasons == []


def test_local_authority_consents_under_a_care_order(judge: Judge) -> None:
    from streams.builders import care_order

    la = consent(
        "2024-01-10T09:00Z",
        "ava",
        "peripatetic-music",
        "music_tuition",
        ["identity"],
        by="la-leeds",
        relationship="local_authority",
        pr=False,
    )
    assert judge(music(), AVA, la).reasons == ["CONSENT_GIVER_NOT_AUTHORISED"]
    assert judge(music(), AVA, la, care_order("2023-01-01T00:00Z", "ava")).reasons == []


def test_no_consent_at_all(judge: Judge) -> None:
    assert judge(music(), AVA).reasons == ["NO_CONSENT"]


def test_disclosure_beyond_the_consent_scope_is_no_consent(judge: Judge) -> None:
    assert judge(music(categories=["identity", "parent_contact"]), AVA, MUSIC_CONSENT).reasons == ["NO_CONSENT"]


def test_consent_for_another_recipient_does_not_cover(judge: Judge) -> None:
    club = consent("2024-01-10T09:00Z", "ava", "after-school-club", "music_tuition", ["identity"])
    assert judge(music(), AVA, club).reasons == ["NO_CONSENT"]


def test_consent_for_a_recipient_class_covers_its_members(judge: Judge) -> None:
    partners = consent("2024-01-10T09:00Z", "ava", None, "music_tuition", ["identity"], recipient_class="partner")
    assert judge(music(), AVA, partners).reasons == []


def test_dfe_census_must_not_rely_on_consent(judge: Judge) -> None:
    census = flow(
        WHEN,
        "dfe",
        "census_return",
        ["identity", "attendance"],
        subjects=["ava"],
        lawful_basis="consent",
        channel="dfe_collect",
    )
    assert judge(census, AVA).reasons == ["NO_LAWFUL_BASIS"]


def test_dfe_census_goes_ahead_despite_a_refusal(judge: Judge) -> None:
    census = flow(
        WHEN,
        "dfe",
        "census_return",
        ["identity", "ethnicity"],
        subjects=["ava"],
        lawful_basis="legal_obligation",
        channel="dfe_collect",
    )
    no = refusal("2024-01-01T00:00Z", "ava", "dfe", None)
    assert judge(census, AVA, no).reasons == []


def test_unknown_purpose_or_basis_fails_closed(judge: Judge) -> None:
    assert judge(flow(WHEN, "sims", "astrology", ["identity"], subjects=["ava"]), AVA).reasons == ["NO_LAWFUL_BASIS"]
    bad_basis = flow(WHEN, "sims", "mis_sync", ["identity"], subjects=["ava"], lawful_basis="because")
    assert judge(bad_basis, AVA).reasons == ["NO_LAWFUL_BASIS"]


def test_category_outside_the_permitted_set(judge: Judge) -> None:
    milk = flow(WHEN, "cool-milk", "free_milk", ["identity.name", "behaviour"], subjects=["ava"])
    assert judge(milk, AVA).reasons == ["CATEGORY_NOT_PERMITTED_FOR_RECIPIENT"]


def test_art9_outside_the_permitted_set_reports_minimisation_first(judge: Judge) -> None:
    milk = flow(WHEN, "cool-milk", "free_milk", ["identity.name", "health"], subjects=["ava"], channel="encrypted_api")
    assert judge(milk, AVA).reasons == ["CATEGORY_NOT_PERMITTED_FOR_RECIPIENT", "SPECIAL_CATEGORY_WITHOUT_CONDITION"]


def test_unknown_category_fails_closed(judge: Judge) -> None:
    odd = flow(WHEN, "sims", "mis_sync", ["identity", "horoscope"], subjects=["ava"])
    assert judge(odd, AVA).reasons == ["CATEGORY_NOT_PERMITTED_FOR_RECIPIENT"]


def test_ancestor_matching_permits_sub_categories(judge: Judge) -> None:
    meals = flow(
        WHEN,
        "meal-provider",
        "school_meals",
        ["identity.name", "health.allergy"],
        subjects=["ava"],
        channel="encrypted_api",
    )
    assert judge(meals, AVA).reasons == []


def test_art9_that_needs_explicit_consent_gets_special_category_only(judge: Judge) -> None:
    assert judge(music(categories=["health"], channel="encrypted_email"), AVA).reasons == [
        "SPECIAL_CATEGORY_WITHOUT_CONDITION"
    ]
    not_explicit = consent("2024-01-10T09:00Z", "ava", "peripatetic-music", "music_tuition", ["identity", "health"])
    decision = judge(music(categories=["identity", "health"], channel="encrypted_email"), AVA, not_explicit)
    assert decision.reasons == ["SPECIAL_CATEGORY_WITHOUT_CONDITION"]
    explicit = consent(
        "2024-01-10T09:00Z", "ava", "peripatetic-music", "music_tuition", ["identity", "health"], explicit=True
    )
    assert judge(music(categories=["identity", "health"], channel="encrypted_email"), AVA, explicit).reasons == []


def test_non_urgent_health_referral_needs_explicit_consent(judge: Judge) -> None:
    referral = flow(
        WHEN, "camhs", "health_referral", ["identity", "health.mental"], subjects=["cal"], channel="encrypted_email"
    )
    assert judge(referral, CAL).reasons == ["SPECIAL_CATEGORY_WITHOUT_CONDITION"]
    ok = consent("2024-05-01T00:00Z", "cal", "camhs", "health_referral", ["health"], explicit=True)
    assert judge(referral, CAL, ok).reasons == []


def test_stated_condition_that_does_not_fit(judge: Judge) -> None:
    share = flow(
        WHEN,
        "local-authority",
        "safeguarding",
        ["criminal.caution"],
        subjects=["ben"],
        condition="explicit_consent",
        channel="encrypted_email",
    )
    assert judge(share, BEN).reasons == ["CRIMINAL_DATA_WITHOUT_CONDITION"]


def test_criminal_data_outside_the_permitted_set(judge: Judge) -> None:
    share = flow(WHEN, "ofsted", "inspection", ["criminal.yot"], subjects=["ben"], channel="encrypted_portal")
    assert judge(share, BEN).reasons == ["CATEGORY_NOT_PERMITTED_FOR_RECIPIENT", "CRIMINAL_DATA_WITHOUT_CONDITION"]


def test_safeguarding_share_without_consent(judge: Judge) -> None:
    share = flow(
        WHEN,
        "children-social-care",
        "safeguarding",
        ["identity", "safeguarding", "criminal.allegation"],
        subjects=["ben"],
        channel="encrypted_email",
    )
    refused = refusal("2024-01-01T00:00Z", "ben", None, None, by="mum-9")
    assert judge(share, BEN, refused).reasons == []


def test_processor_without_a_contract(judge: Judge) -> None:
    sync = flow(WHEN, "sims", "mis_sync", ["identity"], subjects=["ava"])
    assert judge(sync, AVA, agreements=False).reasons == ["NO_SHARING_AGREEMENT"]


def test_processor_with_a_lapsed_contract(judge: Judge) -> None:
    lapsed = agreement("2019-01-01T00:00Z", "sims", valid_until="2024-05-31T23:59:59Z", agreement_id="sims-2019")
    sync = flow(WHEN, "sims", "mis_sync", ["identity"], subjects=["ava"])
    assert judge(sync, AVA, lapsed, agreements=False).reasons == ["AGREEMENT_EXPIRED"]


def test_terminated_contract_is_not_in_force(judge: Judge) -> None:
    from streams.builders import terminated

    contract = agreement("2019-01-01T00:00Z", "sims", valid_until="2030-01-01T00:00Z", agreement_id="sims-a")
    stop = terminated("2024-06-01T00:00Z", "sims", "sims-a")
    sync = flow(WHEN, "sims", "mis_sync", ["identity"], subjects=["ava"])
    assert judge(sync, AVA, contract, stop, agreements=False).reasons == ["AGREEMENT_EXPIRED"]


def test_partner_without_a_dsa(judge: Judge) -> None:
    assert judge(music(), AVA, MUSIC_CONSENT, agreements=False).reasons == ["NO_SHARING_AGREEMENT"]


def test_statutory_bodies_need_no_agreement(judge: Judge) -> None:
    census = flow(WHEN, "dfe", "census_return", ["identity"], subjects=["ava"], channel="dfe_collect")
    assert judge(census, AVA, agreements=False).reasons == []


def edtech(recipient: str, **kw: Any) -> DataFlow:
    return flow(WHEN, recipient, "edtech", ["identity.name", "edtech_account"], subjects=["ava"], **kw)


def test_us_hosted_app_without_safeguard(judge: Judge) -> None:
    assert judge(edtech("quizcloud"), AVA).reasons == ["INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD"]


def test_us_hosted_app_with_dpf_uk_extension(judge: Judge) -> None:
    assert judge(edtech("mathsquest"), AVA).reasons == []


def test_us_hosted_app_with_an_idta(judge: Judge) -> None:
    assert judge(edtech("quizcloud", transfer_safeguard="idta"), AVA).reasons == []


def test_connector_cannot_claim_dpf_for_an_uncertified_recipient(judge: Judge) -> None:
    assert judge(edtech("quizcloud", transfer_safeguard="dpf_uk_extension"), AVA).reasons == [
        "INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD"
    ]


def test_eea_is_adequate_but_elsewhere_is_not(judge: Judge) -> None:
    assert judge(edtech("edtech-software", destination_country="IE"), AVA).reasons == []
    assert judge(edtech("edtech-software", destination_country="IN"), AVA).reasons == [
        "INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD"
    ]


def test_sending_to_the_data_subject_abroad_is_not_a_restricted_transfer(judge: Judge) -> None:
    sar = flow(
        WHEN,
        "family",
        "subject_access",
        ["assessment"],
        subjects=["ben"],
        destination_country="AU",
        to_data_subject=True,
        request={"requester": "ben", "relationship": "self"},
    )
    assert judge(sar, BEN).reasons == []


def test_cctv_kept_beyond_31_days(judge: Judge) -> None:
    footage = flow(
        WHEN, "insurers", "professional_advice", ["cctv"], subjects=["ben"], data_recorded_at="2024-04-01T10:00:00Z"
    )
    assert judge(footage, BEN).reasons == ["RETENTION_EXCEEDED"]
    held = footage.model_copy(update={"legal_hold": True})
    assert judge(held, BEN).reasons == []
    fresh = footage.model_copy(update={"data_recorded_at": footage.occurred_at.replace(day=1)})
    assert judge(fresh, BEN).reasons == []


def test_supplier_sync_after_a_leaver_plus_30_days(judge: Judge) -> None:
    gone = left("2024-04-01T00:00Z", "ava", "hawthorn-primary")
    assert judge(flow(WHEN, "sims", "mis_sync", ["identity"], subjects=["ava"]), AVA, gone).reasons == [
        "RETENTION_EXCEEDED"
    ]
    recent = left("2024-05-20T00:00Z", "ava", "hawthorn-primary")
    assert judge(flow(WHEN, "sims", "mis_sync", ["identity"], subjects=["ava"]), AVA, recent).reasons == []


def test_ctf_to_the_next_school_after_leaving_is_allowed(judge: Judge) -> None:
    gone = left("2024-04-01T00:00Z", "ava", "hawthorn-primary")
    ctf = flow(
        WHEN, "school:urn:100234", "ctf_transfer", ["identity", "attendance", "sen"], subjects=["ava"], channel="s2s"
    )
    assert judge(ctf, AVA, gone).reasons == []


def test_leaver_data_to_a_partner_is_retention_exceeded(judge: Judge) -> None:
    gone = left("2024-04-01T00:00Z", "ava", "hawthorn-primary")
    assert judge(music(), AVA, MUSIC_CONSENT, gone).reasons == ["RETENTION_EXCEEDED"]


def test_pupil_file_beyond_dob_plus_25_years(judge: Judge) -> None:
    old = born("old-1", "1995-01-01")
    share = flow(WHEN, "sims", "mis_sync", ["identity"], subjects=["old-1"])
    assert judge(share, old).reasons == ["RETENTION_EXCEEDED"]


def test_art9_by_plain_email_is_insecure(judge: Judge) -> None:
    nurse = flow(
        WHEN, "school-nurse", "public_health_programme", ["identity", "health"], subjects=["ava"], channel="email"
    )
    assert judge(nurse, AVA).reasons == ["INSECURE_CHANNEL"]
    assert judge(nurse.model_copy(update={"channel": "encrypted_email"}), AVA).reasons == []


def test_bulk_ordinary_data_by_an_insecure_channel(judge: Judge) -> None:
    bulk = flow(WHEN, "sims", "mis_sync", ["identity"], subjects=["ava"], record_count=1000, channel="usb_stick")
    assert judge(bulk, AVA).reasons == ["INSECURE_CHANNEL"]


def test_cp_file_must_go_separately_to_the_dsl(judge: Judge) -> None:
    together = flow(
        WHEN,
        "school:urn:100234",
        "ctf_transfer",
        ["identity", "attendance", "safeguarding.cp_file"],
        subjects=["ava"],
        channel="s2s",
    )
    assert "INSECURE_CHANNEL" in judge(together, AVA).reasons
    separate = flow(
        WHEN,
        "school:urn:100234",
        "cp_file_transfer",
        ["identity", "safeguarding.cp_file"],
        subjects=["ava"],
        channel="cpoms_transfer",
        addressed_to_dsl=True,
    )
    assert judge(separate, AVA).reasons == []


def test_vital_interests_emergency_overrides_a_refusal(judge: Judge) -> None:
    refused = refusal("2024-01-01T00:00Z", "ava", None, None, ["health"])
    emergency = flow(
        WHEN,
        "ambulance-service",
        "emergency_care",
        ["identity", "health.allergy"],
        subjects=["ava"],
        emergency=True,
        channel="in_person_handover",
    )
    assert judge(emergency, AVA, refused).reasons == []


def test_vital_interests_is_never_for_planning_ahead(judge: Judge) -> None:
    just_in_case = flow(
        WHEN,
        "hospital:leeds-general",
        "emergency_care",
        ["identity", "health"],
        subjects=["ava"],
        emergency=False,
        channel="encrypted_email",
    )
    assert judge(just_in_case, AVA).reasons == ["NO_LAWFUL_BASIS"]


@pytest.mark.parametrize(
    ("recipient", "purpose"),
    [
        ("local-authority", "exclusion_notification"),
        ("ofsted", "inspection"),
        ("hawthorn-primary", "internal_transfer"),
    ],
)
def test_statutory_and_internal_flows_ignore_consent_state(judge: Judge, recipient: str, purpose: str) -> None:
    share = flow(WHEN, recipient, purpose, ["identity", "attendance"], subjects=["ben"])
    withdrawn = withdrawal("2024-01-01T00:00Z", "ben", recipient=recipient, by="mum-9")
    assert judge(share, BEN, withdrawn).reasons == []


def test_no_switching_basis_after_consent_is_withdrawn(judge: Judge) -> None:
    out = withdrawal("2024-03-01T00:00Z", "ava", consent_id="c-music")
    switched = music(lawful_basis="legitimate_interests")
    assert judge(switched, AVA, MUSIC_CONSENT, out).reasons == ["CONSENT_WITHDRAWN", "NO_LAWFUL_BASIS"]


def test_explanation_is_a_readable_paragraph(judge: Judge) -> None:
    allowed = judge(music(), AVA, MUSIC_CONSENT)
    assert "Peripatetic music teachers" in allowed.explanation
    assert "Allowed under consent" in allowed.explanation
    assert "c-music" in allowed.explanation
    refused = judge(music(), AVA)
    assert "Violation: no valid consent covered" in refused.explanation


def test_category_outside_a_partners_set_is_minimisation_not_consent(judge: Judge) -> None:
    extra = music(categories=["identity", "behaviour"])
    assert judge(extra, AVA, MUSIC_CONSENT).reasons == ["CATEGORY_NOT_PERMITTED_FOR_RECIPIENT"]
