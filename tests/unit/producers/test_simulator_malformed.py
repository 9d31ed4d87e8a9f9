"""Malformed records the simulator injects: listed, dead-lettered by the real connector, nothing else changed."""

from __future__ import annotations

import json
from pathlib import Path

from producers.filesource import Record
from producers.simulator import SimConfig, simulate
from pupilflow.commands.connect import file_format
from schemas.connector_maps import ConnectorMaps


def run(tmp_path: Path, name: str, rate: float) -> tuple[Path, list[dict[str, object]]]:
    cfg = SimConfig(
        out=tmp_path / name, seed=11, days=8, pupils_hawthorn=20, pupils_rose_valley=30, malformed_rate=rate
    )
    sim = simulate(cfg)
    listed = [json.loads(line) for line in sim.malformed.read_text(encoding="utf-8").splitlines()]
    return cfg.outbox_dir, listed


def test_every_malformed_record_is_refused_by_its_connector_and_nothing_else_changes(
    tmp_path: Path, maps: ConnectorMaps
) -> None:
    clean_outbox, none = run(tmp_path, "clean", 0.0)
    outbox, listed = run(tmp_path, "broken", 1.0)
    assert none == []
    csv_files = sorted(p for p in outbox.rglob("*.csv"))
    # A rate of 1 gives every CSV export exactly one malformed record, appended after its real rows.
    assert len(listed) == len(csv_files) > 0
    for entry in listed:
        path = outbox / str(entry["connector"]) / str(entry["file"])
        clean = (clean_outbox / str(entry["connector"]) / str(entry["file"])).read_bytes()
        assert path.read_bytes().startswith(clean)
        records: list[Record] = list(file_format(str(entry["connector"]), maps).records(path, 0, 0))
        bad = [r for r in records if r.error is not None]
        assert [r.line for r in bad] == [entry["record"]], (entry, bad)
        assert str(entry["column"]) in str(bad[0].error)
