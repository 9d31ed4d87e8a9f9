"""The stream worker's Prometheus metrics, in a registry of its own (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from schemas.decisions import ReasonCode

# Decision latency spans sub-millisecond local runs to seconds under back-pressure.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    """Counters and histograms the worker exposes on `/metrics`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events_in = Counter(
            "pupilflow_events_in", "Events read from Kafka, by kind.", ["kind"], registry=self.registry
        )
        self.decisions = Counter(
            "pupilflow_decisions", "Decisions made, by verdict.", ["verdict"], registry=self.registry
        )
        self.violations = Counter(
            "pupilflow_violations",
            "Violations found, by leading reason code.",
            ["reason"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "pupilflow_dead_letters",
            "Messages sent to the dead-letter topic, by stage.",
            ["stage"],
            registry=self.registry,
        )
        self.decision_latency = Histogram(
            "pupilflow_decision_latency_seconds",
            "From the event's emitted_at to its decision being sent.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Pre-bind the labels we know so dashboards see zeros instead of missing series.
        for verdict in ("allowed", "violation"):
            self.decisions.labels(verdict=verdict)
        # Every reason starts at 0, so `increase()` in alert rules sees the first violation after a restart.
        for reason in ReasonCode:
            self.violations.labels(reason=reason.value)
        self.dead_letters.labels(stage="validate")
        self.events_in.labels(kind="flow")
