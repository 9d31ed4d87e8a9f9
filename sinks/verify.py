"""Verifying the audit trail: walk each partition's hash chain and compare its end with the checkpointed head.

    walker = Walker(heads); for row in rows: walker.feed(row); report = walker.finish()

Rows come in (kafka_partition, kafka_offset) order with `CHAINED_DECISION_COLUMNS`, identical re-delivered
copies already merged (`decisions FINAL`). Each problem is named by kind and place:

- changed: a row's hash does not match its contents (an UPDATE of any column), or the head's row differs;
- deleted: a row links to a hash no row has (a row before it is gone), or the checkpointed head is missing;
- inserted: a row nothing links to, one without a hash inside the chain, or a row after the checkpointed head;
- reordered: a row that links to a row placed after it.

The walk keeps a bounded window of recent hashes per partition, so memory stays flat over millions of rows;
a link that jumps further back than the window is reported as a deletion.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sinks.chain import DECISION_ID_INDEX, GENESIS, OFFSET_INDEX, PARTITION_INDEX, Head, link_hash
from sinks.rows import CHAINED_DECISION_COLUMNS, DECISION_COLUMNS

Kind = Literal["changed", "deleted", "inserted", "reordered"]

WINDOW = 10_000
"""Recent rows per partition a broken link is matched against."""

_PREV = len(DECISION_COLUMNS)
_HASH = _PREV + 1


@dataclass
class Problem:
    """One sign of tampering, where it was found, and what was seen."""

    kind: Kind
    partition: int
    offset: int | None
    decision_id: str | None
    detail: str

    def render(self) -> str:
        """One line: kind, location, detail."""
        where = f"partition {self.partition}"
        if self.offset is not None:
            where += f" offset {self.offset}"
        if self.decision_id is not None:
            where += f" decision {self.decision_id}"
        return f"{self.kind:<9} {where}: {self.detail}"


@dataclass
class Report:
    """What a walk found: counts and problems."""

    rows: int = 0
    partitions: int = 0
    unchained: int = 0
    heads_matched: int = 0
    heads: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing suggests tampering."""
        return not self.problems

    def summary(self) -> str:
        """One line of counts."""
        text = (
            f"{self.rows} rows in {self.partitions} partitions checked; "
            f"{self.heads_matched} of {self.heads} checkpointed heads matched"
        )
        if self.unchained:
            text += f"; {self.unchained} rows landed before the chain began (not protected by it)"
        return text


@dataclass
class _Seen:
    offset: int
    decision_id: str
    moved: bool = False


class _Partition:
    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.rows = 0
        self.chained = 0
        self.unchained = 0
        self.last: Sequence[Any] | None = None
        # row_hash -> the row's place, for recent rows only.
        self.recent: OrderedDict[str, _Seen] = OrderedDict()
        # Links to hashes not seen yet: a later row with that hash means reordering, none means deletion.
        self.pending: dict[str, tuple[Problem, str]] = {}
        self.problems: list[Problem] = []


