"""The store of open flows answers the same before and after its pending flows are written to SQLite."""

from __future__ import annotations

import hashlib

import pytest

from streams.openflows import OpenFlows, digest_of

H = 3_600_000_000  # an hour in microseconds


def filled(on_disk: bool = False) -> OpenFlows:
    store = OpenFlows(on_disk)
    store.add("f-1", "sims", ["p-1", "p-2"], occurred=1 * H, expires=49 * H, line=b"one")
    store.add("f-2", "quizcloud", ["p-1"], occurred=3 * H, expires=51 * H, line=b"two")
    store.add("f-3", "sims", ["p-2", "p-2"], occurred=0, expires=50 * H, line=b"three")
    return store


def answers(store: OpenFlows, now: int) -> tuple[object, ...]:
    return (
        store.for_subject("p-1", None, now),
        store.for_subject("p-1", 2 * H, now),
        store.for_subject("p-2", None, now),
        store.for_recipient("sims", 0, now),
        store.for_recipient("sims", 1 * H, now),
        [store.line(f, now) for f in ("f-1", "f-2", "f-3", "f-4")],
        store.ids(),
        len(store),
    )


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
def test_reads_are_the_same_whether_flows_are_pending_or_written(on_disk: bool) -> None:
    pending = filled(on_disk)
    written = filled(on_disk)
    written.flush({"f-1": b"b:t.0", "f-2": b"b:t.0", "f-3": b"b:t.1"})
    for now in (0, 49 * H, 50 * H, 51 * H):
        assert answers(pending, now) == answers(written, now)
    assert pending.for_subject("p-1", None, 0) == ["f-1", "f-2"]  # arrival order
    assert pending.for_recipient("sims", 0, 0) == ["f-3", "f-1"]  # occurrence order
    assert pending.for_subject("p-2", None, 49 * H + 1) == ["f-3"]  # f-1 has expired
    assert pending.line("f-1", 49 * H + 1) is None


def test_flows_added_after_a_flush_come_after_the_written_ones_for_a_subject() -> None:
    store = filled()
    store.flush({})
    store.add("f-0", "sims", ["p-1"], occurred=0, expires=60 * H, line=b"zero")
    assert store.for_subject("p-1", None, 0) == ["f-1", "f-2", "f-0"]
    assert store.for_recipient("sims", 0, 0) == ["f-0", "f-3", "f-1"]


def test_expire_reports_rewritten_flows_and_batches_with_nothing_left_open() -> None:
    store = filled()
    store.replace("f-1", b"one again")  # pending: rewritten before it was ever written
    store.flush({"f-1": b"b:t.0", "f-2": b"b:t.0", "f-3": b"b:t.1"})
    store.replace("f-3", b"three again")
    assert store.line("f-1", 0) == b"one again"
    assert store.line("f-3", 0) == b"three again"
    assert store.expire(49 * H) == ([], [])
    assert store.expire(50 * H + 1) == (["f-1", "f-3"], [b"b:t.1"])  # b:t.0 still holds f-2
    assert store.expire(52 * H) == ([], [b"b:t.0"])
    assert len(store) == 0
    assert store.ids() == []


def test_drop_pending_forgets_flows_that_closed_before_they_were_written() -> None:
    store = filled()
    store.replace("f-2", b"two again")
    assert store.drop_pending(50 * H + 1) == [("f-1", False), ("f-3", False)]
    assert store.pending() == ["f-2"]
    assert store.for_subject("p-2", None, 0) == []
    assert store.drop_pending(60 * H) == [("f-2", True)]


def test_digests_are_known_once_remembered_in_any_number_of_chunks() -> None:
    store = OpenFlows()
    digests = [hashlib.blake2b(b"%d" % n, digest_size=12).digest() for n in range(1_200)]
    store.remember(digests[::2])
    assert store.known(digests) == set(digests[::2])
    store.remember(digests[:10])  # again: no error, no double
    assert store.known(digests[:10]) == set(digests[:10])


