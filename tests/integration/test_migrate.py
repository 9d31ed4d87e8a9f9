"""`pupilflow migrate` on a real ClickHouse: every migration once, then nothing, and the tables as they declare."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pupilflow.children import settings_env
from schemas.errors import ConfigurationError
from schemas.settings import Settings
from sinks.clickhouse import connect, split_dsn
from sinks.migrate import Migration, bundled_migrations, migrate

from .conftest import REPO

pytestmark = [pytest.mark.clickhouse]

WIDER_MERGES = ("decisions", "violations", "facts")
"""Written every second and read whole, by time or seldom; disclosures (read per pupil) keeps the default."""


@pytest.fixture
def fresh(settings: Settings, clickhouse: Any) -> Iterator[Settings]:
    """Settings on a database of its own, not yet migrated (dropped afterwards)."""
    server, _ = split_dsn(settings.clickhouse_dsn)
    if server.startswith("chdb:"):
        pytest.skip("the embedded engine keeps one database; these tests need a fresh one on a server")
    mine = settings.model_copy(
        update={"clickhouse_dsn": f"{server.rstrip('/')}/pupilflow_migrate_{uuid.uuid4().hex[:8]}"}
    )
    yield mine
    clickhouse.command(f"DROP DATABASE IF EXISTS {split_dsn(mine.clickhouse_dsn)[1]}")


def run_migrate(settings: Settings) -> subprocess.CompletedProcess[str]:
    """`pupilflow migrate` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pupilflow.cli", "migrate"],
        cwd=REPO,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_applies_each_migration_once(fresh: Settings) -> None:
    first = run_migrate(fresh)
    assert first.returncode == 0, first.stderr
    names = [f"{m.version:04d}_{m.name}" for m in bundled_migrations()]
    assert first.stdout.split() == [word for name in names for word in ("applied", name)]

    again = run_migrate(fresh)
    assert (again.returncode, again.stdout.strip()) == (0, "migrations: up to date"), again.stderr
    client = connect(fresh.clickhouse_dsn)
    ledger = client.query("SELECT version FROM schema_migrations ORDER BY version").result_rows
    assert [row[0] for row in ledger] == [m.version for m in bundled_migrations()]


def test_tables_only_written_and_scanned_merge_wider(fresh: Settings) -> None:
    client = connect(fresh.clickhouse_dsn)
    migrate(client)
    found = client.query(
        "SELECT name, engine_full FROM system.tables "
        "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
        parameters={"names": [*WIDER_MERGES, "disclosures"]},
    ).result_rows
    assert sorted(name for name, _ in found) == sorted([*WIDER_MERGES, "disclosures"])
    for name, engine in found:
        assert ("merge_selector_base = 20" in engine) == (name in WIDER_MERGES), (name, engine)


def test_an_applied_migration_changed_afterwards_is_refused(fresh: Settings) -> None:
    client = connect(fresh.clickhouse_dsn)
    migrate(client)
    first = bundled_migrations()[0]
    edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")
    with pytest.raises(ConfigurationError, match="changed after it was applied"):
        migrate(client, [edited])
