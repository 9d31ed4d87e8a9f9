"""Per-connector API tokens: random secrets shown once, stored only as SHA-256 hashes, revocable."""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CONNECTOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}$")
"""What a connector id may look like (the `Identifier` of `source.connector`)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id   TEXT PRIMARY KEY,
    connector  TEXT NOT NULL,
    sha256     TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
)
"""


def token_hash(secret: str) -> str:
    """The stored form of a token: hex SHA-256 (a 256-bit random secret needs no salt or slow hash)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    """What `list` shows of a token: never the secret, nor its hash."""

    token_id: str
    connector: str
    created_at: datetime
    revoked_at: datetime | None


class TokenStore:
    """Tokens in a SQLite file; safe to share between the server's threads and a CLI in another process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
        # WAL: `token revoke` in another process never waits for, nor blocks, the running server.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    @classmethod
    def in_home(cls, home: Path) -> TokenStore:
        """The store of a pupilflow home (`<home>/ingest/tokens.sqlite3`)."""
        return cls(home / "ingest" / "tokens.sqlite3")

    def issue(self, connector: str) -> str:
        """Create a token for a connector; returns the secret, which is never stored nor shown again."""
        if not CONNECTOR_ID.match(connector):
            raise ValueError(f"not a connector id: {connector!r}")
        secret = f"pft_{secrets.token_urlsafe(32)}"
        with self._lock:
            self._db.execute(
                "INSERT INTO tokens (token_id, connector, sha256, created_at) VALUES (?, ?, ?, ?)",
                (secrets.token_hex(4), connector, token_hash(secret), datetime.now(UTC).isoformat()),
            )
        return secret

    def revoke(self, connector: str, token_id: str | None = None) -> int:
        """Revoke a connector's active tokens (or only `token_id`); returns how many were revoked."""
        query = "UPDATE tokens SET revoked_at = ? WHERE connector = ? AND revoked_at IS NULL"
        params: tuple[str, ...] = (datetime.now(UTC).isoformat(), connector)
        if token_id is not None:
            query += " AND token_id = ?"
            params += (token_id,)
        with self._lock:
            return self._db.execute(query, params).rowcount

    def list(self) -> list[TokenInfo]:
        """Every token ever issued, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT token_id, connector, created_at, revoked_at FROM tokens ORDER BY created_at, token_id"
            ).fetchall()
        return [
            TokenInfo(tid, conn, datetime.fromisoformat(created), datetime.fromisoformat(rev) if rev else None)
            for tid, conn, created, rev in rows
        ]

    def connector_for(self, secret: str) -> str | None:
        """The connector an active token belongs to, or None for an unknown or revoked token."""
        with self._lock:
            row = self._db.execute(
                "SELECT connector FROM tokens WHERE sha256 = ? AND revoked_at IS NULL", (token_hash(secret),)
            ).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
