"""Feeding a simulated school year into the running pipeline, in the order its events arrived.

The simulator writes every file and HTTP event up front, plus `arrivals.jsonl`: the order a real Trust's
systems would have produced them. The feed follows that order through the real code paths: each file is
moved into its connector's outbox and that connector runs over it (exactly once into Kafka); each run of
HTTP events is POSTed to the ingest API with the simulator's token.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from producers.filesource import FileConnector
from producers.simulator import SimRun, post_events
from pupilflow.commands.connect import file_format
from schemas.connector_maps import ConnectorMaps
from schemas.settings import Settings


@dataclass
class FeedSummary:
    """What the feed delivered: events by connector, files refused, records dead-lettered, HTTP duplicates."""

    events: Counter[str] = field(default_factory=Counter)
    files: int = 0
    files_rejected: int = 0
    files_skipped: int = 0
    dead_letters: int = 0
    http_posted: int = 0
    http_duplicates: int = 0


def feed(
    run: SimRun,
    staging: Path,
    outbox: Path,
    settings: Settings,
    maps: ConnectorMaps,
    ingest_url: str,
    token: str,
    progress: Callable[[str], None],
) -> FeedSummary:
    """Deliver the run's files and HTTP events in arrival order; returns what went where."""
    summary = FeedSummary()
    connectors: dict[str, FileConnector] = {}
    http_lines = run.http_events.read_bytes().splitlines(keepends=True)
    arrivals = [json.loads(line) for line in run.arrivals.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        for number, arrival in enumerate(arrivals, start=1):
            connector_id = arrival["connector"]
            if "file" in arrival:
                connector = connectors.get(connector_id)
                if connector is None:
                    connector = FileConnector(
                        connector_id,
                        file_format(connector_id, maps),
                        outbox / connector_id,
                        settings.kafka_bootstrap,
                        settings.topics,
                    )
                    connector.open()
                    connectors[connector_id] = connector
                source = staging / arrival["file"]
                shutil.move(str(source), connector.outbox / source.name)
                done = connector.run_once()
                summary.files += done.files_done
                summary.files_rejected += done.files_rejected
                summary.files_skipped += done.files_skipped
                summary.dead_letters += done.dead_letters
                summary.events[connector_id] += done.events
            else:
                first, last = arrival["lines"]
                posted = post_events(http_lines[first:last], ingest_url, token)
                summary.http_posted += posted.sent
                summary.http_duplicates += posted.duplicates
                summary.events[connector_id] += posted.sent - posted.duplicates
            if number % 10 == 0 or number == len(arrivals):
                progress(f"fed {number}/{len(arrivals)} arrivals: {sum(summary.events.values())} events so far")
    finally:
        for connector in connectors.values():
            connector.close()
    return summary
