"""The simulator: deterministic bytes, valid events, documented file formats, ground truth, rates, posting."""

from __future__ import annotations

import argparse
import csv
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from defusedxml import ElementTree

from producers.simulator import SimConfig, SimRun, post_events, simulate
from producers.simulator.formats import HEADERS
from producers.simulator.outbox import FileDrop
from producers.simulator.poster import PostError, PostSummary
from pupilflow.commands import simulate as command
from schemas.connector_maps import load_connector_maps
from schemas.events import DataFlow, parse_event
from schemas.policy import load_policy
from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
POLICY = ROOT / "policy"


def _run(out: Path, **kw: Any) -> SimRun:
    return simulate(SimConfig(out=out, policy_dir=POLICY, **kw))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> SimRun:
    """Three weeks of a small trust, with everything kept in memory."""
    return _run(tmp_path_factory.mktemp("short"), seed=5, days=21, pupils_hawthorn=40, pupils_rose_valley=60,
                keep_intended=True)  # fmt: skip


def test_the_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    kw = {"days": 12, "pupils_hawthorn": 30, "pupils_rose_valley": 40}
    first, again, other = (_run(tmp_path / name, seed=seed, **kw) for name, seed in (("a", 9), ("b", 9), ("c", 10)))
    files = _tree(first.config.out)
    assert len(files) > 10
    assert files == _tree(again.config.out)
    different = _tree(other.config.out)
    assert files.keys() & different.keys()
    assert any(files[name] != different.get(name) for name in files)


def test_every_http_event_is_a_valid_event_from_the_simulator_in_sequence(short: SimRun) -> None:
    lines = short.http_events.read_text(encoding="utf-8").splitlines()
    events = [parse_event(line) for line in lines]
    assert events
    assert [e.source.sequence for e in events] == list(range(len(events)))
    assert {e.source.connector for e in events} == {"simulator"}
    assert len({e.event_id for e in events}) == len(events)
    assert all(e.emitted_at >= e.occurred_at for e in events if isinstance(e, DataFlow))


def test_intended_file_events_validate_against_the_schemas(short: SimRun) -> None:
    files = [d for d in short.drops if isinstance(d, FileDrop)]
    count = 0
    for drop in files:
        for number, drafts in enumerate(drop.intended, start=1):
            for index, draft in enumerate(drafts):
                values = {"event_id": drop.event_id(number, index), **draft.fields, "emitted_at": drop.at,
                          "source": {"connector": drop.connector, "sequence": count}}  # fmt: skip
                draft.model.model_validate(values)
                count += 1
    assert count == sum(short.events_by_connector[c] for c in ("mis", "consent", "synclog", "mailtrace", "ctf"))


def test_csv_files_parse_with_the_documented_headers(short: SimRun) -> None:
    docs = (ROOT / "docs" / "connectors.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z_]+)`", docs))
    seen = set()
    for path in short.files:
        connector = path.parent.name
        if connector == "ctf":
            continue
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        assert tuple(rows[0]) == HEADERS[connector], path
        assert set(rows[0]) <= documented, f"{path}: columns the docs do not name"
        assert rows[1:]
        assert all(len(r) == len(rows[0]) for r in rows[1:])
        seen.add(connector)
    assert seen == {"mis", "consent", "synclog", "mailtrace"}


def test_ctf_files_are_xml_between_schools_the_maps_know(tmp_path: Path) -> None:
    run = _run(tmp_path, seed=2, start=date(2026, 7, 1), days=22)
    maps = load_connector_maps(POLICY, load_policy(POLICY))
    ctfs = [p for p in run.files if p.suffix == ".xml"]
    assert ctfs
    for path in ctfs:
        root = ElementTree.fromstring(path.read_bytes())
        assert root.tag == "CTfile"
        for end in ("SourceSchool", "DestSchool"):
            laestab = root.findtext(f"Header/{end}/LEA") + root.findtext(f"Header/{end}/Estab")
            assert maps.school(laestab) is not None, laestab
        assert all(p.findtext("UPN") for p in root.iter("Pupil"))


def test_files_are_complete_and_dated_in_arrival_order(short: SimRun) -> None:
    assert not list(short.config.outbox_dir.rglob("*.tmp"))
    arrivals = [json.loads(line) for line in short.arrivals.read_text(encoding="utf-8").splitlines()]
    times = [a["at"] for a in arrivals]
    assert times == sorted(times)
    files = [short.config.outbox_dir / a["file"] for a in arrivals if "file" in a]
    assert files == short.files
    mtimes = [p.stat().st_mtime for p in files]
    assert mtimes == sorted(mtimes)
    # The MIS export and the first consent forms arrive before any flow that relies on them.
    assert arrivals[1]["connector"] == "mis" or arrivals[0]["connector"] == "mis"


