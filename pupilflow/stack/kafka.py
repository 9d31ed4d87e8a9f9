"""The local Apache Kafka 4.x broker: KRaft, single node on loopback, run from its Maven Central jars."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import uuid
from pathlib import Path

from schemas.errors import ServiceUnavailable
from schemas.settings import Settings

from .java import require_java
from .layout import render, template_path, write_if_changed
from .maven import fetch_jars, jars_dir, jars_present, require_maven
from .process import LOOPBACK, port_accepts
from .service import Progress, Service

JVM_OPTS = (
    # kafka-server-start.sh's heap. The broker keeps about 260 MB live (the log cleaner's 128 MB dedupe buffer
    # among it): in a 512 MB heap that is above G1's 35% marking threshold for good, and a concurrent mark took a
    # core for 0.1-0.2 s every 11 s, holding the worker's transactions back (bench/pipeline.py at 2,000 flows/s).
    "-Xms1g", "-Xmx1g",
    # What kafka-run-class.sh uses.
    "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
    # Without this, log4j2 stops logging at SIGTERM and the broker's own shutdown goes unrecorded.
    "-Dlog4j2.shutdownHookEnabled=false",
)  # fmt: skip
MAIN_CLASS = "kafka.Kafka"


def request_threads(cpus: int | None = None) -> tuple[int, int]:
    """(network, I/O) request threads for a broker on `cpus` cores: Kafka's defaults (3, 8), capped at the cores.

    The defaults are sized for a server of its own. On the 2-core box, with the whole pipeline beside the
    broker, 3 and 8 threads took turns on 2 cores: the worker's transactions took twice as long to commit.
    """
    cores = max(1, cpus if cpus is not None else os.cpu_count() or 1)
    return min(3, cores), min(8, cores)


def render_server_properties(settings: Settings, data_dir: Path, cpus: int | None = None) -> str:
    """server.properties for a single combined broker+controller on loopback (`cpus`: this machine's cores)."""
    network_threads, io_threads = request_threads(cpus)
    return render(
        "local/kafka/server.properties",
        port=settings.kafka_port,
        controller_port=settings.kafka_controller_port,
        data_dir=data_dir,
        network_threads=network_threads,
        io_threads=io_threads,
    )


def new_cluster_id() -> str:
    """A KRaft cluster id as `kafka-storage.sh random-uuid` makes it (URL-safe base64 of 16 random bytes)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka rejects ids that start with '-' (they read as command-line flags).
        if not text.startswith("-"):
            return text


def broker_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when the broker at `bootstrap` answers a metadata request (kafka-python admin `list_topics`)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    # kafka-python logs every refused connection at ERROR; a probe's failure is an answer, not news.
    quiet = logging.getLogger("kafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="pupilflow-stack",
            request_timeout_ms=int(timeout * 1000),
            bootstrap_timeout_ms=int(timeout * 1000),
        )
        try:
            admin.list_topics()
        finally:
            admin.close()
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        quiet.setLevel(level)
    return True


class Kafka(Service):
    """The broker process (`java ... kafka.Kafka server.properties`)."""

    name = "kafka"
    stop_timeout = 30.0

    @property
    def data_dir(self) -> Path:
        """KRaft metadata and topic data (`log.dirs`)."""
        return self.directory / "data"

    @property
    def config(self) -> Path:
        """The rendered server.properties."""
        return self.directory / "server.properties"

    @property
    def jars(self) -> Path:
        """The shared classpath directory for this Kafka version."""
        return jars_dir(self.layout.cache, self.settings.kafka_version)

    def markers(self) -> tuple[str, ...]:
        """The main class and this home's server.properties."""
        return (MAIN_CLASS, str(self.config))

    def ports(self) -> dict[str, int]:
        """Client and controller listeners."""
        return {"Kafka": self.settings.kafka_port, "Kafka controller": self.settings.kafka_controller_port}

    def check_prerequisites(self) -> None:
        """Java 17+, and Maven when the jars still have to be fetched."""
        require_java()
        if not jars_present(self.layout.cache, self.settings.kafka_version):
            require_maven()

    def prepare(self, progress: Progress) -> None:
        """Fetch the jars once, write configs, format the storage once."""
        version = self.settings.kafka_version
        if not jars_present(self.layout.cache, version):
            progress(
                f"kafka: fetching Apache Kafka {version} jars from Maven Central into {self.jars} "
                f"(first time only, ~100 MB); log {self.layout.log_path('maven')}"
            )
            fetch_jars(self.layout.cache, version, self.layout.log_path("maven"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        write_if_changed(self.config, render_server_properties(self.settings, self.data_dir))
        write_if_changed(
            self.directory / "log4j2.properties", template_path("local/kafka/log4j2.properties").read_text()
        )
        if not (self.data_dir / "meta.properties").is_file():
            self._format()

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            require_java(), *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.directory / 'logs'}",
            "-cp", f"{self.jars}/*", main, *args,
        ]  # fmt: skip

    def _format(self) -> None:
        argv = self._java(
            "kafka.tools.StorageTool", "format", "--standalone", "-t", new_cluster_id(), "-c", str(self.config)
        )
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {' '.join(argv)}\n".encode())
            log.flush()
            try:
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=120, check=False)
            except subprocess.TimeoutExpired as exc:
                raise ServiceUnavailable(f"formatting Kafka storage timed out; see {self.log_file}") from exc
        if done.returncode != 0:
            raise ServiceUnavailable(f"formatting Kafka storage in {self.data_dir} failed; see {self.log_file}")

    def argv(self) -> list[str]:
        """`java <opts> -cp <jars>/* kafka.Kafka <home>/kafka/server.properties`."""
        return self._java(MAIN_CLASS, str(self.config))

    def healthy(self) -> bool:
        """The client port accepts connections and the broker answers a metadata request."""
        return port_accepts(self.settings.kafka_port) and broker_answers(f"{LOOPBACK}:{self.settings.kafka_port}")

    def describe(self) -> str:
        """Data dir, log and jars."""
        return f"controller :{self.settings.kafka_controller_port}  {super().describe()}  jars {self.jars}"
