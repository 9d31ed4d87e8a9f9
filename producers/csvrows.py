"""Cells and rows of the CSV exports school systems write: the parsing every CSV connector shares.

A cell that cannot be used raises `RowError` naming the column and the value; `rows_to_records` turns each
row into a `Record` carrying its drafts, or that reason (the engine dead-letters it), so one bad row never
stops a file. Times without an offset are Europe/London local; dates are London dates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import get_args

from producers.filesource import Draft, Record, csv_records, require_columns
from producers.textfields import LONDON, csv_columns, parse_london_time
from schemas.events import Relationship

RELATIONSHIPS: tuple[str, ...] = get_args(Relationship)
"""The relationships a person may have to the subject, as `schemas.events.Relationship` spells them."""


class RowError(ValueError):
    """A row (or a field of it) is unusable; the message is the dead letter's reason."""


def london_instant(value: str, column: str) -> datetime:
    """An ISO 8601 time in UTC; a time without an offset is Europe/London local (an ambiguous one: the first)."""
    text = value.strip()
    if not text:
        raise RowError(f"{column} is empty")
    try:
        return parse_london_time(text).astimezone(UTC)
    except ValueError:
        raise RowError(f"{column} {text!r} is not an ISO 8601 time") from None


def london_date(value: str, column: str) -> date:
    """An ISO 8601 calendar date (YYYY-MM-DD)."""
    text = value.strip()
    if not text:
        raise RowError(f"{column} is empty")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RowError(f"{column} {text!r} is not an ISO 8601 date (YYYY-MM-DD)") from None


def london_midnight(day: date) -> datetime:
    """The instant a London date starts, in UTC (when something dated that day takes effect)."""
    return datetime.combine(day, time(0), tzinfo=LONDON).astimezone(UTC)


def yes_no(row: dict[str, str], column: str) -> bool:
    """A `yes`/`no` column (any case); blank or absent reads as `no`, the claim that grants nothing."""
    text = row.get(column, "").strip().lower()
    if text in ("", "no"):
        return False
    if text == "yes":
        return True
    raise RowError(f"{column} must be yes or no, not {row[column].strip()!r}")


def relationship(value: str, column: str) -> str:
    """A relationship as the event models spell it (`Step parent`, `step-parent` → `step_parent`)."""
    text = value.strip()
    key = "_".join(text.lower().replace("-", " ").split())
    if not key:
        raise RowError(f"{column} is empty")
    if key not in RELATIONSHIPS:
        raise RowError(f"{column} {text!r} is not one of {', '.join(RELATIONSHIPS)}")
    return key


def required(row: dict[str, str], column: str) -> str:
    """A cell that must not be blank."""
    text = row.get(column, "").strip()
    if not text:
        raise RowError(f"{column} is empty")
    return text


def optional(row: dict[str, str], column: str) -> str | None:
    """A cell that may be blank or absent (None then)."""
    return row.get(column, "").strip() or None


def rows_to_records(
    path: Path, position: int, line: int, parse: Callable[[dict[str, str]], tuple[Draft, ...]]
) -> Iterator[Record]:
    """`csv_records` as `Record`s: each row's drafts from `parse`, or the reason it is unusable.

    `parse` raises `ValueError` (a `RowError` is one) for a row it cannot use; anything else is a bug.
    """
    for number, end, row in csv_records(path, position, line):
        if "__error__" in row:
            yield Record(number, end, error=row["__error__"])
            continue
        raw = json.dumps(row, ensure_ascii=False)
        try:
            yield Record(number, end, drafts=parse(row), raw=raw)
        except ValueError as exc:
            yield Record(number, end, error=str(exc), raw=raw)


def check_header(path: Path, columns: frozenset[str]) -> set[str]:
    """The header's columns; refuse a file without a usable header or without a required column."""
    header = csv_columns(path)
    require_columns(path, header, set(columns))
    return header
