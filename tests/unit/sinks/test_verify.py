"""The verify walker over in-memory chains: clean, changed, deleted, inserted, reordered, and the tail vs head."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.decisions import Decision
from sinks.chain import Chain, Head, link_hash
from sinks.rows import DECISION_COLUMNS, decision_row
from sinks.verify import Report, verify

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
VERDICT = DECISION_COLUMNS.index("verdict")


def decision(n: int) -> Decision:
    return Decision(
        decision_id=f"d{n}",
        flow_event_id=f"e{n}",
        verdict="allowed",
        explanation="ok",
        recipient="dfe",
        purpose="census",
        categories=["identity"],
        subject_ids=[f"P{n}"],
        occurred_at=T0,
        decided_at=T0,
        emitted_at=T0,
        source_connector="sims",
        source_sequence=n,
        policy_digest="x",
        notice_version="1.0",
    )


def trail(partitions: int = 2, rows: int = 5) -> tuple[list[list[Any]], dict[int, Head]]:
    """Rows in (partition, offset) order; offsets skip odd numbers, as transaction markers make them do."""
    out, heads = [], {}
    for p in range(partitions):
        chain = Chain(p)
        for n in range(rows):
            out.append(chain.extend(decision_row(decision(p * 100 + n), "{}", p, 2 * n)))
        heads[p] = chain.head()
    return out, heads


def kinds(report: Report) -> list[tuple[str, int, int | None]]:
    return [(p.kind, p.partition, p.offset) for p in report.problems]


def test_a_clean_trail_passes_and_matches_every_head() -> None:
    rows, heads = trail()
    report = verify(rows, heads)
    assert report.clean
    assert (report.rows, report.partitions, report.heads_matched, report.heads) == (10, 2, 2, 2)


def test_an_updated_column_is_a_changed_row() -> None:
    rows, heads = trail()
    rows[2][VERDICT] = "violation"
    report = verify(rows, heads)
    assert kinds(report) == [("changed", 0, 4)]
    assert report.problems[0].decision_id == "d2"
    assert "offset 4 decision d2" in report.problems[0].render()


def test_a_deleted_middle_row_is_reported_at_the_row_after_it() -> None:
    rows, heads = trail()
    del rows[2]
    assert kinds(verify(rows, heads)) == [("deleted", 0, 6)]


def test_a_deleted_last_row_is_caught_by_the_head() -> None:
    rows, heads = trail()
    del rows[4]
    report = verify(rows, heads)
    assert kinds(report) == [("deleted", 0, 8)]
    assert "ends at offset 6" in report.problems[0].detail
    # Without the checkpointed head, nothing in ClickHouse says a tail row is gone.
    assert verify(rows, None).clean


def test_a_rehashed_last_row_differs_from_the_head() -> None:
    rows, heads = trail()
    rows[4][VERDICT] = "violation"
    rows[4][-1] = link_hash(rows[4][-2], rows[4])
    assert kinds(verify(rows, heads)) == [("changed", 0, 8)]


def test_an_inserted_row_that_links_into_the_chain_is_one_nothing_links_to() -> None:
    rows, heads = trail()
    forged = decision_row(decision(99), "{}", 0, 3)
    forged = [*forged, rows[1][-1], link_hash(rows[1][-1], forged)]
    rows.insert(2, forged)
    report = verify(rows, heads)
    assert kinds(report) == [("inserted", 0, 3)]
    assert report.problems[0].decision_id == "d99"


def test_an_unchained_row_inside_the_chain_is_inserted() -> None:
    rows, heads = trail()
    rows.insert(2, [*decision_row(decision(99), "{}", 0, 3), "", ""])
    assert kinds(verify(rows, heads)) == [("inserted", 0, 3)]


def test_a_row_appended_after_the_head_is_inserted() -> None:
    rows, heads = trail(partitions=1)
    forged = decision_row(decision(99), "{}", 0, 20)
    rows.append([*forged, rows[-1][-1], link_hash(rows[-1][-1], forged)])
    assert kinds(verify(rows, heads)) == [("inserted", 0, 20)]


def test_swapped_rows_are_reordered() -> None:
    rows, heads = trail(partitions=1, rows=6)
    rows[2], rows[3] = rows[3], rows[2]
    found = kinds(verify(rows, heads))
    assert {kind for kind, _, _ in found} == {"reordered"}
    assert {offset for _, _, offset in found} == {4, 6}


def test_rows_before_the_chain_began_are_counted_not_failed() -> None:
    legacy = [[*decision_row(decision(50 + n), "{}", 0, n), "", ""] for n in range(3)]
    chain = Chain(0)
    rows = legacy + [chain.extend(decision_row(decision(n), "{}", 0, 10 + n)) for n in range(2)]
    report = verify(rows, {0: chain.head()})
    assert report.clean
    assert report.unchained == 3


def test_a_whole_partition_gone_is_deleted_and_one_without_a_head_is_inserted() -> None:
    rows, heads = trail()
    only_first = [r for r in rows if r[DECISION_COLUMNS.index("kafka_partition")] == 0]
    assert kinds(verify(only_first, heads)) == [("deleted", 1, 8)]
    assert kinds(verify(rows, {0: heads[0]})) == [("inserted", 1, None)]


def test_progress_is_reported_while_walking() -> None:
    rows, heads = trail(rows=50)
    seen: list[int] = []
    verify(rows, heads, progress=seen.append, progress_every=25)
    assert seen == [25, 50, 75, 100]


def test_a_row_moved_further_down_is_reordered_and_nothing_else() -> None:
    rows, heads = trail(partitions=1, rows=6)
    moved = rows.pop(1)
    rows.insert(4, moved)
    found = kinds(verify(rows, heads))
    assert {kind for kind, _, _ in found} == {"reordered"}
    assert (("reordered", 0, 2)) in found
