"""The audit store on real Kafka and ClickHouse: the sink lands decisions, disclosures, violations and facts,
a re-delivered batch counts once, and a ClickHouse outage mid-stream loses nothing.

Decisions come from replaying tests/data/replay/sample.jsonl under the shipped policy (no worker needed); each
test module gets its own topics, sink group, home and ClickHouse database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from pupilflow import children
from pupilflow.children import Child, http_get, settings_env
from pupilflow.topics import ensure_topics
from schemas.decisions import Decision
from schemas.events import DataFlow, Fact
from schemas.policy import Policy
from schemas.settings import Settings, Topics
from sinks.clickhouse import connect, split_dsn
from sinks.heads import CHAIN_HEADS_FILE, read_heads_file, read_heads_topic
from sinks.migrate import migrate
from streams.replay import Rejected, parse_lines, replay_lines

from .conftest import REPO, free_port, metric_value, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

SAMPLE = REPO / "tests" / "data" / "replay" / "sample.jsonl"


@dataclass
class Sample:
    """What replaying the sample gives: the decisions and the facts, in arrival order."""

    decisions: list[Decision]
    facts: list[Fact]

    @property
    def fact_ids(self) -> set[str]:
        return {fact.event_id for fact in self.facts}


def replay_sample(policy: Policy) -> Sample:
    lines = SAMPLE.read_text().splitlines()
    facts = [e for _, e in parse_lines(lines) if not isinstance(e, Rejected | DataFlow)]
    return Sample(replay_lines(lines, policy).decisions, facts)


def audit_settings(base: Settings, home: Path, *, dsn: str | None = None) -> Settings:
    """Settings with topics, sink group, metrics port, home and database of their own."""
    suffix = uuid.uuid4().hex[:8]
    prefix = f"{base.topics.flows.split('.')[0]}-audit-{suffix}"
    names = ("flows", "facts", "decisions", "violations", "dlq", "checkpoints", "changelog", "chain_heads")
    server_dsn, database = split_dsn(base.clickhouse_dsn)
    settings = base.model_copy(
        update={
            "home": home,
            "sink_group": f"{prefix}-sink",
            "sink_metrics_port": free_port(),
            "sink_batch_max_seconds": 0.2,
            "clickhouse_dsn": dsn or f"{server_dsn.rstrip('/')}/{database}_audit_{suffix}",
            "topics": Topics.model_validate({**{name: f"{prefix}.{name}" for name in names}, "partitions": 2}),
        }
    )
    ensure_topics(settings)
    return settings


def send(settings: Settings, sample: Sample, extra_facts: tuple[bytes, ...] = ()) -> None:
    """Facts to the facts topic keyed like the connectors key them, decisions keyed by their first subject."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all")
    try:
        for fact in sample.facts:
            producer.send(settings.topics.facts, key=fact.partition_key(), value=fact.model_dump_json().encode())
        for raw in extra_facts:
            producer.send(settings.topics.facts, key=b"P1", value=raw)
        for decision in sample.decisions:
            producer.send(
                settings.topics.decisions, key=decision.subject_ids[0].encode(), value=decision.to_json_bytes()
            )
        producer.flush()
    finally:
        producer.close()


def count(client: Any, sql: str, **parameters: Any) -> int:
    return int(client.query(sql, parameters=parameters).result_rows[0][0])


def landed(client: Any, sample: Sample) -> bool:
    return count(client, "SELECT count() FROM decisions FINAL") >= len(sample.decisions) and count(
        client, "SELECT uniqExact(event_id) FROM facts"
    ) >= len(sample.fact_ids)


