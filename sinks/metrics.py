"""The audit sink's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class SinkMetrics:
    """Rows written, batch sizes and insert latency, and retries while ClickHouse is unavailable."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.rows = Counter("pupilflow_sink_rows", "Rows inserted, by table.", ["table"], registry=self.registry)
        self.batch_rows = Histogram(
            "pupilflow_sink_batch_rows",
            "Rows per insert.",
            buckets=(1, 10, 100, 1_000, 10_000, 100_000),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "pupilflow_sink_batch_seconds",
            "Time to insert one batch.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.retries = Counter(
            "pupilflow_sink_retries", "Inserts retried because ClickHouse failed.", registry=self.registry
        )
        self.rejected = Counter(
            "pupilflow_sink_rejected",
            "Messages the sink could not read (sent to dead_letters).",
            registry=self.registry,
        )
        for table in ("decisions", "dead_letters"):
            self.rows.labels(table=table)
