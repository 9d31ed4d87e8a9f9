"""`pupilflow sink`: land decisions, facts and dead letters in ClickHouse, checkpointing the chain heads."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from prometheus_client import start_http_server

from schemas.settings import Settings
from sinks.clickhouse import connect
from sinks.metrics import SinkMetrics
from sinks.migrate import migrate
from sinks.writer import sink_consumer, subscribed_sink


def register(subparsers: Any) -> None:
    """Add the `sink` sub-command."""
    parser = subparsers.add_parser("sink", help="run the ClickHouse audit sink (serves /metrics)")
    parser.add_argument("--loglevel", default="info")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Consume decisions, facts and dead letters into ClickHouse until SIGTERM/SIGINT."""
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    client = connect(settings.clickhouse_dsn)
    migrate(client)
    metrics = SinkMetrics()
    start_http_server(settings.sink_metrics_port, addr="127.0.0.1", registry=metrics.registry)
    consumer = sink_consumer(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sink, heads = subscribed_sink(consumer, client, settings, metrics, settings.home)
    logging.getLogger(__name__).info("sink running; /metrics on 127.0.0.1:%d", settings.sink_metrics_port)
    try:
        sink.run(stop.is_set)
    finally:
        consumer.close()
        heads.close()
    return 0