def run_verify(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`pupilflow verify` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pupilflow.cli", "verify", *args],
        cwd=REPO,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


@dataclass
class Trail:
    """A sample landed by a real sink: its settings, a client on its database, and what was sent."""

    settings: Settings
    client: Any
    sample: Sample


@pytest.fixture(scope="module")
def trail(
    kafka: Settings, clickhouse: Any, register: Policy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trail]:
    """The replay sample sent to Kafka and landed by `pupilflow sink` in a database of its own (sink stopped)."""
    settings = audit_settings(kafka, tmp_path_factory.mktemp("audit-home"))
    client = connect(settings.clickhouse_dsn)
    migrate(client)
    sample = replay_sample(register)
    send(settings, sample, extra_facts=(b'{"kind": "consent_given", "event_id": "half"}',))
    sink = children.sink(settings, settings.home / "sink.log").start()
    try:
        assert sink.proc is not None
        # Below the worker's CPU priority (`PUPILFLOW_SINK_NICE`), unless this test already runs lower still.
        assert os.getpriority(os.PRIO_PROCESS, sink.proc.pid) == max(
            settings.sink_nice, os.getpriority(os.PRIO_PROCESS, 0)
        )
        wait_until(lambda: landed(client, sample), timeout=90, what=f"the sample in ClickHouse\n{sink.tail()}")
        wait_until(lambda: count(client, "SELECT count() FROM dead_letters") >= 1, what="the unreadable fact")
    finally:
        assert sink.stop() == 0, sink.tail()
    yield Trail(settings, client, sample)
    client.command(f"DROP DATABASE IF EXISTS {client.database}")


def test_decisions_disclosures_violations_and_facts_land(trail: Trail) -> None:
    client, sample = trail.client, trail.sample
    assert count(client, "SELECT count() FROM decisions FINAL") == len(sample.decisions)
    assert count(client, "SELECT count() FROM decisions WHERE row_hash = '' OR prev_hash = ''") == 0
    disclosures = sum(len(d.disclosures) or len(d.subject_ids) for d in sample.decisions)
    assert count(client, "SELECT count() FROM disclosures FINAL") == disclosures
    violations = [d for d in sample.decisions if d.verdict == "violation"]
    assert violations
    assert count(client, "SELECT count() FROM violations FINAL") == len(violations)
    assert count(client, "SELECT count() FROM facts FINAL") == len(sample.fact_ids)
    kinds = {row[0] for row in client.query("SELECT DISTINCT kind FROM facts").result_rows}
    assert {"consent_given", "sharing_agreement", "notice_version"} <= kinds
    letter = client.query("SELECT source_topic, stage, raw FROM dead_letters").result_rows
    assert letter == [(trail.settings.topics.facts, "sink", '{"kind": "consent_given", "event_id": "half"}')]


def test_the_subject_access_query_answers_from_disclosures(trail: Trail) -> None:
    decision = next(d for d in trail.sample.decisions if d.verdict == "violation" and d.disclosures)
    subject = decision.disclosures[0]
    rows = trail.client.query(
        "SELECT occurred_at, recipient, categories, purpose, verdict, reasons, explanation"
        " FROM disclosures FINAL WHERE subject_id = {subject:String} ORDER BY occurred_at DESC",
        parameters={"subject": subject.subject_id},
    ).result_rows
    assert (decision.recipient, decision.categories, decision.purpose, subject.verdict, subject.reasons) in [
        (r[1], r[2], r[3], r[4], r[5]) for r in rows
    ]


def test_chain_heads_are_checkpointed_to_the_topic_and_the_file(trail: Trail) -> None:
    settings = trail.settings
    from_topic = read_heads_topic(settings.kafka_bootstrap, settings.topics.chain_heads)
    from_file = read_heads_file(settings.home / CHAIN_HEADS_FILE)
    assert from_topic == from_file
    assert sum(head.rows_in_chain for head in from_topic.values()) == len(trail.sample.decisions)
    for head in from_topic.values():
        last = trail.client.query(
            "SELECT kafka_offset, row_hash FROM decisions WHERE kafka_partition = {p:UInt32}"
            " ORDER BY kafka_offset DESC LIMIT 1",
            parameters={"p": head.partition},
        ).result_rows
        assert last == [(head.offset, head.row_hash)]


def test_a_clean_trail_verifies(trail: Trail) -> None:
    done = run_verify(trail.settings)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit trail intact" in done.stdout
    assert f"{len(trail.sample.decisions)} rows in 2 partitions" in done.stdout
    assert "2 of 2 checkpointed heads matched" in done.stdout


def test_a_redelivered_trail_counts_once_and_still_verifies(trail: Trail) -> None:
    settings, client = trail.settings, trail.client
    before = count(client, "SELECT count() FROM decisions")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","))
    try:
        admin.delete_groups([settings.sink_group])  # the next sink reads every topic from the start again
    finally:
        admin.close()
    sink = children.sink(settings, settings.home / "sink-again.log").start()
    try:
        wait_until(
            lambda: count(client, "SELECT count() FROM decisions") >= 2 * before,
            timeout=90,
            what=f"the re-delivered decisions\n{sink.tail()}",
        )
    finally:
        assert sink.stop() == 0, sink.tail()
    assert count(client, "SELECT count() FROM decisions FINAL") == len(trail.sample.decisions)
    assert count(client, "SELECT count() FROM disclosures FINAL") == sum(
        len(d.disclosures) or len(d.subject_ids) for d in trail.sample.decisions
    )
    assert count(client, "SELECT count() FROM facts FINAL") == len(trail.sample.fact_ids)
    # Every re-delivered row is identical to the first one, chain links included.
    distinct = "SELECT count() FROM (SELECT DISTINCT * EXCEPT inserted_at FROM decisions)"
    assert count(client, distinct) == len(trail.sample.decisions)
    done = run_verify(settings)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.stack
