"""Worker faults on the real stack: kill -9 mid-stream loses and doubles nothing in ClickHouse; late facts supersede.

Each test runs its own worker and sink over topics of its own; the ClickHouse database is the session's, so
rows are selected by this test's flow ids.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from producers.emitter import Emitter
from pupilflow import children
from pupilflow.children import Child
from schemas.events import DataFlow, Event, Source
from schemas.settings import Settings
from streams import builders as b

from .conftest import committed, committed_reader, free_port, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

MUSIC = ("peripatetic-music", "music_tuition", ["identity", "contact"], "encrypted_email")
ROUTINE = [
    ("sims", "mis_sync", ["identity", "attendance"], "encrypted_api"),
    ("parentpay", "parent_payments", ["identity.name", "parent_contact"], "encrypted_portal"),
    MUSIC,
]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def stack(isolated: Settings, clickhouse: Any) -> tuple[Settings, Any]:
    """This test's settings (own topics, groups, ports) on the session's ClickHouse database."""
    settings = isolated.model_copy(
        update={
            "clickhouse_dsn": isolated.clickhouse_dsn,
            "sink_group": f"{isolated.consumer_group}-sink",
            "sink_metrics_port": free_port(),
            "sink_batch_max_seconds": 0.3,
        }
    )
    return settings, clickhouse


def sequenced(events: list[Event]) -> list[Event]:
    """Give every connector's events the gapless sequence numbers a real connector gives."""
    counters: dict[str, int] = {}
    out = []
    for event in events:
        n = counters.get(event.source.connector, 0)
        counters[event.source.connector] = n + 1
        out.append(event.model_copy(update={"source": Source(connector=event.source.connector, sequence=n)}))
    return out


def pupil_facts(pupil: str) -> list[Event]:
    parent = f"parent-{pupil}"
    return [
        b.born(pupil, "2014-05-06"),
        b.enrolled("2024-09-04T08:00Z", pupil, "hawthorn-primary"),
        b.standing("2024-09-04T08:00Z", pupil, parent, "mother", pr=True),
        b.consent("2024-09-05T18:00Z", pupil, MUSIC[0], MUSIC[1], MUSIC[2], by=parent),
    ]


def agreements() -> list[Event]:
    out: list[Event] = [
        b.agreement("2019-01-01T00:00Z", r, valid_until="2035-12-31T00:00Z") for r in ("sims", "parentpay")
    ]
    out.append(b.agreement("2019-01-01T00:00Z", MUSIC[0], "dsa", valid_until="2035-12-31T00:00Z"))
    return out


def emit(settings: Settings, events: list[Event]) -> None:
    with Emitter(settings.kafka_bootstrap, settings.topics) as emitter:
        emitter.emit_all(events)


def flows_in_clickhouse(client: Any, prefix: str) -> tuple[int, int, int]:
    """(distinct flows decided, decision rows after merging duplicates, distinct decision ids) for these flows."""
    row = client.query(
        "SELECT uniqExact(flow_event_id), count(), uniqExact(decision_id) FROM decisions FINAL"
        " WHERE startsWith(flow_event_id, {p:String})",
        parameters={"p": prefix},
    ).result_rows[0]
    return int(row[0]), int(row[1]), int(row[2])


