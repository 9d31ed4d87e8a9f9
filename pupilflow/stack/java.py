"""Finding a Java runtime good enough for the Kafka broker."""

from __future__ import annotations

import re
import shutil
import subprocess

from schemas.errors import PrerequisiteMissing

MIN_JAVA = 17
INSTALL_JAVA = "apt-get install -y --no-install-recommends openjdk-17-jre-headless"


def parse_java_major(version_output: str) -> int | None:
    """The major version in `java -version` output ('1.8.0_x' is 8, '17.0.15' is 17), or None."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java() -> str:
    """The path of a `java` of version 17 or newer, or PrerequisiteMissing saying what is wrong."""
    java = shutil.which("java")
    if java is None:
        raise PrerequisiteMissing(f"no `java` on PATH: Kafka needs Java {MIN_JAVA}+ ({INSTALL_JAVA})")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PrerequisiteMissing(f"`{java} -version` failed: {exc}") from exc
    major = parse_java_major(out.stderr + out.stdout)
    if major is None or major < MIN_JAVA:
        found = (out.stderr + out.stdout).strip().splitlines()[:1]
        raise PrerequisiteMissing(
            f"Kafka needs Java {MIN_JAVA}+, but {java} is {found[0] if found else 'unknown'} ({INSTALL_JAVA})"
        )
    return java
