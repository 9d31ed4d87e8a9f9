"""Fixtures for tests on the real stack: Kafka and ClickHouse as `pupilflow stack up` (or .ci/run) runs them.

Each test session works in topics, consumer groups and a ClickHouse database of its own, so it never sees
another run's data. Without the services a test is skipped on a laptop, but fails when CI=true.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

from pupilflow import children
from pupilflow.children import Child, settings_env
from pupilflow.topics import ensure_topics
from schemas.errors import ServiceUnavailable
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
            "ingest_port": free_port(),
            "sink_batch_max_seconds": 0.2,
            "topics": Topics(
                flows=f"{prefix}.flows",
                facts=f"{prefix}.facts",
                decisions=f"{prefix}.decisions",
                violations=f"{prefix}.violations",
                dlq=f"{prefix}.dlq",
                checkpoints=f"{prefix}.checkpoints",
                changelog=f"{prefix}.changelog",
                chain_heads=f"{prefix}.chain-heads",
                partitions=2,
            ),
        }
    )


@pytest.fixture(scope="session")
def kafka(settings: Settings) -> Iterator[Settings]:
    """A reachable Kafka broker with this session's topics created; every topic the session made is deleted after."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap.split(","), request_timeout_ms=5000, bootstrap_timeout_ms=5000
        )
        admin.list_topics()
    except Exception as exc:  # any failure to talk to the broker means "not running" here
        missing_service(f"Kafka at {settings.kafka_bootstrap} ({exc})")
    ensure_topics(settings)
    yield settings
    # Every test names its topics after the session's prefix. Left behind, thousands of them slowed a developer's
    # local broker by a third (bench/pipeline.py measured it).
    prefix = settings.topics.flows.split(".")[0]
    try:
        mine = [t for t in admin.list_topics() if t.startswith(prefix)]
        if mine:
            admin.delete_topics(mine, timeout_ms=30_000)
    except Exception as exc:  # a broker stopped by a test, or already gone: nothing left to tidy
        print(f"could not delete this session's topics: {exc}", file=sys.stderr)
    finally:
        admin.close()


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


@pytest.fixture
def isolated(kafka: Settings, tmp_path: Path) -> Settings:
    """Settings with this test's own topics, group, port and home: the session's worker never sees its events."""
    prefix = f"{kafka.topics.flows.split('.')[0]}-{uuid.uuid4().hex[:6]}"
    kinds = (
        "flows", "facts", "decisions", "violations", "dlq", "checkpoints", "changelog", "chain_heads", "legs",
        "shared_facts", "member_changelog",
    )  # fmt: skip
    names = {name: f"{prefix}.{name}" for name in kinds}
    settings = kafka.model_copy(
        update={
            "home": tmp_path,
            "consumer_group": f"{prefix}-worker",
            "worker_web_port": free_port(),
            "topics": Topics(**names, partitions=1),
        }
    )
    ensure_topics(settings)
    return settings


def running(child: Child) -> Iterator[Child]:
    """Start a pipeline process for a fixture, fail the test with its log if it does not come up, stop it after."""
    try:
        child.start()
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield child
    child.stop()


@pytest.fixture(scope="session")
def worker(kafka: Settings) -> Iterator[Child]:
    """The stream worker, ready when its /healthz answers."""
    yield from running(children.worker(kafka, kafka.home / "worker.log"))


@pytest.fixture(scope="session")
def sink(kafka: Settings, clickhouse: Any) -> Iterator[Child]:
    """The ClickHouse sink, ready when its /metrics answers."""
    yield from running(children.sink(kafka, kafka.home / "sink.log"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that used the session's worker or sink shows the end of their logs: CI keeps nothing else."""
    report = yield
    if report.failed and call.when == "call":
        settings = getattr(item, "funcargs", {}).get("kafka")
        for name in ("worker", "sink"):
            if name in getattr(item, "fixturenames", ()) and isinstance(settings, Settings):
                log = settings.home / f"{name}.log"
                if log.exists():
                    tail = log.read_text(errors="replace").splitlines()[-40:]
                    report.sections.append((f"session {name} log (last 40 lines)", "\n".join(tail)))
    return report


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


def committed_reader(settings: Settings, topic: str, **config: Any) -> KafkaConsumer:
    """A consumer of a whole topic from its start that sees committed records only (no group, no commits)."""
    return KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
        **config,
    )


def committed(settings: Settings, topic: str, idle_ms: int = 1500) -> list[Any]:
    """Every committed record of a topic, from the start (read_committed: aborted transactions are invisible)."""
    consumer = committed_reader(settings, topic, consumer_timeout_ms=idle_ms)
    try:
        return list(consumer)
    finally:
        consumer.close()


REPO = Path(__file__).resolve().parents[2]


def connect_process(
    settings: Settings, kind: str, outbox: Path, log: Path, *, connector: str | None = None, batch: int = 200
) -> subprocess.Popen[bytes]:
    """`pupilflow connect KIND --once` as a child process over `outbox`, logging to `log`."""
    command = [sys.executable, "-m", "pupilflow.cli", "connect", kind, "--once", "--batch", str(batch)]
    command += ["--outbox", str(outbox), "--id", connector or kind]
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=REPO, env=settings_env(settings), stdout=out, stderr=subprocess.STDOUT)


def kill_after_first_commit(settings: Settings, topic: str, start: Callable[[], subprocess.Popen[bytes]]) -> int:
    """Start a connector, SIGKILL it as soon as its first transaction is visible; returns records committed then.

    One read_committed consumer is kept open: a fresh reader per check spends longer connecting than a
    connector needs to finish a file, and the kill must land mid-file.
    """
    watcher = committed_reader(settings, topic)
    seen = 0
    process: subprocess.Popen[bytes] | None = None

    def first_commit() -> bool:
        nonlocal seen
        seen += sum(len(batch) for batch in watcher.poll(timeout_ms=20).values())
        return seen > 0 or (process is not None and process.poll() is not None)

    try:
        watcher.poll(timeout_ms=500)  # joins the topic before the connector writes
        process = start()
        wait_until(first_commit, timeout=120, interval=0.0, what="the connector's first committed batch")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        watcher.close()
        if process is not None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, "the connector finished before it could be killed"
    return len(committed(settings, topic))
