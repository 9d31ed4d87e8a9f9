"""Ingest tokens: shown once, stored only as hashes, per connector, revocable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from producers.ingest import TokenStore
from producers.ingest.tokens import token_hash


def test_a_token_names_its_connector_and_the_store_never_holds_the_secret(tmp_path: Path) -> None:
    store = TokenStore.in_home(tmp_path)
    secret = store.issue("parentpay")
    assert store.connector_for(secret) == "parentpay"
    assert store.connector_for(secret + "x") is None
    store.close()
    raw = (tmp_path / "ingest" / "tokens.sqlite3").read_bytes()
    wal = tmp_path / "ingest" / "tokens.sqlite3-wal"
    everything = raw + (wal.read_bytes() if wal.exists() else b"")
    assert secret.encode() not in everything
    rows = sqlite3.connect(tmp_path / "ingest" / "tokens.sqlite3").execute("SELECT sha256 FROM tokens").fetchall()
    assert rows == [(token_hash(secret),)]


def test_revoking_a_connector_ends_its_tokens_only(tmp_path: Path) -> None:
    store = TokenStore.in_home(tmp_path)
    old, new, other = store.issue("cpoms"), store.issue("cpoms"), store.issue("forms")
    assert store.revoke("cpoms") == 2
    assert store.connector_for(old) is None
    assert store.connector_for(new) is None
    assert store.connector_for(other) == "forms"
    assert store.revoke("cpoms") == 0


def test_one_token_can_be_revoked_by_id_for_rotation(tmp_path: Path) -> None:
    store = TokenStore.in_home(tmp_path)
    old = store.issue("cpoms")
    old_id = store.list()[0].token_id
    new = store.issue("cpoms")
    assert store.revoke("cpoms", old_id) == 1
    assert store.connector_for(old) is None
    assert store.connector_for(new) == "cpoms"


def test_list_shows_ids_connectors_and_revocation_but_no_secret(tmp_path: Path) -> None:
    store = TokenStore.in_home(tmp_path)
    secret = store.issue("forms")
    store.revoke("forms")
    [info] = store.list()
    assert (info.connector, info.revoked_at is not None) == ("forms", True)
    assert secret not in repr(info)
    assert token_hash(secret) not in repr(info)


def test_a_revocation_from_another_process_applies_at_once(tmp_path: Path) -> None:
    server = TokenStore.in_home(tmp_path)
    secret = server.issue("forms")
    cli = TokenStore.in_home(tmp_path)
    cli.revoke("forms")
    cli.close()
    assert server.connector_for(secret) is None


def test_a_connector_id_must_be_an_identifier(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a connector id"):
        TokenStore.in_home(tmp_path).issue("bad id")
