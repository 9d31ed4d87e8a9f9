"""The facts the consent and MIS sample exports import mean what the evaluator needs (RULES.md §2, §5, §6.6).

The sample files go through the connector formats, become events exactly as the file engine builds them, and
are replayed with a few flows through the pure evaluator; each flow gets the verdict RULES.md predicts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from producers.consent_export import ConsentExport
from producers.consent_export import file_format as consent_format
from producers.filesource import event_id_for, file_digest
from producers.mis_export import MisExport
from producers.mis_export import file_format as mis_format
from schemas.connector_maps import load_connector_maps
from schemas.decisions import Decision
from schemas.events import DataFlow, Event
from schemas.policy import Policy, load_policy
from streams.builders import agreement, flow
from streams.replay import Replayer

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data"
PHOTO = ["photographs", "identity.name"]

FLOWS: dict[str, tuple[DataFlow, list[str]]] = {
    # The consent form said 19:30 on 10 September: London (BST) time, 18:30 UTC.
    "photo-before-consent": (
        flow("2025-09-10T18:29Z", "trust-website", "promotional_photo", PHOTO, subjects=["P1001"]),
        ["PHOTO_WITHOUT_PERMISSION"],
    ),
    "photo-after-consent": (
        flow("2025-09-10T18:45Z", "trust-website", "promotional_photo", PHOTO, subjects=["P1001"]),
        [],
    ),
    "photo-day-before-withdrawal": (
        flow("2025-11-02T12:00Z", "social-media", "promotional_photo", PHOTO, subjects=["P1001"]),
        [],
    ),
    # Withdrawn at 09:00 London on 3 November (GMT): a flow at that instant is already without permission.
    "photo-at-withdrawal": (
        flow("2025-11-03T09:00Z", "trust-website", "promotional_photo", PHOTO, subjects=["P1001"]),
        ["PHOTO_WITHOUT_PERMISSION", "CONSENT_WITHDRAWN"],
    ),
    # The form claims the step-parent has PR; the MIS record says not, and the record wins.
    "club-step-parent": (
        flow("2025-09-20T15:00Z", "after-school-club", "after_school_club", ["identity.name"], subjects=["P1001"]),
        ["CONSENT_GIVER_NOT_AUTHORISED"],
    ),
    # A foster carer with recorded delegated authority may consent.
    "music-foster-carer": (
        flow("2025-10-01T10:00Z", "peripatetic-music", "music_tuition", ["identity"], subjects=["P1003"]),
        [],
    ),
    "music-after-scope-withdrawal": (
        flow("2025-11-11T10:00Z", "peripatetic-music", "music_tuition", ["identity"], subjects=["P1003"]),
        ["CONSENT_WITHDRAWN"],
    ),
    "music-refused": (
        flow("2025-10-01T10:00Z", "peripatetic-music", "music_tuition", ["identity"], subjects=["P1002"]),
        ["NO_CONSENT"],
    ),
    # The child's objection overrides the mother's written consent until the child withdraws it (POFA s26).
    "biometric-during-objection": (
        flow(
            "2025-10-05T12:00Z",
            "biometric-catering",
            "biometric_catering",
            ["identity.name", "biometric"],
            subjects=["P1001"],
            channel="encrypted_api",
        ),
        ["OBJECTION_NOT_HONOURED"],
    ),
    "biometric-after-objection": (
        flow(
            "2025-10-21T12:00Z",
            "biometric-catering",
            "biometric_catering",
            ["identity.name", "biometric"],
            subjects=["P1001"],
            channel="encrypted_api",
        ),
        [],
    ),
    "marketing-opted-in": (
        flow("2025-09-20T09:00Z", "trust-marketing", "marketing", ["parent_contact"], parents=["mum-1001"]),
        [],
    ),
    # P1004 left the Trust on 22 July (London midnight: 21 July 23:00 UTC); a supplier may sync a leaver for
    # 30 days, which end at 20 August 23:00 UTC, half an hour before this sync.
    "sims-leaver-after-grace": (
        flow("2025-08-20T23:30Z", "sims", "mis_sync", ["identity.name"], subjects=["P1004"]),
        ["RETENTION_EXCEEDED"],
    ),
    "sims-leaver-in-grace": (
        flow("2025-08-20T22:30Z", "sims", "mis_sync", ["identity.name"], subjects=["P1004"]),
        [],
    ),
    # P1005 moved to another Trust school: still the Trust's pupil.
    "sims-moved-within-trust": (
        flow("2025-10-01T10:00Z", "sims", "mis_sync", ["identity.name"], subjects=["P1005"]),
        [],
    ),
}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(ROOT / "policy")


def imported(fmt: ConsentExport | MisExport, connector: str, path: Path) -> list[Event]:
    """The events the file engine would emit for `path` (event ids and envelope as it builds them)."""
    events: list[Event] = []
    for record in fmt.records(path, 0, 0):
        assert record.error is None, f"{path.name} record {record.line}: {record.error}"
        for index, draft in enumerate(record.drafts):
            values = {
                "event_id": event_id_for(connector, file_digest(path), record.line, index),
                **draft.fields,
                "emitted_at": datetime(2025, 12, 1, tzinfo=UTC),
                "source": {"connector": connector, "sequence": len(events)},
            }
            events.append(cast(Event, draft.model.model_validate(values)))
    return events


@pytest.fixture(scope="module")
def decisions(policy: Policy) -> dict[str, Decision]:
    maps = load_connector_maps(ROOT / "policy", policy)
    replayer = Replayer(policy)
    for recipient, kind in (
        ("after-school-club", "dsa"),
        ("peripatetic-music", "dsa"),
        ("biometric-catering", "art28_contract"),
        ("sims", "art28_contract"),
    ):
        replayer.feed(agreement("2019-01-01T00:00Z", recipient, kind, valid_until="2030-12-31T23:59:59Z"))
    for path in sorted((DATA / "mis").glob("*.csv")):
        for event in imported(mis_format(maps), "mis", path):
            replayer.feed(event)
    for path in sorted((DATA / "consent").glob("*.csv")):
        for event in imported(consent_format(maps), "consent", path):
            replayer.feed(event)
    found: dict[str, Decision] = {}
    for name, (item, _) in FLOWS.items():
        [decision] = replayer.feed(item)
        found[name] = decision
    return found


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_imported_facts_give_the_verdict_the_rules_predict(decisions: dict[str, Decision], name: str) -> None:
    expected = FLOWS[name][1]
    decision = decisions[name]
    assert list(decision.reasons) == expected
    assert decision.verdict == ("violation" if expected else "allowed")


@pytest.mark.parametrize(
    ("name", "consent_id"),
    [
        ("photo-after-consent", "C-1001-photo"),
        ("biometric-after-objection", "C-1001-bio"),
        ("music-foster-carer", "C-1003-music"),
        ("marketing-opted-in", "C-mum-1001-news"),
    ],
)
def test_allowed_flows_rely_on_the_imported_consent(decisions: dict[str, Decision], name: str, consent_id: str) -> None:
    assert consent_id in decisions[name].facts_relied_on
