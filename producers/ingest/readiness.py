"""The readiness probe: can this process fetch metadata of its topics from Kafka right now."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kafka.admin import KafkaAdminClient

from schemas.errors import ServiceUnavailable

Probe = Callable[[], None]
"""Returns when ready; raises `ServiceUnavailable` saying why not."""


def kafka_probe(bootstrap_servers: str, topics: Sequence[str], timeout_s: float = 2.0) -> Probe:
    """A probe that fetches cluster metadata with a short timeout and checks `topics` exist."""
    timeout_ms = int(timeout_s * 1000)

    def probe() -> None:
        try:
            # A fresh client per probe: it never holds a stale connection, and probes are rare.
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap_servers.split(","),
                client_id="pupilflow-ingest-readyz",
                request_timeout_ms=timeout_ms,
                bootstrap_timeout_ms=timeout_ms,
            )
        except Exception as exc:  # kafka-python raises several unrelated types for "unreachable"
            raise ServiceUnavailable(f"Kafka at {bootstrap_servers} is not reachable: {exc}") from exc
        try:
            existing = set(admin.list_topics())
        except Exception as exc:
            raise ServiceUnavailable(f"Kafka at {bootstrap_servers} did not answer a metadata request: {exc}") from exc
        finally:
            admin.close()
        missing = sorted(set(topics) - existing)
        if missing:
            raise ServiceUnavailable(f"Kafka topics missing: {', '.join(missing)}")

    return probe
