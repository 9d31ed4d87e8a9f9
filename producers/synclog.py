"""MIS and supplier sync audit exports (`*.csv`, `*.jsonl`) → one `DataFlow` per sync run.

A row says: at `timestamp` the MIS synced `fields` of `pupils` to `supplier`. The supplier's route in
`policy/connectors.yaml` (`sync.suppliers`) gives the recipient and footing, and `sync.fields` the category
of each field. Nothing is dropped to make a row fit: an unknown supplier and an unmapped field still become
a flow, under keys the register does not know, so the flow fails closed downstream (docs/connectors.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producers.csvrows import check_header, rows_to_records
from producers.filesource import Draft, Record
from producers.textfields import parse_london_time, slug, split_list
from schemas.connector_maps import ConnectorMaps, Footing, Supplier
from schemas.events import DataFlow

REQUIRED_COLUMNS = frozenset({"timestamp", "supplier", "pupils", "fields"})
"""Columns a sync-log CSV must have (`sync_id` is optional, anything else is ignored)."""

# A supplier nobody registered: all the log proves is that the MIS's sync sent it pupil data, so the flow
# claims the MIS-sync purpose and nothing more: no lawful basis, no condition, no channel it cannot know.
# Claiming the footing of a registered supplier would dress an unregistered processor up as a known one;
# the recipient alone already fails it as UNKNOWN_RECIPIENT (RULES.md §1: "not exhaustive" authorises nobody).
UNREGISTERED_FOOTING = Footing(purpose="mis_sync")
"""The footing of a sync to a supplier `sync.suppliers` does not know."""


@dataclass(frozen=True)
class _Target:
    """Everything about one supplier name that does not change from row to row."""

    route: dict[str, Any]
    fields: dict[str, str]


class SyncLogFormat:
    """Reads sync audit exports; each row (or JSON line) is one sync run to one supplier."""

    patterns: tuple[str, ...] = ("*.csv", "*.jsonl")

    def __init__(self, maps: ConnectorMaps) -> None:
        # Per-row lookups are dict hits: supplier names and field names are folded once, here.
        self._common = {name.strip().casefold(): key for name, key in maps.sync.fields.items()}
        self._by_name: dict[str, _Target] = {}
        for supplier in maps.sync.suppliers:
            target = self._target(supplier)
            for name in supplier.names:
                self._by_name.setdefault(name.strip().casefold(), target)
        self._unmapped: dict[str, str] = {}

    def _target(self, supplier: Supplier) -> _Target:
        route = supplier.route.model_dump()
        own = {name.strip().casefold(): key for name, key in supplier.fields.items()}
        return _Target(route=route, fields={**self._common, **own})

    def _supplier_target(self, name: str) -> _Target:
        # An unknown name gets its unregistered route once; a log names the same few suppliers on every row.
        key = name.strip().casefold()
        target = self._by_name.get(key)
        if target is None:
            route = {"recipient": f"unregistered:{slug(name)}", **UNREGISTERED_FOOTING.model_dump()}
            target = self._by_name[key] = _Target(route=route, fields=self._common)
        return target

    def records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        """The records of a CSV or JSON-lines sync log after byte `position`."""
        if path.suffix.lower() == ".jsonl":
            return self._jsonl_records(path, position, line)
        return self._csv_records(path, position, line)

    # -- CSV ------------------------------------------------------------------------------------------------

    def _csv_records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        check_header(path, frozenset(REQUIRED_COLUMNS))
        yield from rows_to_records(path, position, line, self._row_drafts)

    def _row_drafts(self, row: dict[str, str]) -> tuple[Draft, ...]:
        return (self.draft(row["timestamp"], row["supplier"], split_list(row["pupils"]), row["fields"]),)

    # -- JSON lines -----------------------------------------------------------------------------------------

    def _jsonl_records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        with path.open("rb") as handle:
            handle.seek(position)
            offset, number = position, line
            for raw_bytes in handle:
                # Positions are byte counts of whole lines, so a resume starts exactly after the last record.
                offset += len(raw_bytes)
                number += 1
                if offset == len(raw_bytes) and raw_bytes.startswith(b"\xef\xbb\xbf"):
                    raw_bytes = raw_bytes[3:]
                if not raw_bytes.strip():
                    continue
                try:
                    text = raw_bytes.decode("utf-8")
                except UnicodeDecodeError as exc:
                    # JSON is UTF-8 (RFC 8259): a line that is not is a bad record, not a reason to lose the file.
                    bad = raw_bytes.decode("utf-8", "replace").rstrip("\r\n")
                    yield Record(number, offset, error=f"not UTF-8 at byte {exc.start} of the line", raw=bad)
                    continue
                text = text.rstrip("\r\n")
                try:
                    yield Record(number, offset, drafts=(self._json_draft(text),), raw=text)
                except ValueError as exc:
                    yield Record(number, offset, error=str(exc), raw=text)

    def _json_draft(self, text: str) -> Draft:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        missing = sorted(REQUIRED_COLUMNS - obj.keys())
        if missing:
            raise ValueError(f"missing key(s) {', '.join(missing)}")
        timestamp, supplier = obj["timestamp"], obj["supplier"]
        if not isinstance(timestamp, str) or not isinstance(supplier, str):
            raise ValueError("timestamp and supplier must be strings")
        pupils, fields = obj["pupils"], obj["fields"]
        if not _strings(pupils) or not _strings(fields):
            raise ValueError("pupils and fields must be arrays of strings")
        unique = dict.fromkeys(map(str.strip, pupils))
        unique.pop("", None)
        return self.draft(timestamp, supplier, list(unique), fields)

    # -- one sync run ---------------------------------------------------------------------------------------

    def draft(self, timestamp: str, supplier: str, pupils: list[str], fields: str | list[str]) -> Draft:
        """The flow of one sync run; raise `ValueError` saying what is wrong with the row."""
        if not supplier.strip():
            raise ValueError("no supplier")
        if not pupils:
            raise ValueError("no pupils synced")
        names = split_list(fields) if isinstance(fields, str) else [f.strip() for f in fields if f.strip()]
        if not names:
            raise ValueError("no fields synced")
        try:
            occurred_at = parse_london_time(timestamp)
        except ValueError:
            # Name the column, as every other row error does.
            raise ValueError(f"timestamp {timestamp!r} is not ISO 8601") from None
        target = self._supplier_target(supplier)
        categories = list(dict.fromkeys(self._category(target, name) for name in names))
        return Draft(
            DataFlow,
            {
                **target.route,
                "occurred_at": occurred_at,
                "subjects": [{"kind": "pupil", "id": pupil} for pupil in pupils],
                "categories": categories,
                "record_count": len(pupils),
            },
        )

    def _category(self, target: _Target, name: str) -> str:
        folded = name.casefold()
        key = target.fields.get(folded)
        if key is not None:
            return key
        # Fail closed: a field nobody mapped is a category the register does not know, never a silent drop.
        found = self._unmapped.get(folded)
        if found is None:
            found = self._unmapped[folded] = f"unmapped.{slug(name)}"
        return found


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def file_format(maps: ConnectorMaps) -> SyncLogFormat:
    """The sync-log connector format for these connector maps."""
    return SyncLogFormat(maps)