def test_sqlite_commits_at_most_every_interval_and_reads_see_what_is_not_committed() -> None:
    now = [0.0]
    store = OpenFlows(on_disk=True, commit_every_s=2.0, clock=lambda: now[0])
    store.add("f-1", "sims", ["p-1"], occurred=1 * H, expires=49 * H, line=b"one")
    store.flush({"f-1": b"b:1"})
    store.commit()
    assert store._db.in_transaction  # within the interval: still open
    assert store.line("f-1", 2 * H) == b"one"
    assert len(store.for_subject("p-1", None, 2 * H)) == 1
    now[0] = 2.5
    store.commit()
    assert not store._db.in_transaction
    store.add("f-2", "quizcloud", ["p-1"], occurred=3 * H, expires=51 * H, line=b"two")
    store.flush({"f-2": b"b:2"})
    store.commit()
    assert store._db.in_transaction  # the interval starts again at the last commit


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
def test_a_flow_is_found_by_its_id_through_its_digest_whenever_it_was_remembered(on_disk: bool) -> None:
    store = filled(on_disk)
    store.remember([digest_of("f-1"), digest_of("f-9")])  # f-1 pending: the flush records it with its row
    store.flush({"f-1": b"b:t.0", "f-2": b"b:t.0", "f-3": b"b:t.1"})
    store.remember([digest_of("f-2")])  # after the flush: the row it was written with is kept
    assert [store.line(f, 0) for f in ("f-1", "f-2", "f-3", "f-9")] == [b"one", b"two", b"three", None]
    assert store.stored(["f-1", "f-2", "f-3", "f-9"]) == {"f-1", "f-2", "f-3"}
    store.replace("f-2", b"two again", expires=60 * H)
    assert store.line("f-2", 55 * H) == b"two again"
    store.expire(52 * H)
    assert store.ids() == ["f-2"]
    assert store.line("f-1", 0) is None  # its row is gone; its digest is still known
    assert store.known([digest_of(f) for f in ("f-1", "f-2", "f-3", "f-9", "f-10")]) == {
        digest_of(f) for f in ("f-1", "f-2", "f-3", "f-9")
    }


def test_a_subject_with_more_flows_than_one_query_takes_gets_them_all_in_arrival_order() -> None:
    store = OpenFlows()
    ids = [f"f-{n}" for n in range(1_234)]
    for n, flow_id in enumerate(ids):
        store.add(flow_id, "sims", ["p-1", f"p-{n % 3 + 2}"], occurred=n, expires=50 * H + n, line=b"x")
        if n % 400 == 399:
            store.flush({})
    assert store.for_subject("p-1", None, 0) == ids  # three written parts and the pending rest
    assert store.for_subject("p-1", 1_000, 0) == ids[1_000:]
    assert store.for_subject("p-1", None, 50 * H + 600) == ids[600:]
    assert store.for_subject("p-2", None, 0) == ids[::3]


def test_references_to_expired_flows_are_dropped_and_a_flow_kept_open_longer_is_still_found() -> None:
    store = OpenFlows()
    for n in range(100):
        store.add(f"f-{n}", "sims", [f"p-{n % 5}", "p-all"], occurred=n, expires=10 * H + n, line=b"x")
    store.flush({})
    store.replace("f-0", b"kept", expires=100 * H)  # the oldest flow outlives the others
    assert store.references() == 200
    store.expire(10 * H + 50)  # f-1 .. f-49 close, after f-0 and before the rest
    assert len(store) == 51
    assert store.references() == 102
    assert store.for_subject("p-all", None, 10 * H + 50) == ["f-0", *(f"f-{n}" for n in range(50, 100))]
    store.expire(20 * H)  # the rest close but f-0
    assert store.references() == 2
    assert store.for_subject("p-0", None, 20 * H) == ["f-0"]
    assert store.for_subject("p-all", None, 20 * H) == ["f-0"]
    assert store.for_subject("p-1", None, 20 * H) == []
    store.add("f-100", "sims", ["p-1"], occurred=20 * H, expires=70 * H, line=b"y")
    store.flush({})
    store.expire(100 * H + 1)
    assert store.ids() == []
    assert store.references() == 0