@pytest.mark.timeout(600)
def test_clickhouse_stopped_for_30s_mid_stream_loses_nothing(kafka: Settings, register: Policy, tmp_path: Path) -> None:
    from pupilflow import stack

    http_port, tcp_port = free_port(), free_port()
    dsn = f"http://default:@127.0.0.1:{http_port}/pupilflow_audit_outage"
    settings = audit_settings(kafka, tmp_path, dsn=dsn).model_copy(update={"clickhouse_tcp_port": tcp_port})
    stack.up(settings, ["clickhouse"])
    sink: Child | None = None
    try:
        client = connect(settings.clickhouse_dsn)
        migrate(client)
        sample = replay_sample(register)
        half = len(sample.decisions) // 2
        first, second = Sample(sample.decisions[:half], sample.facts), Sample(sample.decisions[half:], [])
        sink = children.sink(settings, tmp_path / "sink.log").start()
        send(settings, first)
        wait_until(lambda: landed(client, first), timeout=90, what="the first half")

        stack.down(settings, ["clickhouse"])
        send(settings, second)  # decided while the audit store is down
        down_since = time.monotonic()
        metrics_url = f"http://127.0.0.1:{settings.sink_metrics_port}/metrics"
        wait_until(
            lambda: metric_value(http_get(metrics_url) or "", "pupilflow_sink_retries_total") >= 1,
            timeout=30,
            what="the sink to notice ClickHouse is gone",
        )
        time.sleep(max(0.0, 30 - (time.monotonic() - down_since)))
        assert sink.alive(), sink.tail()
        stack.up(settings, ["clickhouse"])

        client = connect(settings.clickhouse_dsn)
        wait_until(lambda: landed(client, sample), timeout=120, what=f"everything after the outage\n{sink.tail()}")
        assert count(client, "SELECT count() FROM decisions FINAL") == len(sample.decisions)
        assert sink.stop() == 0, sink.tail()
        done = run_verify(settings)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        if sink is not None:
            sink.stop()
        stack.down(settings, ["clickhouse"])


def test_verify_without_any_heads_refuses_with_a_clear_message(trail: Trail, tmp_path: Path) -> None:
    topics = trail.settings.topics
    no_heads = topics.model_copy(update={"chain_heads": f"{topics.decisions}.no-heads"})
    elsewhere = trail.settings.model_copy(update={"home": tmp_path, "topics": no_heads})
    done = run_verify(elsewhere)
    assert done.returncode == 2
    assert "no checkpointed chain heads" in done.stderr
