"""The worker's input positions as a changelog record, committed in the transaction of the state they go with.

Kept in the changelog rather than committed to the consumer group inside the transaction: a commit is then
three broker round trips (AddPartitionsToTxn, Produce, EndTxn) instead of also AddOffsetsToTxn and
TxnOffsetCommit, and the records never wait on the broker's check that the offsets' partition joined the
transaction. The state and the positions it was built up to are still committed together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiokafka import TopicPartition

POSITIONS = b"p:"
"""The changelog key kind of input positions (`p:<consumer group>`); the state's own kinds are other letters."""


def positions_key(group: str) -> bytes:
    """The changelog key of one consumer group's input positions."""
    return POSITIONS + group.encode()


def encode_positions(positions: Mapping[TopicPartition, int]) -> bytes:
    """The next offset to read of every input partition, as compact JSON: `{topic: {partition: offset}}`."""
    by_topic: dict[str, dict[str, int]] = {}
    for tp, offset in positions.items():
        by_topic.setdefault(tp.topic, {})[str(tp.partition)] = offset
    return json.dumps(by_topic, sort_keys=True, separators=(",", ":")).encode()


def decode_positions(value: bytes) -> dict[TopicPartition, int]:
    """The positions `encode_positions` wrote; ValueError, naming what is wrong, for anything else."""
    try:
        by_topic = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"input positions in the changelog are not JSON: {exc}") from exc
    if not isinstance(by_topic, dict):
        raise ValueError(f"input positions in the changelog are not a JSON object: {value[:200]!r}")
    positions: dict[TopicPartition, int] = {}
    for topic, offsets in by_topic.items():
        if not isinstance(offsets, dict):
            raise ValueError(f"input positions of topic {topic!r} are not a JSON object: {offsets!r}")
        for partition, offset in offsets.items():
            if not partition.isdigit() or type(offset) is not int or offset < 0:
                raise ValueError(f"input position of {topic!r} partition {partition!r} is not an offset: {offset!r}")
            positions[TopicPartition(topic, int(partition))] = offset
    return positions
