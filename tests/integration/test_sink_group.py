"""The sink's consumer group on a real broker: one join at start, and the group state its stall watch reads."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient

from pupilflow.topics import ensure_topics
from schemas.errors import ServiceUnavailable
from schemas.settings import Settings
from sinks.metrics import SinkMetrics
from sinks.writer import group_state, sink_consumer, subscribed_sink

from .conftest import wait_until

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
