"""Getting accepted events into Kafka once: skip ids already delivered, send the rest, confirm, then record."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kafka.errors import KafkaError

from producers.ingest.seen import SeenStore
from schemas.errors import ServiceUnavailable
from schemas.events import Event


class EventSender(Protocol):
    """What the ingest API needs of `producers.emitter.Emitter`."""

    def emit(self, event: Event) -> None:
        """Queue one event."""

    def flush(self) -> None:
        """Block until Kafka confirmed every queued event; raise `ServiceUnavailable` if it did not."""


class DeliveryFailedError(Exception):
    """Kafka did not confirm the events; nothing was recorded as seen, so a retry sends them again."""


@dataclass(frozen=True)
class Outcome:
    """How many events of a request were sent now, and how many had been delivered before."""

    accepted: int
    duplicates: int


class Deliverer:
    """Sends events through one emitter and records their ids once Kafka confirmed them."""

    def __init__(self, emitter: EventSender, seen: SeenStore) -> None:
        self._emitter = emitter
        self._seen = seen
        # One request at a time: the emitter's flush confirms everything queued, so two interleaved requests
        # could each be told about the other's failure; and check-then-record must not race on an event_id.
        self._lock = threading.Lock()

    def deliver(self, events: Sequence[Event]) -> Outcome:
        """Deliver the events not seen before (a repeat within the batch counts as a duplicate too)."""
        with self._lock:
            already = self._seen.seen({event.event_id for event in events})
            fresh: dict[str, Event] = {}
            for event in events:
                if event.event_id not in already and event.event_id not in fresh:
                    fresh[event.event_id] = event
            if fresh:
                try:
                    for event in fresh.values():
                        self._emitter.emit(event)
                    self._emitter.flush()
                except (ServiceUnavailable, KafkaError) as exc:
                    raise DeliveryFailedError(str(exc) or type(exc).__name__) from exc
                self._seen.record(fresh)
        return Outcome(accepted=len(fresh), duplicates=len(events) - len(fresh))
