"""Creating the pipeline's Kafka topics up front, with explicit partition counts."""

from __future__ import annotations

import contextlib

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.errors import ServiceUnavailable
from schemas.settings import Settings

# Dead letters and violations are evidence: keep them far longer than Kafka's 7-day default.
_LONG_RETENTION = {"retention.ms": str(90 * 24 * 3600 * 1000)}


def topic_specs(settings: Settings, replication_factor: int = 1) -> list[NewTopic]:
    """Every topic the pipeline uses; flows, facts and decisions share a partition count (co-partitioning)."""
    t = settings.topics
    return [
        NewTopic(t.flows, t.partitions, replication_factor),
        NewTopic(t.facts, t.partitions, replication_factor),
        NewTopic(t.decisions, t.partitions, replication_factor),
        NewTopic(t.violations, t.partitions, replication_factor, topic_configs=_LONG_RETENTION),
        NewTopic(t.dlq, 1, replication_factor, topic_configs=_LONG_RETENTION),
        # One partition: a connector reads every checkpoint back at start; compaction keeps the latest each.
        NewTopic(t.checkpoints, 1, replication_factor, topic_configs={"cleanup.policy": "compact"}),
        # The worker's state, partitioned like the flows and facts it was built from; compaction keeps the latest.
        NewTopic(t.changelog, t.partitions, replication_factor, topic_configs={"cleanup.policy": "compact"}),
        NewTopic(t.chain_heads, 1, replication_factor, topic_configs={"cleanup.policy": "compact"}),
        # The split topology (`worker_members` > 1): legs co-partitioned with facts; shared facts read whole by
        # every member, which keeps them in its changelog; each member's state in the partitions it owns.
        NewTopic(t.legs, t.partitions, replication_factor),
        NewTopic(t.shared_facts, 1, replication_factor),
        NewTopic(t.member_changelog, t.partitions, replication_factor, topic_configs={"cleanup.policy": "compact"}),
    ]


def ensure_topics(settings: Settings, replication_factor: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the names created now."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","), client_id="pupilflow-admin")
    except KafkaError as exc:
        raise ServiceUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in topic_specs(settings, replication_factor) if spec.name not in existing]
        if missing:
            # Another process may create them between list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing, timeout_ms=30_000, wait_for_metadata=True)
        return [spec.name for spec in missing]
    finally:
        admin.close()