class Walker:
    """Checks rows fed in (partition, offset) order against the chain rule and the checkpointed heads."""

    def __init__(self, heads: dict[int, Head] | None = None, window: int = WINDOW) -> None:
        """A walk comparing each partition's last row with `heads` (None: no head comparison)."""
        self._heads = heads
        self._window = window
        self._current: _Partition | None = None
        self._seen_partitions: set[int] = set()
        self.report = Report(heads=len(heads) if heads else 0)

    def feed(self, row: Sequence[Any]) -> None:
        """Check one row (in `CHAINED_DECISION_COLUMNS` order)."""
        partition = int(row[PARTITION_INDEX])
        if self._current is None or self._current.partition != partition:
            self._close()
            self._current = _Partition(partition)
            self._seen_partitions.add(partition)
        state = self._current
        state.rows += 1
        self.report.rows += 1
        offset, decision_id = int(row[OFFSET_INDEX]), str(row[DECISION_ID_INDEX])
        prev_hash, row_hash = str(row[_PREV]), str(row[_HASH])

        def problem(kind: Kind, detail: str) -> Problem:
            found = Problem(kind, partition, offset, decision_id, detail)
            state.problems.append(found)
            return found

        if not row_hash and not prev_hash:
            if state.chained:
                problem("inserted", "a row without a hash inside the chain")
            else:
                state.unchained += 1
            return
        state.chained += 1
        if link_hash(prev_hash, row) != row_hash:
            problem("changed", "the row's contents do not match its hash")
        moved = False
        earlier = state.pending.pop(row_hash, None)
        if earlier is not None:
            # A row already walked links to this one: this one belongs before it.
            linking_problem, linking_hash = earlier
            linking_problem.kind = "reordered"
            linking_problem.detail = f"it follows the row at offset {offset}, which is placed after it"
            if linking_hash in state.recent:
                state.recent[linking_hash].moved = True
            problem("reordered", f"it belongs before the row at offset {linking_problem.offset}")
            moved = True
        expected = str(state.last[_HASH]) if state.last is not None else GENESIS
        if prev_hash != expected and not moved:  # a moved row's own link is explained by the move
            self._broken_link(state, prev_hash, row_hash, problem)
        state.recent[row_hash] = _Seen(offset, decision_id, moved)
        if len(state.recent) > self._window:
            state.recent.popitem(last=False)
        state.last = row

    def _broken_link(
        self, state: _Partition, prev_hash: str, row_hash: str, problem: Callable[[Kind, str], Problem]
    ) -> None:
        target = state.recent.get(prev_hash)
        if target is None:
            if prev_hash == GENESIS:
                problem("inserted", "a second start of the chain")
            else:
                state.pending[prev_hash] = (problem("deleted", "the row it links to is missing"), row_hash)
            return
        # It links further back: the rows in between are not part of the chain.
        skipped = []
        for row_hash in reversed(state.recent):
            if row_hash == prev_hash:
                break
            skipped.append(state.recent[row_hash])
        if all(seen.moved for seen in skipped):
            return  # rows already reported as out of place
        for seen in reversed(skipped):
            state.problems.append(
                Problem(
                    "inserted",
                    state.partition,
                    seen.offset,
                    seen.decision_id,
                    "no row links to it: the next row links to the one before",
                )
            )

    def _close(self) -> None:
        state = self._current
        if state is None:
            return
        self._current = None
        self.report.partitions += 1
        self.report.unchained += state.unchained
        head = self._heads.get(state.partition) if self._heads is not None else None
        if head is not None:
            self._compare_head(state, head)
        elif self._heads is not None and state.chained:
            state.problems.append(
                Problem(
                    "inserted",
                    state.partition,
                    None,
                    None,
                    f"{state.chained} chained rows in a partition with no checkpointed head",
                )
            )
        self.report.problems.extend(state.problems)

    def _compare_head(self, state: _Partition, head: Head) -> None:
        last = state.last
        last_offset = int(last[OFFSET_INDEX]) if last is not None else None
        last_hash = str(last[_HASH]) if last is not None else None
        if last_offset == head.offset and last_hash == head.row_hash:
            if head.rows_in_chain == state.chained or state.problems:
                # A count off because of a problem already reported says nothing new.
                self.report.heads_matched += 1
                return
            kind: Kind = "deleted" if state.chained < head.rows_in_chain else "inserted"
            state.problems.append(
                Problem(
                    kind,
                    state.partition,
                    head.offset,
                    None,
                    f"the head says {head.rows_in_chain} rows in the chain, the trail has {state.chained}",
                )
            )
            return
        at_head = state.recent.get(head.row_hash)
        if last_offset is not None and last_offset == head.offset:
            state.problems.append(
                Problem(
                    "changed",
                    state.partition,
                    head.offset,
                    str(last[DECISION_ID_INDEX]) if last is not None else None,
                    f"the last row's hash is not the checkpointed head {head.row_hash[:16]}…",
                )
            )
        elif at_head is not None and at_head.offset == head.offset:
            state.problems.append(
                Problem(
                    "inserted",
                    state.partition,
                    last_offset,
                    str(last[DECISION_ID_INDEX]) if last is not None else None,
                    f"rows after the checkpointed head at offset {head.offset} (inserted, or a batch in flight)",
                )
            )
        else:
            ends = f"the trail ends at offset {last_offset}" if last_offset is not None else "no rows remain"
            state.problems.append(
                Problem(
                    "deleted",
                    state.partition,
                    head.offset,
                    None,
                    f"the checkpointed head (offset {head.offset}, {head.row_hash[:16]}…) is missing; {ends}",
                )
            )

    def finish(self) -> Report:
        """Close the last partition, report checkpointed partitions with no rows left, and return the report."""
        self._close()
        for partition, head in sorted((self._heads or {}).items()):
            if partition not in self._seen_partitions:
                state = _Partition(partition)
                self._compare_head(state, head)
                self.report.problems.extend(state.problems)
        return self.report


def stream_rows(client: Any) -> Iterator[Sequence[Any]]:
    """Every `decisions` row in chain order, re-delivered copies merged, streamed block by block."""
    sql = f"SELECT {', '.join(CHAINED_DECISION_COLUMNS)} FROM decisions FINAL ORDER BY kafka_partition, kafka_offset"
    with client.query_row_block_stream(sql) as stream:
        for block in stream:
            yield from block


def verify(
    rows: Iterable[Sequence[Any]],
    heads: dict[int, Head] | None,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 100_000,
) -> Report:
    """Walk `rows`, calling `progress(rows so far)` every `progress_every` rows."""
    walker = Walker(heads)
    for count, row in enumerate(rows, 1):
        walker.feed(row)
        if progress is not None and count % progress_every == 0:
            progress(count)
    return walker.finish()
