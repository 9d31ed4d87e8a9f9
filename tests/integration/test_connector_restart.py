"""kill -9 mid-backfill, then restart: the mail-trace and MIS connectors deliver every event exactly once.

(The CTF, sync-log and consent connectors have the same test beside their other tests.) Each backfill is a
large export; the first run is killed as soon as its first transaction is visible, and the restart must
deliver exactly the events not yet delivered: every `event_id` once, sequence numbers without a gap or a
repeat, and for the MIS export, a pupil's facts once even when the kill fell between that pupil's rows.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from producers.checkpoint import read_checkpoint
from producers.filesource import file_digest
from schemas.settings import Settings

from .conftest import committed, connect_process, kill_after_first_commit

pytestmark = pytest.mark.kafka

MESSAGES = 15_000
PUPILS = 6_000


def write_mail_trace(path: Path) -> int:
    """Outbound mail to the local authority, one pupil each; returns the flows it should yield."""
    lines = ["time,message_id,sender,recipients,subject,attachments,sensitivity"]
    for n in range(MESSAGES):
        upn = f"H{801_200_000_000 + n:012d}"
        lines.append(
            f"2026-10-05T09:{n // 60 % 60:02d}:{n % 60:02d},<m{n}@rosevalley.org.uk>,dsl@rosevalley.org.uk,"
            f"referrals@westshire.gov.uk,Referral {upn},chronology_{upn}.pdf,Safeguarding"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return MESSAGES


def write_mis_export(path: Path) -> int:
    """Two contacts per pupil; returns the facts it should yield (birth date, enrolment, two PR records)."""
    lines = [
        "pupil_id,school,dob,enrolled_on,left_on,destination_school,contact_id,contact_relationship,"
        "contact_parental_responsibility,contact_has_care,contact_delegated_authority,exported_at"
    ]
    for n in range(PUPILS):
        for contact, relationship in ((f"mum-{n}", "mother"), (f"dad-{n}", "father")):
            lines.append(
                f"P{n:06d},rose-valley,2012-0{1 + n % 9}-1{n % 10},2023-09-04,,,{contact},{relationship},"
                "yes,yes,no,2025-09-01T07:00:00"
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return PUPILS * 4


@pytest.mark.parametrize(
    ("kind", "write", "topic_of"),
    [
        ("mailtrace", write_mail_trace, lambda s: s.topics.flows),
        ("mis", write_mis_export, lambda s: s.topics.facts),
    ],
)
def test_kill_9_mid_backfill_then_restart_delivers_every_event_exactly_once(
    isolated: Settings,
    tmp_path: Path,
    kind: str,
    write: Callable[[Path], int],
    topic_of: Callable[[Settings], str],
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    staging = tmp_path / "backfill.csv"
    expected = write(staging)
    digest = file_digest(staging)
    staging.rename(outbox / "backfill.csv")  # dropped atomically, as the outbox contract asks
    connector = f"{kind}-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "connect.log"
    topic = topic_of(isolated)

    delivered = kill_after_first_commit(
        isolated, topic, lambda: connect_process(isolated, kind, outbox, log, connector=connector)
    )
    assert 0 < delivered < expected, f"the kill landed outside the backfill ({delivered} of {expected})"
    assert (outbox / "backfill.csv").exists()  # unfinished, so not moved

    second = connect_process(isolated, kind, outbox, log, connector=connector)
    assert second.wait(timeout=300) == 0, log.read_text(encoding="utf-8")

    events = [json.loads(r.value) for r in committed(isolated, topic)]
    ids = Counter(e["event_id"] for e in events)
    assert len(events) == expected
    assert max(ids.values()) == 1
    assert all(event_id.startswith(f"{connector}:{digest[:16]}:") for event_id in ids)
    assert sorted(e["source"]["sequence"] for e in events) == list(range(expected))
    if kind == "mis":
        per_pupil = Counter((e["subject"]["id"], e["kind"]) for e in events)
        assert set(per_pupil.values()) == {1, 2}  # birth date and enrolment once, one PR fact per contact
        assert sum(1 for (_, k), n in per_pupil.items() if k == "parental_responsibility" and n == 2) == PUPILS
    checkpoint = read_checkpoint(isolated.kafka_bootstrap, isolated.topics.checkpoints, connector)
    assert checkpoint.next_sequence == expected
    assert (outbox / "processed" / "backfill.csv").exists()
    assert committed(isolated, isolated.topics.dlq) == []
