"""`pupilflow connect KIND` watching its outbox: files dropped while it runs are delivered; SIGTERM stops it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pupilflow.children import settings_env
from schemas.settings import Settings

from .conftest import REPO, committed, wait_until

pytestmark = pytest.mark.kafka

SAMPLE = REPO / "tests" / "data" / "synclog" / "nightly.csv"


def test_a_watching_connector_delivers_files_as_they_arrive_and_stops_cleanly(
    isolated: Settings, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    log = tmp_path / "connect.log"
    command = [sys.executable, "-m", "pupilflow.cli", "connect", "synclog", "--poll", "0.2", "--outbox", str(outbox)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=settings_env(isolated), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (outbox / "processed").is_dir(), timeout=60, what="the connector to open its outbox")
        expected = sum(1 for line in SAMPLE.read_text(encoding="utf-8").splitlines()[1:] if line.strip())
        # Dropped atomically while the connector watches: copied beside the outbox, then renamed into it.
        shutil.copy(SAMPLE, tmp_path / "nightly.csv.part")
        (tmp_path / "nightly.csv.part").rename(outbox / "nightly.csv")
        wait_until(
            lambda: len(committed(isolated, isolated.topics.flows, idle_ms=300)) >= expected,
            timeout=60,
            what="the dropped file's flows",
        )
        wait_until(lambda: (outbox / "processed" / "nightly.csv").exists(), timeout=30, what="the file moved")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text(encoding="utf-8")
    finally:
        process.kill()
        process.wait()
    flows = [json.loads(r.value) for r in committed(isolated, isolated.topics.flows)]
    assert len(flows) == expected
    assert {f["recipient"] for f in flows} >= {"sims"}
    report = log.read_text(encoding="utf-8")
    assert f"synclog: 1 file(s) done, 0 rejected, 0 already delivered; {expected} event(s) emitted" in report
