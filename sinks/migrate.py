"""Versioned SQL migrations for the audit store, applied in order and at most once each."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from schemas.errors import ConfigurationError

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version, name, statements and checksum."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text: an applied migration must never change."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The file's statements, split on `;` at the end of a line, comments dropped."""
        body = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";\s*$", body, flags=re.MULTILINE) if s.strip()]


def bundled_migrations() -> list[Migration]:
    """The migrations shipped in `sinks/migrations`, in version order."""
    found = []
    for entry in resources.files("sinks.migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigurationError(f"duplicate migration versions in sinks/migrations: {versions}")
    return found


def migrate(client: Any, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply every migration not yet recorded in `schema_migrations`; returns those applied now."""
    migrations = bundled_migrations() if migrations is None else migrations
    client.command(_LEDGER)
    rows = client.query("SELECT version, checksum FROM schema_migrations").result_rows
    applied = {int(version): str(checksum) for version, checksum in rows}
    done = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise ConfigurationError(
                    f"migration {migration.version:04d}_{migration.name}.sql changed after it was applied; "
                    "add a new migration instead of editing an applied one"
                )
            continue
        for statement in migration.statements():
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        done.append(migration)
    return done
