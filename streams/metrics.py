"""The stream worker's Prometheus metrics, in a registry of its own (no process-global state).

Every label set is bound up front or from a small closed vocabulary (event kinds, reason codes, recipient
groups, a capped set of connector names), and the bound children are cached, so counting an event costs a dict
lookup and never creates a series per event.
"""

from __future__ import annotations

import collections
import gc
import time
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.decisions import ReasonCode
from schemas.policy import RecipientGroup

# Decision latency spans sub-millisecond local runs to seconds under back-pressure.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

EVENT_KINDS = (
    "flow", "consent_given", "consent_withdrawn", "consent_refused", "objection_raised", "objection_withdrawn",
    "pupil_enrolled", "pupil_left", "birth_date_recorded", "court_order", "parental_responsibility",
    "care_order", "competence_assessed", "sharing_agreement", "agreement_terminated", "notice_version",
)  # fmt: skip
"""Every event kind of `schemas.events`, bound at start so dashboards see zeros."""

KNOWN_CONNECTORS = ("ctf", "synclog", "mailtrace", "consent", "mis")
"""The file connectors; connectors posting through the ingest API are bound as they first appear."""

UNREGISTERED = "unregistered"
"""The recipient group of a violation whose recipient the register does not know."""

MAX_CONNECTORS = 64
"""Connector names beyond this many share the label `other` (a misbehaving client cannot explode the series)."""


