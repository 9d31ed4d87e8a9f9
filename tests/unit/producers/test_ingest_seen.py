"""The seen-store: which event ids the ingest API has delivered."""

from __future__ import annotations

from pathlib import Path

from producers.ingest import SeenStore


def test_recorded_ids_are_seen_across_restarts(tmp_path: Path) -> None:
    store = SeenStore.in_home(tmp_path)
    store.record(["a", "b"])
    store.close()
    reopened = SeenStore.in_home(tmp_path)
    assert reopened.seen({"a", "b", "c"}) == {"a", "b"}


def test_more_ids_than_one_query_can_bind_are_checked(tmp_path: Path) -> None:
    store = SeenStore.in_home(tmp_path)
    ids = [f"e-{n}" for n in range(5_000)]
    store.record(ids[::2])
    assert store.seen(ids) == set(ids[::2])


def test_prune_forgets_only_old_ids(tmp_path: Path) -> None:
    store = SeenStore.in_home(tmp_path)
    store.record(["a"])
    assert store.prune(3600) == 0
    assert store.prune(-10) == 1
    assert store.seen({"a"}) == set()
