"""Compact binary encoding of per-subject fact records (see `streams.state` for the record layouts).

Two forms share one layout per section: *portable* bytes carry their own table of vocabulary strings (what a
faust table stores; readable by any process), *vocab* bytes refer to a process-wide `Vocabulary` (denser:
what the in-memory `State` keeps). Integers are varints; times count from 2000-01-01 in whole minutes, whole
seconds or microseconds, whichever is exact; a canonical UUID id costs 16 bytes, and an id repeated within one
subject (a parent who gave several consents) is stored once.
"""

from __future__ import annotations

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


def write_varint(out: bytearray, value: int) -> None:
    """Append `value` (>= 0) as a LEB128 varint."""
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
    write_varint(out, _zigzag(value))


def _canonical_uuid(text: str) -> bytes | None:
    """The 16 bytes of a lower-case, hyphenated UUID string; None for anything that would not round-trip."""
    h = text.replace("-", "")
    if len(h) != 32 or h != h.lower() or text != f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}":
        return None
    try:
        return bytes.fromhex(h)
    except ValueError:
        return None


class _Writer:
    """Encodes one blob; ids seen before in the same blob are written as back-references."""

    __slots__ = ("code", "ids", "out")

    def __init__(self, code: Any) -> None:
        self.out = bytearray()
        self.code = code
        self.ids: dict[str, int] = {}

    def ident(self, text: str | None) -> None:
        """Write an id (or none), once per blob."""
        # Header: 0 none; 3k+1 back-reference k; 2 a canonical UUID (16 bytes); 3n raw UTF-8 of n bytes.
        out = self.out
        if text is None:
            out.append(0)
            return
        seen = self.ids.get(text)
        if seen is not None:
            write_varint(out, 3 * seen + 1)
            return
        self.ids[text] = len(self.ids)
        if len(text) == 36 and text[8] == "-":
            packed = _canonical_uuid(text)
            if packed is not None:
                out.append(2)
                out += packed
                return
        raw = text.encode()
        write_varint(out, 3 * len(raw))
        out += raw


