"""The local ClickHouse server (chDB on loopback HTTP/TCP): configs, launch, health, database, clean stop."""

from __future__ import annotations

import hashlib
import sys
import urllib.parse
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from schemas.errors import ConfigurationError, ServiceUnavailable
from schemas.settings import Settings

from .clickhouse_keepalive import request_stop
from .layout import DEPLOY_DIR, render, write_if_changed
from .process import LOOPBACK, cmdline, terminate, wait_gone
from .service import Progress, Service
from .web import answers, http

SERVER_MODULE = "pupilflow.stack.clickhouse_server"


def dsn_database(settings: Settings) -> str:
    """The database named by the DSN's path (`default` when it names none)."""
    return urlsplit(settings.clickhouse_dsn).path.strip("/") or "default"


def dsn_credentials(settings: Settings) -> tuple[str, str]:
    """(user, password) from the DSN; `default` with no password when it names none."""
    url = urlsplit(settings.clickhouse_dsn)
    return urllib.parse.unquote(url.username or "default"), urllib.parse.unquote(url.password or "")


def render_config_xml(settings: Settings) -> str:
    """config.xml: loopback listeners on the configured HTTP and TCP ports."""
    return render(
        "local/clickhouse/config.xml",
        http_port=settings.clickhouse_http_port,
        tcp_port=settings.clickhouse_tcp_port,
    )


def render_users_xml(settings: Settings) -> str:
    """users.xml: passwordless `default`, plus the DSN's own user (with its password) when it is another."""
    user, password = dsn_credentials(settings)
    if user == "default":
        if password:
            raise ConfigurationError(
                "PUPILFLOW_CLICKHOUSE_DSN: the local ClickHouse's `default` user must have no password "
                "(chDB logs in as `default` internally); name another user in the DSN instead"
            )
        extra = ""
    else:
        if not user.replace("_", "").isalnum():
            raise ConfigurationError(f"PUPILFLOW_CLICKHOUSE_DSN: user {user!r} must be letters, digits, _")
        digest = hashlib.sha256(password.encode()).hexdigest()
        extra = (
            f"        <{user}>\n"
            f"            <password_sha256_hex>{digest}</password_sha256_hex>\n"
            "            <networks><ip>::/0</ip></networks>\n"
            "            <profile>default</profile>\n"
            "            <quota>default</quota>\n"
            f"        </{user}>"
        )
    return render("local/clickhouse/users.xml", extra_users=extra)


class ClickHouse(Service):
    """`python -m pupilflow.stack.clickhouse_server` in `<home>/clickhouse`."""

    name = "clickhouse"
    stop_timeout = 15.0
    # Its merges come in bursts of one to two seconds at a core or more; on a box shared with the worker and Kafka
    # every decision in flight waited for them (bench/pipeline.py at 2,000 flows/s on a warm broker: p99 0.4-0.9 s
    # at nice 0, 0.24-0.26 s at 10). Rows still land within the audit store's 2 s: the box has that much to spare.
    nice = 10
    # At nice 10 its merges still held up the broker: most of the decision p99's worst stalls at 2,000 flows/s fell
    # in seconds when ClickHouse ran at 40-50% of a core, while Kafka's threads waited for a core twice as long as
    # otherwise. A thread of the idle class gives up its core at once to any other that wakes there: p99 75.7-130.5 ms
    # in five runs (three within 100 ms), against 110-161 ms in nine at nice 10 alone ("ClickHouse in the idle class").
    idle = True

    @property
    def data_dir(self) -> Path:
        """The ClickHouse data directory (locked while the server runs)."""
        return self.directory / "data"

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP interface."""
        return f"http://{LOOPBACK}:{self.settings.clickhouse_http_port}/"

    def markers(self) -> tuple[str, ...]:
        """The server module and this home's clickhouse directory."""
        return (SERVER_MODULE, str(self.directory))

    def ports(self) -> dict[str, int]:
        """HTTP and native TCP."""
        return {
            "ClickHouse HTTP": self.settings.clickhouse_http_port,
            "ClickHouse TCP": self.settings.clickhouse_tcp_port,
        }

    def check_prerequisites(self) -> None:
        """The users.xml it would write must be valid for these settings."""
        render_users_xml(self.settings)

    def prepare(self, progress: Progress) -> None:
        """Write config.xml and users.xml."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_if_changed(self.directory / "config.xml", render_config_xml(self.settings))
        write_if_changed(self.directory / "users.xml", render_users_xml(self.settings))

    def argv(self) -> list[str]:
        """This Python running the server module, with a fresh keep-alive tag."""
        return [
            sys.executable, "-m", SERVER_MODULE,
            "--config-dir", str(self.directory), "--data-dir", str(self.data_dir),
            "--http-port", str(self.settings.clickhouse_http_port),
            "--tag", f"pupilflow_keepalive_{uuid.uuid4().hex}",
        ]  # fmt: skip

    def cwd(self) -> Path:
        """The source checkout, so `-m pupilflow...` imports this very code."""
        return DEPLOY_DIR.parent

    def healthy(self) -> bool:
        """GET /ping answers `Ok.`."""
        return answers(self.http_url + "ping", "Ok.")

    def after_ready(self) -> None:
        """CREATE DATABASE IF NOT EXISTS for the DSN's database."""
        database = dsn_database(self.settings)
        user, password = dsn_credentials(self.settings)
        status, body = http(
            self.http_url,
            data=f"CREATE DATABASE IF NOT EXISTS `{database}`".encode(),
            headers={"X-ClickHouse-User": user, "X-ClickHouse-Key": password},
            timeout=30,
        )
        if status != 200:
            raise ServiceUnavailable(f"ClickHouse could not create database {database!r}: {body.strip()}")

    def describe(self) -> str:
        """Ports, data dir, log."""
        return f"tcp :{self.settings.clickhouse_tcp_port}  database {dsn_database(self.settings)}  {super().describe()}"

    def stop(self, pid: int) -> str:
        """Kill the keep-alive query over HTTP and wait; SIGTERM/SIGKILL by pid if that does not work."""
        argv = cmdline(pid)
        tag = argv[argv.index("--tag") + 1] if "--tag" in argv[:-1] else None
        if tag and request_stop(self.settings.clickhouse_http_port, tag) and wait_gone(pid, self.stop_timeout):
            return "stopped"
        return terminate(pid, self.markers(), timeout=self.stop_timeout)
