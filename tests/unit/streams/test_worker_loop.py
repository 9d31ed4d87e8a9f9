"""The worker's loop around one transaction, with a stand-in consumer and commit (the real ones: integration tests)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiokafka import TopicPartition

from schemas.policy import Policy
from schemas.settings import Settings
from streams.builders import flow
from streams.metrics import Tally, WorkerMetrics
from streams.positions import decode_positions, positions_key
from streams.worker import Arrivals, StreamWorker, _InFlight

from .conftest import Record

MUSIC = ("peripatetic-music", "music_tuition", ["identity"])


class Consumer:
    """Hands out prepared polls; before the last one it lets the transaction in flight commit."""

    def __init__(self, polls: list[dict[TopicPartition, list[Record]]], commit: asyncio.Future[None]) -> None:
        self.polls = polls
        self.commit = commit
        self.calls = 0

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        self.calls += 1
        if self.polls:
            return self.polls.pop(0)
        if not self.commit.done():
            self.commit.set_result(None)
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return 0

    def highwater(self, tp: TopicPartition) -> int:
        return 0

    async def position(self, tp: TopicPartition) -> int:
        return 0

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        return int(time.time() * 1000) + 60_000

    def pause(self, *tps: TopicPartition) -> None:
        raise AssertionError("nothing here fills a buffer")

    resume = pause


def record(topic: str, offset: int, event_id: str) -> Record:
    event = flow("2024-06-03T10:00Z", *MUSIC, subjects=["p-1"], event_id=event_id)
    return Record(topic, 0, offset, int(time.time() * 1000), event.partition_key(), event.model_dump_json().encode())


def one_batch(policy: Policy, max_records: int) -> tuple[list[str], dict[Any, int], int]:
    """Flow f-1 judged while the transaction before commits, f-2 and f-3 polled meanwhile: what the next one holds.

    Returns the flow ids decided in it, the input positions it commits, and how many polls were made. Facts
    were read up to offset 4 before: the positions hold that partition too.
    """
    settings = Settings()
    flows, facts = TopicPartition(settings.topics.flows, 0), TopicPartition(settings.topics.facts, 0)
    worker = StreamWorker(settings, policy, WorkerMetrics(), max_records=max_records, poll_ms=5)
    sent: list[tuple[list[Any], dict[Any, int]]] = []

    async def commit(out: list[Any], changes: list[tuple[bytes, bytes]], at: list[float], legs: Any) -> None:
        positions = [decode_positions(value) for key, value in changes if key == positions_key(worker.group)]
        assert len(positions) == 1, changes
        sent.append((out, positions[0]))
        at.extend((time.time(), time.monotonic()))

    worker._commit = commit  # type: ignore[method-assign]
    polls = [{flows: [record(flows.topic, 7, "f-2")]}, {flows: [record(flows.topic, 8, "f-3")]}]

    async def scenario() -> int:
        before: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.5, lambda: before.done() or before.set_result(None))
        consumer = Consumer(polls, before)
        worker.consumer = consumer  # type: ignore[assignment]
        worker.inputs = [flows, facts]
        worker._arrivals = Arrivals(worker.inputs, group_of=lambda tp: tp.partition)
        worker._positions = {flows: 6, facts: 4}
        now = (time.time(), time.monotonic())
        worker._in_flight = _InFlight(
            commit=before,
            since=now[1],
            events=3,
            emitted=[],
            tally=Tally(),
            committed_at=list(now),
            positions=dict(worker._positions),
        )
        await worker.process([record(flows.topic, 6, "f-1")])
        assert worker.committed == 1  # the transaction before, accounted for
        assert worker._in_flight is not None
        await worker._in_flight.commit
        return consumer.calls

    calls = asyncio.run(scenario())
    worker.state.flows.close()
    assert len(sent) == 1
    out, offsets = sent[0]
    decided = [json.loads(value or b"") for topic, _, value in out if topic == settings.topics.decisions]
    return [d["flow_event_id"] for d in decided], offsets, calls


def test_flows_that_arrive_while_the_transaction_before_commits_join_the_next_one(register: Policy) -> None:
    decided, offsets, polls = one_batch(register, max_records=2_000)
    assert decided == ["f-1", "f-2", "f-3"]
    topics = Settings().topics
    assert offsets == {TopicPartition(topics.flows, 0): 9, TopicPartition(topics.facts, 0): 4}
    assert polls == 3  # two with flows, the third while it committed


def test_a_batch_stops_taking_flows_once_it_holds_max_records(register: Policy) -> None:
    decided, offsets, polls = one_batch(register, max_records=2)
    assert decided == ["f-1", "f-2"]  # f-3 waits for the next batch
    topics = Settings().topics
    assert offsets == {TopicPartition(topics.flows, 0): 8, TopicPartition(topics.facts, 0): 4}
    assert polls == 1


def turns_while_judging(policy: Policy, *, in_flight: bool) -> list[float]:
    """Judge 20 records of 0.4 ms each (a stand-in clock): when, by that clock, another task got the event loop."""
    settings = Settings()
    worker = StreamWorker(settings, policy, WorkerMetrics())
    now = [0.0]
    worker.clock = lambda: now[0]

    def handle(record: Any, out: list[Any]) -> None:
        now[0] += 0.0004

    worker.judge.handle = handle  # type: ignore[method-assign]
    turns: list[float] = []

    async def scenario() -> None:
        if in_flight:
            pending: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            worker._in_flight = _InFlight(
                commit=pending, since=0.0, events=1, emitted=[], tally=Tally(), committed_at=[], positions={}
            )
        judging = True

        async def transaction() -> None:  # stands for the commit in flight, waiting for its turns
            while judging:
                turns.append(now[0])
                await asyncio.sleep(0)

        other = asyncio.ensure_future(transaction())
        await asyncio.sleep(0)
        records = [record(settings.topics.flows, n, f"f-{n}") for n in range(20)]
        await worker._judge(records, [], {})
        judging = False
        await other

    try:
        asyncio.run(scenario())
    finally:
        worker.state.flows.close()
    return [at for at in turns if 0 < at < now[0]]


def test_a_transaction_in_flight_gets_the_event_loop_after_each_millisecond_of_judging(register: Policy) -> None:
    turns = turns_while_judging(register, in_flight=True)
    # After every third record (1.2 ms): each of the commit's round trips waits at most that long for judging.
    assert turns == pytest.approx([0.0012 * k for k in range(1, 7)])


def test_with_no_transaction_in_flight_a_batch_is_judged_without_a_turn(register: Policy) -> None:
    assert turns_while_judging(register, in_flight=False) == []


def counted(policy: Policy, *, commits: bool) -> tuple[dict[str, float], dict[str, float]]:
    """One flow judged and sent: the event and decision counters while its transaction is in flight, and after it."""
    settings = Settings()
    metrics = WorkerMetrics()
    worker = StreamWorker(settings, policy, metrics)

    def totals() -> dict[str, float]:
        found = {"events": 0.0, "decisions": 0.0}
        for family in metrics.registry.collect():
            name = {"pupilflow_events_in": "events", "pupilflow_decisions": "decisions"}.get(family.name)
            if name is not None:
                found[name] += sum(s.value for s in family.samples if s.name.endswith("_total"))
        return found

    async def scenario() -> tuple[dict[str, float], dict[str, float]]:
        outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def commit(out: list[Any], changes: list[Any], committed_at: list[float], legs: list[Any]) -> None:
            await outcome
            committed_at.extend((time.time(), time.monotonic()))

        worker._commit = commit  # type: ignore[method-assign]
        worker.consumer = Consumer([], outcome)  # type: ignore[assignment]
        await worker.process([record(settings.topics.flows, 0, "f-1")])
        await asyncio.sleep(0)
        during = totals()
        if commits:
            outcome.set_result(None)
            await worker._settle()
        else:
            outcome.set_exception(RuntimeError("the broker fenced this producer"))
            with pytest.raises(RuntimeError, match="fenced"):
                await worker._settle()
        return during, totals()

    try:
        return asyncio.run(scenario())
    finally:
        worker.state.flows.close()


def test_events_and_decisions_are_counted_when_their_transaction_commits(register: Policy) -> None:
    during, after = counted(register, commits=True)
    assert during == {"events": 0.0, "decisions": 0.0}
    assert after == {"events": 1.0, "decisions": 1.0}


def test_an_abandoned_transaction_leaves_the_counters_for_the_restarted_worker_to_move(register: Policy) -> None:
    # The restarted worker judges the same events again: counting them here as well would count them twice.
    during, after = counted(register, commits=False)
    assert during == after == {"events": 0.0, "decisions": 0.0}
