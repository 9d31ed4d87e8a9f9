"""The sink's consumer group on a real broker: one join at start, the group state its stall watch reads, and a
sink whose join answer never arrives rejoining with a fresh consumer."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient

from producers.emitter import Emitter
from pupilflow.children import settings_env
from pupilflow.topics import ensure_topics
from schemas.errors import ServiceUnavailable
from schemas.settings import Settings
from sinks.metrics import SinkMetrics
from sinks.writer import group_state, sink_consumer, subscribed_sink
from streams import builders as b

from .conftest import REPO, free_port, wait_until

pytestmark = [pytest.mark.kafka]


@pytest.fixture
def own_group(isolated: Settings) -> Settings:
    """This test's topics and a sink group of its own (the session's sink uses the session's group)."""
    settings = isolated.model_copy(update={"sink_group": f"{isolated.consumer_group}-sink"})
    ensure_topics(settings)
    return settings


def test_the_sink_joins_its_group_once_and_gets_every_partition(
    own_group: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    isolated = own_group
    # Two joins at every start (the first with no partitions known) is where kafka-python lost a SyncGroup answer.
    caplog.set_level(logging.INFO, logger="kafka.coordinator")
    consumer = sink_consumer(isolated)
    try:
        sink = subscribed_sink(consumer, None, isolated, SinkMetrics(), None)
        t = isolated.topics
        wanted = {(t.decisions, p) for p in range(t.partitions)} | {(t.facts, p) for p in range(t.partitions)}
        wanted.add((t.dlq, 0))

        def assigned() -> bool:
            sink.poll_once(timeout_ms=100)
            return {(tp.topic, tp.partition) for tp in consumer.assignment()} == wanted

        wait_until(assigned, timeout=30, what="the sink's partitions")
        for _ in range(5):
            sink.poll_once(timeout_ms=100)  # a second join would start within these polls
        joins = [r for r in caplog.records if "Successfully joined group" in r.getMessage()]
        assert len(joins) == 1, [r.getMessage() for r in joins]
        assert sink.assigned_once
    finally:
        consumer.close()


def test_group_state_reports_what_the_broker_says(own_group: Settings) -> None:
    isolated = own_group
    admin = KafkaAdminClient(bootstrap_servers=isolated.kafka_bootstrap.split(","))
    consumer = sink_consumer(isolated)
    try:
        state = group_state(admin, isolated.sink_group)
        assert state() in ("Dead", "Empty")  # no member has joined yet
        sink = subscribed_sink(consumer, None, isolated, SinkMetrics(), None)

        def joined() -> Any:
            sink.poll_once(timeout_ms=100)
            return consumer.assignment() and state() == "Stable"

        wait_until(joined, timeout=30, what="a stable group")
    finally:
        consumer.close()
        admin.close()


def test_a_sink_for_topics_that_do_not_exist_says_which(isolated: Settings) -> None:
    settings = isolated.model_copy(
        update={"topics": isolated.topics.model_copy(update={"decisions": f"{isolated.topics.decisions}-missing"})}
    )
    consumer = sink_consumer(settings)
    try:
        with pytest.raises(ServiceUnavailable, match=r"do not exist in Kafka \(run `pupilflow topics`\)") as raised:
            subscribed_sink(consumer, None, settings, SinkMetrics(), None)
        assert settings.topics.decisions in str(raised.value)
    finally:
        consumer.close()


LOSES_ITS_FIRST_JOIN_ANSWER = textwrap.dedent(
    """
    import sys

    import kafka.coordinator.base as base
    from pupilflow.cli import main

    original = base.BaseCoordinator._do_join_and_sync_async
    lost = []

    async def answer_lost_once(self):
        answer = await original(self)  # the broker completes the join and takes the assignment...
        if not lost:
            lost.append(True)
            print("test: the first join's answer is lost", flush=True)
            await self._manager._net.sleep(3600)  # ...but this consumer never takes the answer
        return answer

    base.BaseCoordinator._do_join_and_sync_async = answer_lost_once
    sys.exit(main(["sink"]))
    """
)


@pytest.mark.clickhouse
@pytest.mark.timeout(180)
def test_a_sink_that_never_gets_its_join_answer_rejoins_and_lands_what_follows(
    own_group: Settings, clickhouse: Any
) -> None:
    # What CI saw from kafka-python 3.0.12: the broker finished the rebalance, the consumer never heard.
    settings = own_group.model_copy(update={"sink_metrics_port": free_port()})
    script = settings.home / "sink_losing_its_join_answer.py"
    script.write_text(LOSES_ITS_FIRST_JOIN_ANSWER)
    env = settings_env(settings) | {"PUPILFLOW_SINK_REBALANCE_STALL_SECONDS": "3"}
    log = settings.home / "sink.log"
    fact = b.agreement("2026-09-01T00:00Z", "dfe", event_id=f"agreement-{uuid.uuid4()}")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        with Emitter(settings.kafka_bootstrap, settings.topics) as emitter:
            emitter.emit(fact)
        query = "SELECT count() FROM facts WHERE event_id = {e:String}"
        wait_until(
            lambda: clickhouse.query(query, parameters={"e": fact.event_id}).result_rows[0][0],
            timeout=90,
            what="the fact in ClickHouse",
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    output = log.read_text(errors="replace")
    assert "the first join's answer is lost" in output, output[-3000:]
    assert "while the broker has the group Stable" in output, output[-3000:]
    assert "rejoining with a fresh consumer (1 of 5)" in output, output[-3000:]
    assert proc.returncode == 0, output[-3000:]
