"""The audit sink's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

TABLES: tuple[str, ...] = ("decisions", "disclosures", "violations", "facts", "dead_letters")
"""The tables the sink writes, in the order it inserts a batch."""


@dataclass(frozen=True)
class TableMetrics:
    """One table's series, bound to its label once (the insert path does no label lookups)."""

    rows: Counter
    batch_rows: Histogram
    batch_seconds: Histogram


class SinkMetrics:
    """Rows written, batch sizes and insert latency per table, retries, rejected and duplicate messages."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Every series registered in `registry` (a fresh one by default), with each table's labels bound."""
        self.registry = registry or CollectorRegistry()
        self.rows = Counter("pupilflow_sink_rows", "Rows inserted, by table.", ["table"], registry=self.registry)
        self.batch_rows = Histogram(
            "pupilflow_sink_batch_rows",
            "Rows per insert, by table.",
            ["table"],
            buckets=(1, 10, 100, 1_000, 10_000, 100_000),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "pupilflow_sink_batch_seconds",
            "Time to insert one batch into one table.",
            ["table"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.retries = Counter(
            "pupilflow_sink_retries", "Batches retried because ClickHouse or Kafka failed.", registry=self.registry
        )
        self.rejected = Counter(
            "pupilflow_sink_rejected",
            "Messages the sink could not read (sent to dead_letters).",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "pupilflow_sink_duplicate_decisions",
            "Decision messages skipped because the same decision is already in the trail at another offset.",
            registry=self.registry,
        )
        self.table = {
            table: TableMetrics(
                self.rows.labels(table=table),
                self.batch_rows.labels(table=table),
                self.batch_seconds.labels(table=table),
            )
            for table in TABLES
        }
