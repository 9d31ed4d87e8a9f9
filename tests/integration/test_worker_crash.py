"""A bug in deciding stops the worker loudly (non-zero exit) and loses nothing: the flow is judged after restart."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from pupilflow import children
from pupilflow.children import settings_env
from schemas.settings import Settings

from .conftest import read_topic
from .test_pipeline import a_flow

pytestmark = pytest.mark.kafka

CRASHING_WORKER = textwrap.dedent(
    """
    import sys

    import streams.replay
    from pupilflow.cli import main

    def evaluate(*args, **kwargs):
        raise RuntimeError("a bug in the evaluator")

    streams.replay.evaluate = evaluate
    sys.exit(main(["worker"]))
    """
)


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


STALLING_WORKER = textwrap.dedent(
    """
    import asyncio
    import sys

    import streams.worker
    from pupilflow.cli import main

    commit = streams.worker.StreamWorker._commit
    stalled = []

    async def stalling_commit(self, *args):
        if not stalled:  # the first transaction of the process never finishes, as seen at broker start
            stalled.append(True)
            await self.producer.begin_transaction()
            while True:  # and shrugs off the watchdog's cancellation, as a Kafka request being retried does
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    if len(stalled) > 1:
                        raise  # the second: the process is shutting down
                    stalled.append(True)
        await commit(self, *args)

    streams.worker.StreamWorker._commit = stalling_commit
    sys.exit(main(["worker"]))
    """
)


def test_a_stalled_transaction_restarts_the_worker_which_then_decides_the_flow_once(isolated: Settings) -> None:
    script = isolated.home / "stalling_worker.py"
    script.write_text(STALLING_WORKER)
    flow = a_flow(91)
    from producers.emitter import Emitter

    with Emitter(isolated.kafka_bootstrap, isolated.topics) as emitter:
        emitter.emit(flow)
    env = settings_env(isolated) | {"PUPILFLOW_WORKER_STALL_SECONDS": "2"}
    log = isolated.home / "stalling_worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        decided = read_topic(isolated, isolated.topics.decisions, count=2, timeout=25)  # a second would be a double
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    output = log.read_text(errors="replace")
    assert "did not commit within 2s" in output, output[-3000:]
    assert "restarting from the last commit" in output
    assert [json.loads(r.value)["flow_event_id"] for r in decided] == [flow.event_id], output[-3000:]
    assert proc.returncode == 0, output[-3000:]


ALWAYS_STALLING_WORKER = textwrap.dedent(
    """
    import asyncio
    import sys

    import streams.worker
    from pupilflow.cli import main

    async def never_commits(self, *args):
        await asyncio.sleep(3600)

    streams.worker.StreamWorker._commit = never_commits
    sys.exit(main(["worker"]))
    """
)


@pytest.mark.timeout(300)
def test_a_worker_that_never_commits_gives_up_after_five_restarts_in_a_row(isolated: Settings) -> None:
    script = isolated.home / "never_committing_worker.py"
    script.write_text(ALWAYS_STALLING_WORKER)
    from producers.emitter import Emitter

    with Emitter(isolated.kafka_bootstrap, isolated.topics) as emitter:
        emitter.emit(a_flow(92))
    env = settings_env(isolated) | {"PUPILFLOW_WORKER_STALL_SECONDS": "1"}
    log = isolated.home / "never_committing_worker.log"
    with log.open("w") as out:
        stopped = subprocess.run(
            [sys.executable, str(script)], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=240
        )
    output = log.read_text(errors="replace")
    assert stopped.returncode == 1, output[-3000:]
    assert output.count("did not commit within 1s") == 6
    assert "failed 6 times in a row; stopping the worker" in output
    assert read_topic(isolated, isolated.topics.decisions, count=1, timeout=3) == []


def test_a_worker_on_flows_and_facts_topics_of_different_partition_counts_refuses_to_start(isolated: Settings) -> None:
    # Arrival order is kept per partition number, so a broker-made or hand-made topic with another count would
    # silently let a flow overtake its subject's earlier facts.
    from kafka.admin import KafkaAdminClient, NewPartitions

    admin = KafkaAdminClient(bootstrap_servers=isolated.kafka_bootstrap.split(","))
    try:
        admin.create_partitions({isolated.topics.flows: NewPartitions(total_count=isolated.topics.partitions + 1)})
    finally:
        admin.close()
    done = subprocess.run(
        [sys.executable, "-m", "pupilflow.cli", "worker"],
        env=settings_env(isolated),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "must have the same number of partitions" in done.stderr
    assert isolated.topics.flows in done.stderr
