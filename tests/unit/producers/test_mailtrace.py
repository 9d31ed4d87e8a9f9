"""Mail trace connector: mail that leaves the Trust → one flow per external recipient, failing closed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from producers.filesource import Draft, FileRejectedError, Record
from producers.mailtrace import MailTraceFormat, file_format
from schemas.connector_maps import ConnectorMaps
from schemas.events import DataFlow

BST = timezone(timedelta(hours=1))
AT = datetime(2026, 10, 5, 10, tzinfo=BST)

LA_ROUTE = {
    "recipient": "local-authority",
    "purpose": "safeguarding",
    "lawful_basis": "public_task",
    "condition": "safeguarding_para18",
    "channel": "encrypted_email",
    "destination_country": "GB",
    "transfer_safeguard": "none",
}
UNKNOWN_FOOTING = {
    "purpose": "school_updates",
    "lawful_basis": None,
    "condition": None,
    "channel": "email",
    "destination_country": "GB",
    "transfer_safeguard": "none",
}
UPN1, UPN2 = "H801200000011", "H80120000002A"


def maps() -> ConnectorMaps:
    """Connector maps of this test's own, so policy edits never move its expectations."""
    return ConnectorMaps.model_validate(
        {
            "ctf": {
                "schools": [{"laestab": "9372001", "name": "Hawthorn", "recipient": "hawthorn-primary"}],
                "external": {"purpose": "ctf_transfer"},
                "internal": {"purpose": "internal_transfer"},
                "core_categories": ["identity.upn"],
                "containers": {"Attendance": ["attendance"]},
            },
            "sync": {
                "fields": {"upn": "identity.upn"},
                "suppliers": [{"names": ["SIMS"], "route": {"recipient": "sims", "purpose": "mis_sync"}}],
            },
            "mail": {
                "internal_domains": ["Trust.org.uk", "hawthorn.sch.uk"],
                "domains": [
                    {"domain": "westshire.gov.uk", "route": {k: v for k, v in LA_ROUTE.items() if v is not None}}
                ],
                "unknown_route": {"purpose": "school_updates", "channel": "email"},
                "labels": {"Public": [], "Confidential - SEN": ["identity", "sen"]},
            },
        }
    )


@pytest.fixture
def fmt() -> MailTraceFormat:
    return file_format(maps())


HEADER = "time,message_id,sender,recipients,subject,attachments,sensitivity\n"


def message(
    recipients: str,
    *,
    subject: str = f"Review {UPN1}",
    attachments: str = "",
    label: str = "Confidential - SEN",
    time: str = "2026-10-05T10:00:00",
    message_id: str = "<m1@trust.org.uk>",
) -> str:
    return f'{time},{message_id},head@trust.org.uk,"{recipients}","{subject}","{attachments}",{label}\n'


def read(fmt: MailTraceFormat, tmp_path: Path, *rows: str) -> list[Record]:
    path = tmp_path / "trace.csv"
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    return list(fmt.records(path, 0, 0))


def flow(route: dict[str, Any], pupils: list[str], categories: list[str], at: datetime = AT) -> Draft:
    return Draft(
        DataFlow,
        {
            **route,
            "occurred_at": at,
            "subjects": [{"kind": "pupil", "id": p} for p in pupils],
            "categories": categories,
            "record_count": len(pupils),
        },
    )


def unknown(domain: str) -> dict[str, Any]:
    return {"recipient": f"email:{domain}", **UNKNOWN_FOOTING}


def test_mail_among_the_trusts_own_domains_and_their_subdomains_is_not_a_flow(
    fmt: MailTraceFormat, tmp_path: Path
) -> None:
    [record] = read(fmt, tmp_path, message("a@trust.org.uk;B@HAWTHORN.SCH.UK;c@pupils.trust.org.uk"))
    assert (record.error, record.drafts) == (None, ())


def test_mail_that_leaves_is_one_flow_per_external_recipient_with_its_route(
    fmt: MailTraceFormat, tmp_path: Path
) -> None:
    [record] = read(
        fmt,
        tmp_path,
        message("a@trust.org.uk;Sen Team <sen@WestShire.gov.uk>;x@tutors.example.com;y@Tutors.Example.com"),
    )
    assert record.error is None
    assert record.drafts == (
        flow(LA_ROUTE, [UPN1], ["identity", "sen"]),
        flow(unknown("tutors.example.com"), [UPN1], ["identity", "sen"]),
    )


def test_domains_of_one_register_recipient_are_one_flow(fmt: MailTraceFormat, tmp_path: Path) -> None:
    [record] = read(fmt, tmp_path, message("a@social.westshire.gov.uk;b@westshire.gov.uk"))
    assert record.drafts == (flow(LA_ROUTE, [UPN1], ["identity", "sen"]),)


