"""Compact binary encoding of per-subject fact records (see `streams.state` for the record layouts).

Two forms share one layout per section: *portable* bytes carry their own table of vocabulary strings (what a
faust table stores; readable by any process), *vocab* bytes refer to a process-wide `Vocabulary` (denser:
what the in-memory `State` keeps). Integers are varints; times are whole seconds when they can be, else
microseconds (from 2000-01-01, in minutes when they can be); a canonical UUID id costs 16 bytes, and an id
repeated within one subject (a parent who gave several consents) is stored once.
"""

from __future__ import annotations

import uuid
from typing import Any

FORMAT_VERSION = 2
"""Bumped whenever a layout changes; decoders refuse other versions."""

# One letter per field: T time, t optional time, S id string, s optional id string, V vocabulary string,
# v optional vocabulary string, L tuple of vocabulary strings, l tuple of id strings, I small int, B bool.
LAYOUTS: tuple[str, ...] = (
    "TSSVIvvvLs",  # consents
    "TsSVIvvvL",  # withdrawals
    "TSVIvvvL",  # refusals
    "TSSVIvvvLVB",  # objections
    "TS",  # objection_ends
    "TBVB",  # moves
    "TI",  # births
    "TStlLL",  # court_orders
    "TSVI",  # standings
    "TSSt",  # care_orders
    "TSBL",  # competences
    "TST",  # flows
)
"""Field layouts of the subject sections, in `streams.state.SUBJECT_SECTIONS` order."""


class Vocabulary:
    """A process-wide table of vocabulary strings (recipients, purposes, categories...) and their codes."""

    __slots__ = ("codes", "words")

    def __init__(self) -> None:
        self.words: list[str] = [""]  # code 0 means "none"
        self.codes: dict[str, int] = {}

    def code(self, word: str) -> int:
        """The code of a word, allocating one on first use."""
        found = self.codes.get(word)
        if found is None:
            found = len(self.words)
            self.words.append(word)
            self.codes[word] = found
        return found


def _varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


_BASE_US = 946_684_800_000_000  # 2000-01-01T00:00Z: keeps today's times in four varint bytes
_MINUTE_US = 60_000_000


