"""The alert rules and the Prometheus/Alertmanager configs, checked by the tools that will load them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pupilflow.stack.layout import DEPLOY_DIR
from pupilflow.stack.prometheus import render_alertmanager_yml, render_prometheus_yml
from schemas.settings import Settings

pytestmark = pytest.mark.prometheus
RULES = DEPLOY_DIR / "prometheus" / "rules.yml"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"`{name}` is missing and CI=true: .ci/run must install prometheus", pytrace=False)
        pytest.skip(f"`{name}` not installed (apt-get install prometheus prometheus-alertmanager)")
    return path


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_rules_are_valid() -> None:
    assert "3 rules found" in run(tool("promtool"), "check", "rules", str(RULES))


def test_rules_fire_as_their_unit_tests_say() -> None:
    assert "SUCCESS" in run(tool("promtool"), "test", "rules", str(DEPLOY_DIR / "prometheus" / "rules_test.yml"))


def test_rendered_prometheus_config_is_valid(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(render_prometheus_yml(Settings(home=tmp_path)))
    run(tool("promtool"), "check", "config", str(config))


@pytest.mark.parametrize("webhook", ["", "http://127.0.0.1:7000/alerts"])
def test_rendered_alertmanager_config_is_valid(tmp_path: Path, webhook: str) -> None:
    config = tmp_path / "alertmanager.yml"
    config.write_text(render_alertmanager_yml(Settings(home=tmp_path, alert_webhook_url=webhook)))
    run(tool("amtool"), "check-config", str(config))
