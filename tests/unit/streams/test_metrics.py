"""The worker's metrics exist before the first event, so alert rules see the first violation; labels stay bounded."""

from __future__ import annotations

import gc

from prometheus_client import generate_latest

from schemas.decisions import ReasonCode
from streams.metrics import KNOWN_CONNECTORS, MAX_CONNECTORS, GcPauses, Tally, WorkerMetrics


def test_every_reason_code_is_exposed_at_zero_from_the_start_for_every_recipient_group() -> None:
    text = generate_latest(WorkerMetrics().registry).decode()
    for reason in ReasonCode:
        for group in ("statutory", "processor", "unregistered"):
            assert f'pupilflow_violations_total{{group="{group}",reason="{reason.value}"}} 0.0' in text
    assert 'pupilflow_decisions_total{verdict="violation"} 0.0' in text
    assert 'pupilflow_events_in_total{connector="ctf",kind="flow"} 0.0' in text


def test_two_workers_in_one_process_do_not_share_counters() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.decisions.labels(verdict="allowed").inc()
    assert second.decisions.labels(verdict="allowed")._value.get() == 0


def test_connector_names_beyond_the_cap_share_one_label() -> None:
    metrics = WorkerMetrics()
    for n in range(MAX_CONNECTORS + 20):
        metrics.event_in("flow", f"client-{n}")
    text = generate_latest(metrics.registry).decode()
    connectors = {
        line.split('connector="')[1].split('"')[0] for line in text.splitlines() if "events_in_total{" in line
    }
    assert len(connectors) == MAX_CONNECTORS + 1  # the cap, plus `other`
    overflow = MAX_CONNECTORS + 20 - (MAX_CONNECTORS - len(KNOWN_CONNECTORS))
    assert f'pupilflow_events_in_total{{connector="other",kind="flow"}} {overflow}.0' in text


def test_a_violation_is_counted_under_its_reason_and_group() -> None:
    metrics = WorkerMetrics()
    metrics.violation("NO_CONSENT", "processor")
    text = generate_latest(metrics.registry).decode()
    assert 'pupilflow_violations_total{group="processor",reason="NO_CONSENT"} 1.0' in text


def test_a_tally_adds_each_of_its_counts_to_its_counter() -> None:
    metrics, tally = WorkerMetrics(), Tally()
    tally.events_in[("flow", "synclog")] += 3
    tally.events_in[("consent_given", "client-1")] += 1
    tally.decisions["violation"] += 2
    tally.violations[("NO_CONSENT", "processor")] += 2
    tally.supersessions["allowed"] += 1
    tally.dead_letters["evaluate"] += 4
    tally.gaps["mis"] += 5
    tally.duplicates = 6
    metrics.add(tally)
    metrics.add(tally)
    text = generate_latest(metrics.registry).decode().splitlines()
    for line in (
        'pupilflow_events_in_total{connector="synclog",kind="flow"} 6.0',
        'pupilflow_events_in_total{connector="client-1",kind="consent_given"} 2.0',
        'pupilflow_decisions_total{verdict="violation"} 4.0',
        'pupilflow_decisions_total{verdict="allowed"} 0.0',
        'pupilflow_violations_total{group="processor",reason="NO_CONSENT"} 4.0',
        'pupilflow_supersessions_total{verdict="allowed"} 2.0',
        'pupilflow_dead_letters_total{stage="evaluate"} 8.0',
        'pupilflow_sequence_gaps_total{connector="mis"} 10.0',
        "pupilflow_duplicates_total 12.0",
    ):
        assert line in text


def test_gc_pauses_are_timed_by_generation_only_while_installed() -> None:
    metrics = WorkerMetrics()

    def full_collections() -> float:
        return metrics.registry.get_sample_value("pupilflow_gc_pause_seconds_count", {"generation": "2"}) or 0.0

    with GcPauses(metrics):
        gc.collect()
        gc.collect(0)
    assert full_collections() == 1
    assert (metrics.registry.get_sample_value("pupilflow_gc_pause_seconds_count", {"generation": "0"}) or 0) >= 1
    gc.collect()
    assert full_collections() == 1
