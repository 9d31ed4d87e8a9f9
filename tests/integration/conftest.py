"""Fixtures for tests on the real stack: Kafka and ClickHouse as `pupilflow stack up` (or .ci/run) runs them.

Each test session works in topics, consumer groups and a ClickHouse database of its own, so it never sees
another run's data. Without the services a test is skipped on a laptop, but fails when CI=true.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

from pupilflow.topics import ensure_topics
from schemas.settings import Settings, Topics
from sinks.clickhouse import connect, split_dsn
from sinks.migrate import migrate

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_service(what: str) -> None:
    """Skip on a laptop; in CI a missing service is a failure, never a skip."""
    if IN_CI:
        pytest.fail(f"{what} is not reachable, and CI=true: .ci/run must start it", pytrace=False)
    pytest.skip(f"{what} is not running (start it with `pupilflow stack up`)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def settings(base_settings: Settings, run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for this test session: its own topics, groups, database, ports and home."""
    server_dsn, _ = split_dsn(base_settings.clickhouse_dsn)
    dsn = server_dsn if server_dsn.startswith("chdb:") else f"{server_dsn.rstrip('/')}/pupilflow_test_{run_id}"
    prefix = f"test-{run_id}"
    return base_settings.model_copy(
        update={
            "home": tmp_path_factory.mktemp("home"),
            "clickhouse_dsn": dsn,
            "consumer_group": f"{prefix}-worker",
            "sink_group": f"{prefix}-sink",
            "worker_web_port": free_port(),
            "sink_metrics_port": free_port(),
            "sink_batch_max_seconds": 0.2,
            "topics": Topics(
                flows=f"{prefix}.flows",
                facts=f"{prefix}.facts",
                decisions=f"{prefix}.decisions",
                violations=f"{prefix}.violations",
                dlq=f"{prefix}.dlq",
                partitions=2,
            ),
        }
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a `pupilflow` subprocess read exactly these settings."""
    env = dict(os.environ)
    env.update(
        {
            "PUPILFLOW_HOME": str(settings.home),
            "PUPILFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "PUPILFLOW_CLICKHOUSE_DSN": settings.clickhouse_dsn,
            "PUPILFLOW_CONSUMER_GROUP": settings.consumer_group,
            "PUPILFLOW_SINK_GROUP": settings.sink_group,
            "PUPILFLOW_WORKER_WEB_PORT": str(settings.worker_web_port),
            "PUPILFLOW_SINK_METRICS_PORT": str(settings.sink_metrics_port),
            "PUPILFLOW_SINK_BATCH_MAX_SECONDS": str(settings.sink_batch_max_seconds),
            "PUPILFLOW_POLICY_DIR": str(Path(settings.policy_dir).resolve()),
        }
    )
    for name, value in settings.topics.model_dump().items():
        env[f"PUPILFLOW_TOPIC_{name.upper()}"] = str(value)
    return env


@pytest.fixture(scope="session")
def kafka(settings: Settings) -> Settings:
    """A reachable Kafka broker with this session's topics created."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap.split(","), request_timeout_ms=5000, bootstrap_timeout_ms=5000
        )
        admin.list_topics()
        admin.close()
    except Exception as exc:  # any failure to talk to the broker means "not running" here
        missing_service(f"Kafka at {settings.kafka_bootstrap} ({exc})")
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="session")
def clickhouse(settings: Settings) -> Iterator[Any]:
    """A client on this session's own database, migrated; the database is dropped afterwards."""
    try:
        client = connect(settings.clickhouse_dsn)
    except Exception as exc:
        missing_service(f"ClickHouse at {settings.clickhouse_dsn} ({exc})")
    migrate(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {client.database}")


class Process:
    """A `pupilflow` sub-command running as a child process, its output in a log file."""

    def __init__(self, args: list[str], settings: Settings, log: Path) -> None:
        self.args, self.log = args, log
        self._env = settings_env(settings)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pupilflow.cli", *self.args], stdout=out, stderr=subprocess.STDOUT, env=self._env
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = 15, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


@pytest.fixture(scope="session")
def worker(kafka: Settings) -> Iterator[Process]:
    """The stream worker, ready when its /healthz answers and it has joined the group."""
    proc = Process(["worker", "--loglevel", "info"], kafka, kafka.home / "worker.log").start()
    url = f"http://127.0.0.1:{kafka.worker_web_port}/healthz"
    wait_until(lambda: http_get(url) or not proc.alive(), timeout=90, what="the worker's /healthz")
    assert proc.alive(), proc.output()[-4000:]
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def sink(kafka: Settings, clickhouse: Any) -> Iterator[Process]:
    """The ClickHouse sink, ready when its /metrics answers."""
    proc = Process(["sink"], kafka, kafka.home / "sink.log").start()
    url = f"http://127.0.0.1:{kafka.sink_metrics_port}/metrics"
    wait_until(lambda: http_get(url) or not proc.alive(), timeout=60, what="the sink's /metrics")
    assert proc.alive(), proc.output()[-4000:]
    yield proc
    proc.stop()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        sample_name, _, rest = series.partition("{")
        label_text = rest.rstrip("}")
        got = ",".join(sorted(part for part in label_text.split(",") if part))
        if sample_name == name and got == want:
            return float(value)
    return 0.0


def read_topic(settings: Settings, topic: str, count: int, timeout: float = 30) -> list[Any]:
    """Read `count` records from the start of a topic (fails on timeout)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            found.extend(consumer)
    finally:
        consumer.close()
    return found
