"""The HTTP ingest API: webhook callers POST events, which reach Kafka once, confirmed before the 202."""

from producers.ingest.app import DEFAULT_MAX_BODY_BYTES, create_app
from producers.ingest.readiness import kafka_probe
from producers.ingest.seen import SeenStore
from producers.ingest.tokens import TokenInfo, TokenStore

__all__ = ["DEFAULT_MAX_BODY_BYTES", "SeenStore", "TokenInfo", "TokenStore", "create_app", "kafka_probe"]
