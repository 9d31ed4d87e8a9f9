"""Fetching the Kafka broker jars from Maven Central once into a cache that every home shares."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from schemas.errors import PrerequisiteMissing, ServiceUnavailable

from .layout import template_path

INSTALL_MAVEN = "apt-get install -y --no-install-recommends maven"
FETCH_TIMEOUT = 1200.0


def jars_dir(cache: Path, version: str) -> Path:
    """`<cache>/kafka-<version>`: the broker's runtime classpath."""
    return cache / f"kafka-{version}"


def jars_present(cache: Path, version: str) -> bool:
    """True when the jars of that Kafka version are already fetched."""
    return (jars_dir(cache, version) / f"kafka_2.13-{version}.jar").is_file()


def require_maven() -> str:
    """The path of `mvn`, or PrerequisiteMissing."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PrerequisiteMissing(f"no `mvn` on PATH: it fetches the Kafka broker jars once ({INSTALL_MAVEN})")
    return mvn


def fetch_jars(cache: Path, version: str, log_file: Path) -> Path:
    """Download Kafka `version` and its runtime dependencies unless present; return the jars directory."""
    final = jars_dir(cache, version)
    if jars_present(cache, version):
        return final
    mvn = require_maven()
    # Fetched into a private directory and renamed into place, so a half-done or concurrent fetch never
    # leaves a jars directory that looks complete.
    work = cache / f".fetch-kafka-{version}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        shutil.copyfile(template_path("local/kafka/pom.xml"), work / "pom.xml")
        argv = [
            mvn, "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={work / 'jars'}", f"-Dkafka.version={version}",
        ]  # fmt: skip
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            log.write(f"\n=== {' '.join(argv)}\n".encode())
            log.flush()
            try:
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=FETCH_TIMEOUT, check=False)
            except subprocess.TimeoutExpired as exc:
                raise ServiceUnavailable(f"Maven fetch of Kafka {version} timed out; see {log_file}") from exc
        if done.returncode != 0 or not (work / "jars" / f"kafka_2.13-{version}.jar").is_file():
            raise ServiceUnavailable(
                f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} (exit {done.returncode}); see {log_file}"
            )
        try:
            (work / "jars").rename(final)
        except OSError:
            if not jars_present(cache, version):  # lost a race with another fetch only if that one won
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
