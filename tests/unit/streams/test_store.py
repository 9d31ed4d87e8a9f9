"""The subject store: a compact id -> bytes map that survives growth, replacement and compaction."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.store import SubjectStore


def test_put_get_replace_and_missing() -> None:
    store = SubjectStore(capacity=2)
    store.put("ava", b"one")
    store.put("ben", b"")
    store.put("ava", b"two")
    assert store.get("ava") == b"two"
    assert store.get("ben") == b""
    assert store.get("cal") is None
    assert len(store) == 2
    assert "ava" in store
    assert "cal" not in store
    assert sorted(store.keys()) == ["ava", "ben"]


def test_growth_and_compaction_keep_every_entry() -> None:
    store = SubjectStore(capacity=4)
    for round_ in range(3):
        for n in range(5000):
            store.put(f"pupil-{n}", f"{round_}-{n}".encode() * 40)
    assert len(store) == 5000
    assert all(store.get(f"pupil-{n}") == f"2-{n}".encode() * 40 for n in range(5000))
    # Two of the three rounds are garbage: compaction has run, so the arena holds about one round.
    assert store.nbytes() < 3 * 5000 * 200


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=50)), max_size=200))
def test_behaves_like_a_dict(operations: list[tuple[str, bytes]]) -> None:
    store = SubjectStore(capacity=1)
    model: dict[str, bytes] = {}
    for key, value in operations:
        store.put(key, value)
        model[key] = value
    assert len(store) == len(model)
    assert {k: store.get(k) for k in model} == model
    assert sorted(store.keys()) == sorted(model)
