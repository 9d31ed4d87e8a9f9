"""`pupilflow topics`: create the pipeline's Kafka topics."""

from __future__ import annotations

import argparse
from typing import Any

from pupilflow.topics import ensure_topics
from schemas.settings import Settings


def register(subparsers: Any) -> None:
    """Add the `topics` sub-command."""
    parser = subparsers.add_parser("topics", help="create the Kafka topics (idempotent)")
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Create missing topics and say which."""
    created = ensure_topics(settings, args.replication_factor)
    print(f"topics created: {', '.join(created)}" if created else "topics: all present")
    return 0
