"""Connecting to ClickHouse from a DSN: a server over HTTP(S), or the embedded chDB engine (`chdb:///dir`)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect

from schemas.errors import ConfigurationError, ServiceUnavailable

_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_DATABASE = "pupilflow"


def split_dsn(dsn: str) -> tuple[str, str]:
    """Split a DSN into (DSN without database, database name); chdb DSNs use the default database name."""
    url = urlsplit(dsn)
    if url.scheme == "chdb":
        return dsn, DEFAULT_DATABASE
    database = url.path.strip("/") or DEFAULT_DATABASE
    if not _DATABASE_NAME.match(database):
        raise ConfigurationError(f"clickhouse_dsn: {database!r} is not a valid database name")
    return urlunsplit((url.scheme, url.netloc, "", url.query, "")), database


def connect(dsn: str, *, create_database: bool = True, **options: Any) -> Any:
    """A clickhouse-connect client using the DSN's database, creating it first when asked."""
    server_dsn, database = split_dsn(dsn)
    try:
        if not server_dsn.startswith("chdb:"):
            # Workers share no session state; a session id would serialise their queries.
            options.setdefault("autogenerate_session_id", False)
        client = clickhouse_connect.get_client(dsn=server_dsn, **options)
        if create_database:
            client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    except Exception as exc:  # clickhouse-connect raises several unrelated types for "not reachable"
        raise ServiceUnavailable(f"cannot reach ClickHouse at {server_dsn}: {exc}") from exc
    client.database = database
    return client
