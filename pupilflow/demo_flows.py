"""A handful of realistic flows for `pupilflow demo` (the simulator of the connectors issue replaces these)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.events import DataFlow, Source, Subject


def demo_flows(run_id: str, now: datetime | None = None) -> list[DataFlow]:
    """Flows a school day produces: census, payments, a CTF, a marketing email, a milk order."""
    now = now or datetime.now(UTC)
    # Keys from the Trust's register (policy/recipients.yaml), so the policy engine can judge them.
    specs = [
        ("dfe", ["P1001", "P1002", "P1003"], ["identity", "attendance", "ethnicity"], "census_return", "dfe_collect"),
        ("parentpay", ["P1001"], ["identity", "parent_contact", "financial"], "parent_payments", "encrypted_api"),
        ("next-school", ["P1002"], ["identity", "assessment", "sen"], "ctf_transfer", "s2s"),
        ("trust-marketing", ["PARENT-77"], ["parent_contact"], "marketing", "encrypted_email"),
        ("cool-milk", ["P1003"], ["identity", "identity.class", "fsm_eligibility"], "free_milk", "encrypted_api"),
    ]
    flows = []
    for seq, (recipient, subjects, categories, purpose, channel) in enumerate(specs, start=1):
        kind = "parent" if subjects[0].startswith("PARENT") else "pupil"
        flows.append(
            DataFlow(
                event_id=f"demo-{run_id}-{seq}",
                occurred_at=now - timedelta(minutes=10 * (len(specs) - seq)),
                emitted_at=now,
                source=Source(connector="demo", sequence=seq),
                recipient=recipient,
                subjects=[Subject(kind=kind, id=s) for s in subjects],
                categories=categories,
                purpose=purpose,
                channel=channel,
                record_count=len(subjects),
            )
        )
    return flows
