"""`pupilflow migrate`: apply the audit store's SQL migrations."""

from __future__ import annotations

import argparse
from typing import Any

from schemas.settings import Settings
from sinks.clickhouse import connect
from sinks.migrate import migrate


def register(subparsers: Any) -> None:
    """Add the `migrate` sub-command."""
    parser = subparsers.add_parser("migrate", help="apply ClickHouse migrations (idempotent)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations and list them."""
    applied = migrate(connect(settings.clickhouse_dsn))
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    if not applied:
        print("migrations: up to date")
    return 0
