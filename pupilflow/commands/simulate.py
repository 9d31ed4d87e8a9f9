"""`pupilflow simulate`: a seeded school year written to connector outboxes, with its ground truth."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from producers.simulator import SimConfig, post_events, simulate
from schemas.settings import Settings


def register(subparsers: Any) -> None:
    """Add the `simulate` sub-command."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a school year (files for the connectors, HTTP events, ground truth of injected violations)",
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory (ground truth, summary, HTTP events)")
    parser.add_argument("--outbox", type=Path, default=None, help="connector outboxes (default: OUT/outbox)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: the same seed writes the same bytes")
    parser.add_argument("--start", type=date.fromisoformat, default=None, help="first day (default 2025-09-01)")
    parser.add_argument("--days", type=int, default=None, help="days to simulate (default: to the end of term)")
    parser.add_argument("--pupils", type=int, default=None, help="pupils in all (split 2:3 Hawthorn:Rose Valley)")
    parser.add_argument("--violation-rate", type=float, default=0.05, help="share of eligible flows to break")
    parser.add_argument(
        "--malformed-rate", type=float, default=0.0, help="share of CSV exports given one malformed record"
    )
    parser.add_argument("--no-cover-all", action="store_true", help="do not force one injection per reason code")
    parser.add_argument("--policy", type=Path, default=None, help="policy directory (default: settings.policy_dir)")
    parser.add_argument("--ingest-url", default=None, help="POST the HTTP events to this ingest API")
    parser.add_argument("--token", default=None, help="bearer token of the `simulator` connector")
    parser.add_argument("--rate", type=float, default=None, help="pace posting to this many events per second")
    parser.add_argument("--batch", type=int, default=500, help="events per POST (default 500)")
    parser.set_defaults(func=run)


def config_from(args: argparse.Namespace, settings: Settings) -> SimConfig:
    """The `SimConfig` the arguments describe."""
    extra: dict[str, Any] = {}
    if args.start is not None:
        extra["start"] = args.start
    if args.pupils is not None:
        hawthorn = max(1, round(args.pupils * 2 / 5))
        extra.update(pupils_hawthorn=hawthorn, pupils_rose_valley=max(1, args.pupils - hawthorn))
    return SimConfig(
        out=args.out,
        seed=args.seed,
        days=args.days,
        violation_rate=args.violation_rate,
        malformed_rate=args.malformed_rate,
        cover_all_codes=not args.no_cover_all,
        outbox=args.outbox,
        policy_dir=args.policy or settings.policy_dir,
        rate=args.rate,
        **extra,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Write the run; post its HTTP events when `--ingest-url` is given."""
    if args.ingest_url and not args.token:
        print("pupilflow simulate: --ingest-url needs --token", file=sys.stderr)
        return 2
    cfg = config_from(args, settings)
    result = simulate(cfg)
    summary = json.loads(result.summary.read_text(encoding="utf-8"))
    print(
        f"simulated {summary['days']} days: {summary['events']} events ({summary['flows']} flows), "
        f"{len(result.files)} files under {cfg.outbox_dir}, {summary['events_by_connector'].get(cfg.http_connector, 0)}"
        f" HTTP events in {result.http_events}; {summary['injected']} violations injected "
        f"({summary['eligible_total']} eligible flows) -> {result.ground_truth}"
    )
    if args.ingest_url:
        posted = post_events(result.http_events, args.ingest_url, args.token, rate=cfg.rate, batch_size=args.batch)
        print(
            f"posted {posted.sent} events in {posted.batches} batches: {posted.accepted} accepted, "
            f"{posted.duplicates} duplicates, {posted.retries} retries after 503"
        )
    return 0
