"""`pupilflow sink`: land decisions and dead letters in ClickHouse."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from kafka import KafkaConsumer
from prometheus_client import start_http_server

from schemas.settings import Settings
from sinks.clickhouse import connect
from sinks.metrics import SinkMetrics
from sinks.migrate import migrate
from sinks.writer import AuditSink


def register(subparsers: Any) -> None:
    """Add the `sink` sub-command."""
    parser = subparsers.add_parser("sink", help="run the ClickHouse audit sink (serves /metrics)")
    parser.add_argument("--loglevel", default="info")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Consume decisions and dead letters into ClickHouse until SIGTERM/SIGINT."""
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    client = connect(settings.clickhouse_dsn)
    migrate(client)
    metrics = SinkMetrics()
    start_http_server(settings.sink_metrics_port, addr="127.0.0.1", registry=metrics.registry)
    consumer = KafkaConsumer(
        settings.topics.decisions,
        settings.topics.dlq,
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        group_id=settings.sink_group,
        client_id="pupilflow-sink",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Only committed transactions' decisions are part of the trail.
        isolation_level="read_committed",
        max_poll_interval_ms=600_000,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sink = AuditSink(
        consumer,
        client,
        settings.topics,
        metrics,
        max_rows=settings.sink_batch_max_rows,
        max_seconds=settings.sink_batch_max_seconds,
    )
    logging.getLogger(__name__).info("sink running; /metrics on 127.0.0.1:%d", settings.sink_metrics_port)
    try:
        sink.run(stop.is_set)
    finally:
        consumer.close()
    return 0
