"""`pupilflow sink`: land decisions, facts and dead letters in ClickHouse, checkpointing the chain heads."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any

from kafka.admin import KafkaAdminClient
from prometheus_client import start_http_server

from pupilflow.topics import ensure_topics
from schemas.errors import RebalanceStalled
from schemas.settings import Settings
from sinks.clickhouse import connect
from sinks.metrics import SinkMetrics
from sinks.migrate import migrate
from sinks.writer import chain_heads, group_state, sink_consumer, subscribed_sink


def register(subparsers: Any) -> None:
    """Add the `sink` sub-command."""
    parser = subparsers.add_parser("sink", help="run the ClickHouse audit sink (serves /metrics)")
    parser.add_argument("--loglevel", default="info")
    parser.set_defaults(func=run)


def lower_priority(nice: int) -> None:
    """Run the calling thread, and every thread it starts from now on, at CPU nice value `nice` (never higher).

    The sink's rows can wait a moment; decisions and alerts should not. On a box shared with the stream worker
    the sink at 10 gave way to it: in five default `bench/pipeline.py` runs the worker decided 4,681-5,000 of
    5,000 flows/s offered (two kept up), against 3,863-4,816 in the four before with the sink at 0, and rows still
    reached ClickHouse within the 2 s target, if later: p99 1.58-1.90 s against 1.52-1.66 s (docs/streaming.md).
    Linux applies a nice value to one thread, and threads inherit their creator's. It counts only among processes
    of one scheduler group (a session's autogroup, a service's cgroup): where a process manager gives the sink a
    group of its own, weigh that group instead (systemd's `CPUWeight=`).
    """
    if nice > os.getpriority(os.PRIO_PROCESS, 0):
        os.setpriority(os.PRIO_PROCESS, 0, nice)


RESTARTS = 5
"""Consecutive stalled rebalances (each met with a fresh consumer) before the sink gives up (exit 1)."""


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Consume decisions, facts and dead letters into ClickHouse until SIGTERM/SIGINT; 1 when it gave up."""
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log = logging.getLogger(__name__)
    lower_priority(settings.sink_nice)  # before any thread starts: each inherits it
    client = connect(settings.clickhouse_dsn)
    migrate(client)
    ensure_topics(settings)  # a sink started before the worker would find nothing to subscribe to
    metrics = SinkMetrics()
    start_http_server(settings.sink_metrics_port, addr="127.0.0.1", registry=metrics.registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    heads = chain_heads(settings, settings.home)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","), client_id="pupilflow-sink-admin")
    stalls = 0
    try:
        while not stop.is_set():
            consumer = sink_consumer(settings)
            try:
                sink = subscribed_sink(
                    consumer, client, settings, metrics, heads, state=group_state(admin, settings.sink_group)
                )
                log.info("sink running; /metrics on 127.0.0.1:%d", settings.sink_metrics_port)
                try:
                    sink.run(stop.is_set)
                except RebalanceStalled as exc:
                    # Nothing is lost: the batch was flushed before the rebalance; offsets follow each insert.
                    stalls = 1 if sink.assigned_once else stalls + 1
                    if stalls > RESTARTS:
                        log.critical("%s; %d stalled rebalances in a row, stopping the sink", exc, stalls)
                        return 1
                    log.error("%s; rejoining with a fresh consumer (%d of %d)", exc, stalls, RESTARTS)
            finally:
                consumer.close()
    finally:
        admin.close()
        heads.close()
    return 0
