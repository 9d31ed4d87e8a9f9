"""The emitter on a real broker: flows and facts land on their own topics, keyed by their subject."""

from __future__ import annotations

import json

import pytest

from producers.emitter import Emitter
from schemas.errors import ServiceUnavailable
from schemas.settings import Settings
from streams import builders as b

from .conftest import read_topic

pytestmark = pytest.mark.kafka


def test_flows_and_facts_go_to_their_topics_keyed_by_subject(isolated: Settings) -> None:
    kafka = isolated
    flow = b.flow("2025-03-03T09:00Z", "sims", "mis_sync", ["identity"], subjects=["emit-p1"], event_id="emit-f1")
    fact = b.consent(
        "2025-03-01T09:00Z", "emit-p2", "peripatetic-music", "music_tuition", ["identity"], event_id="emit-c1"
    )
    agreement = b.agreement("2025-01-01T00:00Z", "emit-recipient", event_id="emit-a1")
    with Emitter(kafka.kafka_bootstrap, kafka.topics) as emitter:
        assert emitter.emit_all([flow, fact, agreement]) == 3

    flows = {r.value: r.key for r in read_topic(kafka, kafka.topics.flows, count=1_000, timeout=5)}
    facts = {r.value: r.key for r in read_topic(kafka, kafka.topics.facts, count=1_000, timeout=5)}
    by_id = {json.loads(v)["event_id"]: k for v, k in {**flows, **facts}.items()}
    assert {json.loads(v)["event_id"] for v in facts} >= {"emit-c1", "emit-a1"}
    assert "emit-f1" in {json.loads(v)["event_id"] for v in flows}
    assert by_id["emit-f1"] == b"emit-p1"
    assert by_id["emit-c1"] == b"emit-p2"
    assert by_id["emit-a1"] == b"emit-recipient"


def test_an_unreachable_broker_is_a_clear_error_not_a_hang() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1")
    with pytest.raises(ServiceUnavailable, match=r"127\.0\.0\.1:1"):
        Emitter(settings.kafka_bootstrap, settings.topics, bootstrap_timeout_ms=2000)
