"""A file connector's checkpoint: which files it has emitted, how far into each, and its next sequence number.

The checkpoint lives in a compacted Kafka topic, keyed by connector id, and is written in the same Kafka
transaction as the events it accounts for. So it can never claim a delivery that did not happen, nor miss
one that did: a connector killed with SIGKILL resumes exactly where its last committed batch ended.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from pydantic import Field

from schemas.errors import ServiceUnavailable
from schemas.events import Identifier, Model, UtcDatetime

MAX_DONE_FILES = 2000
"""Finished files remembered per connector; older ones fall back on the stream's `event_id` dedupe."""


class FileProgress(Model):
    """How far a connector got through one file (identified by the SHA-256 of its content)."""

    name: str
    position: int = Field(default=0, ge=0, description="Bytes consumed: where the next record starts.")
    line: int = Field(default=0, ge=0, description="Records consumed (the last record's number).")
    done: bool = False
    rejected: str | None = Field(default=None, description="Why the whole file was refused, if it was.")
    finished_at: UtcDatetime | None = None


class ConnectorCheckpoint(Model):
    """Everything a file connector must remember across restarts."""

    connector: Identifier
    next_sequence: int = Field(default=0, ge=0)
    files: dict[str, FileProgress] = Field(default_factory=dict)

    def with_file(self, digest: str, progress: FileProgress, next_sequence: int) -> ConnectorCheckpoint:
        """A copy recording `progress` for one file; forgets the oldest finished files beyond the cap."""
        files = dict(self.files)
        files[digest] = progress
        finished = [(p.finished_at, d) for d, p in files.items() if p.finished_at is not None]
        if len(finished) > MAX_DONE_FILES:
            for _, old in sorted(finished)[: len(finished) - MAX_DONE_FILES]:
                del files[old]
        return ConnectorCheckpoint(connector=self.connector, next_sequence=next_sequence, files=files)


def read_checkpoint(bootstrap_servers: str, topic: str, connector: str, timeout_s: float = 30.0) -> ConnectorCheckpoint:
    """The connector's last committed checkpoint (a fresh one if it has none); reads committed data only."""
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers.split(","),
            client_id=f"pupilflow-checkpoint-{connector}",
            group_id=None,
            enable_auto_commit=False,
            # An aborted transaction's checkpoint belongs to events no one will ever see.
            isolation_level="read_committed",
        )
    except KafkaError as exc:
        raise ServiceUnavailable(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc
    found: bytes | None = None
    wanted = connector.encode()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        end = consumer.end_offsets([partition])[partition]
        deadline = time.monotonic() + timeout_s
        while consumer.position(partition) < end:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"timed out reading checkpoints from {topic}")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.key == wanted:
                        found = record.value
    except KafkaError as exc:
        raise ServiceUnavailable(f"cannot read checkpoints from {topic}: {exc}") from exc
    finally:
        consumer.close()
    if found is None:
        return ConnectorCheckpoint(connector=connector)
    return ConnectorCheckpoint.model_validate_json(found)
