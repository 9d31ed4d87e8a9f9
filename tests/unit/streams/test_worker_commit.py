"""The worker's Kafka transaction, step by step, against a stand-in producer (the real one: integration tests)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from schemas.policy import Policy
from schemas.settings import Settings
from streams.metrics import WorkerMetrics
from streams.positions import decode_positions, encode_positions, positions_key
from streams.worker import StreamWorker


class Batch:
    """A stand-in for aiokafka's BatchBuilder: keeps what is appended."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: int | None) -> object:
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class Producer:
    """Records each call; the broker answers the records 20 ms after they are sent.

    It has no `send_offsets_to_transaction`: the input positions are a changelog record of the transaction, and a
    commit that still committed offsets to the consumer group would fail here.
    """

    def __init__(self, refusal: Exception | None) -> None:
        self.refusal = refusal
        self.calls: list[str] = []
        self.sent: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}

    async def begin_transaction(self) -> None:
        self.calls.append("begin")

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        self.calls.append("send")
        self.sent.setdefault((topic, partition), []).extend(batch.records)
        answer = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.02, self._answer, answer)
        return answer

    def _answer(self, answer: asyncio.Future[None]) -> None:
        self.calls.append("records acknowledged" if self.refusal is None else "records refused")
        if self.refusal is None:
            answer.set_result(None)
        else:
            answer.set_exception(self.refusal)

    async def commit_transaction(self) -> None:
        self.calls.append("commit")


POSITIONS = {TopicPartition("flows", 0): 9, TopicPartition("facts", 0): 4}


def commit(register: Policy, producer: Producer) -> list[float]:
    """One `_commit` of a decision and the input positions through `producer`: when it committed."""
    settings = Settings()
    worker = StreamWorker(settings, register, WorkerMetrics())
    worker.producer = producer  # type: ignore[assignment]
    worker._partitions = {settings.topics.decisions: 1, settings.topics.changelog: 1}
    committed_at: list[float] = []
    out = [(settings.topics.decisions, b"p-1", b"{}")]
    changes = [(b"s:p-1", b"{}"), (positions_key(worker.group), encode_positions(POSITIONS))]
    try:
        asyncio.run(asyncio.wait_for(worker._commit(out, changes, committed_at, []), timeout=5))
    finally:
        worker.state.flows.close()
    return committed_at


def test_the_input_positions_are_a_changelog_record_of_the_transaction_committed_once_all_are_acknowledged(
    register: Policy,
) -> None:
    producer = Producer(refusal=None)
    committed_at = commit(register, producer)
    # EndTxn only once the broker has every record: aiokafka itself would not wait for them.
    assert producer.calls == ["begin", "send", "send", "records acknowledged", "records acknowledged", "commit"]
    assert len(committed_at) == 2
    settings = Settings()
    changelog = producer.sent[(settings.topics.changelog, 0)]
    key = positions_key(settings.consumer_group)
    assert [decode_positions(value or b"") for k, value in changelog if k == key] == [POSITIONS]


def test_records_the_broker_refuses_fail_the_transaction_before_it_commits(register: Policy) -> None:
    producer = Producer(refusal=RuntimeError("refused"))
    with pytest.raises(RuntimeError, match="refused"):
        commit(register, producer)
    assert producer.calls[:4] == ["begin", "send", "send", "records refused"]
    assert "commit" not in producer.calls
