"""The worker's Kafka transaction, step by step, against a stand-in producer (the real one: integration tests)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from schemas.policy import Policy
from schemas.settings import Settings
from streams.metrics import WorkerMetrics
from streams.worker import StreamWorker


class Batch:
    """A stand-in for aiokafka's BatchBuilder: counts what is appended."""

    def __init__(self) -> None:
        self.records = 0

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: int | None) -> object:
        self.records += 1
        return object()

    def record_count(self) -> int:
        return self.records


class Producer:
    """Records each call. The broker answers the records only once the input offsets have joined the transaction."""

    def __init__(self, refusal: Exception | None) -> None:
        self.refusal = refusal
        self.calls: list[str] = []
        self.answer: asyncio.Future[None] | None = None

    async def begin_transaction(self) -> None:
        self.calls.append("begin")

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        self.calls.append("send")
        self.answer = asyncio.get_running_loop().create_future()
        return self.answer

    async def send_offsets_to_transaction(self, offsets: dict[Any, int], group: str) -> None:
        self.calls.append("offsets")
        await asyncio.sleep(0.01)  # AddOffsetsToTxn, then TxnOffsetCommit
        # The records' answer comes only after the offsets are in: a commit that did not wait for it would come first.
        asyncio.get_running_loop().call_later(0.02, self._answer)

    def _answer(self) -> None:
        assert self.answer is not None
        self.calls.append("records acknowledged" if self.refusal is None else "records refused")
        if self.refusal is None:
            self.answer.set_result(None)
        else:
            self.answer.set_exception(self.refusal)

    async def commit_transaction(self) -> None:
        self.calls.append("commit")


def commit(register: Policy, producer: Producer) -> list[float]:
    """One `_commit` of a decision and its input offset through `producer`: when it committed."""
    settings = Settings()
    worker = StreamWorker(settings, register, WorkerMetrics())
    worker.producer = producer  # type: ignore[assignment]
    worker._partitions = {settings.topics.decisions: 1, settings.topics.changelog: 1}
    committed_at: list[float] = []
    out = [(settings.topics.decisions, b"p-1", b"{}")]
    offsets = {TopicPartition(settings.topics.flows, 0): 9}
    try:
        # Were the offsets added only once the records were acknowledged, this would wait for ever.
        asyncio.run(asyncio.wait_for(worker._commit(out, [], offsets, committed_at, []), timeout=5))
    finally:
        worker.state.flows.close()
    return committed_at


def test_the_input_offsets_join_the_transaction_while_its_records_are_on_their_way(register: Policy) -> None:
    producer = Producer(refusal=None)
    committed_at = commit(register, producer)
    # EndTxn only once the broker has every record: aiokafka itself would not wait for them.
    assert producer.calls == ["begin", "send", "offsets", "records acknowledged", "commit"]
    assert len(committed_at) == 2


def test_records_the_broker_refuses_fail_the_transaction_before_it_commits(register: Policy) -> None:
    producer = Producer(refusal=RuntimeError("refused"))
    with pytest.raises(RuntimeError, match="refused"):
        commit(register, producer)
    assert producer.calls == ["begin", "send", "offsets", "records refused"]