def test_every_draft_is_a_valid_flow_once_the_engine_adds_the_envelope(fmt: MailTraceFormat, tmp_path: Path) -> None:
    [record] = read(fmt, tmp_path, message("x@gmail.com", subject="Hello", message_id="<Ab.1 x@host>"))
    envelope = {"event_id": "m:ab:1:0", "emitted_at": datetime.now(UTC), "source": {"connector": "m", "sequence": 0}}
    event = DataFlow.model_validate({**envelope, **record.drafts[0].fields})
    assert event.recipient == "email:gmail.com"
    assert [s.id for s in event.subjects] == ["unidentified:Ab.1-x@host"]


@pytest.mark.parametrize(
    ("label", "categories"),
    [
        ("Confidential - SEN", ["identity", "sen"]),
        ("confidential - sen", ["identity", "sen"]),
        ("", ["unclassified"]),
        ("Top Secret", ["unclassified"]),
    ],
)
def test_labels_map_to_categories_and_a_missing_or_unknown_label_is_unclassified(
    fmt: MailTraceFormat, tmp_path: Path, label: str, categories: list[str]
) -> None:
    [record] = read(fmt, tmp_path, message("x@gmail.com", label=label))
    assert record.drafts == (flow(unknown("gmail.com"), [UPN1], categories),)


def test_a_label_that_means_no_personal_data_is_no_flow(fmt: MailTraceFormat, tmp_path: Path) -> None:
    [record] = read(fmt, tmp_path, message("x@gmail.com", label="public"))
    assert (record.error, record.drafts) == (None, ())


def test_a_broken_time_is_an_error_even_on_mail_that_is_no_flow(fmt: MailTraceFormat, tmp_path: Path) -> None:
    [record] = read(fmt, tmp_path, message("x@gmail.com", label="public", time="whenever"))
    assert record.error == "time 'whenever' is not ISO 8601"
    assert record.drafts == ()


def test_subjects_are_the_pupil_ids_in_the_subject_and_attachment_names(fmt: MailTraceFormat, tmp_path: Path) -> None:
    [record] = read(
        fmt,
        tmp_path,
        message(
            "x@gmail.com",
            subject=f"{UPN2} and {UPN1} (again {UPN2}); not h801200000011 nor X{UPN1}",
            attachments=f"report_{UPN1}.pdf;{UPN2}-plan.docx",
        ),
    )
    assert record.drafts == (flow(unknown("gmail.com"), [UPN2, UPN1], ["identity", "sen"]),)


def test_a_message_naming_no_pupil_stands_for_its_pupils_by_its_message_id(
    fmt: MailTraceFormat, tmp_path: Path
) -> None:
    [record] = read(fmt, tmp_path, message("x@gmail.com", subject="Trip", attachments="photos.zip"))
    assert record.drafts == (flow(unknown("gmail.com"), ["unidentified:m1@trust.org.uk"], ["identity", "sen"]),)


def test_times_are_london_local_without_an_offset(fmt: MailTraceFormat, tmp_path: Path) -> None:
    records = read(
        fmt, tmp_path, message("x@gmail.com", time="2026-12-05 13:00"), message("x@gmail.com", time="2026-12-05T13:00Z")
    )
    assert [r.drafts[0].fields["occurred_at"].astimezone(UTC) for r in records] == [
        datetime(2026, 12, 5, 13, tzinfo=UTC)
    ] * 2


def test_bad_rows_are_error_records_with_their_reason_and_the_rest_is_read(
    fmt: MailTraceFormat, tmp_path: Path
) -> None:
    records = read(
        fmt,
        tmp_path,
        message("x@gmail.com", time="5 Oct 2026 10:00"),
        message(" ; "),
        message("x@gmail.com;not an address"),
        message("x@gmail.com;y@localhost"),
        "2026-10-05T10:00:00,<m@trust.org.uk>,head@trust.org.uk,x@gmail.com\n",
        message("x@gmail.com", subject="Trip", message_id=""),
        message("x@gmail.com"),
    )
    assert [(r.line, r.error) for r in records] == [
        (1, "time '5 Oct 2026 10:00' is not ISO 8601"),
        (2, "no recipients"),
        (3, "recipient 'not an address' is not an email address"),
        (4, "recipient 'y@localhost' is not an email address"),
        (5, "has 4 fields, the header has 7"),
        (6, "names no pupil and has no message_id to stand for them"),
        (7, None),
    ]
    assert '"time": "5 Oct 2026 10:00"' in records[0].raw


def test_a_file_without_the_mail_trace_header_is_refused_whole(fmt: MailTraceFormat, tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("time,from,to,subject\n2026-10-05T10:00:00,a@b.org,c@d.org,hi\n", encoding="utf-8")
    with pytest.raises(FileRejectedError, match=re.escape("lacks column(s) attachments, message_id, recipients")):
        list(fmt.records(path, 0, 0))


def test_the_connector_reads_csv() -> None:
    assert file_format(maps()).patterns == ("*.csv",)
