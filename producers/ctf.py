"""The `ctf` connector: DfE Common Transfer Files leaving a Trust school, one `DataFlow` per file.

A CTF (`CTfile`) carries a `Header` naming the source and destination schools by LA and establishment number,
and a `CTFpupilData` with one `Pupil` per child. The whole file is one transfer to one school, so it is one
record: either every pupil in it becomes a subject of the flow, or the file is refused and nothing is sent.

The XML comes from outside the process. It is read with defusedxml and DTDs are refused outright (no real CTF
has one), which also refuses entity expansion ("billion laughs") and external entities. Pupils are parsed
incrementally and dropped once read, so a multi-megabyte CTF for a whole year group stays small in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from zoneinfo import ZoneInfo

from defusedxml import DefusedXmlException  # type: ignore[import-untyped]
from defusedxml.ElementTree import iterparse  # type: ignore[import-untyped]

from producers.filesource import Draft, FileFormat, FileRejectedError, Record
from schemas.connector_maps import ConnectorMaps, School
from schemas.events import DataFlow

LONDON = ZoneInfo("Europe/London")
"""School systems write local time: a CTF `DateTime` without an offset is London time."""

UPN = re.compile(r"^[A-Z]\d{11}[0-9A-Z]$")
"""A UPN's shape: check letter, LA (3), establishment (4), year (2), serial (3, the last a letter if temporary)."""

_LEA = re.compile(r"^\d{3}$")
_ESTAB = re.compile(r"^\d{4}$")
_PUPIL_FIELDS = frozenset({"UPN", "Surname", "Forename", "DOB"})


@dataclass
class _Pupils:
    """What the pupils of a file add up to: subjects in file order, the containers they carry."""

    upns: list[str] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    containers: set[str] = field(default_factory=set)


def _local(tag: Any) -> str:
    # CTFs have no namespace, but a namespaced export must not hide its elements.
    return str(tag).rsplit("}", 1)[-1]


def _text(parent: Element, name: str) -> str | None:
    for child in parent:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return None


def _child(parent: Element, name: str) -> Element | None:
    return next((child for child in parent if _local(child.tag) == name), None)


def _has_content(element: Element) -> bool:
    # An empty container (`<SENhistory/>`) carries no data, so it adds no category.
    return len(element) > 0 or bool((element.text or "").strip())


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "element"


