"""One flow end to end on the real stack: kafka-python → stream worker → Kafka → sink → ClickHouse, and /metrics."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from producers.emitter import Emitter
from pupilflow.children import Child, http_get
from schemas.events import DataFlow, Source, Subject
from schemas.settings import Settings

from .conftest import metric_value, read_topic, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def a_flow(sequence: int, event_id: str | None = None) -> DataFlow:
    now = datetime.now(UTC)
    return DataFlow(
        event_id=event_id or f"flow-{uuid.uuid4()}",
        occurred_at=now,
        emitted_at=now,
        source=Source(connector="test-sims", sequence=sequence),
        recipient="dfe",
        subjects=[Subject(id=f"P{sequence:05d}")],
        categories=["identity", "attendance"],
        purpose="census",
        channel="dfe-collect",
    )


def worker_metrics(settings: Settings) -> str:
    return http_get(f"http://127.0.0.1:{settings.worker_web_port}/metrics") or ""


def decided(settings: Settings) -> float:
    text = worker_metrics(settings)
    return sum(metric_value(text, "pupilflow_decisions_total", verdict=v) for v in ("allowed", "violation"))


def rows_for(clickhouse: Any, event_id: str) -> int:
    result = clickhouse.query(
        "SELECT count() FROM decisions WHERE flow_event_id = {e:String}", parameters={"e": event_id}
    )
    return int(result.result_rows[0][0])


def test_a_flow_is_decided_and_lands_in_clickhouse_exactly_once(
    kafka: Settings, worker: Child, sink: Child, clickhouse: Any
) -> None:
    before = decided(kafka)
    flow = a_flow(1)
    with Emitter(kafka.kafka_bootstrap, kafka.topics) as emitter:
        emitter.emit(flow)

    wait_until(lambda: rows_for(clickhouse, flow.event_id), what="the decision row in ClickHouse")
    wait_until(lambda: decided(kafka) >= before + 1, timeout=10, what="the decision counter")
    row = clickhouse.query(
        "SELECT verdict, recipient, subject_ids, source_connector, payload FROM decisions"
        " WHERE flow_event_id = {e:String}",
        parameters={"e": flow.event_id},
    ).result_rows
    assert len(row) == 1
    verdict, recipient, subject_ids, connector, payload = row[0]
    assert (recipient, subject_ids, connector) == ("dfe", ["P00001"], "test-sims")
    assert json.loads(payload)["flow_event_id"] == flow.event_id
    assert verdict in {"allowed", "violation"}
    assert decided(kafka) == before + 1
    text = worker_metrics(kafka)
    assert metric_value(text, "pupilflow_decision_latency_seconds_count") >= 1


def test_a_redelivered_flow_is_still_one_row(kafka: Settings, worker: Child, sink: Child, clickhouse: Any) -> None:
    flow = a_flow(2)
    with Emitter(kafka.kafka_bootstrap, kafka.topics) as emitter:
        emitter.emit(flow)
        emitter.flush()
        emitter.emit(flow)
    # Both copies are decided; the audit store keeps one row for the one decision id.
    wait_until(lambda: rows_for(clickhouse, flow.event_id), what="the decision row")
    seen = read_topic(kafka, kafka.topics.decisions, count=1_000_000, timeout=5)
    copies = [r for r in seen if json.loads(r.value)["flow_event_id"] == flow.event_id]
    assert copies, "the decision never reached the decisions topic"
    final = clickhouse.query(
        "SELECT count() FROM decisions FINAL WHERE flow_event_id = {e:String}", parameters={"e": flow.event_id}
    ).result_rows[0][0]
    assert final == 1


def test_malformed_messages_go_to_the_dlq_with_a_reason_and_the_worker_keeps_going(
    kafka: Settings, worker: Child, sink: Child, clickhouse: Any
) -> None:
    bad_json = b'{"event_id": "oops", '
    bad_field = a_flow(3).model_dump(mode="json")
    bad_field["occurred_at"] = "2026-03-02T09:30:00"  # no timezone: must be rejected, not guessed
    bad_field["record_count"] = -4
    good = a_flow(4)
    with Emitter(kafka.kafka_bootstrap, kafka.topics) as emitter:
        emitter.send_raw(kafka.topics.flows, b"P00003", bad_json)
        emitter.send_raw(kafka.topics.flows, b"P00003", json.dumps(bad_field).encode())
        emitter.emit(good)

    letters = [json.loads(r.value) for r in read_topic(kafka, kafka.topics.dlq, count=2, timeout=60)]
    by_raw = {letter["raw"]: letter for letter in letters}
    assert by_raw[bad_json.decode()]["error"].startswith("invalid event")
    field_error = next(letter["error"] for letter in letters if "record_count" in letter["raw"])
    assert "occurred_at" in field_error
    assert "record_count" in field_error
    assert all(letter["topic"] == kafka.topics.flows and letter["offset"] >= 0 for letter in letters)

    wait_until(lambda: rows_for(clickhouse, good.event_id), what="the good flow after the bad ones")
    assert worker.alive()
    dead = wait_until(
        lambda: clickhouse.query("SELECT count() FROM dead_letters FINAL").result_rows[0][0] >= 2,
        what="dead letters in ClickHouse",
    )
    assert dead
    text = worker_metrics(kafka)
    assert metric_value(text, "pupilflow_dead_letters_total", stage="validate") >= 2
