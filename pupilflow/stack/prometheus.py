"""Prometheus and Alertmanager from Debian's packages, scraping the worker and the sink on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path

from schemas.settings import Settings

from .layout import render, template_path, write_if_changed
from .service import Progress, Service
from .web import answers

INSTALL = "apt-get install -y --no-install-recommends prometheus prometheus-alertmanager"
SCRAPE_INTERVAL = "2s"


def rules_file() -> Path:
    """deploy/prometheus/rules.yml, which Prometheus loads from the checkout (edits apply on restart)."""
    return template_path("prometheus/rules.yml")


def render_prometheus_yml(settings: Settings) -> str:
    """prometheus.yml: scrape the worker, the sink and itself every 2 s; alerts to the local Alertmanager."""
    return render(
        "local/prometheus/prometheus.yml",
        scrape_interval=SCRAPE_INTERVAL,
        rules_file=rules_file(),
        alertmanager_port=settings.alertmanager_port,
        worker_port=settings.worker_web_port,
        sink_port=settings.sink_metrics_port,
        prometheus_port=settings.prometheus_port,
    )


def render_alertmanager_yml(settings: Settings) -> str:
    """alertmanager.yml: one `dpo` receiver, a webhook to `alert_webhook_url` when that is set."""
    receiver = ""
    if settings.alert_webhook_url:
        receiver = f'    webhook_configs:\n      - url: "{settings.alert_webhook_url}"\n        send_resolved: true\n'
    return render("local/alertmanager/alertmanager.yml", receiver_configs=receiver)


class _DebianBinary(Service):
    binary: str

    def installed(self) -> bool:
        """True when the Debian package's binary is on PATH."""
        return shutil.which(self.binary) is not None

    def install_hint(self) -> str:
        """The apt-get line."""
        return f"`{self.binary}` not on PATH; to add it: {INSTALL}"

    @property
    def config(self) -> Path:
        """The rendered config file in this home."""
        return self.directory / f"{self.name}.yml"

    def markers(self) -> tuple[str, ...]:
        """This home's config file."""
        return (f"--config.file={self.config}",)

    def healthy(self) -> bool:
        """GET /-/ready is 200."""
        return answers(f"http://{self.address}/-/ready")


class Prometheus(_DebianBinary):
    """`prometheus` with its TSDB in `<home>/prometheus/data`."""

    name = "prometheus"
    binary = "prometheus"

    def ports(self) -> dict[str, int]:
        """The web/API port."""
        return {"Prometheus": self.settings.prometheus_port}

    def prepare(self, progress: Progress) -> None:
        """Write prometheus.yml."""
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        write_if_changed(self.config, render_prometheus_yml(self.settings))

    def argv(self) -> list[str]:
        """Loopback only; lifecycle API on so a test can POST /-/reload."""
        return [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            "--storage.tsdb.retention.time=7d",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",
        ]

    def describe(self) -> str:
        """Scrape targets, rules, data, log."""
        return (
            f"scrapes :{self.settings.worker_web_port} (worker) :{self.settings.sink_metrics_port} (sink)  "
            f"rules {rules_file()}  {super().describe()}"
        )


class Alertmanager(_DebianBinary):
    """`prometheus-alertmanager`, single instance (cluster listener off)."""

    name = "alertmanager"
    binary = "prometheus-alertmanager"

    def ports(self) -> dict[str, int]:
        """The web/API port."""
        return {"Alertmanager": self.settings.alertmanager_port}

    def prepare(self, progress: Progress) -> None:
        """Write alertmanager.yml."""
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        write_if_changed(self.config, render_alertmanager_yml(self.settings))

    def argv(self) -> list[str]:
        """Loopback only; `--cluster.listen-address=` because the cluster port defaults to :9094."""
        return [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.path={self.directory / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
        ]

    def describe(self) -> str:
        """Receiver, data, log."""
        target = self.settings.alert_webhook_url or "no receiver (set PUPILFLOW_ALERT_WEBHOOK_URL)"
        return f"alerts -> {target}  {super().describe()}"
