"""`simulate(SimConfig) -> SimRun`: build the year, write every file and event in arrival order, and the truth."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from producers.simulator.config import SimConfig, SimRun
from producers.simulator.outbox import Drop, FileDrop, HttpEvent, jsonl, write_atomically
from producers.simulator.story import Story
from schemas.connector_maps import load_connector_maps
from schemas.events import DataFlow
from schemas.policy import load_policy


def _kind(model: type[Any]) -> str:
    return str(model.model_fields["kind"].default)


def simulate(cfg: SimConfig) -> SimRun:
    """Write the run's connector files, HTTP events, arrival order, ground truth and summary under `cfg.out`."""
    maps = load_connector_maps(cfg.policy_dir, load_policy(cfg.policy_dir))
    story = Story(cfg, maps)
    made = story.run()
    # Arrival order: by simulated time, ties in the order the story made them.
    drops: list[Drop] = [made[i] for i in sorted(range(len(made)), key=lambda i: (made[i].at, i))]
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    run = SimRun(
        config=cfg,
        http_events=out / "http" / "events.jsonl",
        ground_truth=out / "ground_truth.jsonl",
        summary=out / "summary.json",
        arrivals=out / "arrivals.jsonl",
        malformed=out / "malformed.jsonl",
    )
    http_lines: list[bytes] = []
    truth: list[dict[str, Any]] = []
    arrivals: list[dict[str, Any]] = []
    flows = 0
    for drop in drops:
        if isinstance(drop, HttpEvent):
            event = drop.model.model_validate(
                {
                    "event_id": drop.event_id,
                    **drop.fields,
                    "emitted_at": drop.at,
                    "source": {"connector": cfg.http_connector, "sequence": len(http_lines)},
                }
            )
            http_lines.append(event.model_dump_json().encode() + b"\n")
            run.events_by_connector[cfg.http_connector] += 1
            run.events_by_kind[_kind(drop.model)] += 1
            flows += isinstance(event, DataFlow)
            last = arrivals[-1] if arrivals else None
            if last is not None and last.get("connector") == cfg.http_connector:
                last["lines"][1] = len(http_lines)
            else:
                arrivals.append(
                    {
                        "at": drop.at.isoformat(),
                        "connector": cfg.http_connector,
                        "lines": [len(http_lines) - 1, len(http_lines)],
                    }
                )
            if drop.mark is not None:
                truth.append(_truth(drop.event_id, cfg.http_connector, drop.mark, str(drop.fields["occurred_at"])))
            continue
        path = cfg.outbox_dir / drop.connector / drop.name
        write_atomically(path, drop.data, drop.at.timestamp())
        run.files.append(path)
        arrivals.append(
            {
                "at": drop.at.isoformat(),
                "connector": drop.connector,
                "file": str(path.relative_to(cfg.outbox_dir)),
                "records": len(drop.intended),
            }
        )
        for drafts in drop.intended:
            for draft in drafts:
                run.events_by_connector[drop.connector] += 1
                run.events_by_kind[_kind(draft.model)] += 1
                flows += draft.model is DataFlow
        for mark in drop.marks:
            occurred = drop.intended[mark.record - 1][mark.index].fields["occurred_at"]
            entry = _truth(drop.event_id(mark.record, mark.index), drop.connector, mark.violation, str(occurred))
            truth.append({**entry, "file": drop.name, "record": mark.record})
    write_atomically(run.http_events, b"".join(http_lines))
    write_atomically(run.ground_truth, jsonl(truth))
    write_atomically(run.arrivals, jsonl(arrivals))
    write_atomically(run.malformed, jsonl(story.malformed))
    run.eligible = Counter(story.inj.eligible)
    run.injected = Counter(t["reason"] for t in truth)
    summary = {
        "seed": cfg.seed,
        "start": cfg.start.isoformat(),
        "days": cfg.day_count,
        "pupils": {"hawthorn-primary": cfg.pupils_hawthorn, "rose-valley": cfg.pupils_rose_valley},
        "violation_rate": cfg.violation_rate,
        "malformed_records": len(story.malformed),
        "cover_all_codes": cfg.cover_all_codes,
        "events": sum(run.events_by_connector.values()),
        "flows": flows,
        "events_by_connector": dict(sorted(run.events_by_connector.items())),
        "events_by_kind": dict(sorted(run.events_by_kind.items())),
        "files_by_connector": dict(sorted(Counter(d.connector for d in drops if isinstance(d, FileDrop)).items())),
        "eligible_flows": dict(sorted(run.eligible.items())),
        "eligible_total": sum(run.eligible.values()),
        "injected": len(truth),
        "injected_forced_for_coverage": story.inj.forced,
        "injected_by_reason": dict(sorted(run.injected.items())),
    }
    write_atomically(run.summary, (json.dumps(summary, indent=2) + "\n").encode())
    if cfg.keep_intended:
        run.drops = list(drops)
    return run


def _truth(event_id: str, connector: str, violation: Any, occurred_at: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "connector": connector,
        "reason": violation.reason,
        "rule": violation.rule,
        "description": violation.description,
        "occurred_at": occurred_at,
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
