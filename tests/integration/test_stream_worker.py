"""The stream worker on the real broker: the policy engine's decisions, exactly once, across kills and late facts."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from producers.emitter import Emitter
from pupilflow import children
from pupilflow.children import Child, http_get
from schemas.events import parse_event
from schemas.policy import Policy
from schemas.settings import Settings
from streams.replay import replay_lines

from .conftest import committed, metric_value, wait_until

pytestmark = pytest.mark.kafka

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "replay" / "sample.jsonl"


def handled(settings: Settings) -> float:
    """Input messages the worker has handled: valid events plus dead letters."""
    text = http_get(f"http://127.0.0.1:{settings.worker_web_port}/metrics") or ""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("pupilflow_events_in_total{", "pupilflow_dead_letters_total{")):
            total += float(line.rpartition(" ")[2])
    return total


@pytest.fixture
def worker(isolated: Settings) -> Iterator[Child]:
    child = children.worker(isolated, isolated.home / "worker.log").start()
    yield child
    child.stop()


def sample_lines() -> list[str]:
    return [line for line in SAMPLE.read_text().splitlines() if line.strip()]


def replayed(register: Policy) -> tuple[list[str], list[str]]:
    """The sample's lines, and the decisions `pupilflow replay` gives them as sorted JSON (what Kafka must hold)."""
    lines = sample_lines()
    return lines, sorted(json.dumps(json.loads(d.to_json_bytes())) for d in replay_lines(lines, register).decisions)


def route(settings: Settings, line: str) -> tuple[str, bytes]:
    """Where a connector would send the line; the sample's deliberately invalid lines go to the flows topic."""
    try:
        event = parse_event(line)
    except ValueError:
        return settings.topics.flows, b"invalid"
    topic = settings.topics.flows if event.kind == "flow" else settings.topics.facts
    return topic, event.partition_key()


def emit_lines(settings: Settings, lines: list[str], *, one_by_one: bool) -> None:
    """Send the events in file order; one by one waits for the worker to handle each before the next."""
    base = handled(settings)
    with Emitter(settings.kafka_bootstrap, settings.topics) as emitter:
        for number, line in enumerate(lines, start=1):
            topic, key = route(settings, line)
            emitter.send_raw(topic, key, line.encode())
            if one_by_one:
                emitter.flush()
                wait_until(
                    lambda n=number: handled(settings) >= base + n, timeout=30, interval=0.02, what=f"event {number}"
                )
        emitter.flush()


def decisions_in(settings: Settings, count: int) -> list[dict[str, Any]]:
    """The committed decisions, once there are at least `count` of them."""

    def enough() -> list[Any] | None:
        found = committed(settings, settings.topics.decisions, idle_ms=500)
        return found if len(found) >= count else None

    records = wait_until(enough, timeout=60, what=f"{count} decisions")
    return [json.loads(r.value) for r in records]


def test_the_replay_sample_through_kafka_gives_exactly_the_decisions_of_replay(
    isolated: Settings, worker: Child, register: Policy
) -> None:
    lines = sample_lines()
    expected = replay_lines(lines, register)
    emit_lines(isolated, lines, one_by_one=True)

    got = decisions_in(isolated, len(expected.decisions))
    want = [json.loads(d.to_json_bytes()) for d in expected.decisions]
    assert len(got) == len(want)
    key = json.dumps
    assert sorted(map(key, got)) == sorted(map(key, want))
    # The sample exercises late facts: some decisions supersede earlier ones.
    assert any(d["supersedes"] for d in got)


def test_a_burst_of_the_sample_ends_with_the_same_final_verdict_on_every_flow(
    isolated: Settings, worker: Child, register: Policy
) -> None:
    lines = sample_lines()
    expected = {d.flow_event_id: d for d in replay_lines(lines, register).final().values()}
    emit_lines(isolated, lines, one_by_one=False)
    wait_until(lambda: handled(isolated) >= len(lines), timeout=60, what="every event handled")

    final: dict[str, dict[str, Any]] = {}
    for decision in sorted(
        (json.loads(r.value) for r in committed(isolated, isolated.topics.decisions)), key=lambda d: d["revision"]
    ):
        final[decision["flow_event_id"]] = decision
    assert final.keys() == expected.keys()
    for flow_id, want in expected.items():
        got = final[flow_id]
        assert (got["verdict"], got["reasons"], got["disclosures"]) == (
            want.verdict,
            want.reasons,
            [json.loads(v.model_dump_json()) for v in want.disclosures],
        ), flow_id