def read_varint(raw: bytes | bytearray, at: int) -> tuple[int, int]:
    """The LEB128 varint at `at` and the offset just past it."""
    result = 0
    shift = 0
    while True:
        byte = raw[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, at
        shift += 7


def _read_time(raw: bytes, at: int) -> tuple[int, int]:
    # The varint loop is inlined, not a call to read_varint: times are the commonest field on the decode path.
    value = 0
    shift = 0
    while True:
        byte = raw[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    value = value >> 1 if not value & 1 else -((value + 1) >> 1)
    tag, rest = value & 3, value >> 2
    if tag == 0:
        return rest * _MINUTE_US + _BASE_US, at
    if tag == 1:
        return rest * 1_000_000 + _BASE_US, at
    return rest + _BASE_US, at


def _read_ident(raw: bytes, at: int, ids: list[str]) -> tuple[str | None, int]:
    header = raw[at]
    if header < 0x80:
        at += 1
    else:
        header, at = read_varint(raw, at)
    if header == 0:
        return None, at
    if header % 3 == 1:
        return ids[header // 3], at
    if header == 2:
        h = bytes(raw[at : at + 16]).hex()
        text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        at += 16
    else:
        end = at + header // 3
        text = bytes(raw[at:end]).decode()
        at = end
    ids.append(text)
    return text, at


# The codecs are generated from LAYOUTS: one straight-line loop per section, with the one-byte varint case
# inlined, is several times faster than interpreting the layout field by field (decoding is on the hot path
# whenever a subject is not in the decoded cache).
def _generate_codecs() -> tuple[Any, Any]:
    dec = ["def decode(raw, at, words):", "    ids = []", "    sections = []"]
    enc = ["def encode(sections, code, out):", "    writer = _Writer(code)", "    writer.out = out"]
    small = "        b = raw[at]\n        if b < 128:\n            {v} = b\n            at += 1\n        else:\n" + (
        "            {v}, at = read_varint(raw, at)"
    )
    for number, layout in enumerate(LAYOUTS):
        dec += [
            small.format(v="n").replace("        ", "    ", 1).replace("\n        ", "\n    "),
            "    records = []",
            "    for _ in range(n):",
        ]
        enc += [f"    records = sections[{number}]", "    write_varint(out, len(records))", "    for r in records:"]
        names = []
        for i, kind in enumerate(layout):
            v = f"f{i}"
            names.append(v)
            if kind == "T":
                dec.append(f"        {v}, at = _read_time(raw, at)")
                enc.append(f"        _time(out, r[{i}])")
            elif kind in ("S", "s"):
                dec.append(f"        {v}, at = _read_ident(raw, at, ids)")
                enc.append(f"        writer.ident(r[{i}])")
            elif kind in ("V", "v", "I"):
                dec.append(small.format(v=v))
                if kind == "V":
                    dec.append(f"        {v} = words[{v}]")
                    enc.append(f"        write_varint(out, code(r[{i}]))")
                elif kind == "v":
                    dec.append(f"        {v} = words[{v}] if {v} else None")
                    enc.append(f"        write_varint(out, 0 if r[{i}] is None else code(r[{i}]))")
                else:
                    enc.append(f"        write_varint(out, r[{i}])")
            elif kind == "B":
                dec += [f"        {v} = raw[at] == 1", "        at += 1"]
                enc.append(f"        out.append(1 if r[{i}] else 0)")
            elif kind == "t":
                dec += [
                    "        present = raw[at]",
                    "        at += 1",
                    f"        {v} = None",
                    "        if present:",
                    f"            {v}, at = _read_time(raw, at)",
                ]
                enc += [
                    f"        if r[{i}] is None:",
                    "            out.append(0)",
                    "        else:",
                    "            out.append(1)",
                    f"            _time(out, r[{i}])",
                ]
            elif kind == "L":
                dec += [
                    small.format(v="k"),
                    "        words_ = []",
                    "        for _ in range(k):",
                    small.format(v="c").replace("\n", "\n    ").replace("        b =", "            b =", 1),
                    "            words_.append(words[c])",
                    f"        {v} = tuple(words_)",
                ]
                enc += [
                    f"        write_varint(out, len(r[{i}]))",
                    f"        for w in r[{i}]:",
                    "            write_varint(out, code(w))",
                ]
            elif kind == "l":
                dec += [
                    small.format(v="k"),
                    "        texts = []",
                    "        for _ in range(k):",
                    "            text, at = _read_ident(raw, at, ids)",
                    "            texts.append(text)",
                    f"        {v} = tuple(texts)",
                ]
                enc += [
                    f"        write_varint(out, len(r[{i}]))",
                    f"        for x in r[{i}]:",
                    "            writer.ident(x)",
                ]
        dec.append(f"        records.append(({', '.join(names)},))")
        dec.append("    sections.append(records)")
    dec.append("    return sections, at")
    enc.append("    return out")
    scope: dict[str, Any] = {
        "read_varint": read_varint,
        "_read_time": _read_time,
        "_read_ident": _read_ident,
        "_Writer": _Writer,
        "write_varint": write_varint,
        "_time": _time,
    }
    exec(compile("\n".join(dec) + "\n\n" + "\n".join(enc) + "\n", "<packing codecs>", "exec"), scope)
    return scope["decode"], scope["encode"]


_DECODE, _ENCODE = _generate_codecs()


def _encode(sections: list[list[tuple[Any, ...]]], code: Any) -> bytearray:
    out: bytearray = _ENCODE(sections, code, bytearray())
    return out


class _Reader:
    __slots__ = ("at", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.at = 0

    def varint(self) -> int:
        """Read one varint and advance."""
        value, self.at = read_varint(self.raw, self.at)
        return value


def _decode(reader: _Reader, words: list[str]) -> list[list[tuple[Any, ...]]]:
    sections: list[list[tuple[Any, ...]]]
    sections, reader.at = _DECODE(reader.raw, reader.at, words)
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
    write_varint(out, len(local.words) - 1)
    for word in local.words[1:]:
        encoded = word.encode()
        write_varint(out, len(encoded))
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
