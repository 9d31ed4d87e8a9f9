"""`pupilflow connect KIND`: run a file connector over its outbox folder, exactly once into Kafka."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from producers.filesource import FileConnector, FileFormat, RunSummary
from pupilflow.topics import ensure_topics
from schemas.connector_maps import ConnectorMaps, load_connector_maps
from schemas.policy import load_policy
from schemas.settings import Settings

FORMATS: dict[str, tuple[str, str]] = {
    "ctf": ("producers.ctf", "DfE Common Transfer Files (XML) leaving for another school"),
    "synclog": ("producers.synclog", "MIS and supplier sync audit exports (CSV or JSON lines)"),
    "mailtrace": ("producers.mailtrace", "outbound mail trace exports (CSV)"),
    "consent": ("producers.consent_export", "consent form exports (CSV)"),
    "mis": ("producers.mis_export", "MIS pupil data exports (CSV): enrolment, leaving, birth dates, PR"),
}
"""Each connector kind: the module whose `file_format(maps)` builds its `FileFormat`, and what it reads."""


def file_format(kind: str, maps: ConnectorMaps) -> FileFormat:
    """The `FileFormat` of a connector kind."""
    module = importlib.import_module(FORMATS[kind][0])
    fmt: FileFormat = module.file_format(maps)
    return fmt


def register(subparsers: Any) -> None:
    """Add the `connect` sub-command."""
    kinds = "; ".join(f"{kind}: {text}" for kind, (_, text) in FORMATS.items())
    parser = subparsers.add_parser(
        "connect", help="run a file connector over its outbox", description=f"Connector kinds: {kinds}."
    )
    parser.add_argument("kind", choices=sorted(FORMATS))
    parser.add_argument("--id", dest="connector", default=None, help="connector id (default: the kind)")
    parser.add_argument(
        "--outbox", type=Path, default=None, help="folder to watch (default: <settings.outbox>/<connector id>)"
    )
    parser.add_argument("--once", action="store_true", help="process what is there now, then exit")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between outbox scans (default: 2)")
    parser.add_argument("--batch", type=int, default=2000, help="records per Kafka transaction (default: 2000)")
    parser.add_argument("--policy", type=Path, default=None, help="policy directory (default: settings.policy_dir)")
    parser.set_defaults(func=run)


def build_connector(args: argparse.Namespace, settings: Settings) -> FileConnector:
    """The connector the arguments describe (maps validated against the policy before anything runs)."""
    policy_dir = args.policy or settings.policy_dir
    maps = load_connector_maps(policy_dir, load_policy(policy_dir))
    connector = args.connector or args.kind
    return FileConnector(
        connector,
        file_format(args.kind, maps),
        args.outbox or settings.outbox / connector,
        settings.kafka_bootstrap,
        settings.topics,
        batch_size=args.batch,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )


def _report(connector: FileConnector, summary: RunSummary) -> None:
    print(
        f"{connector.connector}: {summary.files_done} file(s) done, {summary.files_rejected} rejected, "
        f"{summary.files_skipped} already delivered; {summary.events} event(s) emitted, "
        f"{summary.dead_letters} record(s) dead-lettered; next sequence {connector.checkpoint.next_sequence}"
    )
    for reason in summary.rejected_reasons:
        print(f"  rejected: {reason}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the connector once, or until SIGTERM / Ctrl-C; exits 1 if a file was rejected in a `--once` run."""
    connector = build_connector(args, settings)
    ensure_topics(settings)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    with connector:
        if args.once:
            summary = connector.run_once()
            _report(connector, summary)
            return 1 if summary.files_rejected else 0
        signal.signal(signal.SIGTERM, stop)
        print(f"{connector.connector}: watching {connector.outbox} (Ctrl-C to stop)", file=sys.stderr)
        try:
            summary = connector.run(args.poll, lambda: stopping)
        except KeyboardInterrupt:
            summary = RunSummary()
        _report(connector, summary)
    return 0