@pytest.mark.timeout(600)
def test_a_worker_killed_mid_stream_leaves_each_decision_in_clickhouse_exactly_once(
    stack: tuple[Settings, Any],
) -> None:
    settings, client = stack
    now = datetime.now(UTC).replace(microsecond=0)
    pupils = [f"pupil-k{n:05d}" for n in range(500)]
    events: list[Event] = agreements()
    for pupil in pupils:
        events += pupil_facts(pupil)
    run = uuid.uuid4().hex[:6]
    flows: list[DataFlow] = []
    for n in range(12_000):
        recipient, purpose, categories, channel = ROUTINE[n % len(ROUTINE)]
        when = iso(now - timedelta(minutes=n % 600))
        flows.append(
            b.flow(when, recipient, purpose, categories, subjects=[pupils[n % len(pupils)]], channel=channel,
                   event_id=f"flow-{run}-{n:06d}", emitted=iso(now))
        )  # fmt: skip
    emit(settings, sequenced(events + list(flows)))
    ids = [f.event_id for f in flows]

    log = settings.home / "worker.log"
    sink = children.sink(settings, settings.home / "sink.log").start()
    try:
        first = children.worker(settings, log).start()
        watcher = committed_reader(settings, settings.topics.decisions)
        seen = 0

        def some_committed() -> bool:
            nonlocal seen
            seen += sum(len(batch) for batch in watcher.poll(timeout_ms=50).values())
            return seen >= 2_000

        try:
            wait_until(some_committed, timeout=120, interval=0.0, what="the first committed decisions")
        finally:
            watcher.close()
        assert first.proc is not None
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        assert seen < len(flows), "the worker finished before it could be killed mid-stream"

        second = children.worker(settings, log).start()
        try:
            wait_until(
                lambda: flows_in_clickhouse(client, f"flow-{run}-")[0] == len(ids),
                timeout=300,
                what="every flow in ClickHouse",
            )
        finally:
            second.stop()
    finally:
        sink.stop()
    decided, rows, decision_ids = flows_in_clickhouse(client, f"flow-{run}-")
    assert (decided, rows, decision_ids) == (len(ids), len(ids), len(ids))
    # Kafka itself holds each decision once: the killed worker's open transaction was aborted, never re-sent.
    in_kafka = [json.loads(r.value)["flow_event_id"] for r in committed(settings, settings.topics.decisions)]
    assert sorted(in_kafka) == sorted(ids)


def test_a_late_withdrawal_supersedes_the_allowed_decision_with_a_violation_and_an_alert(
    stack: tuple[Settings, Any],
) -> None:
    settings, client = stack
    now = datetime.now(UTC).replace(microsecond=0)
    pupil = f"pupil-late-{uuid.uuid4().hex[:6]}"
    flow = b.flow(
        iso(now - timedelta(hours=1)), MUSIC[0], MUSIC[1], MUSIC[2], subjects=[pupil], channel=MUSIC[3],
        event_id=f"flow-{pupil}", emitted=iso(now - timedelta(hours=1)),
    )  # fmt: skip
    # Withdrawn two hours ago, but the school's system only reports it now: after the flow was judged.
    late = b.withdrawal(
        iso(now - timedelta(hours=2)), pupil, recipient=MUSIC[0], by=f"parent-{pupil}", emitted=iso(now)
    )
    sink = children.sink(settings, settings.home / "sink.log").start()
    worker: Child = children.worker(settings, settings.home / "worker.log").start()
    try:
        events = sequenced([*agreements(), *pupil_facts(pupil), flow, late])
        emit(settings, events[:-1])
        first = wait_until(
            lambda: [json.loads(r.value) for r in committed(settings, settings.topics.decisions, idle_ms=300)],
            what="the first decision",
        )
        assert [(d["verdict"], d["revision"]) for d in first] == [("allowed", 0)]
        emit(settings, events[-1:])

        def superseded() -> list[dict[str, Any]]:
            found = [json.loads(r.value) for r in committed(settings, settings.topics.decisions, idle_ms=300)]
            return found if len(found) == 2 else []

        decisions = wait_until(superseded, what="the superseding decision")
    finally:
        worker.stop()
        sink.stop()
    original, fresh = sorted(decisions, key=lambda d: d["revision"])
    assert (fresh["verdict"], fresh["reasons"], fresh["revision"]) == ("violation", ["CONSENT_WITHDRAWN"], 1)
    assert fresh["supersedes"] == original["decision_id"]
    alerts = [json.loads(r.value) for r in committed(settings, settings.topics.violations)]
    assert [a["decision_id"] for a in alerts] == [fresh["decision_id"]]

    # The audit store keeps both: the allowed decision as made, and the violation that replaced it.
    def both_disclosures() -> list[Any] | None:
        rows = client.query(
            "SELECT revision, verdict, supersedes FROM disclosures FINAL WHERE subject_id = {p:String}"
            " ORDER BY revision",
            parameters={"p": pupil},
        ).result_rows
        return rows if len(rows) == 2 else None

    rows = wait_until(both_disclosures, what="both disclosures of the pupil in ClickHouse")
    assert [tuple(r) for r in rows] == [(0, "allowed", None), (1, "violation", original["decision_id"])]
