"""`pupilflow verify` against real tampering in ClickHouse: an UPDATE of one column, and a DELETE of a middle or
the last row, each on a fresh copy of a trail the real sink landed; verify exits 1 and names the place."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from schemas.settings import Settings
from sinks.clickhouse import connect, split_dsn

from .test_audit_store import Trail, run_verify, trail

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

__all__ = ["trail"]  # the landed trail fixture, shared with test_audit_store


@pytest.fixture
def copy(trail: Trail) -> Iterator[tuple[Settings, Any]]:
    """Settings and a client on a fresh database holding a copy of the landed `decisions` table."""
    server_dsn, _ = split_dsn(trail.settings.clickhouse_dsn)
    source = trail.client.database
    target = f"{source}_copy_{uuid.uuid4().hex[:6]}"
    settings = trail.settings.model_copy(update={"clickhouse_dsn": f"{server_dsn.rstrip('/')}/{target}"})
    client = connect(settings.clickhouse_dsn)
    client.command(f"CREATE TABLE {target}.decisions AS {source}.decisions")
    client.command(f"INSERT INTO {target}.decisions SELECT * FROM {source}.decisions")
    yield settings, client
    client.command(f"DROP DATABASE IF EXISTS {target}")


def partition_rows(client: Any) -> list[tuple[int, int, str]]:
    """(partition, offset, decision_id) of the largest partition, in chain order."""
    rows = client.query(
        "SELECT kafka_partition, kafka_offset, decision_id FROM decisions FINAL ORDER BY kafka_partition, kafka_offset"
    ).result_rows
    by_partition: dict[int, list[tuple[int, int, str]]] = {}
    for row in rows:
        by_partition.setdefault(row[0], []).append(tuple(row))
    return max(by_partition.values(), key=len)


def test_the_untouched_copy_verifies(copy: tuple[Settings, Any]) -> None:
    done = run_verify(copy[0])
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_update_of_one_column_is_caught_and_located(copy: tuple[Settings, Any]) -> None:
    settings, client = copy
    partition, offset, decision_id = partition_rows(client)[2]
    client.command(
        "ALTER TABLE decisions UPDATE verdict = if(verdict = 'allowed', 'violation', 'allowed')"
        f" WHERE decision_id = '{decision_id}' SETTINGS mutations_sync = 2"
    )
    done = run_verify(settings)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"changed   partition {partition} offset {offset} decision {decision_id}" in done.stdout
    assert "TAMPERING: 1 problems found" in done.stderr


def test_a_deleted_middle_row_is_caught_at_the_row_after_it(copy: tuple[Settings, Any]) -> None:
    settings, client = copy
    rows = partition_rows(client)
    partition, _, decision_id = rows[1]
    _, next_offset, next_id = rows[2]
    client.command(f"DELETE FROM decisions WHERE decision_id = '{decision_id}'")
    done = run_verify(settings)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"deleted   partition {partition} offset {next_offset} decision {next_id}" in done.stdout


def test_a_deleted_last_row_is_caught_by_the_checkpointed_head(copy: tuple[Settings, Any]) -> None:
    settings, client = copy
    rows = partition_rows(client)
    partition, last_offset, decision_id = rows[-1]
    client.command(f"ALTER TABLE decisions DELETE WHERE decision_id = '{decision_id}' SETTINGS mutations_sync = 2")
    done = run_verify(settings)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"deleted   partition {partition} offset {last_offset}:" in done.stdout
    assert f"the trail ends at offset {rows[-2][1]}" in done.stdout


def test_the_heads_file_can_be_given_explicitly(copy: tuple[Settings, Any], trail: Trail) -> None:
    done = run_verify(copy[0], "--heads", str(trail.settings.home / "chain-heads.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chain-heads.json" in done.stdout
    missing = run_verify(copy[0], "--heads", str(trail.settings.home / "nope.json"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
