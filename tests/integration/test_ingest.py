"""The ingest API as `pupilflow ingest serve` runs it, on the real broker: a 202 means the events are in Kafka."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from producers.ingest import TokenStore
from pupilflow import children
from schemas.events import Event, Source
from schemas.settings import Settings
from streams import builders as b

from .conftest import committed, free_port, running

pytestmark = pytest.mark.kafka

CONNECTOR = "webhooks"


@dataclass
class Server:
    """A running ingest server, its settings and a client holding a token of `CONNECTOR`."""

    settings: Settings
    client: httpx.Client


@pytest.fixture
def server(isolated: Settings) -> Iterator[Server]:
    settings = isolated.model_copy(update={"ingest_port": free_port()})
    tokens = TokenStore.in_home(settings.home)
    token = tokens.issue(CONNECTOR)
    tokens.close()
    for _ in running(children.ingest(settings, settings.home / "ingest.log")):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.ingest_port}", headers=headers, timeout=60) as client:
            yield Server(settings, client)


def ours(event: Event) -> Event:
    return event.model_copy(update={"source": Source(connector=CONNECTOR, sequence=event.source.sequence)})


def on_topic(settings: Settings, topic: str) -> list[tuple[str, bytes]]:
    return [(json.loads(r.value)["event_id"], r.key) for r in committed(settings, topic)]


def test_single_and_batch_events_land_once_on_their_topics_keyed_like_the_emitter(server: Server) -> None:
    flow = ours(b.flow("2025-03-03T09:00Z", "sims", "mis_sync", ["identity"], subjects=["in-p1"], event_id="in-f1"))
    consent = ours(b.consent("2025-03-01T09:00Z", "in-p2", "music", "music_tuition", ["identity"], event_id="in-c1"))
    agreement = ours(b.agreement("2025-01-01T00:00Z", "in-recipient", event_id="in-a1"))
    bulk = ours(
        b.flow("2025-03-03T10:00Z", "dfe", "census", ["identity"], subjects=["in-p3", "in-p4"], event_id="in-f2")
    )

    single = server.client.post("/v1/events", content=flow.model_dump_json())
    assert (single.status_code, single.json()) == (202, {"accepted": 1, "duplicates": 0})
    batch = {"events": [json.loads(e.model_dump_json()) for e in (consent, agreement, bulk)]}
    response = server.client.post("/v1/events/batch", json=batch)
    assert (response.status_code, response.json()) == (202, {"accepted": 3, "duplicates": 0})

    topics = server.settings.topics
    assert sorted(on_topic(server.settings, topics.flows)) == [("in-f1", b"in-p1"), ("in-f2", b"in-p3")]
    assert sorted(on_topic(server.settings, topics.facts)) == [("in-a1", b"in-recipient"), ("in-c1", b"in-p2")]


def test_a_repeated_post_is_a_duplicate_and_not_sent_again(server: Server) -> None:
    flow = ours(b.flow("2025-03-03T09:00Z", "sims", "mis_sync", ["identity"], subjects=["dup-p1"], event_id="dup-f1"))
    first = server.client.post("/v1/events", content=flow.model_dump_json())
    again = server.client.post("/v1/events/batch", json={"events": [json.loads(flow.model_dump_json())]})
    assert first.json() == {"accepted": 1, "duplicates": 0}
    assert (again.status_code, again.json()) == (202, {"accepted": 0, "duplicates": 1})
    assert on_topic(server.settings, server.settings.topics.flows) == [("dup-f1", b"dup-p1")]


def test_an_invalid_batch_is_422_and_nothing_reaches_kafka(server: Server) -> None:
    good = ours(b.flow("2025-03-03T09:00Z", "sims", "mis_sync", ["identity"], subjects=["bad-p1"], event_id="ok-1"))
    bad = json.loads(good.model_dump_json()) | {"event_id": "bad-1", "categories": []}
    response = server.client.post("/v1/events/batch", json={"events": [json.loads(good.model_dump_json()), bad]})
    assert response.status_code == 422
    assert [e["path"] for e in response.json()["errors"]] == ["events.1.categories"]
    assert on_topic(server.settings, server.settings.topics.flows) == []


def test_readiness_and_the_openapi_document_are_served(server: Server) -> None:
    assert server.client.get("/readyz").json() == {"status": "ready"}
    assert "/v1/events/batch" in server.client.get("/openapi.json").json()["paths"]