def test_duplicates_are_decided_once_and_malformed_input_is_dead_lettered(
    isolated: Settings, worker: Child, register: Policy
) -> None:
    lines = [line for line in sample_lines() if route(isolated, line)[1] != b"invalid"]
    flows = [line for line in lines if route(isolated, line)[0] == isolated.topics.flows]
    facts = [line for line in lines if route(isolated, line)[0] == isolated.topics.facts]
    with Emitter(isolated.kafka_bootstrap, isolated.topics) as emitter:
        for line in facts + flows + flows[:5]:  # five flows delivered twice
            event = parse_event(line)
            emitter.send_raw(emitter.topic_for(event), event.partition_key(), line.encode())
        emitter.send_raw(isolated.topics.flows, b"k1", b"{not json")
        emitter.send_raw(isolated.topics.flows, b"k2", json.dumps({"kind": "flow", "event_id": "x"}).encode())
        emitter.send_raw(isolated.topics.flows, b"k3", facts[0].encode())  # a fact on the flows topic
        emitter.flush()
    total = len(facts) + len(flows) + 5 + 3  # duplicates are handled (and counted) too
    wait_until(lambda: handled(isolated) >= total, timeout=60, what="every message handled")

    decided = [json.loads(r.value) for r in committed(isolated, isolated.topics.decisions)]
    first = [d for d in decided if d["revision"] == 0]
    unique = {parse_event(f).event_id for f in flows}
    assert sorted(d["flow_event_id"] for d in first) == sorted(unique)  # one first decision per flow
    violations = [json.loads(r.value) for r in committed(isolated, isolated.topics.violations)]
    assert len({(v["flow_event_id"], v["revision"]) for v in violations}) == len(violations)
    letters = [json.loads(r.value) for r in committed(isolated, isolated.topics.dlq)]
    assert sorted(letter["key"] for letter in letters) == ["k1", "k2", "k3"]
    errors = {letter["key"]: letter["error"] for letter in letters}
    assert "Invalid JSON" in errors["k1"]
    assert "invalid event" in errors["k2"]
    assert "occurred_at" in errors["k2"]
    assert "on the flows topic" in errors["k3"]
    text = http_get(f"http://127.0.0.1:{isolated.worker_web_port}/metrics") or ""
    assert metric_value(text, "pupilflow_duplicates_total") == len(flows) + 5 - len(unique)
    assert metric_value(text, "pupilflow_dead_letters_total", stage="validate") == 3


def test_a_worker_killed_mid_stream_resumes_without_losing_or_doubling_a_decision(
    isolated: Settings, register: Policy
) -> None:
    lines, want = replayed(register)
    log = isolated.home / "worker.log"
    first = children.worker(isolated, log).start()
    emit_lines(isolated, lines[: len(lines) // 2], one_by_one=True)
    assert first.proc is not None
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)

    second = children.worker(isolated, log).start()
    try:
        # The restarted worker first re-judges what the killed one had not committed.
        time.sleep(2)
        emit_lines(isolated, lines[len(lines) // 2 :], one_by_one=True)
        got = decisions_in(isolated, len(want))
    finally:
        second.stop()
    assert sorted(map(json.dumps, got)) == want


def test_a_restarted_worker_resumes_from_the_changelog_not_the_consumer_groups_offsets(
    isolated: Settings, register: Policy
) -> None:
    lines, want = replayed(register)
    log = isolated.home / "worker.log"
    first = children.worker(isolated, log).start()
    try:
        emit_lines(isolated, lines[: len(lines) // 2], one_by_one=True)
    finally:
        first.stop()

    admin = KafkaAdminClient(bootstrap_servers=isolated.kafka_bootstrap)
    try:
        # The group is given the positions too, for monitoring: at a clean stop, all of them.
        group = isolated.consumer_group
        given = admin.list_group_offsets({group: None}).get(group, {})
        reader = KafkaConsumer(bootstrap_servers=isolated.kafka_bootstrap)
        try:
            ends = reader.end_offsets(list(given))
        finally:
            reader.close()
        assert given
        assert {tp: o.offset for tp, o in given.items()} == ends
        # Without the group's offsets a worker resuming from them would judge the first half again.
        admin.delete_groups([group])
    finally:
        admin.close()

    second = children.worker(isolated, log).start()
    try:
        emit_lines(isolated, lines[len(lines) // 2 :], one_by_one=True)
        got = decisions_in(isolated, len(want))
        # Read again, the first half's flows would be caught as duplicates; its malformed lines dead-lettered twice.
        assert handled(isolated) == len(lines) - len(lines) // 2
    finally:
        second.stop()
    assert sorted(map(json.dumps, got)) == want
    malformed = sum(1 for line in lines if route(isolated, line)[1] == b"invalid")
    assert malformed
    assert len(committed(isolated, isolated.topics.dlq)) == malformed
