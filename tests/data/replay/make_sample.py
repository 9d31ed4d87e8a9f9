"""Regenerates sample.jsonl: a school year (2024-25) at Hawthorn Primary Academy and Rose Valley Academy.

Run `.venv/bin/python tests/data/replay/make_sample.py` after changing the story; the replay test pins what
the sample must produce. Every reason code of RULES.md §1 appears at least once, next to flows that are
allowed, a re-delivered flow, a withdrawal that arrives late, and three lines that are not valid events.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas.events import EventEnvelope
from streams import builders as b

OUT = Path(__file__).with_name("sample.jsonl")
LONG = "2030-12-31T23:59:59Z"
MUSIC = ["identity", "contact"]
PHOTO = ["photographs", "identity.name"]


def story() -> list[EventEnvelope | str]:
    """The events in arrival order (strings are raw lines, some deliberately invalid)."""
    b.reset_sequences()
    e: list[EventEnvelope | str] = [
        b.notice("2019-06-01T00:00Z", "1.0", event_id="notice-1.0"),
        # Contracts and agreements held by the Trust.
        *[
            b.agreement("2019-09-01T00:00Z", r, k, valid_until=LONG, agreement_id=f"agr-{r}", event_id=f"agr-{r}")
            for r, k in [
                ("sims", "art28_contract"),
                ("cpoms", "art28_contract"),
                ("parentpay", "art28_contract"),
                ("school-photographer", "art28_contract"),
                ("cool-milk", "art28_contract"),
                ("meal-provider", "art28_contract"),
                ("quizcloud", "art28_contract"),
                ("mathsquest", "art28_contract"),
                ("biometric-catering", "art28_contract"),
                ("peripatetic-music", "dsa"),
                ("after-school-club", "dsa"),
                ("homework-hub", "dsa"),
                ("school-nurse", "dsa"),
                ("camhs", "dsa"),
                ("insurers", "engagement_terms"),
            ]
        ],
        b.agreement(
            "2021-09-01T00:00Z",
            "ict-support",
            valid_until="2024-08-31T23:59:59Z",
            agreement_id="agr-ict-2021",
            event_id="agr-ict-2021",
        ),
        # Pupils.
        b.born("ava", "2016-03-10", event_id="dob-ava"),
        b.born("dan", "2019-11-02", event_id="dob-dan"),
        b.born("eve", "2013-07-01", event_id="dob-eve"),
        b.born("ben", "2006-10-20", event_id="dob-ben"),
        b.born("cal", "2011-11-20", event_id="dob-cal"),
        b.born("fay", "2010-01-15", event_id="dob-fay"),
        *[b.enrolled("2024-09-04T08:00Z", p, "hawthorn-primary", event_id=f"enrol-{p}") for p in ("ava", "dan", "eve")],
        *[b.enrolled("2024-09-04T08:00Z", p, "rose-valley", event_id=f"enrol-{p}") for p in ("ben", "cal", "fay")],
        b.standing("2024-09-04T08:00Z", "cal", "dad-cal", "father", pr=False, event_id="pr-dad-cal"),
        b.standing("2024-09-04T08:00Z", "fay", "step-fay", "step_parent", pr=False, event_id="pr-step-fay"),
        b.standing("2024-09-04T08:00Z", "fay", "gran-fay", "grandparent", pr=False, event_id="pr-gran-fay"),
        # Consents collected at the start of term.
        b.consent(
            "2024-09-05T18:00Z",
            "ava",
            "peripatetic-music",
            "music_tuition",
            MUSIC,
            by="mum-ava",
            consent_id="c-ava-music",
            event_id="c-ava-music",
        ),
        b.consent(
            "2024-09-05T18:00Z",
            "ava",
            None,
            "promotional_photo",
            PHOTO,
            recipient_class="publication",
            by="mum-ava",
            consent_id="c-ava-photo",
            event_id="c-ava-photo",
        ),
        b.consent(
            "2024-09-06T18:00Z",
            "cal",
            None,
            "promotional_photo",
            PHOTO,
            recipient_class="publication",
            by="mum-cal",
            consent_id="c-cal-photo",
            event_id="c-cal-photo",
        ),
        b.consent(
            "2024-09-06T18:00Z",
            "fay",
            "after-school-club",
            "after_school_club",
            MUSIC,
            by="step-fay",
            relationship="step_parent",
            pr=False,
            consent_id="c-fay-club",
            event_id="c-fay-club",
        ),
        b.consent(
            "2024-01-20T18:00Z",
            "ben",
            "after-school-club",
            "after_school_club",
            MUSIC,
            by="mum-ben",
            consent_id="c-ben-club",
            event_id="c-ben-club",
        ),
        b.consent(
            "2024-09-06T18:00Z",
            "mum-ava",
            "trust-marketing",
            "marketing",
            ["parent_contact"],
            by="mum-ava",
            relationship="self",
            subject_kind="parent",
            consent_id="c-mum-ava-pta",
            event_id="c-mum-ava-pta",
        ),
        b.consent(
            "2024-09-07T09:00Z",
            "cal",
            "biometric-catering",
            "biometric_catering",
            ["identity.name", "biometric"],
            by="mum-cal",
            explicit=True,
            written=True,
            consent_id="c-cal-bio",
            event_id="c-cal-bio",
        ),
        b.consent(
            "2024-09-07T09:00Z",
            "fay",
            "after-school-club",
            "after_school_club",
            ["identity"],
            by="mum-fay",
            consent_id="c-fay-club-mum",
            event_id="c-fay-club-mum",
        ),
    ]

    def f(when: str, recipient: str, purpose: str, cats: list[str], eid: str, **kw: object) -> EventEnvelope:
        return b.flow(when, recipient, purpose, cats, event_id=eid, **kw)  # type: ignore[arg-type]

    e += [
        # --- September / October: routine, allowed ---------------------------------------------------------
        f(
            "2024-09-10T07:00Z",
            "sims",
            "mis_sync",
            ["identity", "attendance"],
            "f-sims-sync",
            subjects=["ava", "dan", "eve"],
            channel="encrypted_api",
        ),
        f("2024-09-12T15:30Z", "peripatetic-music", "music_tuition", MUSIC, "f-ava-music-sep", subjects=["ava"]),
        f(
            "2024-09-20T09:00Z",
            "cool-milk",
            "free_milk",
            ["identity.name", "identity.dob", "identity.class"],
            "f-dan-milk",
            subjects=["dan"],
            channel="encrypted_portal",
        ),
        f(
            "2024-09-23T11:00Z",
            "meal-provider",
            "school_meals",
            ["identity.name", "health.allergy"],
            "f-dan-allergy",
            subjects=["dan"],
            channel="encrypted_portal",
        ),
        f(
            "2024-10-03T09:00Z",
            "dfe",
            "census_return",
            ["identity", "attendance", "ethnicity", "first_language"],
            "f-census",
            subjects=["ava", "dan", "eve", "ben", "cal", "fay"],
            record_count=6,
            channel="dfe_collect",
            lawful_basis="legal_obligation",
        ),
        f(
            "2024-10-08T13:00Z",
            "children-social-care",
            "safeguarding",
            ["identity", "safeguarding"],
            "f-fay-safeguarding",
            subjects=["fay"],
            channel="encrypted_email",
        ),
        f(
            "2024-10-09T12:10Z",
            "ambulance-service",
            "emergency_care",
            ["identity", "health.allergy"],
            "f-dan-anaphylaxis",
            subjects=["dan"],
            emergency=True,
            channel="in_person_handover",
        ),
        f(
            "2024-10-10T16:00Z",
            "mathsquest",
            "edtech",
            ["identity.name", "edtech_account"],
            "f-mathsquest",
            subjects=["cal"],
            destination_country="US",
        ),
        # --- the violations of the year, one reason code each (at least) -------------------------------------
        f("2024-09-16T10:00Z", "acme-tutoring", "education", ["identity", "contact"], "f-unknown", subjects=["cal"]),
        f(
            "2024-09-18T10:00Z",
            "after-school-club",
            "after_school_club",
            ["identity"],
            "f-sale",
            subjects=["fay"],
            consideration="discount",
        ),
        f(
            "2024-09-25T17:00Z",
            "trust-marketing",
            "marketing",
            ["parent_contact"],
            "f-pta-email",
            parents=["mum-ava", "mum-fay"],
        ),
        f(
            "2024-09-27T12:00Z",
            "trust-website",
            "promotional_photo",
            PHOTO,
            "f-sports-day-photo",
            subjects=["ava", "cal", "fay"],
        ),
        f(
            "2024-10-01T10:00Z",
            "police:west-yorkshire",
            "law_enforcement",
            ["identity", "attendance"],
            "f-police-verbal",
            subjects=["ben"],
            request={"requester": "pc-4471", "authority": "verbal"},
        ),
        f(
            "2024-10-04T15:00Z",
            "family",
            "parent_report",
            ["assessment", "attendance"],
            "f-gran-report",
            subjects=["fay"],
            request={"requester": "gran-fay", "relationship": "grandparent"},
        ),
        f(
            "2024-10-07T15:00Z",
            "family",
            "subject_access",
            ["safeguarding", "assessment"],
            "f-fay-sar",
            subjects=["fay"],
            contains_child_abuse_data=True,
            channel="encrypted_email",
            request={
                "requester": "mum-fay",
                "relationship": "mother",
                "has_parental_responsibility": True,
                "authority": "subject_access",
            },
        ),
        f("2024-10-11T12:00Z", "after-school-club", "after_school_club", MUSIC, "f-fay-club-step", subjects=["fay"]),
        f("2024-10-14T12:00Z", "after-school-club", "after_school_club", ["identity"], "f-dan-club", subjects=["dan"]),
        f(
            "2024-10-15T09:00Z",
            "dfe",
            "census_return",
            ["identity"],
            "f-census-consent",
            subjects=["ava"],
            lawful_basis="consent",
            channel="dfe_collect",
        ),
        f(
            "2024-10-16T09:00Z",
            "cool-milk",
            "free_milk",
            ["identity.name", "behaviour"],
            "f-milk-behaviour",
            subjects=["dan"],
        ),
        f(
            "2024-10-17T15:00Z",
            "peripatetic-music",
            "music_tuition",
            ["identity", "health"],
            "f-music-health",
            subjects=["ava"],
            channel="encrypted_email",
        ),
        f(
            "2024-10-18T10:00Z",
            "ofsted",
            "inspection",
            ["criminal.yot"],
            "f-ofsted-yot",
            subjects=["ben"],
            channel="encrypted_portal",
        ),
        f(
            "2024-10-21T08:00Z",
            "assessment-software",
            "edtech",
            ["identity.name", "assessment"],
            "f-no-contract",
            subjects=["eve"],
        ),
        f("2024-10-22T08:00Z", "ict-support", "mis_sync", ["identity"], "f-ict-lapsed", subjects=["ava"]),
        f(
            "2024-10-23T16:00Z",
            "quizcloud",
            "edtech",
            ["identity.name", "edtech_account"],
            "f-quizcloud",
            subjects=["cal"],
        ),
        f(
            "2024-10-24T10:00Z",
            "insurers",
            "professional_advice",
            ["cctv"],
            "f-old-cctv",
            subjects=["ben"],
            data_recorded_at="2024-08-20T14:00:00Z",
        ),
        f(
            "2024-10-25T10:00Z",
            "local-authority",
            "sen_ehcp",
            ["identity", "sen.ehcp"],
            "f-ehcp-email",
            subjects=["eve"],
            channel="email",
        ),
        # Ben turned 18 on 20 October: his mother's consent no longer supports processing.
        f("2024-10-28T16:00Z", "after-school-club", "after_school_club", MUSIC, "f-ben-club-18", subjects=["ben"]),
        # --- November: Cal turns 13 and signs up to Homework Hub himself; he objects to biometrics -----------
        b.consent(
            "2024-11-20T16:00Z",
            "cal",
            "homework-hub",
            "online_service",
            ["identity.name", "contact"],
            by="cal",
            relationship="self",
            pr=False,
            consent_id="c-cal-iss",
            event_id="c-cal-iss",
        ),
        f(
            "2024-11-20T16:05Z",
            "homework-hub",
            "online_service",
            ["identity.name", "contact"],
            "f-cal-iss",
            subjects=["cal"],
        ),
        b.objection(
            "2024-11-25T08:00Z",
            "cal",
            "biometric-catering",
            "biometric_catering",
            grounds="biometrics",
            by="cal",
            relationship="self",
            pr=False,
            objection_id="o-cal-bio",
            event_id="o-cal-bio",
        ),
        f(
            "2024-11-26T12:00Z",
            "biometric-catering",
            "biometric_catering",
            ["identity.name", "biometric"],
            "f-cal-bio",
            subjects=["cal"],
            channel="encrypted_api",
        ),
        # --- December: a report to Cal's father, then a court order, then another report ------------------
        f(
            "2024-12-02T15:00Z",
            "family",
            "parent_report",
            ["assessment"],
            "f-cal-report-dec",
            subjects=["cal"],
            request={"requester": "dad-cal", "relationship": "father"},
        ),
        b.court_order(
            "2024-12-10T11:00Z",
            "cal",
            persons=["dad-cal"],
            made="2024-12-05T10:00Z",
            order_id="PSO-2024-77",
            event_id="order-cal",
        ),
        f(
            "2025-01-10T15:00Z",
            "family",
            "parent_report",
            ["assessment"],
            "f-cal-report-jan",
            subjects=["cal"],
            request={"requester": "dad-cal", "relationship": "father"},
        ),
        # --- January: a music lesson, a withdrawal that was emailed in before it but keyed in late ------------
        b.flow(
            "2025-01-15T10:00Z",
            "peripatetic-music",
            "music_tuition",
            MUSIC,
            subjects=["ava"],
            event_id="f-ava-music-jan",
            emitted="2025-01-15T10:00:05Z",
        ),
        b.withdrawal(
            "2025-01-15T09:00Z",
            "ava",
            consent_id="c-ava-music",
            by="mum-ava",
            event_id="w-ava-music",
            emitted="2025-01-15T16:00Z",
        ),
        f("2025-01-22T15:30Z", "peripatetic-music", "music_tuition", MUSIC, "f-ava-music-after", subjects=["ava"]),
        # --- July: Eve leaves for secondary school; the CTF and CP file follow her ------------------------
        b.left("2025-07-18T15:00Z", "eve", "hawthorn-primary", event_id="left-eve"),
        f(
            "2025-07-21T09:00Z",
            "school:urn:147001",
            "ctf_transfer",
            ["identity", "attendance", "assessment", "sen"],
            "f-eve-ctf",
            subjects=["eve"],
            channel="s2s",
        ),
        f(
            "2025-07-21T09:05Z",
            "school:urn:147001",
            "cp_file_transfer",
            ["identity", "safeguarding.cp_file"],
            "f-eve-cp-file",
            subjects=["eve"],
            channel="cpoms_transfer",
            addressed_to_dsl=True,
        ),
        f(
            "2025-09-01T07:00Z",
            "sims",
            "mis_sync",
            ["identity"],
            "f-eve-stale-sync",
            subjects=["eve"],
            channel="encrypted_api",
        ),
    ]
    sample = list(e)
    # A re-delivered flow (same event_id, same payload) and three lines that are not valid events.
    redelivered = next(x for x in sample if isinstance(x, EventEnvelope) and x.event_id == "f-census")
    sample.insert(sample.index(redelivered) + 1, redelivered)
    sample.insert(5, '{"event_id": "bad-1", "kind": "flow"}')
    sample.insert(20, "this is not json")
    sample.append(
        '{"event_id":"bad-naive","occurred_at":"2025-01-01T10:00:00","emitted_at":"2025-01-01T10:00:00Z",'
        '"source":{"connector":"mis","sequence":1},"kind":"flow","recipient":"sims","subjects":[{"id":"ava"}],'
        '"categories":["identity"],"purpose":"mis_sync"}'
    )
    return sample


def render() -> str:
    """The sample file's text."""
    return "".join((x if isinstance(x, str) else _compact(x)) + "\n" for x in story())


def _compact(event: EventEnvelope) -> str:
    # Defaults are left out to keep lines short, except `kind`, which the parser needs to pick the model.
    body = event.model_dump(mode="json", exclude_defaults=True)
    return json.dumps(
        {"kind": event.kind, **body},  # type: ignore[attr-defined]
        separators=(",", ":"),
    )


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
