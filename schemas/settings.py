"""The one `Settings` object a pupilflow process reads at start-up and passes down."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Topics(BaseSettings):
    """Kafka topic names and partition counts; flows and facts are keyed by subject and co-partitioned."""

    model_config = SettingsConfigDict(env_prefix="PUPILFLOW_TOPIC_", extra="forbid")

    flows: str = "pupilflow.flows"
    facts: str = "pupilflow.facts"
    decisions: str = "pupilflow.decisions"
    violations: str = "pupilflow.violations"
    dlq: str = "pupilflow.dlq"
    checkpoints: str = Field(
        default="pupilflow.connector-checkpoints",
        description="Compacted: each file connector's checkpoint, written in the transaction of its events.",
    )
    changelog: str = Field(
        default="pupilflow.worker-changelog",
        description="Compacted: the stream worker's per-subject and per-recipient state, keyed like the flows.",
    )
    chain_heads: str = Field(
        default="pupilflow.chain-heads",
        description="Compacted: the audit sink's hash-chain head per decisions partition, kept outside ClickHouse.",
    )
    legs: str = Field(
        default="pupilflow.legs",
        description="Split topology: flows sent to the members keeping their subjects, and the legs judged there.",
    )
    shared_facts: str = Field(
        default="pupilflow.shared-facts",
        description="Split topology: agreements and notice versions, forwarded for every member to read whole.",
    )
    member_changelog: str = Field(
        default="pupilflow.member-changelog",
        description="Compacted: each split-topology member's state, in the partitions it owns.",
    )
    partitions: int = Field(default=4, ge=1)


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pupilflow"


class Settings(BaseSettings):
    """Runtime configuration, read once from `PUPILFLOW_*` environment variables (or a `.env` file)."""

    model_config = SettingsConfigDict(
        env_prefix="PUPILFLOW_", env_file=".env", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(default=Path(".pupilflow"), description="Data, logs and pids of the local stack.")
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        description="Kafka bootstrap servers. Anything but the local default skips starting a local broker.",
    )
    kafka_controller_port: int = 9093
    kafka_version: str = "4.1.1"
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Downloads every home shares (the Kafka broker jars), so a new home skips Maven.",
    )
    clickhouse_dsn: str = Field(
        default="http://default:@127.0.0.1:8123/pupilflow",
        description="`http(s)://user:pass@host:port/database` for a server, `chdb:///dir` for embedded.",
    )
    clickhouse_tcp_port: int = 9000
    prometheus_port: int = 9090
    alertmanager_port: int = 9094
    worker_web_port: int = Field(default=6066, description="The stream worker's HTTP port (/metrics).")
    sink_metrics_port: int = Field(default=6067, description="The ClickHouse sink's /metrics port.")
    alert_webhook_url: str = Field(
        default="", description="Where the local Alertmanager posts alerts (the DPO notifier); '' = nowhere."
    )
    policy_dir: Path = Field(default=Path("policy"), description="The Trust's policy register (YAML).")
    lateness_hours: float = Field(
        default=48.0, ge=24.0, description="How late a fact may arrive and still re-open flows (RULES.md §2)."
    )
    outbox_dir: Path | None = Field(
        default=None, description="File connectors watch `<outbox>/<connector>/` for exports; None: home/outbox."
    )
    ingest_port: int = Field(default=6068, description="The HTTP ingest API's port.")
    worker_compression: Literal["gzip"] | None = Field(
        default=None, description="Compression of what the stream worker writes to Kafka (None: a local broker)."
    )
    worker_fetch_min_bytes: int = Field(
        default=1,
        ge=1,
        le=4 * 1024 * 1024,
        description="How much the broker gathers for the worker's fetch, unless 20 ms pass first (1: answer at once)."
        " Larger: fewer fetches, less CPU for the worker and the broker, a longer latency tail (docs/streaming.md).",
    )
    worker_stall_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A worker transaction not committed within this long is abandoned and the worker restarts.",
    )
    consumer_group: str = "pupilflow-worker"
    worker_members: int = Field(
        default=1,
        ge=1,
        description="Workers sharing the partitions (the split topology) when above 1; each runs with its own"
        " `worker_member`. The count is fixed for a member changelog: changing it needs a new consumer group.",
    )
    worker_member: int = Field(default=0, ge=0, description="This worker's number among `worker_members`.")
    sink_group: str = "pupilflow-sink"
    sink_batch_max_rows: int = Field(default=10_000, ge=1)
    sink_batch_max_seconds: float = Field(default=1.0, gt=0)
    sink_fetch_wait_ms: int = Field(
        default=100,
        ge=0,
        le=1_000,
        description="How long the broker may hold the sink's fetch to gather more decisions (0: answer at once)."
        " Fewer, larger fetches cost the sink and the broker less CPU; a batch waits a second for ClickHouse anyway.",
    )
    sink_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="The sink's CPU nice value (0: the same priority as everything else). On a machine it shares with"
        " the stream worker, decisions and alerts come first; the audit store is loaded in one-second batches.",
    )
    sink_rebalance_stall_seconds: float = Field(
        default=20.0,
        gt=0,
        description="A sink still without partitions this long into a rebalance the broker has finished rejoins.",
    )
    topics: Topics = Field(default_factory=Topics)

    @model_validator(mode="after")
    def _member_in_range(self) -> Settings:
        if self.worker_member >= self.worker_members:
            raise ValueError(f"worker_member must be below worker_members ({self.worker_members})")
        if self.worker_members > self.topics.partitions:
            raise ValueError(f"worker_members must not exceed the {self.topics.partitions} partitions")
        return self

    @field_validator("clickhouse_dsn")
    @classmethod
    def _dsn_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "chdb://")):
            raise ValueError("clickhouse_dsn must start with http://, https:// or chdb://")
        return value

    @property
    def outbox(self) -> Path:
        """The folder under which each file connector has its outbox."""
        return self.outbox_dir if self.outbox_dir is not None else self.home / "outbox"

    @property
    def kafka_is_local_default(self) -> bool:
        """True when the broker is the one `pupilflow stack up` runs on loopback."""
        return self.kafka_bootstrap.split(",")[0].split(":")[0] in {"127.0.0.1", "localhost"}

    @property
    def kafka_port(self) -> int:
        """Port of the first bootstrap server."""
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def clickhouse_is_local_default(self) -> bool:
        """True when ClickHouse is a loopback HTTP server that `pupilflow stack up` should run."""
        url = urlsplit(self.clickhouse_dsn)
        return url.scheme == "http" and url.hostname in {"127.0.0.1", "localhost"}

    @property
    def clickhouse_http_port(self) -> int:
        """HTTP port of the ClickHouse server named by the DSN (8123 when the DSN names none)."""
        return urlsplit(self.clickhouse_dsn).port or 8123
