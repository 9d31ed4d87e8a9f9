"""Migrations: the bundled files in order, statements split from comments, and each applied at most once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from schemas.errors import ConfigurationError
from sinks.migrate import Migration, bundled_migrations, migrate


class Ledger:
    """A ClickHouse client reduced to what `migrate` uses: the statements it ran and `schema_migrations`' rows."""

    def __init__(self, applied: list[Migration] | None = None) -> None:
        self.rows = [(m.version, m.name, m.checksum) for m in applied or []]
        self.commands: list[str] = []

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str) -> Any:
        assert "schema_migrations" in sql
        return SimpleNamespace(result_rows=[(version, checksum) for version, _, checksum in self.rows])

    def insert(self, table: str, rows: list[list[object]], column_names: list[str]) -> None:
        assert (table, column_names) == ("schema_migrations", ["version", "name", "checksum"])
        self.rows += [(int(r[0]), str(r[1]), str(r[2])) for r in rows]  # type: ignore[call-overload]


FIRST = Migration(1, "tables", "-- the first table;\nCREATE TABLE a (x UInt8)\nENGINE = Memory;\n")
SECOND = Migration(
    2, "settings", "ALTER TABLE a MODIFY SETTING s = 1;\n-- why; twice\nALTER TABLE b MODIFY SETTING s = 1;\n"
)


def test_bundled_migrations_are_numbered_in_order_without_gaps() -> None:
    versions = [m.version for m in bundled_migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert all(m.statements() for m in bundled_migrations())


def test_statements_are_split_at_line_ends_and_comments_dropped() -> None:
    assert FIRST.statements() == ["CREATE TABLE a (x UInt8)\nENGINE = Memory"]
    assert SECOND.statements() == ["ALTER TABLE a MODIFY SETTING s = 1", "ALTER TABLE b MODIFY SETTING s = 1"]


def test_pending_migrations_are_applied_in_order_and_recorded() -> None:
    ledger = Ledger()
    assert migrate(ledger, [FIRST, SECOND]) == [FIRST, SECOND]
    assert ledger.commands[1:] == [*FIRST.statements(), *SECOND.statements()]
    assert [row[:2] for row in ledger.rows] == [(1, "tables"), (2, "settings")]


def test_a_second_run_applies_nothing() -> None:
    ledger = Ledger([FIRST])
    assert migrate(ledger, [FIRST, SECOND]) == [SECOND]
    commands = len(ledger.commands)
    assert migrate(ledger, [FIRST, SECOND]) == []
    assert len(ledger.commands) == commands + 1  # only the ledger's own CREATE TABLE IF NOT EXISTS


def test_an_applied_migration_edited_afterwards_is_refused() -> None:
    ledger = Ledger([FIRST])
    edited = Migration(1, "tables", FIRST.sql.replace("UInt8", "UInt16"))
    with pytest.raises(ConfigurationError, match=r"0001_tables\.sql changed after it was applied"):
        migrate(ledger, [edited, SECOND])
    assert len(ledger.rows) == 1  # nothing after it was applied either
