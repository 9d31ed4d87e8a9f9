"""The one Kafka producer every connector sends through: acks=all, idempotent, confirmed delivery."""

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
        delivery_timeout_s: float = 60.0,
        **producer_config: Any,
    ) -> None:
        self._topics = topics
        self._delivery_timeout_s = delivery_timeout_s
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers.split(","),
                client_id=client_id,
                # acks=all + idempotence: a retried send is written once, and only once every replica has it.
                acks="all",
                enable_idempotence=True,
                linger_ms=linger_ms,
                batch_size=128 * 1024,
                max_in_flight_requests_per_connection=5,
                **producer_config,
            )
        except KafkaError as exc:
            raise ServiceUnavailable(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc
        self._pending: list[Any] = []

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
        """Deliver what is queued, then close the producer."""
        try:
            self.flush()
        finally:
            self._producer.close(timeout=self._delivery_timeout_s)

    def __enter__(self) -> Emitter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
