"""The worker's metrics exist before the first event, so alert rules see the first violation."""

from __future__ import annotations

from prometheus_client import generate_latest

from schemas.decisions import ReasonCode
from streams.metrics import WorkerMetrics


def test_every_reason_code_is_exposed_at_zero_from_the_start() -> None:
    text = generate_latest(WorkerMetrics().registry).decode()
    for reason in ReasonCode:
        assert f'pupilflow_violations_total{{reason="{reason.value}"}} 0.0' in text
    assert 'pupilflow_decisions_total{verdict="violation"} 0.0' in text


def test_two_workers_in_one_process_do_not_share_counters() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.decisions.labels(verdict="allowed").inc()
    assert second.decisions.labels(verdict="allowed")._value.get() == 0
