"""The one Kafka producer every connector sends through: acks=all, idempotent, confirmed delivery.

File connectors use it transactionally: a batch of events and the connector's checkpoint commit together,
so a connector killed at any moment has either delivered a batch and recorded it, or neither.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from schemas.errors import ServiceUnavailable
from schemas.events import DataFlow, Event
from schemas.settings import Topics


class Emitter:
    """Sends pupilflow events to Kafka; flows go to the flows topic, every other event to the facts topic."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics,
        *,
        client_id: str = "pupilflow-emitter",
        linger_ms: int = 5,
        compression_type: str | None = "gzip",
        transactional_id: str | None = None,
        delivery_timeout_s: float = 60.0,
        **producer_config: Any,
    ) -> None:
        self._topics = topics
        self._delivery_timeout_s = delivery_timeout_s
        self.transactional = transactional_id is not None
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers.split(","),
                client_id=client_id,
                # acks=all + idempotence: a retried send is written once, and only once every replica has it.
                acks="all",
                enable_idempotence=True,
                retries=2**31 - 1,
                linger_ms=linger_ms,
                # JSON events compress about 5:1, and fewer bytes on loopback more than paid for the CPU: measured
                # with bench/emitter.py, gzip gave 10.5-12k events/s where no compression gave 4.6-5.1k.
                # gzip needs no native library on any platform.
                compression_type=compression_type,
                batch_size=256 * 1024,
                max_in_flight_requests_per_connection=5,
                transactional_id=transactional_id,
                **producer_config,
            )
            if transactional_id is not None:
                # Fences any earlier producer with this id and aborts what it left open (a killed connector).
                self._producer.init_transactions()
        except KafkaError as exc:
            raise ServiceUnavailable(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc
        self._pending: list[Any] = []
        self._in_transaction = False

    def topic_for(self, event: Event) -> str:
        """The topic an event belongs on."""
        return self._topics.flows if isinstance(event, DataFlow) else self._topics.facts

    def emit(self, event: Event) -> None:
        """Queue one event, keyed by the subject (or recipient) it is about; `flush` confirms delivery."""
        self.send_raw(self.topic_for(event), event.partition_key(), event.model_dump_json().encode())

    def emit_all(self, events: Iterable[Event]) -> int:
        """Queue events and wait until Kafka has them all; returns how many were delivered."""
        count = 0
        for event in events:
            self.emit(event)
            count += 1
        self.flush()
        return count

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue raw bytes (connectors that pass through an upstream payload, and tests of bad input)."""
        self._pending.append(self._producer.send(topic, key=key, value=value))

    def begin(self) -> None:
        """Start a transaction (transactional emitters only)."""
        self._producer.begin_transaction()
        self._in_transaction = True

    def commit(self) -> None:
        """Deliver everything sent since `begin` and commit it atomically; raise if Kafka refused."""
        try:
            self.flush()
            self._producer.commit_transaction()
        except KafkaError as exc:
            raise ServiceUnavailable(f"Kafka did not commit the transaction: {exc}") from exc
        finally:
            self._in_transaction = False

    def abort(self) -> None:
        """Abort the open transaction: read-committed consumers never see what it sent."""
        self._pending = []
        self._in_transaction = False
        self._producer.abort_transaction()

    def flush(self) -> None:
        """Block until every queued event is acknowledged by the brokers; raise if any failed."""
        self._producer.flush(timeout=self._delivery_timeout_s)
        pending, self._pending = self._pending, []
        for future in pending:
            try:
                future.get(timeout=self._delivery_timeout_s)
            except KafkaError as exc:
                raise ServiceUnavailable(f"Kafka did not confirm delivery: {exc}") from exc

    def close(self) -> None:
        """Deliver what is queued (abort an unfinished transaction), then close the producer."""
        try:
            if self._in_transaction:
                self.abort()
            else:
                self.flush()
        finally:
            self._producer.close(timeout=self._delivery_timeout_s)

    def __enter__(self) -> Emitter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
