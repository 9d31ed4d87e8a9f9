"""Pipeline processes (`pupilflow worker`, `pupilflow sink`) run as children of a command or a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from schemas.errors import ServiceUnavailable
from schemas.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a `pupilflow` child read exactly these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump(exclude={"topics"}).items():
        if value is None:
            # Unset means "the default" (e.g. the outbox under home); the string "None" would be a path.
            env.pop(f"PUPILFLOW_{name.upper()}", None)
            continue
        env[f"PUPILFLOW_{name.upper()}"] = str(value)
    for name, value in settings.topics.model_dump().items():
        env[f"PUPILFLOW_TOPIC_{name.upper()}"] = str(value)
    return env


def http_get(url: str, timeout: float = 2.0) -> str | None:
    """The body of a GET on loopback, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())
    except OSError:
        return None


class Child:
    """One `pupilflow` sub-command running as a child process, its output appended to a log file."""

    def __init__(self, args: list[str], settings: Settings, log_file: Path, ready_url: str) -> None:
        """Prepare `pupilflow ARGS`; it counts as ready once `ready_url` answers."""
        self.args, self.log_file, self.ready_url = args, log_file, ready_url
        self._env = settings_env(settings)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> Child:
        """Start the child and wait until it is ready; raise with the log's tail if it dies or stalls."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pupilflow.cli", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
            )
        deadline = time.monotonic() + timeout
        while http_get(self.ready_url) is None:
            if not self.alive():
                raise ServiceUnavailable(f"`pupilflow {' '.join(self.args)}` exited:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceUnavailable(
                    f"`pupilflow {' '.join(self.args)}` not ready in {timeout:.0f}s:\n{self.tail()}"
                )
            time.sleep(0.25)
        return self

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the child (SIGTERM by default), SIGKILL it after `timeout`; returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, lines: int = 30) -> str:
        """The last lines of the child's log."""
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def worker(settings: Settings, log_file: Path) -> Child:
    """The stream worker; ready when its /healthz answers."""
    return Child(["worker"], settings, log_file, f"http://127.0.0.1:{settings.worker_web_port}/healthz")


def sink(settings: Settings, log_file: Path) -> Child:
    """The ClickHouse sink; ready when its /metrics answers."""
    return Child(["sink"], settings, log_file, f"http://127.0.0.1:{settings.sink_metrics_port}/metrics")


def ingest(settings: Settings, log_file: Path) -> Child:
    """The HTTP ingest API on `settings.ingest_port`; ready when its /readyz answers (Kafka reachable)."""
    return Child(["ingest", "serve"], settings, log_file, f"http://127.0.0.1:{settings.ingest_port}/readyz")
