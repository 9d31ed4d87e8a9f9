"""The `ctf` connector's parsing: a Common Transfer File becomes exactly one flow, or is refused with a reason."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from producers.ctf import LONDON, CtfFormat, file_format
from producers.filesource import Draft, FileRejectedError, Record
from schemas.connector_maps import ConnectorMaps
from schemas.events import DataFlow

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data" / "ctf"
INTERNAL = DATA / "good" / "9372001_CTF_9374001_001.xml"
EXTERNAL = DATA / "good" / "9374001_CTF_9374102_001.xml"

CORE = ["identity.dob", "identity.name", "identity.upn"]
BASIC_DETAILS = ["ethnicity", "first_language", "fsm_eligibility", "health", "identity.gender", "service_child"]
FOOTING = {"lawful_basis": "public_task", "condition": "statutory_purposes_para6", "channel": "s2s"}
PLACE = {"destination_country": "GB", "transfer_safeguard": "none"}


@pytest.fixture(scope="module")
def ctf(maps: ConnectorMaps) -> CtfFormat:
    return CtfFormat(maps)


def only_record(ctf: CtfFormat, path: Path) -> Record:
    records = list(ctf.records(path, 0, 0))
    assert len(records) == 1
    return records[0]


def variant(tmp_path: Path, text: str, name: str = "variant.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def internal_text() -> str:
    return INTERNAL.read_text(encoding="utf-8")


def test_the_format_reads_xml_files_of_either_case(maps: ConnectorMaps) -> None:
    assert file_format(maps).patterns == ("*.xml", "*.XML")


def test_an_internal_transfer_is_one_flow_to_the_trust_school_with_every_container_category(ctf: CtfFormat) -> None:
    record = only_record(ctf, INTERNAL)
    assert (record.line, record.position) == (1, INTERNAL.stat().st_size)
    categories = sorted(
        [*CORE, *BASIC_DETAILS, "assessment", "attendance", "identity.address", "parent_contact", "sen"]
    )
    assert record.drafts == (
        Draft(
            DataFlow,
            {
                # 14:32 in July is British Summer Time.
                "occurred_at": datetime(2025, 7, 18, 14, 32, 5, tzinfo=LONDON),
                "recipient": "rose-valley",
                "subjects": [
                    {"kind": "pupil", "id": "B937200119001"},
                    {"kind": "pupil", "id": "Q937200119002"},
                    {"kind": "pupil", "id": "E937200119003"},
                ],
                "categories": categories,
                "purpose": "internal_transfer",
                **FOOTING,
                **PLACE,
                "record_count": 3,
            },
        ),
    )
    assert record.error is None
    assert record.raw == "CTF 9372001 -> 9374001, 3 pupil(s)"


def test_a_transfer_out_of_the_trust_takes_the_external_footing(ctf: CtfFormat) -> None:
    (draft,) = only_record(ctf, EXTERNAL).drafts
    assert draft == Draft(
        DataFlow,
        {
            "occurred_at": datetime(2026, 1, 12, 9, 5, tzinfo=LONDON),
            "recipient": "school:9374102",
            "subjects": [{"kind": "pupil", "id": "K937400113011"}],
            "categories": sorted([*CORE, *BASIC_DETAILS, "attendance", "parent_contact"]),
            "purpose": "ctf_transfer",
            **FOOTING,
            **PLACE,
            "record_count": 1,
        },
    )


def test_the_draft_is_a_valid_flow_keyed_by_its_first_pupil_at_the_utc_instant(ctf: CtfFormat) -> None:
    (draft,) = only_record(ctf, INTERNAL).drafts
    now = datetime(2026, 1, 1, tzinfo=UTC)
    flow = DataFlow.model_validate(
        {"event_id": "ctf:x:1:0", **draft.fields, "emitted_at": now, "source": {"connector": "ctf", "sequence": 0}}
    )
    assert flow.occurred_at == datetime(2025, 7, 18, 13, 32, 5, tzinfo=UTC)
    assert flow.partition_key() == b"B937200119001"


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        ("2026-01-12T09:05:00", datetime(2026, 1, 12, 9, 5, tzinfo=UTC)),
        ("2025-07-18T14:32:05+01:00", datetime(2025, 7, 18, 13, 32, 5, tzinfo=UTC)),
        ("2025-07-18T14:32:05Z", datetime(2025, 7, 18, 14, 32, 5, tzinfo=UTC)),
        ("2025-07-18T14:32:05.250", datetime(2025, 7, 18, 13, 32, 5, 250000, tzinfo=UTC)),
    ],
)
def test_header_time_is_london_local_unless_it_has_an_offset(
    ctf: CtfFormat, tmp_path: Path, stamp: str, utc: datetime
) -> None:
    text = internal_text().replace("2025-07-18T14:32:05", stamp)
    (draft,) = only_record(ctf, variant(tmp_path, text)).drafts
    assert draft.fields["occurred_at"].astimezone(UTC) == utc


def test_an_empty_container_adds_no_category(ctf: CtfFormat, tmp_path: Path) -> None:
    # Only the third pupil's <SENhistory/> is left, and it is empty.
    text = re.sub(r"<SENhistory>.*?</SENhistory>", "", internal_text(), flags=re.S)
    assert "<SENhistory/>" in text
    (draft,) = only_record(ctf, variant(tmp_path, text)).drafts
    assert "sen" not in draft.fields["categories"]
    assert "assessment" in draft.fields["categories"]


def test_a_container_the_maps_do_not_know_fails_closed_as_unmapped(ctf: CtfFormat, tmp_path: Path) -> None:
    pupil_premium = "<PupilPremium><Eligible>true</Eligible><Source>DfE</Source></PupilPremium>"
    text = internal_text().replace("<Sex>M</Sex>", "<Sex>M</Sex>" + pupil_premium)
    (draft,) = only_record(ctf, variant(tmp_path, text)).drafts
    assert "unmapped.pupilpremium" in draft.fields["categories"]
    # Plain pupil fields outside any container are the identity core, not unknown containers.
    assert not any(c.startswith("unmapped.") and c != "unmapped.pupilpremium" for c in draft.fields["categories"])


def test_looked_after_status_is_mapped_as_support(ctf: CtfFormat, tmp_path: Path) -> None:
    looked_after = "<LookedAfter><InCare>true</InCare><CareAuthority>937</CareAuthority></LookedAfter>"
    text = internal_text().replace("<Sex>M</Sex>", "<Sex>M</Sex>" + looked_after)
    (draft,) = only_record(ctf, variant(tmp_path, text)).drafts
    assert "support_plan" in draft.fields["categories"]
    assert not any(c.startswith("unmapped.") for c in draft.fields["categories"])


def test_a_namespaced_export_is_read_by_local_names(ctf: CtfFormat, tmp_path: Path) -> None:
    text = internal_text().replace("<CTfile>", '<CTfile xmlns="urn:example:ctf">')
    (draft,) = only_record(ctf, variant(tmp_path, text)).drafts
    assert draft == only_record(ctf, INTERNAL).drafts[0]


def test_a_resume_after_the_files_one_record_yields_nothing(ctf: CtfFormat) -> None:
    # Killed between the batch commit and the "done" commit: the engine resumes after record 1.
    assert list(ctf.records(INTERNAL, INTERNAL.stat().st_size, 1)) == []


def test_a_year_group_file_is_read_whole(ctf: CtfFormat, tmp_path: Path) -> None:
    pupils = "".join(
        f"<Pupil><UPN>A{n:011d}{n % 10}</UPN><Surname>S{n}</Surname><Forename>F</Forename><DOB>2014-01-01</DOB>"
        f"<Attendance><YearData><Year>2025</Year><SessionsPossible>300</SessionsPossible></YearData></Attendance>"
        "</Pupil>"
        for n in range(3000)
    )
    header_end = internal_text().index("<CTFpupilData>")
    text = internal_text()[:header_end] + f"<CTFpupilData>{pupils}</CTFpupilData></CTfile>"
    (draft,) = only_record(ctf, variant(tmp_path, text)).drafts
    assert draft.fields["record_count"] == 3000
    assert len({s["id"] for s in draft.fields["subjects"]}) == 3000
    assert draft.fields["categories"] == sorted([*CORE, "attendance"])


def _drop(pattern: str) -> str:
    return re.sub(pattern, "", internal_text(), count=1, flags=re.S)


def _swap(old: str, new: str) -> str:
    text = internal_text()
    assert old in text
    return text.replace(old, new, 1)


SOURCE = "<LEA>937</LEA>\n      <Estab>2001</Estab>"
DEST = "<LEA>937</LEA>\n      <Estab>4001</Estab>"

REFUSALS = {
    "not xml": ("This is not a CTF, just text.\n", "not well-formed XML: syntax error"),
    "empty": ("", "not well-formed XML: no element found"),
    "wrong root": (
        _swap("<CTfile>", "<CTF>").replace("</CTfile>", "</CTF>"),
        "root element is <CTF>, expected <CTfile>",
    ),
    "no header": (_drop(r"<Header>.*?</Header>"), "<CTfile> has no <Header>"),
    "no source school": (_drop(r"<SourceSchool>.*?</SourceSchool>"), "<Header> has no <SourceSchool>"),
    "no destination school": (_drop(r"<DestSchool>.*?</DestSchool>"), "<Header> has no <DestSchool>"),
    "no source LEA": (_swap(SOURCE, "<Estab>2001</Estab>"), "<SourceSchool> has no <LEA>"),
    "no destination Estab": (_swap(DEST, "<LEA>937</LEA>"), "<DestSchool> has no <Estab>"),
    "lost-pupil destination": (
        _swap(DEST, "<LEA>MMM</LEA><Estab>MMMM</Estab>"),
        "<DestSchool> LEA 'MMM' / Estab 'MMMM' is not a DfE number (3 + 4 digits)",
    ),
    "unknown source": (
        _swap(SOURCE, "<LEA>937</LEA><Estab>9998</Estab>"),
        "<SourceSchool> 9379998 is not a school in ctf.schools",
    ),
    "source outside the trust": (
        _swap(SOURCE, "<LEA>937</LEA><Estab>2105</Estab>"),
        "<SourceSchool> 9372105 (Brookside Primary School) is not a Trust school",
    ),
    "no datetime": (_drop(r"<DateTime>.*?</DateTime>"), "<Header> has no <DateTime>"),
    "bad datetime": (
        _swap("2025-07-18T14:32:05", "18/07/2025 14:32"),
        "<Header><DateTime> '18/07/2025 14:32' is not an ISO 8601 time",
    ),
    "no pupils": (_drop(r"<CTFpupilData>.*?</CTFpupilData>"), "no <Pupil> in <CTFpupilData>"),
    "empty UPN": (_swap("<UPN>E937200119003</UPN>", "<UPN> </UPN>"), "<Pupil> 3 has no <UPN>"),
    "short UPN": (
        _swap("E937200119003", "E93720011900"),
        "<Pupil> 3: <UPN> 'E93720011900' is not a UPN",
    ),
    "lower-case UPN": (_swap("Q937200119002", "q937200119002"), "<Pupil> 2: <UPN> 'q937200119002' is not a UPN"),
    "duplicate UPN": (
        _swap("E937200119003", "B937200119001"),
        "<Pupil> 3: UPN B937200119001 is already <Pupil> 1 (duplicate UPN)",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_file_that_breaks_the_contract_is_refused_whole_with_a_reason(
    ctf: CtfFormat, tmp_path: Path, case: str
) -> None:
    text, reason = REFUSALS[case]
    path = variant(tmp_path, text, "9372001_CTF_9374001_007.xml")
    with pytest.raises(FileRejectedError) as refused:
        list(ctf.records(path, 0, 0))
    assert str(refused.value).startswith(f"{path.name}: {reason}")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.xml", "truncated.xml: not well-formed XML: no element found: line 82"),
        ("entity-bomb.xml", "entity-bomb.xml: refused XML (DTDForbidden): a CTF has no DOCTYPE"),
        ("external-entity.xml", "external-entity.xml: refused XML (DTDForbidden): a CTF has no DOCTYPE"),
        ("9372001_CTF_9379999_001.xml", "9372001_CTF_9379999_001.xml: <DestSchool> 9379999 is not a school in"),
        ("missing-upn.xml", "missing-upn.xml: <Pupil> 2 has no <UPN>"),
    ],
)
def test_the_sample_bad_files_are_refused(ctf: CtfFormat, name: str, reason: str) -> None:
    with pytest.raises(FileRejectedError) as refused:
        list(ctf.records(DATA / "bad" / name, 0, 0))
    assert str(refused.value).startswith(reason)


def test_a_ctf_a_school_sends_itself_is_refused(ctf: CtfFormat, tmp_path: Path) -> None:
    text = re.sub(r"(<DestSchool>\s*<LEA>937</LEA>\s*<Estab>)4001", r"\g<1>2001", internal_text())
    assert text != internal_text()
    with pytest.raises(FileRejectedError, match="is the source school itself"):
        list(ctf.records(variant(tmp_path, text), 0, 0))
