"""A bug in deciding stops the worker loudly (non-zero exit) and loses nothing: the flow is judged after restart."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pupilflow import children
from pupilflow.children import settings_env
from pupilflow.topics import ensure_topics
from schemas.settings import Settings, Topics

from .conftest import free_port, read_topic
from .test_pipeline import a_flow

pytestmark = pytest.mark.kafka

CRASHING_WORKER = textwrap.dedent(
    """
    from pupilflow.commands.worker import serve
    from schemas.settings import Settings
    from streams.app import build_app
    from streams.metrics import WorkerMetrics

    def decide(flow, now):
        raise RuntimeError("a bug in the evaluator")

    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    raise SystemExit(serve(build_app(settings, decide, WorkerMetrics())))
    """
)


@pytest.fixture
def isolated(kafka: Settings, tmp_path: Path) -> Settings:
    """This test's own topics and group, so the session's worker never sees its flow."""
    prefix = f"{kafka.topics.flows.split('.')[0]}-crash"
    names = {name: f"{prefix}.{name}" for name in ("flows", "facts", "decisions", "violations", "dlq")}
    settings = kafka.model_copy(
        update={
            "home": tmp_path,
            "consumer_group": f"{prefix}-worker",
            "worker_web_port": free_port(),
            "topics": Topics(**names, partitions=1),
        }
    )
    ensure_topics(settings)
    return settings


def test_an_exception_while_deciding_stops_the_worker_with_an_error_and_keeps_the_flow(isolated: Settings) -> None:
    script = isolated.home / "crashing_worker.py"
    script.write_text(CRASHING_WORKER)
    flow = a_flow(90)
    from producers.emitter import Emitter

    with Emitter(isolated.kafka_bootstrap, isolated.topics) as emitter:
        emitter.emit(flow)

    log = isolated.home / "crashing_worker.log"
    with log.open("w") as out:
        crashed = subprocess.run(
            [sys.executable, str(script)], env=settings_env(isolated), stdout=out, stderr=subprocess.STDOUT, timeout=120
        )
    output = log.read_text(errors="replace")
    assert crashed.returncode == 1, output[-3000:]
    assert "stopping the worker" in output
    assert read_topic(isolated, isolated.topics.decisions, count=1, timeout=3) == []

    # A fixed worker in the same group picks the flow up: it was never committed as done.
    worker = children.worker(isolated, isolated.home / "worker.log").start()
    try:
        decided = read_topic(isolated, isolated.topics.decisions, count=1, timeout=60)
    finally:
        worker.stop()
    assert [json.loads(r.value)["flow_event_id"] for r in decided] == [flow.event_id]
