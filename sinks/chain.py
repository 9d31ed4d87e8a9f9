"""The hash chain over `decisions`: one chain per decisions-topic partition, in Kafka offset order.

    row_hash = sha256(prev_hash || canonical(row))      hex; the first row of a partition chains from GENESIS

`canonical` serialises every stored column but `inserted_at` and the links themselves, so changing any value
of a row (the verdict, an offset, the payload) breaks its hash, and removing or inserting a row breaks a link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic_core import PydanticSerializationError, to_json

from sinks.rows import DECISION_COLUMNS, Millis, hashed_time

GENESIS = "0" * 64
"""The `prev_hash` of the first row of every partition's chain."""

PARTITION_INDEX = DECISION_COLUMNS.index("kafka_partition")
OFFSET_INDEX = DECISION_COLUMNS.index("kafka_offset")
DECISION_ID_INDEX = DECISION_COLUMNS.index("decision_id")


def _plain(value: object) -> object:
    if type(value) is Millis:  # the sink's rows hold timestamps so; an int, so it is told apart first
        return value.hashed()
    if isinstance(value, datetime):
        # ClickHouse hands DateTime64 back without a zone; both sides are UTC and stored to the millisecond.
        return hashed_time(value.astimezone(UTC) if value.tzinfo is not None else value)
    if isinstance(value, tuple):
        return list(value)
    return value


def canonical_json(values: list[object]) -> bytes:
    """`json.dumps(values, separators=(",", ":"))` as bytes: the hashed form of a row's plain values.

    The values are strings, integers, None and lists of them (`decisions` has no floating-point column, whose
    text pydantic and json write differently). pydantic's serialiser writes such a list four times faster than
    json, and byte for byte as json does whenever its output is ASCII without DEL: both escape `"`, `\\` and the
    control characters alike, while json also escapes DEL and every non-ASCII character, which pydantic writes
    as they are. Any other output (and a lone surrogate, which pydantic refuses) is written by json itself.
    """
    try:
        fast: bytes | None = to_json(values)
    except PydanticSerializationError:
        fast = None
    if fast is not None and fast.isascii() and b"\x7f" not in fast:
        return fast
    return json.dumps(values, separators=(",", ":")).encode("ascii")


def canonical(row: Sequence[object]) -> bytes:
    """The hashed form of a `decisions` row given in `DECISION_COLUMNS` order: a compact ASCII JSON array."""
    if len(row) < len(DECISION_COLUMNS):
        raise ValueError(f"a decisions row has {len(DECISION_COLUMNS)} hashed columns, got {len(row)}")
    return canonical_json([_plain(value) for value in row[: len(DECISION_COLUMNS)]])


def link_hash(prev_hash: str, row: Sequence[object], hashed: bytes | None = None) -> str:
    """`row_hash` of a row that follows `prev_hash`; `hashed` is `canonical(row)` when the caller has it."""
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(canonical(row) if hashed is None else hashed)
    return digest.hexdigest()


@dataclass(frozen=True)
class Head:
    """The last link of one partition's chain: what the sink checkpoints outside ClickHouse."""

    partition: int
    offset: int
    row_hash: str
    rows_in_chain: int

    def to_json(self) -> dict[str, object]:
        """The checkpoint as a JSON object."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "row_hash": self.row_hash,
            "rows_in_chain": self.rows_in_chain,
        }

    @classmethod
    def from_json(cls, value: dict[str, object]) -> Head:
        """A checkpoint read back; ValueError when a field is missing or of the wrong type."""
        partition, offset = value.get("partition"), value.get("offset")
        row_hash, rows = value.get("row_hash"), value.get("rows_in_chain")
        if not (
            isinstance(partition, int)
            and isinstance(offset, int)
            and isinstance(rows, int)
            and isinstance(row_hash, str)
        ):
            raise ValueError(f"not a chain head: {value!r}")
        return cls(partition, offset, row_hash, rows)


class Chain:
    """One partition's chain as the sink extends it: each new row links to the previous row's hash."""

    def __init__(self, partition: int, prev_hash: str = GENESIS, rows: int = 0, offset: int = -1) -> None:
        """A chain whose last row (at `offset`) has hash `prev_hash`; a new chain starts from GENESIS."""
        self.partition = partition
        self.prev_hash = prev_hash
        self.rows = rows
        self.offset = offset

    def extend(self, row: list[object], hashed: bytes | None = None) -> list[object]:
        """`row` (in `DECISION_COLUMNS` order) with its `prev_hash` and `row_hash` appended; advances the chain.

        `hashed` is `canonical(row)` when the caller has it already (`sinks.decision_rows` writes it directly).
        """
        row_hash = link_hash(self.prev_hash, row, hashed)
        linked = [*row, self.prev_hash, row_hash]
        self.prev_hash = row_hash
        self.rows += 1
        self.offset = int(row[OFFSET_INDEX])  # type: ignore[call-overload]
        return linked

    def head(self) -> Head:
        """The chain's current head."""
        return Head(self.partition, self.offset, self.prev_hash, self.rows)
