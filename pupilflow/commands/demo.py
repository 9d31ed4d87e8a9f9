"""`pupilflow demo`: bring the local stack up and push a few flows through the whole pipeline."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

from producers.emitter import Emitter
from pupilflow import children, stack
from pupilflow.demo_flows import demo_flows
from pupilflow.topics import ensure_topics
from schemas.errors import ServiceUnavailable
from schemas.settings import Settings
from sinks.clickhouse import connect
from sinks.migrate import migrate

METRIC_PREFIXES = ("pupilflow_decisions_total", "pupilflow_violations_total", "pupilflow_dead_letters_total")


def register(subparsers: Any) -> None:
    """Add the `demo` sub-command."""
    parser = subparsers.add_parser("demo", help="start the local stack and run flows end to end")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for decisions in ClickHouse")
    parser.set_defaults(func=run)


def say(message: str) -> None:
    """Progress for the person watching."""
    print(f"demo: {message}", flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Stack up, topics, migrations, worker + sink, emit flows, show the rows and the counters."""
    report = stack.up(settings, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(report.text())
    ensure_topics(settings)
    client = connect(settings.clickhouse_dsn)
    migrate(client)

    logs = settings.home / "logs"
    worker = children.worker(settings, logs / "worker.log")
    sink = children.sink(settings, logs / "sink.log")
    say("starting the stream worker and the ClickHouse sink ...")
    try:
        worker.start()
        sink.start()
        return _push_and_show(args, settings, client)
    finally:
        say("stopping the worker and the sink (the stack stays up: `pupilflow stack down` stops it)")
        sink.stop()
        worker.stop()


def _prometheus_sees(settings: Settings, at_least: int, timeout: float = 15.0) -> float | None:
    """What Prometheus reports for the worker's decision counter once it has scraped it (None: no Prometheus)."""
    url = f"http://127.0.0.1:{settings.prometheus_port}/api/v1/query?query=sum(pupilflow_decisions_total)"
    deadline = time.monotonic() + timeout
    value: float | None = None
    while time.monotonic() < deadline:
        body = children.http_get(url)
        if body is None:
            return None
        result = json.loads(body).get("data", {}).get("result", [])
        value = float(result[0]["value"][1]) if result else 0.0
        if value >= at_least:
            break
        time.sleep(1)
    return value


def _push_and_show(args: argparse.Namespace, settings: Settings, client: Any) -> int:
    run_id = uuid.uuid4().hex[:8]
    flows = demo_flows(run_id)
    with Emitter(settings.kafka_bootstrap, settings.topics, client_id="pupilflow-demo") as emitter:
        for flow in flows:
            emitter.emit(flow)
        # One malformed event, to show where bad input goes.
        emitter.send_raw(settings.topics.flows, b"demo", f'{{"event_id": "demo-{run_id}-broken"'.encode())
    say(f"emitted {len(flows)} flows and 1 malformed event (run {run_id}); waiting for ClickHouse ...")

    pattern = f"demo-{run_id}-%"
    deadline = time.monotonic() + args.timeout
    while True:
        landed = client.query(
            "SELECT count() FROM decisions FINAL WHERE flow_event_id LIKE {p:String}", parameters={"p": pattern}
        ).result_rows[0][0]
        if landed >= len(flows):
            break
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"only {landed}/{len(flows)} decisions reached ClickHouse in {args.timeout:.0f}s")
        time.sleep(0.5)

    rows = client.query(
        "SELECT flow_event_id, recipient, purpose, verdict, arrayStringConcat(reasons, ',') FROM decisions FINAL"
        " WHERE flow_event_id LIKE {p:String} ORDER BY flow_event_id",
        parameters={"p": pattern},
    ).result_rows
    print(f"\n{'flow':<22} {'recipient':<16} {'purpose':<16} {'verdict':<10} reasons")
    for event_id, recipient, purpose, verdict, reasons in rows:
        print(f"{event_id:<22} {recipient:<16} {purpose:<16} {verdict:<10} {reasons}")
    dead = client.query(
        "SELECT error FROM dead_letters FINAL WHERE raw LIKE {p:String}", parameters={"p": f"%demo-{run_id}-broken%"}
    ).result_rows
    for (error,) in dead:
        print(f"dead letter: {error}")

    metrics = children.http_get(f"http://127.0.0.1:{settings.worker_web_port}/metrics") or ""
    print("\nworker /metrics:")
    for line in metrics.splitlines():
        # Every reason code is exported from the start; show the ones this run moved.
        if line.startswith(METRIC_PREFIXES) and not (line.startswith("pupilflow_violations") and line.endswith(" 0.0")):
            print(f"  {line}")

    scraped = _prometheus_sees(settings, sum(1 for row in rows))
    if scraped is not None:
        print(f"\nPrometheus scraped the worker: sum(pupilflow_decisions_total) = {scraped:g}")

    print(
        "\nwhere to look:\n"
        f"  ClickHouse   {settings.clickhouse_dsn}  (tables: decisions, violations, dead_letters)\n"
        f"  worker       http://127.0.0.1:{settings.worker_web_port}/metrics\n"
        f"  sink         http://127.0.0.1:{settings.sink_metrics_port}/metrics\n"
        f"  Prometheus   http://127.0.0.1:{settings.prometheus_port} (when installed)\n"
        f"  logs         {settings.home / 'logs'}"
    )
    return 0
