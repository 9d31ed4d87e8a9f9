"""End to end, offline: a simulated year through the connectors' parsers and the pure evaluator.

Every event is fed in arrival order to `streams.replay.Replayer`: HTTP events as posted, and each file as the
connector that owns it reads it (`producers.<module>.file_format(maps)`, events built as `FileConnector._take`
builds them). A file whose connector module is not installed is read from the simulator's own record of what
each row means, so the HTTP flows still see their facts; `CONNECTORS_READ` says which connectors were real.
Every injected violation must be judged a violation led by its expected reason code, and every other flow
allowed.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from producers.filesource import Draft, FileFormat, event_id_for
from producers.simulator import SimConfig, SimRun, simulate
from producers.simulator.outbox import FileDrop, HttpEvent
from pupilflow.commands.connect import FORMATS, file_format
from schemas.connector_maps import load_connector_maps
from schemas.decisions import Decision
from schemas.events import DataFlow, EventEnvelope, parse_event
from schemas.policy import load_policy
from streams.replay import Replayer

POLICY = Path(__file__).resolve().parents[3] / "policy"
CONNECTORS_READ: dict[str, str] = {}
"""Per file connector: `parser` when its module read the files, `intended` when it is not installed yet."""


def _formats() -> dict[str, FileFormat]:
    maps = load_connector_maps(POLICY, load_policy(POLICY))
    found = {}
    for kind, (module, _) in FORMATS.items():
        if importlib.util.find_spec(module) is not None:
            found[kind] = file_format(kind, maps)
    return found


def _events(drop: FileDrop, path: Path, fmt: FileFormat | None, sequence: Counter[str]) -> list[EventEnvelope]:
    """A file's events as its connector emits them (or as the simulator meant them, without a connector)."""
    records: list[tuple[int, tuple[Draft, ...]]]
    if fmt is None:
        records = list(enumerate(drop.intended, start=1))
    else:
        records = []
        for record in fmt.records(path, 0, 0):
            assert record.error is None, f"{path.name} record {record.line}: {record.error}"
            records.append((record.line, record.drafts))
    events = []
    for line, drafts in records:
        for index, draft in enumerate(drafts):
            values = {
                "event_id": event_id_for(drop.connector, drop.digest, line, index),
                **draft.fields,
                "emitted_at": drop.at,
                "source": {"connector": drop.connector, "sequence": sequence[drop.connector]},
            }
            sequence[drop.connector] += 1
            events.append(draft.model.model_validate(values))
    return events


def _shape(event: EventEnvelope) -> tuple[Any, ...]:
    if isinstance(event, DataFlow):
        return ("flow", event.recipient, event.purpose, sorted(event.categories), [s.id for s in event.subjects])
    return (type(event).__name__, event.model_dump(exclude={"source", "emitted_at", "event_id"}, mode="json"))


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimRun, dict[str, Decision], list[str]]:
    """A year of a small trust replayed: the run, each flow's final decision, and connector/intent mismatches."""
    run = simulate(SimConfig(out=tmp_path_factory.mktemp("e2e"), seed=1, pupils_hawthorn=60, pupils_rose_valley=90,
                             policy_dir=POLICY, keep_intended=True))  # fmt: skip
    formats = _formats()
    replayer = Replayer(load_policy(POLICY))
    final: dict[str, Decision] = {}
    mismatches: list[str] = []
    sequence: Counter[str] = Counter()
    http = iter(run.http_events.read_text(encoding="utf-8").splitlines())
    for drop in run.drops:
        if isinstance(drop, HttpEvent):
            events: list[EventEnvelope] = [parse_event(next(http))]
        else:
            assert isinstance(drop, FileDrop)
            fmt = formats.get(drop.connector)
            CONNECTORS_READ[drop.connector] = "parser" if fmt is not None else "intended"
            path = run.config.outbox_dir / drop.connector / drop.name
            events = _events(drop, path, fmt, sequence)
            if fmt is not None:
                meant = _events(drop, path, None, Counter())
                if [_shape(e) for e in events] != [_shape(e) for e in meant]:
                    mismatches.append(f"{drop.connector}/{drop.name}")
        for event in events:
            for decision in replayer.feed(event):  # type: ignore[arg-type]
                final[decision.flow_event_id] = decision
    return run, final, mismatches


def test_every_injected_violation_is_caught_with_its_reason_code(
    judged: tuple[SimRun, dict[str, Decision], list[str]],
) -> None:
    run, final, _ = judged
    truth = [json.loads(line) for line in run.ground_truth.read_text(encoding="utf-8").splitlines()]
    assert len({t["reason"] for t in truth}) == 21  # every reason code of RULES.md §1
    missed = [
        (t["reason"], t["description"], final[t["event_id"]].reasons if t["event_id"] in final else "never judged")
        for t in truth
        if t["event_id"] not in final or final[t["event_id"]].reasons[:1] != [t["reason"]]
    ]
    assert not missed, f"{len(missed)} of {len(truth)} injected violations not caught as expected: {missed[:10]}"


def test_every_flow_that_was_not_broken_is_allowed(judged: tuple[SimRun, dict[str, Decision], list[str]]) -> None:
    run, final, _ = judged
    injected = {json.loads(line)["event_id"] for line in run.ground_truth.read_text(encoding="utf-8").splitlines()}
    wrong = Counter(
        (d.recipient, d.purpose, tuple(d.reasons))
        for flow_id, d in final.items()
        if flow_id not in injected and d.verdict != "allowed"
    )
    assert not wrong, f"routine flows judged violations: {wrong.most_common(10)}"
    assert len(final) > 1000


def test_connectors_read_the_files_as_the_simulator_meant_them(
    judged: tuple[SimRun, dict[str, Decision], list[str]],
) -> None:
    _, _, mismatches = judged
    assert set(CONNECTORS_READ) == {"mis", "consent", "synclog", "mailtrace", "ctf"}
    assert not mismatches, f"connector output differs from the simulator's intent in: {mismatches[:10]}"
