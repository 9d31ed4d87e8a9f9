"""Sequence numbers on the real stack: a backlog read unevenly raises no false gap, a real one is found."""

from __future__ import annotations

import re

import pytest

from producers.emitter import Emitter
from pupilflow import children
from pupilflow.children import http_get
from pupilflow.topics import ensure_topics
from schemas.events import Event, Source
from schemas.settings import Settings, Topics

from .conftest import wait_until
from .test_worker_faults import pupil_facts

pytestmark = pytest.mark.kafka

PUPILS = 10_000  # four facts each: a backlog of 40,000 numbers, four times the worker's patience
HOLE = range(20_000, 20_005)


def metric(settings: Settings, name: str) -> float:
    body = http_get(f"http://127.0.0.1:{settings.worker_web_port}/metrics") or ""
    found = re.findall(rf'^{name}\{{[^}}]*connector="backlog"[^}}]*\}} (\S+)$', body, re.MULTILINE)
    return sum(float(v) for v in found)


def numbered(events: list[Event], numbers: list[int]) -> list[Event]:
    return [
        e.model_copy(update={"source": Source(connector="backlog", sequence=n)})
        for e, n in zip(events, numbers, strict=True)
    ]


@pytest.mark.timeout(300)
def test_a_backlog_over_four_partitions_reports_only_the_numbers_that_never_came(isolated: Settings) -> None:
    prefix = f"{isolated.topics.flows.split('.')[0]}-seq"
    names = {k: f"{prefix}.{k}" for k in Topics.model_fields if k != "partitions"}
    settings = isolated.model_copy(update={"topics": Topics(**names, partitions=4)})
    ensure_topics(settings)
    facts: list[Event] = []
    for n in range(PUPILS):
        facts += pupil_facts(f"pupil-s{n:05d}")
    numbers = [n for n in range(len(facts) + len(HOLE) + 1) if n not in HOLE]  # one spare, for after
    backlog = numbered(facts, numbers[: len(facts)])
    with Emitter(settings.kafka_bootstrap, settings.topics) as emitter:
        emitter.emit_all(backlog)  # all of it waits in Kafka before the worker starts

    worker = children.worker(settings, settings.home / "worker.log").start()
    try:
        wait_until(
            lambda: metric(settings, "pupilflow_events_in_total") >= len(backlog), timeout=180, what="backlog read"
        )
        assert metric(settings, "pupilflow_sequence_gaps_total") == 0, "a hole was judged while catching up"
        assert metric(settings, "pupilflow_sequence_missing") == len(HOLE)

        # Caught up: the next number lets the worker judge the hole, which never filled in.
        with Emitter(settings.kafka_bootstrap, settings.topics) as emitter:
            emitter.emit_all(numbered(pupil_facts("pupil-s99999")[:1], [numbers[len(facts)]]))
        wait_until(lambda: metric(settings, "pupilflow_sequence_gaps_total") > 0, timeout=60, what="the hole judged")
        assert metric(settings, "pupilflow_sequence_gaps_total") == len(HOLE)
    finally:
        worker.stop()
    log = (settings.home / "worker.log").read_text(errors="replace")
    assert log.count("sequence numbers never arrived") == 1, log[-3000:]
