"""End to end on the local Prometheus and Alertmanager: a NO_CONSENT violation counted by the worker's
/metrics fires PupilDataSharedWithoutConsent, and Alertmanager posts it to the configured webhook."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pupilflow import stack
from pupilflow.stack.web import http
from schemas.settings import Settings

pytestmark = [pytest.mark.stack, pytest.mark.prometheus, pytest.mark.timeout(300)]


def settings_for(home: Path, metrics_port: int) -> Settings:
    """Free non-default ports for this test's Prometheus and Alertmanager; the worker is `metrics_port`."""
    with socket.socket() as a, socket.socket() as b, socket.socket() as c:
        for sock in (a, b, c):
            sock.bind(("127.0.0.1", 0))
        prom, am, sink = (int(sock.getsockname()[1]) for sock in (a, b, c))
    return Settings(
        home=home,
        prometheus_port=prom,
        alertmanager_port=am,
        sink_metrics_port=sink,
        worker_web_port=metrics_port,
        alert_webhook_url=f"http://127.0.0.1:{metrics_port}/alerts",
    )


def wait_for(check: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def scraped_value(settings: Settings) -> str | None:
    query = urllib.parse.urlencode({"query": "pupilflow_violations_total"})
    status, body = http(f"http://127.0.0.1:{settings.prometheus_port}/api/v1/query?{query}")
    result = json.loads(body)["data"]["result"] if status == 200 else []
    return str(result[0]["value"][1]) if result else None


def ours(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The violation alerts (the sink here is not running, so PupilflowTargetDown may come too)."""
    return [alert for alert in alerts if alert["labels"]["alertname"] != "PupilflowTargetDown"]


class Loopback(ThreadingHTTPServer):
    """Serves a fake worker's /metrics and records webhook posts."""

    violations = 0
    alerts: list[dict[str, Any]]


class Handler(BaseHTTPRequestHandler):
    server: Loopback

    def do_GET(self) -> None:
        body = (
            "# TYPE pupilflow_violations_total counter\n"
            f'pupilflow_violations_total{{reason="NO_CONSENT"}} {self.server.violations}\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.alerts.extend(payload["alerts"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    server = Loopback(("127.0.0.1", 0), Handler)
    server.alerts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_no_consent_violation_reaches_the_webhook(tmp_path: Path, loopback: Loopback) -> None:
    if not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")):
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("Prometheus/Alertmanager missing and CI=true: .ci/run must install them", pytrace=False)
        pytest.skip("Prometheus not installed (apt-get install prometheus prometheus-alertmanager)")
    port = loopback.server_address[1]
    settings = settings_for(tmp_path, port)
    stack.up(settings, ["prometheus"])
    try:
        # increase() needs a sample before the violation: wait until Prometheus has scraped the 0 (its
        # service discovery only hands targets over after ~5 s), then count one violation.
        assert wait_for(lambda: scraped_value(settings) == "0", 60), "Prometheus never scraped the worker"
        time.sleep(2.5)
        loopback.violations = 1
        assert wait_for(lambda: ours(loopback.alerts), 60), f"no alert reached the webhook: {loopback.alerts}"
    finally:
        stack.down(settings)
    alerts = ours(loopback.alerts)
    assert {alert["labels"]["alertname"] for alert in alerts} == {"PupilDataSharedWithoutConsent"}
    alert = alerts[0]
    assert alert["status"] == "firing"
    assert alert["labels"]["reason"] == "NO_CONSENT"
    assert alert["labels"]["severity"] == "critical"
