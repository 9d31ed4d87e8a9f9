"""Missing or too-old prerequisites and failed starts give one clear message naming what is wrong."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from pupilflow import stack
from pupilflow.commands.stack import register
from pupilflow.stack.java import require_java
from pupilflow.stack.layout import Layout
from pupilflow.stack.maven import fetch_jars, require_maven
from pupilflow.stack.service import Service
from schemas.errors import PrerequisiteMissing, ServiceUnavailable
from schemas.settings import Settings


def fake_tool(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def test_no_java_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrerequisiteMissing, match="no `java` on PATH"):
        require_java()


def test_java_older_than_17_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_tool(tmp_path, "java", """echo 'openjdk version "11.0.2" 2019-01-15' >&2""")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrerequisiteMissing, match=r"Kafka needs Java 17\+, but .* is openjdk version \"11.0.2\""):
        require_java()


def test_no_maven_when_the_jars_are_not_fetched_yet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrerequisiteMissing, match="no `mvn` on PATH"):
        require_maven()
    with pytest.raises(PrerequisiteMissing, match="no `mvn` on PATH"):
        fetch_jars(tmp_path / "cache", "4.1.1", tmp_path / "maven.log")


def test_up_checks_kafka_prerequisites_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_tool(tmp_path, "java", """echo 'openjdk version "17.0.15"' >&2""")
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = Settings(home=tmp_path / "home", cache_dir=tmp_path / "empty-cache")
    with pytest.raises(PrerequisiteMissing, match="no `mvn` on PATH"):
        stack.up(settings, ["kafka", "clickhouse"])
    assert not list((tmp_path / "home" / "run").glob("*.pid"))


def test_a_failed_fetch_leaves_no_half_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_tool(tmp_path, "mvn", "echo 'Could not resolve dependencies'; exit 1")
    monkeypatch.setenv("PATH", str(tmp_path))
    log = tmp_path / "maven.log"
    with pytest.raises(ServiceUnavailable, match=rf"Maven could not fetch .*kafka_2.13:4.1.1.*see {log}"):
        fetch_jars(tmp_path / "cache", "4.1.1", log)
    assert list((tmp_path / "cache").iterdir()) == []
    assert "Could not resolve dependencies" in log.read_text()


class Crasher(Service):
    """A service that dies at once, as a broker with a broken config would."""

    name = "crasher"

    def markers(self) -> tuple[str, ...]:
        return (str(self.directory),)

    def ports(self) -> dict[str, int]:
        return {"crasher": 1}

    def argv(self) -> list[str]:
        return [sys.executable, "-c", "import sys; print('FATAL: bad config'); sys.exit(3)", str(self.directory)]

    def healthy(self) -> bool:
        return False


def test_a_service_that_dies_at_start_points_at_its_log(tmp_path: Path) -> None:
    service = Crasher(Settings(home=tmp_path), Layout(tmp_path, tmp_path / "cache"))
    pid = service.launch()
    with pytest.raises(ServiceUnavailable, match=r"crasher exited during start-up; see .*crasher\.log") as raised:
        service.wait_ready(pid, timeout=30)
    assert "FATAL: bad config" in str(raised.value)
    assert not service.pid_file.path.exists()


def test_cli_parses_component_selection() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["stack", "up", "--only", "kafka,clickhouse", "--timeout", "30"])
    assert (args.only, args.timeout, args.no_prometheus) == (["kafka", "clickhouse"], 30.0, False)
    args = parser.parse_args(["stack", "down", "--no-prometheus"])
    assert args.no_prometheus
    assert callable(parser.parse_args(["stack", "status"]).func)
