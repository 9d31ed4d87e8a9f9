"""`pupilflow replay`: decisions and rejects files, the summary, and a back-test against another policy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pupilflow.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "tests" / "data" / "replay" / "sample.jsonl"


def test_replay_is_a_registered_command() -> None:
    args = build_parser().parse_args(["replay", str(SAMPLE)])
    assert args.events == SAMPLE
    assert callable(args.func)


def test_replay_writes_decisions_rejects_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, rejects = tmp_path / "decisions.jsonl", tmp_path / "rejects.jsonl"
    code = main(["replay", str(SAMPLE), "--policy", str(ROOT / "policy"), "--out", str(out), "--rejects", str(rejects)])
    assert code == 0
    decisions = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(decisions) == 37
    assert len({d["policy_digest"] for d in decisions}) == 1
    assert all(d["notice_version"] == "1.0" for d in decisions)
    bad = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [b["line"] for b in bad] == [6, 21, 85]
    assert all(b["reason"] and b["raw"] for b in bad)
    captured = capsys.readouterr()
    assert "flows judged: 36" in captured.out
    assert "violation 24" in captured.out
    assert "INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD" in captured.out
    assert f"{SAMPLE}:21:" in captured.err


def test_compare_policy_reports_the_flows_that_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "policy-v2"
    shutil.copytree(ROOT / "policy", other)
    recipients = other / "recipients.yaml"
    text = recipients.read_text()
    # Version 2 of the register: QuizCloud has certified to the UK Extension of the DPF.
    marker = "    name: QuizCloud (US-hosted, not DPF certified)\n"
    assert marker in text
    recipients.write_text(text.replace(marker, marker + "    dpf_uk_extension: true\n"))
    code = main(["replay", str(SAMPLE), "--policy", str(ROOT / "policy"), "--compare-policy", str(other)])
    assert code == 0
    out = capsys.readouterr().out
    assert "1 flow(s) judged differently" in out
    assert "f-quizcloud: violation INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD -> allowed" in out


def test_invalid_policy_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(SAMPLE), "--policy", str(tmp_path)]) == 2
    assert "policy file missing" in capsys.readouterr().err


def test_missing_events_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "none.jsonl")]) == 2
    assert "no such events file" in capsys.readouterr().err


def test_lateness_below_24_hours_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(SAMPLE), "--lateness-hours", "12"]) == 2
    assert "at least 24" in capsys.readouterr().err
