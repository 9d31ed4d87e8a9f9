"""The environment a `pupilflow` child process reads its settings from."""

from __future__ import annotations

from pathlib import Path

import pytest

from pupilflow.children import settings_env
from schemas.settings import Settings, Topics


def test_a_child_reads_back_exactly_the_parents_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    parent = Settings(home=tmp_path, ingest_port=7001, topics=Topics(flows="x.flows", partitions=3))
    env = settings_env(parent)
    for name in [n for n in env if n.startswith("PUPILFLOW_")]:
        monkeypatch.setenv(name, env[name])
    child = Settings()
    assert child == parent
    # An unset optional stays unset: the outbox follows home instead of becoming a folder named "None".
    assert child.outbox == tmp_path / "outbox"


def test_an_unset_optional_removes_a_stale_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUPILFLOW_OUTBOX_DIR", "/somewhere/else")
    assert "PUPILFLOW_OUTBOX_DIR" not in settings_env(Settings(outbox_dir=None))
