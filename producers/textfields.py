"""Small text helpers file connectors share: London times, `;` lists, identifier slugs, CSV headers.

School systems write local times without an offset, join lists with `;`, and name things (suppliers,
fields, message ids) in free text that must become a register-style `Identifier`. These helpers do that
the same way for every connector, cheaply enough to run on every row.
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from producers.filesource import FileRejectedError

LONDON = ZoneInfo("Europe/London")
"""The zone of a time school systems write without an offset."""

_SLUG_DROP = re.compile(r"[^a-z0-9_]+")
_ID_DROP = re.compile(r"[^A-Za-z0-9._:@/+-]+")
_SLUG_MAX = 80


def parse_london_time(text: str) -> datetime:
    """An ISO 8601 time as an aware datetime; without an offset it is Europe/London local time.

    Raises `ValueError` naming the text. A local time in the spring-forward gap or the autumn overlap takes
    the earlier offset (zoneinfo's `fold=0`), which is what a school system that logs wall-clock time means
    by it often enough, and never moves a time by more than the hour the clocks change.
    """
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"time {text!r} is not ISO 8601") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=LONDON)


def split_list(text: str) -> list[str]:
    """The items of a `;`-separated cell, stripped, without empties or repeats, in first-seen order."""
    if not text:
        return []
    # C-level map and dict: a big sync lists hundreds of pupils per row, and a generator costs 3x as much.
    items = dict.fromkeys(map(str.strip, text.split(";")))
    items.pop("", None)
    return list(items)


def slug(text: str) -> str:
    """A lower-case `[a-z0-9_-]` slug of free text that is a valid `Identifier` part (never empty).

    Accents are folded to ASCII; text with no ASCII letters or digits at all (or too long to keep) gets a
    short digest, so two different names never share a slug by being reduced to nothing.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    base = _SLUG_DROP.sub("-", folded).strip("-_")
    if base and len(base) <= _SLUG_MAX:
        return base
    digest = hashlib.sha256(text.strip().encode()).hexdigest()[:12]
    return f"{base[: _SLUG_MAX - 13].rstrip('-_')}-{digest}" if base else f"x{digest}"


def identifier_part(text: str) -> str:
    """Text kept as close to itself as an `Identifier` part allows (case kept; other characters → `-`)."""
    cleaned = _ID_DROP.sub("-", text.strip()).strip("-._:@/+")
    if cleaned and len(cleaned) <= 150:
        return cleaned
    return f"x{hashlib.sha256(text.strip().encode()).hexdigest()[:16]}"


def csv_columns(path: Path) -> set[str]:
    """The lower-cased column names of a CSV file's header; raise `FileRejectedError` if there is none.

    It says why a header is unusable (empty file, not UTF-8, not CSV), so a connector can check its
    columns once, before any record, and refuse a wrong file whole.
    """
    with path.open("rb") as handle:

        def lines() -> Iterator[str]:
            first = True
            for raw in handle:
                try:
                    yield raw.decode("utf-8-sig" if first else "utf-8")
                except UnicodeDecodeError:
                    raise FileRejectedError(f"{path.name}: header is not UTF-8") from None
                first = False

        try:
            header = next(csv.reader(lines()))
        except StopIteration:
            raise FileRejectedError(f"{path.name}: empty file, expected a CSV header") from None
        except csv.Error as exc:
            raise FileRejectedError(f"{path.name}: header is not CSV: {exc}") from None
    return {name.strip().lower() for name in header if name.strip()}
