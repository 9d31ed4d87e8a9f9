"""`pupilflow replay`: judge a JSON-lines file of events offline, exactly as the stream processor would."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from schemas.decisions import Decision
from schemas.errors import ConfigurationError
from schemas.policy import load_policy
from schemas.settings import Settings
from streams.replay import ReplayResult, compare, replay_lines, summarise


def register(subparsers: Any) -> None:
    """Add the `replay` sub-command."""
    parser = subparsers.add_parser(
        "replay", help="judge a file of events (one JSON event per line, as on Kafka) and summarise"
    )
    parser.add_argument("events", type=Path, help="EVENTS.jsonl, in arrival order")
    parser.add_argument("--policy", type=Path, default=None, help="policy directory (default: settings.policy_dir)")
    parser.add_argument("--out", type=Path, default=None, help="write every decision as JSON lines here")
    parser.add_argument("--rejects", type=Path, default=None, help="write invalid lines (with line and reason) here")
    parser.add_argument("--compare-policy", type=Path, default=None, help="back-test another policy directory")
    parser.add_argument(
        "--lateness-hours", type=float, default=None, help="lateness window, at least 24 (default: settings)"
    )
    parser.set_defaults(func=run)


def _replay(events: Path, policy_dir: Path, lateness: timedelta, out: TextIO | None, label: str = "") -> ReplayResult:
    policy = load_policy(policy_dir)
    started = time.monotonic()

    def progress(line: int, result: ReplayResult) -> None:
        rate = line / max(time.monotonic() - started, 1e-9)
        print(
            f"replay{label}: line {line:,}  decisions {result.emitted:,}  rejected {len(result.rejects):,}"
            f"  ({rate:,.0f} lines/s)",
            file=sys.stderr,
            flush=True,
        )

    def write(decision: Decision) -> None:
        assert out is not None
        out.write(decision.to_json_bytes().decode() + "\n")

    with events.open("r", encoding="utf-8", errors="backslashreplace") as lines:
        # Decisions stream to --out as they are made and are not kept: years of history replay in bounded memory.
        return replay_lines(
            lines,
            policy,
            lateness,
            on_decision=write if out is not None else None,
            keep_decisions=False,
            progress=progress,
        )


def run(args: argparse.Namespace, settings: Settings, stdout: TextIO | None = None) -> int:
    """Replay, write decisions and rejects, print a summary (and the differences under another policy)."""
    out = stdout or sys.stdout
    hours = settings.lateness_hours if args.lateness_hours is None else args.lateness_hours
    if hours < 24:
        raise ConfigurationError("--lateness-hours: must be at least 24 (RULES.md §2)")
    if not args.events.is_file():
        raise ConfigurationError(f"{args.events}: no such events file")
    lateness = timedelta(hours=hours)
    policy_dir = args.policy or settings.policy_dir
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(args.out.open("w", encoding="utf-8")) if args.out is not None else None
        result = _replay(args.events, policy_dir, lateness, sink)
    if args.rejects is not None:
        with args.rejects.open("w", encoding="utf-8") as rejects:
            for reject in result.rejects:
                rejects.write(json.dumps({"line": reject.line, "reason": reject.reason, "raw": reject.raw}) + "\n")
    for reject in result.rejects:
        print(f"{args.events}:{reject.line}: {reject.reason}", file=sys.stderr)
    print(summarise(result).render(), file=out)
    print(f"rejected lines: {len(result.rejects)}   duplicate deliveries ignored: {result.duplicates}", file=out)
    if args.compare_policy is not None:
        other = _replay(args.events, args.compare_policy, lateness, None, label=f" ({args.compare_policy})")
        differences = compare(result, other)
        print(f"compared with {args.compare_policy}: {len(differences)} flow(s) judged differently", file=out)
        for diff in differences:
            before = f"{diff.before[0]} {','.join(diff.before[1])}".strip()
            after = f"{diff.after[0]} {','.join(diff.after[1])}".strip()
            print(f"  {diff.flow_event_id}: {before} -> {after}", file=out)
    return 0