class CtfFormat:
    """Reads a Common Transfer File into the one `DataFlow` it is; refuses the whole file if any of it is wrong."""

    patterns: tuple[str, ...] = ("*.xml", "*.XML")

    def __init__(self, maps: ConnectorMaps) -> None:
        self._maps = maps

    def records(self, path: Path, position: int, line: int) -> Iterator[Record]:
        """The file's one record (nothing when a resume starts after it); raise `FileRejectedError` if unusable."""
        if line >= 1:
            # The record was committed before a restart; only the file's "done" mark was missing.
            return
        yield self.read(path)

    def read(self, path: Path) -> Record:
        """Parse and check the whole file; the record holds its one flow."""
        header, pupils = self._parse(path)
        source, dest, occurred_at = self._header(path, header)
        footing = self._maps.ctf.internal if source.trust_school and dest.trust_school else self._maps.ctf.external
        categories = set(self._maps.ctf.core_categories)
        for container in pupils.containers:
            categories.update(self._maps.ctf.containers.get(container, [f"unmapped.{_slug(container)}"]))
        fields: dict[str, Any] = {
            "occurred_at": occurred_at,
            "recipient": dest.recipient,
            "subjects": [{"kind": "pupil", "id": upn} for upn in pupils.upns],
            "categories": sorted(categories),
            **footing.model_dump(),
            "record_count": len(pupils.upns),
        }
        # The dead letter of an invalid flow shows the transfer, never pupil data.
        raw = f"CTF {source.laestab} -> {dest.laestab}, {len(pupils.upns)} pupil(s)"
        return Record(line=1, position=path.stat().st_size, drafts=(Draft(DataFlow, fields),), raw=raw)

    def _parse(self, path: Path) -> tuple[Element, _Pupils]:
        pupils = _Pupils()
        header: Element | None = None
        stack: list[Element] = []
        try:
            # forbid_dtd refuses any DOCTYPE before its entities could be declared, let alone expanded.
            with path.open("rb") as handle:
                for event, element in iterparse(handle, events=("start", "end"), forbid_dtd=True):
                    if event == "start":
                        if not stack and _local(element.tag) != "CTfile":
                            raise FileRejectedError(
                                f"{path.name}: root element is <{_local(element.tag)}>, expected <CTfile>"
                            )
                        stack.append(element)
                        continue
                    stack.pop()
                    where = [_local(e.tag) for e in stack]
                    name = _local(element.tag)
                    if where == ["CTfile"] and name == "Header":
                        header = element
                    elif where == ["CTfile", "CTFpupilData"] and name == "Pupil":
                        self._pupil(path, element, pupils)
                        # Read and counted: drop it so a year group's file never sits in memory whole.
                        stack[-1].remove(element)
        except DefusedXmlException as exc:
            raise FileRejectedError(
                f"{path.name}: refused XML ({type(exc).__name__}): a CTF has no DOCTYPE, and DTD entities could "
                "expand without bound or read local files"
            ) from None
        except ParseError as exc:
            raise FileRejectedError(f"{path.name}: not well-formed XML: {exc}") from None
        if header is None:
            raise FileRejectedError(f"{path.name}: <CTfile> has no <Header>")
        if not pupils.upns:
            raise FileRejectedError(f"{path.name}: no <Pupil> in <CTFpupilData>")
        return header, pupils

    def _pupil(self, path: Path, element: Element, pupils: _Pupils) -> None:
        number = len(pupils.upns) + 1
        upn = _text(element, "UPN")
        if not upn:
            raise FileRejectedError(f"{path.name}: <Pupil> {number} has no <UPN>")
        if not UPN.match(upn):
            raise FileRejectedError(
                f"{path.name}: <Pupil> {number}: <UPN> {upn!r} is not a UPN (a letter, 11 digits, a digit or letter)"
            )
        if upn in pupils.seen:
            raise FileRejectedError(
                f"{path.name}: <Pupil> {number}: UPN {upn} is already <Pupil> {pupils.seen[upn]} (duplicate UPN)"
            )
        pupils.seen[upn] = number
        pupils.upns.append(upn)
        for child in element:
            name = _local(child.tag)
            if name in self._maps.ctf.containers:
                if _has_content(child):
                    pupils.containers.add(name)
            elif len(child) > 0 and name not in _PUPIL_FIELDS:
                # A container the maps do not know still left the school: fail closed, never drop it silently.
                pupils.containers.add(name)

    def _header(self, path: Path, header: Element) -> tuple[School, School, datetime]:
        source = self._school(path, header, "SourceSchool")
        dest = self._school(path, header, "DestSchool")
        if not source.trust_school:
            raise FileRejectedError(
                f"{path.name}: <SourceSchool> {source.laestab} ({source.name}) is not a Trust school; "
                "a CTF in the Trust's outbox must come from one of its schools"
            )
        if dest.laestab == source.laestab:
            # A file a school sends itself (a system migration) is not a transfer; refuse it so someone looks.
            raise FileRejectedError(
                f"{path.name}: <DestSchool> {dest.laestab} is the source school itself; this is not a transfer"
            )
        stamp = _text(header, "DateTime")
        if not stamp:
            raise FileRejectedError(f"{path.name}: <Header> has no <DateTime>")
        try:
            occurred_at = datetime.fromisoformat(stamp)
        except ValueError:
            raise FileRejectedError(f"{path.name}: <Header><DateTime> {stamp!r} is not an ISO 8601 time") from None
        if occurred_at.tzinfo is None:
            occurred_at = occurred_at.replace(tzinfo=LONDON)
        return source, dest, occurred_at

    def _school(self, path: Path, header: Element, name: str) -> School:
        element = _child(header, name)
        if element is None:
            raise FileRejectedError(f"{path.name}: <Header> has no <{name}>")
        lea, estab = _text(element, "LEA"), _text(element, "Estab")
        if not lea:
            raise FileRejectedError(f"{path.name}: <{name}> has no <LEA>")
        if not estab:
            raise FileRejectedError(f"{path.name}: <{name}> has no <Estab>")
        if not _LEA.match(lea) or not _ESTAB.match(estab):
            raise FileRejectedError(
                f"{path.name}: <{name}> LEA {lea!r} / Estab {estab!r} is not a DfE number (3 + 4 digits)"
            )
        school = self._maps.school(lea + estab)
        if school is None:
            raise FileRejectedError(f"{path.name}: <{name}> {lea}{estab} is not a school in ctf.schools")
        return school


def file_format(maps: ConnectorMaps) -> FileFormat:
    """The `ctf` connector's format, reading with these maps."""
    return CtfFormat(maps)