class WorkerMetrics:
    """Counters, gauges and histograms the worker exposes on `/metrics`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "pupilflow_events_in", "Valid events read from Kafka, by kind and connector.", ["kind", "connector"],
            registry=r,
        )  # fmt: skip
        self.decisions = Counter("pupilflow_decisions", "Decisions made, by verdict.", ["verdict"], registry=r)
        self.violations = Counter(
            "pupilflow_violations",
            "Violations found (first decisions and superseding ones), by leading reason code and recipient group.",
            ["reason", "group"],
            registry=r,
        )
        self.dead_letters = Counter(
            "pupilflow_dead_letters", "Messages sent to the dead-letter topic, by stage.", ["stage"], registry=r
        )
        self.supersessions = Counter(
            "pupilflow_supersessions",
            "Decisions superseded because a late fact changed the verdict, by the new verdict.",
            ["verdict"],
            registry=r,
        )
        self.duplicates = Counter("pupilflow_duplicates", "Re-delivered events recognised and skipped.", registry=r)
        self.sequence_gaps = Counter(
            "pupilflow_sequence_gaps",
            "Connector sequence numbers never received (possibly lost events), by connector.",
            ["connector"],
            registry=r,
        )
        self.sequence_missing = Gauge(
            "pupilflow_sequence_missing",
            "Sequence numbers below the highest seen not yet received (in flight or lost), by connector.",
            ["connector"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "pupilflow_consumer_lag", "Messages in Kafka not yet processed, by input topic.", ["topic"], registry=r
        )
        self.decision_latency = Histogram(
            "pupilflow_decision_latency_seconds",
            "From the event's emitted_at to its decision committed to Kafka.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.transaction_seconds = Histogram(
            "pupilflow_transaction_seconds",
            "Time to send and commit one transaction (decisions, changelog and input offsets).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.transaction_events = Histogram(
            "pupilflow_transaction_events",
            "Input messages per transaction.",
            buckets=(1, 10, 100, 1_000, 10_000),
            registry=r,
        )
        self.restored_keys = Gauge(
            "pupilflow_restored_state_keys", "Changelog keys restored at the last start.", registry=r
        )
        self.open_flows = Gauge(
            "pupilflow_open_flows", "Flows still inside the lateness window (re-evaluable).", registry=r
        )
        self.gc_pause = Histogram(
            "pupilflow_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector in the worker, by generation (every decision waits).",
            ["generation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._in: dict[tuple[str, str], Any] = {}
        self._violations: dict[tuple[str, str], Any] = {}
        self._gaps: dict[str, Any] = {}
        # Pre-bind the labels we know so dashboards see zeros instead of missing series, and `increase()` in
        # alert rules sees the first violation after a restart.
        for verdict in ("allowed", "violation"):
            self.decisions.labels(verdict=verdict)
            self.supersessions.labels(verdict=verdict)
        for group in (*get_args(RecipientGroup), UNREGISTERED):
            for reason in ReasonCode:
                self._violations[(reason.value, group)] = self.violations.labels(reason=reason.value, group=group)
        for stage in ("validate", "evaluate"):
            self.dead_letters.labels(stage=stage)
        for connector in KNOWN_CONNECTORS:
            self._bind_connector(connector)

    def _bind_connector(self, connector: str) -> str:
        if connector not in self._gaps:
            if len(self._gaps) >= MAX_CONNECTORS:
                connector = "other"
                if connector in self._gaps:
                    return connector
            self._gaps[connector] = self.sequence_gaps.labels(connector=connector)
            for kind in EVENT_KINDS:
                self._in[(kind, connector)] = self.events_in.labels(kind=kind, connector=connector)
        return connector

    def event_in(self, kind: str, connector: str, count: int = 1) -> None:
        """Count valid events of one kind from one connector."""
        child = self._in.get((kind, connector))
        if child is None:
            child = self._in[(kind, self._bind_connector(connector))]
        child.inc(count)

    def violation(self, reason: str, group: str, count: int = 1) -> None:
        """Count violations under their leading reason and the recipient's group."""
        child = self._violations.get((reason, group))
        if child is None:  # a group or code the register added after start
            child = self._violations[(reason, group)] = self.violations.labels(reason=reason, group=group)
        child.inc(count)

    def gap(self, connector: str, lost: int) -> None:
        """Count sequence numbers given up on as lost."""
        self._gaps[self._bind_connector(connector)].inc(lost)

    def add(self, tally: Tally) -> None:
        """Count what one committed transaction's batch holds."""
        for (kind, connector), count in tally.events_in.items():
            self.event_in(kind, connector, count)
        for verdict, count in tally.decisions.items():
            self.decisions.labels(verdict=verdict).inc(count)
        for (reason, group), count in tally.violations.items():
            self.violation(reason, group, count)
        for verdict, count in tally.supersessions.items():
            self.supersessions.labels(verdict=verdict).inc(count)
        for stage, count in tally.dead_letters.items():
            self.dead_letters.labels(stage=stage).inc(count)
        for connector, lost in tally.gaps.items():
            self.gap(connector, lost)
        if tally.duplicates:
            self.duplicates.inc(tally.duplicates)


class Tally:
    """What one batch adds to the worker's counters, kept until its transaction commits (`WorkerMetrics.add`).

    A batch whose transaction is abandoned is judged again by the restarted worker: counted as it was judged, its
    events, decisions and violations were counted twice.
    """

    __slots__ = ("dead_letters", "decisions", "duplicates", "events_in", "gaps", "supersessions", "violations")

    def __init__(self) -> None:
        self.events_in: collections.Counter[tuple[str, str]] = collections.Counter()
        """By (kind, connector)."""
        self.decisions: collections.Counter[str] = collections.Counter()
        """By verdict."""
        self.violations: collections.Counter[tuple[str, str]] = collections.Counter()
        """By (leading reason, recipient group)."""
        self.supersessions: collections.Counter[str] = collections.Counter()
        """By verdict."""
        self.dead_letters: collections.Counter[str] = collections.Counter()
        """By stage."""
        self.gaps: collections.Counter[str] = collections.Counter()
        """Sequence numbers given up on as lost, by connector."""
        self.duplicates = 0


class GcPauses:
    """Times each collection of Python's garbage collector into `WorkerMetrics.gc_pause` while installed."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._by_generation = [metrics.gc_pause.labels(generation=str(g)) for g in range(3)]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[min(int(info["generation"]), 2)].observe(time.perf_counter() - self._started)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)
