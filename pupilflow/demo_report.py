"""What a demo run saw: decisions in ClickHouse, violations by reason, and caught vs injected violations.

"Caught" means the decision the pipeline stored for an injected violation's flow is a violation that names
the reason code the simulator's ground truth expects. The same comparison is made for the policy engine
run offline over exactly the events that reached Kafka: the stream and a replay must agree.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from producers.simulator import SimRun
from producers.simulator.outbox import FileDrop, HttpEvent
from schemas.events import DataFlow
from schemas.policy import Policy
from schemas.settings import Settings
from streams.replay import replay_lines


@dataclass(frozen=True)
class Injected:
    """One line of the simulator's ground truth."""

    event_id: str
    reason: str
    description: str


@dataclass
class Outcome:
    """Verdicts seen for a set of flows, and how many injected violations they caught."""

    decided: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    caught: Counter[str] = field(default_factory=Counter)
    missed: list[Injected] = field(default_factory=list)


def flow_ids(run: SimRun) -> set[str]:
    """The event id of every flow the run's files and HTTP events carry (needs `keep_intended`)."""
    ids: set[str] = set()
    for drop in run.drops:
        if isinstance(drop, HttpEvent):
            if drop.model is DataFlow:
                ids.add(drop.event_id)
        elif isinstance(drop, FileDrop):
            for record, drafts in enumerate(drop.intended, start=1):
                ids.update(drop.event_id(record, i) for i, d in enumerate(drafts) if d.model is DataFlow)
    return ids


def ground_truth(path: Path) -> list[Injected]:
    """The injected violations a run wrote."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Injected(r["event_id"], r["reason"], r["description"]) for r in rows]


def wait_for_decisions(
    client: Any, ids: set[str], timeout: float, progress: Callable[[str], None], interval: float = 1.0
) -> int:
    """Poll ClickHouse until every flow has a decision (or `timeout`); returns how many have one."""
    deadline = time.monotonic() + timeout
    wanted = sorted(ids)
    landed = -1
    while True:
        now = client.query(
            "SELECT uniqExact(flow_event_id) FROM decisions WHERE flow_event_id IN {ids:Array(String)}",
            parameters={"ids": wanted},
        ).result_rows[0][0]
        if now != landed:
            progress(f"{now}/{len(wanted)} flows decided in ClickHouse")
            landed = now
        if landed >= len(wanted) or time.monotonic() > deadline:
            return int(landed)
        time.sleep(interval)


def wait_for_dead_letters(client: Any, since: datetime, expected: int, timeout: float) -> int:
    """Poll ClickHouse until the dead letters received since `since` reach `expected` (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        found = int(
            client.query(
                "SELECT count() FROM dead_letters FINAL WHERE received_at >= {t:DateTime64(3, 'UTC')}",
                parameters={"t": since},
            ).result_rows[0][0]
        )
        if found >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _judge(decisions: Iterable[tuple[str, str, list[str], str]], truth: list[Injected]) -> Outcome:
    outcome = Outcome()
    latest: dict[str, tuple[str, list[str]]] = {}
    for event_id, verdict, reasons, _digest in decisions:
        latest[event_id] = (verdict, reasons)
    for verdict, reasons in latest.values():
        outcome.verdicts[verdict] += 1
        if verdict == "violation":
            outcome.reasons.update(reasons)
    outcome.decided = len(latest)
    for item in truth:
        verdict, reasons = latest.get(item.event_id, ("", []))
        if verdict == "violation" and item.reason in reasons:
            outcome.caught[item.reason] += 1
        else:
            outcome.missed.append(item)
    return outcome


def pipeline_outcome(client: Any, ids: set[str], truth: list[Injected]) -> Outcome:
    """What the pipeline stored in ClickHouse for these flows (the newest decision of each)."""
    rows = client.query(
        "SELECT flow_event_id, verdict, reasons, policy_digest FROM decisions FINAL"
        " WHERE flow_event_id IN {ids:Array(String)} ORDER BY decided_at, kafka_offset",
        parameters={"ids": sorted(ids)},
    ).result_rows
    return _judge(((r[0], r[1], list(r[2]), r[3]) for r in rows), truth)


def end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """Where the flows and facts topics end now: the demo's events are what comes after."""
    consumer = _consumer(settings)
    try:
        partitions = _partitions(consumer, settings)
        return dict(consumer.end_offsets(partitions))
    finally:
        consumer.close()


def engine_outcome(
    settings: Settings, since: dict[TopicPartition, int], ids: set[str], truth: list[Injected], policy: Policy
) -> Outcome:
    """The policy engine's verdicts over exactly the events that reached Kafka after `since`, in arrival order."""
    consumer = _consumer(settings)
    records: list[tuple[int, int, bytes]] = []
    try:
        partitions = _partitions(consumer, settings)
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, since.get(tp, 0))
        order = {settings.topics.facts: 0, settings.topics.flows: 1}
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500).items():
                records.extend((r.timestamp, order[tp.topic], r.value) for r in batch)
    finally:
        consumer.close()
    # Kafka timestamps are send times: facts and flows merge back into the order the connectors sent them.
    records.sort(key=lambda r: (r[0], r[1]))
    result = replay_lines((value for _, _, value in records), policy, keep_decisions=False)
    digest = policy.digest
    decisions = (
        (event_id, verdict, list(reasons), digest)
        for event_id, (verdict, reasons) in result.outcomes.items()
        if event_id in ids
    )
    return _judge(decisions, truth)


def _consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )


def _partitions(consumer: KafkaConsumer, settings: Settings) -> list[TopicPartition]:
    found = []
    for topic in (settings.topics.facts, settings.topics.flows):
        for partition in sorted(consumer.partitions_for_topic(topic) or ()):
            found.append(TopicPartition(topic, partition))
    return found


def render(title: str, outcome: Outcome, truth: list[Injected]) -> str:
    """A block of text: verdicts, violations by reason, caught vs injected by reason."""
    injected = Counter(t.reason for t in truth)
    lines = [
        f"{title}: {outcome.decided} flows decided: "
        + ", ".join(f"{verdict} {n}" for verdict, n in sorted(outcome.verdicts.items())),
    ]
    if outcome.reasons:
        lines.append("  violations by reason:")
        lines += [f"    {reason:<42} {n}" for reason, n in outcome.reasons.most_common()]
    total = sum(outcome.caught.values())
    lines.append(f"  caught {total} of {len(truth)} injected violations")
    for reason in sorted(injected):
        lines.append(f"    {reason:<42} {outcome.caught[reason]}/{injected[reason]}")
    return "\n".join(lines)