def _time(out: bytearray, micros: int) -> None:
    # Two tag bits: whole minutes (most facts), whole seconds, or exact microseconds.
    rel = micros - _BASE_US
    if rel % _MINUTE_US == 0:
        value = (rel // _MINUTE_US) * 4
    elif rel % 1_000_000 == 0:
        value = (rel // 1_000_000) * 4 + 1
    else:
        value = rel * 4 + 2
    _varint(out, _zigzag(value))


class _Writer:
    """Encodes one blob; ids seen before in the same blob are written as back-references."""

    __slots__ = ("code", "ids", "out")

    def __init__(self, code: Any) -> None:
        self.out = bytearray()
        self.code = code
        self.ids: dict[str, int] = {}

    def ident(self, text: str | None) -> None:
        # Header: 0 none; 3k+1 back-reference k; 2 a canonical UUID (16 bytes); 3n raw UTF-8 of n bytes.
        out = self.out
        if text is None:
            out.append(0)
            return
        seen = self.ids.get(text)
        if seen is not None:
            _varint(out, 3 * seen + 1)
            return
        self.ids[text] = len(self.ids)
        if len(text) == 36 and text[8] == "-":
            try:
                parsed = uuid.UUID(text)
            except ValueError:
                parsed = None
            if parsed is not None and str(parsed) == text:
                out.append(2)
                out += parsed.bytes
                return
        raw = text.encode()
        _varint(out, 3 * len(raw))
        out += raw


def _encode(sections: list[list[tuple[Any, ...]]], code: Any) -> bytearray:
    writer = _Writer(code)
    out = writer.out
    for layout, records in zip(LAYOUTS, sections, strict=True):
        _varint(out, len(records))
        for record in records:
            for kind, value in zip(layout, record, strict=True):
                if kind == "T":
                    _time(out, value)
                elif kind == "V":
                    _varint(out, code(value))
                elif kind == "I":
                    _varint(out, value)
                elif kind in ("S", "s"):
                    writer.ident(value)
                elif kind == "v":
                    _varint(out, 0 if value is None else code(value))
                elif kind == "L":
                    _varint(out, len(value))
                    for word in value:
                        _varint(out, code(word))
                elif kind == "B":
                    out.append(1 if value else 0)
                elif kind == "t":
                    if value is None:
                        out.append(0)
                    else:
                        out.append(1)
                        _time(out, value)
                elif kind == "l":
                    _varint(out, len(value))
                    for text in value:
                        writer.ident(text)
    return out


class _Reader:
    __slots__ = ("at", "ids", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.at = 0
        self.ids: list[str] = []

    def varint(self) -> int:
        raw = self.raw
        at = self.at
        byte = raw[at]
        at += 1
        if byte < 0x80:
            self.at = at
            return byte
        result = byte & 0x7F
        shift = 7
        while True:
            byte = raw[at]
            at += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.at = at
                return result
            shift += 7

    def time(self) -> int:
        value = _unzigzag(self.varint())
        tag, rest = value & 3, value >> 2
        if tag == 0:
            return rest * _MINUTE_US + _BASE_US
        if tag == 1:
            return rest * 1_000_000 + _BASE_US
        return rest + _BASE_US

    def ident(self) -> str | None:
        header = self.varint()
        if header == 0:
            return None
        if header % 3 == 1:
            return self.ids[header // 3]
        start = self.at
        if header == 2:
            self.at += 16
            text = str(uuid.UUID(bytes=bytes(self.raw[start : self.at])))
        else:
            self.at += header // 3
            text = bytes(self.raw[start : self.at]).decode()
        self.ids.append(text)
        return text


def _decode(reader: _Reader, words: list[str]) -> list[list[tuple[Any, ...]]]:
    sections: list[list[tuple[Any, ...]]] = []
    for layout in LAYOUTS:
        records = []
        for _ in range(reader.varint()):
            fields: list[Any] = []
            for kind in layout:
                if kind == "T":
                    fields.append(reader.time())
                elif kind == "V":
                    fields.append(words[reader.varint()])
                elif kind == "I":
                    fields.append(reader.varint())
                elif kind in ("S", "s"):
                    fields.append(reader.ident())
                elif kind == "v":
                    code = reader.varint()
                    fields.append(words[code] if code else None)
                elif kind == "L":
                    fields.append(tuple(words[reader.varint()] for _ in range(reader.varint())))
                elif kind == "B":
                    fields.append(reader.raw[reader.at] == 1)
                    reader.at += 1
                elif kind == "t":
                    present = reader.varint()
                    fields.append(reader.time() if present else None)
                elif kind == "l":
                    fields.append(tuple(reader.ident() for _ in range(reader.varint())))
            records.append(tuple(fields))
        sections.append(records)
    return sections


def dumps_vocab(sections: list[list[tuple[Any, ...]]], vocabulary: Vocabulary) -> bytes:
    """Encode with codes into a process-wide vocabulary (in-memory form)."""
    out = _encode(sections, vocabulary.code)
    return bytes(out)


def loads_vocab(raw: bytes, vocabulary: Vocabulary) -> list[list[tuple[Any, ...]]]:
    """Decode the in-memory form."""
    return _decode(_Reader(raw), vocabulary.words)


def dumps_portable(sections: list[list[tuple[Any, ...]]]) -> bytes:
    """Encode self-contained bytes: a version byte, the local word table, then the records."""
    local = Vocabulary()
    body = _encode(sections, local.code)
    out = bytearray([FORMAT_VERSION])
    _varint(out, len(local.words) - 1)
    for word in local.words[1:]:
        encoded = word.encode()
        _varint(out, len(encoded))
        out += encoded
    return bytes(out + body)


def loads_portable(raw: bytes) -> list[list[tuple[Any, ...]]]:
    """Decode `dumps_portable` bytes; raises ValueError for another format version."""
    if not raw or raw[0] != FORMAT_VERSION:
        raise ValueError(f"unsupported subject-state format {raw[:1]!r}")
    reader = _Reader(raw)
    reader.at = 1
    words = [""]
    for _ in range(reader.varint()):
        length = reader.varint()
        words.append(raw[reader.at : reader.at + length].decode())
        reader.at += length
    return _decode(reader, words)
