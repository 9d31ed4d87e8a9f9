"""Chain heads checkpointed outside ClickHouse: a compacted Kafka topic keyed by partition, and a JSON file.

Someone able to rewrite the whole `decisions` table could also rebuild its hash chain; they cannot also
rewrite these, so `pupilflow verify` compares the last row of each partition with its checkpointed head.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas.errors import ServiceUnavailable
from sinks.chain import Head

CHAIN_HEADS_FILE = "chain-heads.json"
"""The heads file's name under `settings.home`."""


def read_heads_file(path: Path) -> dict[int, Head]:
    """The heads in a chain-heads JSON file (an object keyed by partition); ValueError when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of chain heads keyed by partition")
    heads = {}
    for value in data.values():
        if not isinstance(value, dict):
            raise ValueError(f"{path}: not a chain head: {value!r}")
        head = Head.from_json(value)
        heads[head.partition] = head
    return heads


def write_heads_file(path: Path, heads: list[Head]) -> None:
    """Merge `heads` into the file atomically (a temporary file renamed over it): a crash leaves old or new."""
    current = read_heads_file(path) if path.exists() else {}
    current.update({head.partition: head for head in heads})
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({str(p): current[p].to_json() for p in sorted(current)}, indent=2) + "\n"
    fd, temp = tempfile.mkstemp(prefix=".chain-heads.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_heads_topic(bootstrap: str, topic: str, timeout_s: float = 10.0) -> dict[int, Head]:
    """The latest head per partition in the compacted heads topic (empty when the topic has none)."""
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            enable_auto_commit=False,
            group_id=None,
            request_timeout_ms=int(timeout_s * 1000) + 1000,
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except Exception as exc:  # kafka-python raises several unrelated types for "not reachable"
        raise ServiceUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return {}
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        heads: dict[int, Head] = {}
        while any(consumer.position(tp) < end[tp] for tp in assigned):
            for records in consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
                for record in records:
                    if record.value is None:
                        continue
                    head = Head.from_json(json.loads(record.value))
                    heads[head.partition] = head
        return heads
    finally:
        consumer.close()


class HeadCheckpoints:
    """Sends chain heads to the compacted topic (waiting for the broker's ack) and to the JSON file."""

    def __init__(self, producer: Any, bootstrap: str, topic: str, path: Path, timeout_s: float = 30.0) -> None:
        """Checkpoint to `topic` on `bootstrap` through `producer`, and to the file at `path`."""
        self._producer = producer
        self._bootstrap = bootstrap
        self._topic = topic
        self._path = path
        self._timeout = timeout_s

    @classmethod
    def connect(cls, bootstrap: str, topic: str, path: Path) -> HeadCheckpoints:
        """Checkpoints through a new idempotent producer that waits for every in-sync replica."""
        producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","), acks="all", enable_idempotence=True, client_id="pupilflow-sink"
        )
        return cls(producer, bootstrap, topic, path)

    def publish(self, heads: list[Head]) -> None:
        """Checkpoint `heads`; raises when the broker did not take them (the caller retries the batch)."""
        futures = [
            self._producer.send(
                self._topic, key=str(head.partition).encode(), value=json.dumps(head.to_json()).encode()
            )
            for head in heads
        ]
        for future in futures:
            future.get(timeout=self._timeout)
        write_heads_file(self._path, heads)

    def latest(self) -> dict[int, Head]:
        """The latest head per partition, from the topic."""
        return read_heads_topic(self._bootstrap, self._topic)

    def close(self) -> None:
        """Flush and close the producer."""
        self._producer.close()