def test_ground_truth_names_events_the_run_emitted(short: SimRun) -> None:
    ids = {json.loads(line)["event_id"] for line in short.http_events.read_text(encoding="utf-8").splitlines()}
    for drop in short.drops:
        if isinstance(drop, FileDrop):
            ids |= {drop.event_id(n, i) for n, drafts in enumerate(drop.intended, 1) for i in range(len(drafts))}
    truth = [json.loads(line) for line in short.ground_truth.read_text(encoding="utf-8").splitlines()]
    assert truth
    assert {t["event_id"] for t in truth} <= ids
    assert all(t["reason"] and t["rule"].startswith("§") and t["description"] for t in truth)
    summary = json.loads(short.summary.read_text(encoding="utf-8"))
    assert summary["injected"] == len(truth) == sum(summary["injected_by_reason"].values())


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.3])
def test_the_violation_rate_is_respected_in_count(tmp_path: Path, rate: float) -> None:
    run = _run(tmp_path, seed=4, days=60, violation_rate=rate, cover_all_codes=False)
    eligible, injected = sum(run.eligible.values()), sum(run.injected.values())
    assert eligible > 500
    # Some flows have no way to break on a given day (nobody without consent to swap in), so a little under.
    assert rate * eligible * 0.6 <= injected <= rate * eligible * 1.2 + 1


def test_cover_all_codes_injects_every_reason_code_over_a_year(year: SimRun) -> None:
    assert len(year.injected) == 21


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> SimRun:
    """A whole academic year of a small trust."""
    return _run(tmp_path_factory.mktemp("year"), seed=1, pupils_hawthorn=60, pupils_rose_valley=90)


# -- posting --------------------------------------------------------------------------------------------


class FakeApi:
    """Answers POSTs from a script of statuses; counts what it was sent."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
        status = self.statuses.pop(0) if self.statuses else 202
        if status != 202:
            return status, b'{"detail": "nope"}'
        events = json.loads(body)["events"]
        self.bodies.append({"url": url, "events": events})
        self.headers.append(headers)
        return 202, json.dumps({"accepted": len(events) - 1, "duplicates": 1}).encode()


class FakeClock:
    """Time that moves only when slept."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _events_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"event_id": f"e{i}"}) + "\n" for i in range(n)), encoding="utf-8")
    return path


def test_post_events_batches_with_the_token_and_retries_a_503(tmp_path: Path) -> None:
    api, clock = FakeApi([503, 503]), FakeClock()
    summary = post_events(_events_file(tmp_path, 25), "http://ingest:6068/", "tok", batch_size=10, send=api,
                          sleep=clock.sleep, clock=clock)  # fmt: skip
    assert (summary.sent, summary.batches, summary.retries) == (25, 3, 2)
    assert (summary.accepted, summary.duplicates) == (22, 3)
    assert [len(b["events"]) for b in api.bodies] == [10, 10, 5]
    assert {b["url"] for b in api.bodies} == {"http://ingest:6068/v1/events/batch"}
    assert all(h["Authorization"] == "Bearer tok" for h in api.headers)


def test_post_events_paces_to_the_rate_by_count(tmp_path: Path) -> None:
    api, clock = FakeApi([]), FakeClock()
    summary = post_events(_events_file(tmp_path, 100), "http://x", "t", rate=20, send=api, sleep=clock.sleep,
                          clock=clock)  # fmt: skip
    assert summary.sent == 100
    assert all(len(b["events"]) <= 20 for b in api.bodies)
    # The last batch leaves when 80 events have gone at 20 events/s: 4 s after the first.
    assert clock.now == pytest.approx(4.0)


@pytest.mark.parametrize("status", [401, 403, 422])
def test_post_events_stops_on_a_refusal(tmp_path: Path, status: int) -> None:
    with pytest.raises(PostError, match=f"HTTP {status}"):
        post_events(_events_file(tmp_path, 3), "http://x", "t", send=FakeApi([status]), sleep=lambda _: None)


# -- the command ----------------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["simulate", *argv])


def test_the_simulate_command_writes_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["--out", str(tmp_path), "--days", "5", "--pupils", "50", "--seed", "3", "--policy", str(POLICY)])
    assert args.func is command.run
    assert command.run(args, Settings()) == 0
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["pupils"] == {"hawthorn-primary": 20, "rose-valley": 30}
    assert summary["days"] == 5
    assert (tmp_path / "outbox" / "mis").is_dir()
    assert "violations injected" in capsys.readouterr().out


def test_the_simulate_command_posts_when_given_an_ingest_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_post(path: Path, url: str, token: str, **kw: Any) -> Any:
        calls.append({"path": path, "url": url, "token": token, **kw})
        return PostSummary(sent=1, accepted=1, batches=1)

    monkeypatch.setattr(command, "post_events", fake_post)
    args = _parse(["--out", str(tmp_path), "--days", "3", "--pupils", "20", "--policy", str(POLICY),
                   "--ingest-url", "http://ingest", "--token", "secret", "--rate", "50"])  # fmt: skip
    assert command.run(args, Settings()) == 0
    assert [(c["url"], c["token"], c["rate"]) for c in calls] == [("http://ingest", "secret", 50.0)]
    assert calls[0]["path"] == tmp_path / "http" / "events.jsonl"


def test_an_ingest_url_without_a_token_is_refused(tmp_path: Path) -> None:
    args = _parse(["--out", str(tmp_path), "--ingest-url", "http://ingest"])
    assert command.run(args, Settings()) == 2
    assert not (tmp_path / "summary.json").exists()
