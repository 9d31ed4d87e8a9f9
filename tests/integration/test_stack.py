"""`pupilflow stack` for real: up, up again, status, transactions, down, and port clashes.

Each test module runs its own stack in a temporary PUPILFLOW_HOME on free, non-default ports, so it never
touches a stack already running on the defaults (CI's). The Kafka jars come from the shared cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from pupilflow import stack
from pupilflow.children import settings_env
from pupilflow.stack.process import idle_launcher, is_alive, port_is_free
from pupilflow.stack.web import http
from schemas.errors import PrerequisiteMissing
from schemas.settings import Settings

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def free_ports(count: int) -> list[int]:
    """Distinct free ports (all held open at once while choosing, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stack_settings(home: Path) -> Settings:
    kafka, controller, http_port, tcp, prom, am, worker, sink, ingest = free_ports(9)
    return Settings(
        home=home,
        kafka_bootstrap=f"127.0.0.1:{kafka}",
        kafka_controller_port=controller,
        clickhouse_dsn=f"http://default:@127.0.0.1:{http_port}/pupilflow_stack_test",
        clickhouse_tcp_port=tcp,
        prometheus_port=prom,
        alertmanager_port=am,
        worker_web_port=worker,
        sink_metrics_port=sink,
        ingest_port=ingest,
    )


def components() -> list[str]:
    """Kafka and ClickHouse always; Prometheus where installed, and always in CI (never skipped there)."""
    if (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")) or IN_CI:
        return ["kafka", "clickhouse", "prometheus"]
    return ["kafka", "clickhouse"]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return stack_settings(tmp_path_factory.mktemp("stack-home"))


@pytest.fixture(scope="module")
def first_up(settings: Settings) -> Iterator[stack.StackReport]:
    report = stack.up(settings, components())
    yield report
    stack.down(settings)


def pids(report: stack.StackReport) -> dict[str, int | None]:
    return {row.name: row.pid for row in report.components}


def test_up_starts_each_component_and_says_where(first_up: stack.StackReport, settings: Settings) -> None:
    names = ["kafka", "clickhouse"] + (["prometheus", "alertmanager"] if "prometheus" in components() else [])
    assert [row.name for row in first_up.components] == names
    for row in first_up.components:
        assert row.state is stack.State.STARTED, row
        assert row.healthy
        assert row.pid
        assert row.seconds is not None
        assert str(settings.home) in row.detail  # where its data and log are
    assert first_up.by_name("kafka").address == settings.kafka_bootstrap
    assert first_up.by_name("clickhouse").address == f"127.0.0.1:{settings.clickhouse_http_port}"
    assert "stack up took" in first_up.text()
    for name in pids(first_up):
        assert (settings.home / "run" / f"{name}.pid").is_file()
        assert (settings.home / "logs" / f"{name}.log").is_file()


def test_second_up_is_harmless(first_up: stack.StackReport, settings: Settings) -> None:
    again = stack.up(settings, components())
    assert {row.state for row in again.components} == {stack.State.ALREADY_RUNNING}
    assert pids(again) == pids(first_up)


def test_status_shows_each_running_and_healthy(first_up: stack.StackReport, settings: Settings) -> None:
    report = stack.status(settings, components())
    for row in report.components:
        assert (row.state, row.healthy) == (stack.State.RUNNING, True), row
    assert pids(report) == pids(first_up)


def test_clickhouse_has_the_dsn_database(first_up: stack.StackReport, settings: Settings) -> None:
    status, body = http(
        f"http://127.0.0.1:{settings.clickhouse_http_port}/", data=b"EXISTS DATABASE pupilflow_stack_test"
    )
    assert (status, body.strip()) == (200, "1")


@pytest.mark.skipif(idle_launcher() is None, reason="Linux's SCHED_IDLE through chrt(1)")
def test_clickhouse_runs_in_the_idle_class_and_kafka_does_not(first_up: stack.StackReport, settings: Settings) -> None:
    # A query first, so that ClickHouse has started the threads it serves and merges with.
    status, _ = http(f"http://127.0.0.1:{settings.clickhouse_http_port}/", data=b"SELECT count() FROM numbers(10)")
    assert status == 200

    def classes(pid: int) -> set[int]:
        return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}

    clickhouse, kafka = first_up.by_name("clickhouse").pid, first_up.by_name("kafka").pid
    assert clickhouse is not None
    assert kafka is not None
    assert classes(clickhouse) == {os.SCHED_IDLE}  # every thread, however late it started
    assert classes(kafka) == {os.SCHED_OTHER}  # decisions wait for the broker: it keeps the normal class


def test_kafka_transactions_commit_and_abort(first_up: stack.StackReport, settings: Settings) -> None:
    topic = f"stack-tx-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, transactional_id=f"{topic}-tx")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, b"aborted")
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send(topic, b"committed")
        producer.commit_transaction()
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        values = [message.value for message in consumer]
    finally:
        consumer.close()
    assert values == [b"committed"]


def test_prometheus_loads_the_rules_and_scrapes_worker_and_sink(
    first_up: stack.StackReport, settings: Settings
) -> None:
    if "prometheus" not in components():
        pytest.skip("Prometheus not installed (apt-get install prometheus prometheus-alertmanager)")
    status, body = http(f"http://127.0.0.1:{settings.prometheus_port}/api/v1/rules")
    assert status == 200
    rules = {rule["name"] for group in json.loads(body)["data"]["groups"] for rule in group["rules"]}
    assert {"PupilDataSharedWithoutConsent", "UnlawfulPupilDataSharing"} <= rules
    status, body = http(f"http://127.0.0.1:{settings.prometheus_port}/api/v1/targets")
    targets = {t["scrapeUrl"] for t in json.loads(body)["data"]["activeTargets"]}
    assert f"http://127.0.0.1:{settings.worker_web_port}/metrics" in targets
    assert f"http://127.0.0.1:{settings.sink_metrics_port}/metrics" in targets
    status, body = http(f"http://127.0.0.1:{settings.prometheus_port}/api/v1/alertmanagers")
    assert f"127.0.0.1:{settings.alertmanager_port}" in body


DEMO_ARGS = ("--days", "6", "--pupils", "120", "--seed", "4242", "--malformed-rate", "0.5")


def test_demo_runs_a_simulated_term_through_the_connectors(first_up: stack.StackReport, settings: Settings) -> None:
    """The README's first command: simulated files and webhooks reach ClickHouse, and the summary adds up."""
    done = subprocess.run(
        [sys.executable, "-m", "pupilflow.cli", "demo", *DEMO_ARGS],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    delivered = re.search(r"flows: (\d+), decided in ClickHouse: (\d+)", out)
    assert delivered is not None, out
    assert int(delivered[1]) > 0
    assert delivered[1] == delivered[2], out
    # Every connector kind the simulator writes for took part.
    for connector in ("mis", "consent", "synclog", "simulator"):
        assert re.search(rf"\b{connector} [1-9]\d*", out), (connector, out)
    caught = re.findall(r"caught (\d+) of (\d+) injected violations", out)
    assert caught, out
    injected = int(caught[0][1])
    assert injected > 0
    # The stream worker and the policy engine replayed over what reached Kafka each catch every injected violation.
    assert len(caught) == 2, out
    assert all(found == (str(injected), str(injected)) for found in caught), out
    engine = re.search(r"policy engine \(offline, same events\): (\d+) flows decided", out)
    assert engine is not None, out
    assert engine[1] == delivered[1], out
    # Every malformed record the simulator wrote reached the dead-letter table, and nothing else did.
    dead = re.search(r"dead letters in ClickHouse from this run: (\d+) \((\d+) malformed records injected", out)
    assert dead is not None, out
    assert int(dead[2]) > 0
    assert dead[1] == dead[2], out


def test_down_stops_every_process_of_ours(first_up: stack.StackReport, settings: Settings) -> None:
    report = stack.down(settings)
    stopped = {row.name: row.state for row in report.components if row.pid}
    assert stopped == dict.fromkeys(pids(first_up), stack.State.STOPPED)
    for name, pid in pids(first_up).items():
        assert pid is not None
        assert not is_alive(pid), name
        assert not (settings.home / "run" / f"{name}.pid").exists()
    for port in (settings.kafka_port, settings.kafka_controller_port, settings.clickhouse_http_port):
        assert port_is_free(port)
    assert {row.state for row in stack.down(settings).components} <= {
        stack.State.NOT_RUNNING,
        stack.State.NOT_INSTALLED,
    }


@pytest.fixture
def squatter() -> Iterator[int]:
    """A plain listener on a free port: something that is not ours."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_taken_kafka_port_is_named_and_nothing_starts(tmp_path: Path, squatter: int) -> None:
    settings = stack_settings(tmp_path).model_copy(update={"kafka_bootstrap": f"127.0.0.1:{squatter}"})
    with pytest.raises(PrerequisiteMissing, match=rf"port {squatter} \(Kafka\) on 127.0.0.1 is already in use"):
        stack.up(settings, ["kafka", "clickhouse"])
    assert not list((tmp_path / "run").glob("*.pid"))
    assert port_is_free(settings.clickhouse_http_port)


def test_a_taken_clickhouse_port_is_named_and_kafka_does_not_start(tmp_path: Path, squatter: int) -> None:
    settings = stack_settings(tmp_path).model_copy(update={"clickhouse_tcp_port": squatter})
    with pytest.raises(PrerequisiteMissing, match=rf"port {squatter} \(ClickHouse TCP\)") as raised:
        stack.up(settings, ["kafka", "clickhouse"])
    assert f"by pid {os.getpid()}" in str(raised.value)
    assert not list((tmp_path / "run").glob("*.pid"))
    assert port_is_free(settings.kafka_port)


def test_two_concurrent_ups_on_one_home_start_it_once(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(lambda _: stack.up(settings, ["clickhouse"]), range(2)))
    try:
        rows = sorted((report.components[0] for report in reports), key=lambda row: row.state.value)
        assert [row.state for row in rows] == [stack.State.ALREADY_RUNNING, stack.State.STARTED]
        assert rows[0].pid == rows[1].pid
    finally:
        stack.down(settings)
    assert rows[0].pid is not None
    assert not is_alive(rows[0].pid)
