"""The configs the local stack renders from deploy/local templates, for the ports and paths in Settings."""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree

import pytest

from pupilflow.stack.clickhouse import dsn_credentials, dsn_database, render_config_xml, render_users_xml
from pupilflow.stack.java import parse_java_major
from pupilflow.stack.kafka import new_cluster_id, render_server_properties, request_threads
from pupilflow.stack.prometheus import render_alertmanager_yml, render_prometheus_yml, rules_file
from schemas.errors import ConfigurationError
from schemas.settings import Settings


def props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        kafka_bootstrap="127.0.0.1:19092",
        kafka_controller_port=19093,
        clickhouse_dsn="http://default:@127.0.0.1:18123/audit",
        clickhouse_tcp_port=19000,
        prometheus_port=19090,
        alertmanager_port=19094,
        worker_web_port=16066,
        sink_metrics_port=16067,
    )


def test_kafka_listens_on_loopback_at_the_configured_ports(settings: Settings, tmp_path: Path) -> None:
    conf = props(render_server_properties(settings, tmp_path / "data"))
    assert conf["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert conf["advertised.listeners"] == conf["listeners"]
    assert conf["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert conf["process.roles"] == "broker,controller"
    assert conf["log.dirs"] == str(tmp_path / "data")


def test_kafka_internal_topics_and_transactions_work_on_one_node(settings: Settings, tmp_path: Path) -> None:
    conf = props(render_server_properties(settings, tmp_path))
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert conf[key] == "1", key
    assert conf["group.initial.rebalance.delay.ms"] == "0"


def test_kafka_request_threads_are_kafkas_defaults_capped_at_the_cores(settings: Settings, tmp_path: Path) -> None:
    for cpus, (network, io) in {1: ("1", "1"), 2: ("2", "2"), 4: ("3", "4"), 64: ("3", "8")}.items():
        conf = props(render_server_properties(settings, tmp_path, cpus=cpus))
        assert (conf["num.network.threads"], conf["num.io.threads"]) == (network, io), cpus
    assert request_threads() == request_threads(os.cpu_count())
    assert request_threads(0) == (1, 1)


def test_rendered_templates_keep_no_placeholder(settings: Settings, tmp_path: Path) -> None:
    rendered = [
        render_server_properties(settings, tmp_path),
        render_config_xml(settings),
        render_users_xml(settings),
        render_prometheus_yml(settings),
        render_alertmanager_yml(settings),
    ]
    for text in rendered:
        assert "$" not in text


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_clickhouse_config_names_the_ports(settings: Settings) -> None:
    xml = render_config_xml(settings)
    assert "<listen_host>127.0.0.1</listen_host>" in xml
    assert "<http_port>18123</http_port>" in xml
    assert "<tcp_port>19000</tcp_port>" in xml
    assert "<users_config>users.xml</users_config>" in xml


def test_clickhouse_computes_no_automatic_column_statistics(settings: Settings) -> None:
    root = ElementTree.fromstring(render_config_xml(settings))
    setting = root.find("merge_tree/auto_statistics_types")
    assert setting is not None
    assert (setting.text or "").strip() == ""


def test_clickhouse_database_and_user_come_from_the_dsn(settings: Settings) -> None:
    assert dsn_database(settings) == "audit"
    assert dsn_credentials(settings) == ("default", "")
    bare = settings.model_copy(update={"clickhouse_dsn": "http://127.0.0.1:8123"})
    assert dsn_database(bare) == "default"


def test_default_user_stays_passwordless_and_another_user_is_added(settings: Settings) -> None:
    users = render_users_xml(settings)
    assert "<password></password>" in users
    assert "max_execution_time" not in users.split("-->", 1)[1]
    other = settings.model_copy(update={"clickhouse_dsn": "http://auditor:s3cret@127.0.0.1:18123/audit"})
    users = render_users_xml(other)
    assert "<auditor>" in users
    assert "s3cret" not in users  # only its sha256
    assert "<password_sha256_hex>" in users


def test_a_password_for_default_is_refused(settings: Settings) -> None:
    bad = settings.model_copy(update={"clickhouse_dsn": "http://default:pw@127.0.0.1:18123/audit"})
    with pytest.raises(ConfigurationError, match="default"):
        render_users_xml(bad)


def test_prometheus_scrapes_worker_and_sink_and_alerts_locally(settings: Settings) -> None:
    text = render_prometheus_yml(settings)
    assert '"127.0.0.1:16066"' in text
    assert '"127.0.0.1:16067"' in text
    assert '"127.0.0.1:19094"' in text
    assert "scrape_interval: 2s" in text
    assert str(rules_file()) in text
    assert rules_file().name == "rules.yml"


def test_alertmanager_posts_to_the_webhook_only_when_set(settings: Settings) -> None:
    assert "webhook_configs" not in render_alertmanager_yml(settings)
    hooked = settings.model_copy(update={"alert_webhook_url": "http://127.0.0.1:7000/alerts"})
    assert 'url: "http://127.0.0.1:7000/alerts"' in render_alertmanager_yml(hooked)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "11.0.2" 2019-01-15', 11),
        ("command not found", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major
