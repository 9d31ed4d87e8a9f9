"""Input positions kept in the changelog: their record, the restore that sets them aside, the seek that uses them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from schemas.errors import ConfigurationError
from schemas.policy import Policy
from schemas.settings import Settings
from streams.metrics import WorkerMetrics
from streams.positions import decode_positions, encode_positions, positions_key
from streams.worker import StreamWorker

from .conftest import Record

FLOWS0, FLOWS1, FACTS0 = TopicPartition("flows", 0), TopicPartition("flows", 1), TopicPartition("facts", 0)


def test_positions_read_back_as_written() -> None:
    positions = {FLOWS0: 17, FLOWS1: 0, FACTS0: 123_456_789_012}
    assert decode_positions(encode_positions(positions)) == positions
    assert encode_positions(positions) == b'{"facts":{"0":123456789012},"flows":{"0":17,"1":0}}'


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"flows": 3}', "of topic 'flows' are not a JSON object"),
        (b'{"flows": {"x": 3}}', "partition 'x' is not an offset"),
        (b'{"flows": {"0": -1}}', "is not an offset: -1"),
        (b'{"flows": {"0": "12"}}', "is not an offset: '12'"),
        (b'{"flows": {"0": true}}', "is not an offset: True"),
    ],
)
def test_anything_else_is_refused_naming_what_is_wrong(value: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        decode_positions(value)


@pytest.fixture
def worker(register: Policy) -> Iterator[StreamWorker]:
    made = StreamWorker(Settings(), register, WorkerMetrics())
    yield made
    made.state.flows.close()


def changelog_record(offset: int, key: bytes, value: bytes | None) -> Record:
    return Record("changelog", 0, offset, 0, key, value)


def test_the_restore_sets_this_groups_positions_aside_from_the_state(worker: StreamWorker) -> None:
    ours, renamed = positions_key(worker.group), positions_key("an-earlier-group")
    batch = [
        changelog_record(0, b"s:p-1", b"one"),
        changelog_record(1, ours, encode_positions({FLOWS0: 5})),
        changelog_record(2, renamed, encode_positions({FLOWS0: 900})),
        changelog_record(3, b"w:", b"7"),
        changelog_record(4, ours, encode_positions({FLOWS0: 8, FACTS0: 2})),  # the latest wins
    ]
    assert list(worker._state_records(batch)) == [(b"s:p-1", b"one"), (b"w:", b"7")]
    assert worker._resume == {FLOWS0: 8, FACTS0: 2}


def test_unreadable_positions_stop_the_restore_naming_where_they_are(worker: StreamWorker) -> None:
    batch = [changelog_record(41, positions_key(worker.group), b"{oops")]
    with pytest.raises(ConfigurationError, match=r"partition 0 offset 41: input positions .* not JSON"):
        list(worker._state_records(batch))


class Consumer:
    """A stand-in consumer: the group's committed offsets, and where each partition was sought."""

    def __init__(self, group: dict[TopicPartition, int]) -> None:
        self.group = group
        self.sought: dict[TopicPartition, int | str] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.refuse = 0
        self.takes = 0.0  # seconds a commit takes

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.group.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.sought[tp] = "beginning"

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(self.takes)
        if self.refuse:
            self.refuse -= 1
            raise CommitFailedError("the coordinator moved")
        self.commits.append(dict(offsets))


def test_inputs_resume_from_the_changelog_then_the_group_then_the_beginning(worker: StreamWorker) -> None:
    # The group's offsets lag the changelog's (they are committed after, for monitoring) or predate it.
    consumer = Consumer(group={FLOWS0: 3, FLOWS1: 11})
    worker.consumer = consumer  # type: ignore[assignment]
    worker.inputs = [FLOWS0, FLOWS1, FACTS0]
    worker._resume = {FLOWS0: 8}
    asyncio.run(worker._seek_inputs())
    assert consumer.sought == {FLOWS0: 8, FLOWS1: 11, FACTS0: "beginning"}
    # The next transaction's record covers every partition with a known position, not only those it read.
    assert worker._positions == {FLOWS0: 8, FLOWS1: 11}


@pytest.fixture
def consumer(worker: StreamWorker) -> Consumer:
    """The stand-in consumer `worker` gives its committed positions to."""
    made = Consumer(group={})
    worker.consumer = made  # type: ignore[assignment]
    return made


def test_the_group_is_given_committed_positions_at_most_once_a_second_and_again_after_a_failure(
    worker: StreamWorker, consumer: Consumer, caplog: pytest.LogCaptureFixture
) -> None:

    async def scenario() -> None:
        async def settle() -> None:
            if worker._sharing is not None:
                await worker._sharing

        worker._unshared = {FLOWS0: 1}
        await worker._share_positions()
        await settle()
        worker._unshared = {FLOWS0: 2}
        await worker._share_positions()  # within the second: held
        await settle()
        assert consumer.commits == [{FLOWS0: 1}]
        worker._shared_at -= 1.0
        consumer.refuse = 1
        await worker._share_positions()
        await settle()
        assert consumer.commits == [{FLOWS0: 1}]
        assert worker._unshared == {FLOWS0: 2}  # kept for the next try
        await worker._share_positions(force=True)  # stopping: given now, whatever the time since
        assert consumer.commits == [{FLOWS0: 1}, {FLOWS0: 2}]
        assert worker._unshared is None

    with caplog.at_level(logging.WARNING, logger="streams.worker"):
        asyncio.run(scenario())
    assert "not committed to consumer group pupilflow-worker (monitoring only)" in caplog.text


def test_a_newer_commit_is_not_overwritten_by_an_older_one_that_failed(
    worker: StreamWorker, consumer: Consumer
) -> None:
    consumer.refuse = 1

    async def scenario() -> Any:
        worker._unshared = {FLOWS0: 1}
        await worker._share_positions()
        worker._unshared = {FLOWS0: 2}  # a transaction committed while the group's commit was on its way
        assert worker._sharing is not None
        await worker._sharing
        return worker._unshared

    assert asyncio.run(scenario()) == {FLOWS0: 2}


def test_at_stop_the_latest_positions_are_given_after_the_commit_still_on_its_way(
    worker: StreamWorker, consumer: Consumer
) -> None:
    consumer.takes = 0.05

    async def scenario() -> None:
        worker._unshared = {FLOWS0: 1}
        await worker._share_positions()
        worker._unshared = {FLOWS0: 2}  # the last transaction committed meanwhile
        await worker._share_positions(force=True)

    asyncio.run(scenario())
    assert consumer.commits == [{FLOWS0: 1}, {FLOWS0: 2}]
