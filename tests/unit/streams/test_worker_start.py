"""How the worker sets up its Kafka clients (they run against a real broker in the integration tests)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

import streams.worker as worker_module
from schemas.errors import ServiceUnavailable
from schemas.policy import Policy
from schemas.settings import Settings
from streams.metrics import WorkerMetrics
from streams.worker import StreamWorker


def consumer_options(policy: Policy, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The options the worker gives its input consumer (which then finds no broker)."""
    given: dict[str, Any] = {}

    class Consumer:
        def __init__(self, **options: Any) -> None:
            given.update(options)

        async def start(self) -> None:
            raise KafkaConnectionError("no broker here")

    monkeypatch.setattr(worker_module, "AIOKafkaConsumer", Consumer)
    worker = StreamWorker(settings, policy, WorkerMetrics())
    try:
        with pytest.raises(ServiceUnavailable, match="cannot reach Kafka"):
            asyncio.run(worker.start())
    finally:
        worker.state.flows.close()
    return given


def test_the_broker_answers_a_worker_fetch_at_once_by_default(
    register: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = consumer_options(register, Settings(), monkeypatch)
    assert (options["fetch_min_bytes"], options["fetch_max_wait_ms"]) == (1, 20)
    assert options["isolation_level"] == "read_committed"


def test_how_much_a_worker_fetch_gathers_is_a_setting(register: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUPILFLOW_WORKER_FETCH_MIN_BYTES", "16384")
    assert consumer_options(register, Settings(), monkeypatch)["fetch_min_bytes"] == 16 * 1024


@pytest.mark.parametrize("size", [0, 4 * 1024 * 1024 + 1])
def test_a_fetch_size_out_of_range_is_refused(size: int) -> None:
    with pytest.raises(ValidationError, match="worker_fetch_min_bytes"):
        Settings(worker_fetch_min_bytes=size)
