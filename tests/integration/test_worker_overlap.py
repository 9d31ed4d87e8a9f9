"""The worker judges the next batch while a transaction commits, yet its transactions never overlap."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from pupilflow.children import http_get, settings_env
from schemas.settings import Settings

from .conftest import read_topic
from .test_pipeline import a_flow

pytestmark = pytest.mark.kafka

# Commits are slowed down by 300 ms (before the broker hears of the commit), so that flows keep arriving while
# one is in flight; every commit's start and end, and the moment each flow is judged, go to a log.
TRACING_WORKER = textwrap.dedent(
    """
    import asyncio
    import json
    import sys
    import time

    import streams.worker
    from pupilflow.cli import main

    trace = open(sys.argv[1], "a", buffering=1)
    commit = streams.worker.StreamWorker._commit
    handle = streams.worker.Judge.handle

    async def slow_commit(self, out, *rest):
        trace.write(json.dumps(["begin", time.monotonic(), len(out)]) + "\\n")
        await asyncio.sleep(0.3)
        await commit(self, out, *rest)
        trace.write(json.dumps(["end", time.monotonic(), len(out)]) + "\\n")

    def traced_handle(self, record, out):
        trace.write(json.dumps(["judge", time.monotonic()]) + "\\n")
        handle(self, record, out)

    streams.worker.StreamWorker._commit = slow_commit
    streams.worker.Judge.handle = traced_handle
    sys.exit(main(["worker"]))
    """
)


def test_batches_are_judged_during_a_commit_and_transactions_follow_one_another(isolated: Settings) -> None:
    script = isolated.home / "tracing_worker.py"
    script.write_text(TRACING_WORKER)
    trace = isolated.home / "trace.jsonl"
    log = isolated.home / "tracing_worker.log"
    from producers.emitter import Emitter

    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(trace)], env=settings_env(isolated), stdout=out, stderr=subprocess.STDOUT
        )
    flows = [a_flow(n) for n in range(200)]
    metrics_url = f"http://127.0.0.1:{isolated.worker_web_port}/metrics"
    try:
        # Served once its state is restored: flows sent before that would all be there for one first batch.
        deadline = time.monotonic() + 60
        while http_get(metrics_url) is None:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the worker never served /metrics"
            time.sleep(0.1)
        with Emitter(isolated.kafka_bootstrap, isolated.topics) as emitter:
            for at in range(0, len(flows), 10):  # 10 flows every 100 ms for 2 s: several commits' worth
                for flow in flows[at : at + 10]:
                    emitter.emit(flow)
                time.sleep(0.1)
        read_topic(isolated, isolated.topics.decisions, count=len(flows), timeout=60)
        time.sleep(0.5)  # the last commit is accounted for at the next poll
        metrics = http_get(metrics_url) or ""
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    decided = read_topic(isolated, isolated.topics.decisions, count=len(flows) + 1, timeout=3)  # one more: a double
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, output[-3000:]
    # Exactly once: every flow decided, none twice.
    assert sorted(json.loads(r.value)["flow_event_id"] for r in decided) == sorted(f.event_id for f in flows)

    events = [json.loads(line) for line in trace.read_text().splitlines()]
    begins = [e[1] for e in events if e[0] == "begin"]
    ends = [e[1] for e in events if e[0] == "end"]
    assert len(begins) >= 3, events  # the flows came in several transactions
    assert len(ends) == len(begins)
    # One transaction at a time, in order: each begins only after the one before it has committed.
    for previous_end, begin in zip(ends, begins[1:], strict=False):
        assert begin >= previous_end
    # And the worker did not sit idle meanwhile: flows were judged while a transaction was in flight.
    judged = [e[1] for e in events if e[0] == "judge"]
    during = [t for t in judged if any(b < t < e for b, e in zip(begins, ends, strict=True))]
    assert during, "no flow was judged while a transaction was committing"
    # Each transaction's time runs from its send to its commit (each slowed by 300 ms), not from its judging.
    count = metric_value(metrics, "pupilflow_transaction_seconds_count")
    assert count == len(ends)
    assert metric_value(metrics, "pupilflow_transaction_seconds_sum") >= 0.3 * count
    assert metric_value(metrics, 'pupilflow_transaction_seconds_bucket{le="0.25"}') == 0


def metric_value(text: str, name: str) -> float:
    """The value of one sample line of a Prometheus text exposition."""
    found = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")]
    assert found, f"{name} not in /metrics"
    return float(found[0])
