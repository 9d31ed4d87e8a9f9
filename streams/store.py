"""A compact map from subject id to packed bytes, for millions of subjects in little memory.

A `dict[str, bytes]` costs about 140 bytes per entry before any payload (key string, dict slot, bytes header).
`SubjectStore` keeps each entry as `[id length][id][payload length][payload]` in one growing `bytearray`
(the arena) and finds it through an open-addressing table of (hash, offset) pairs held in two `array('q')`:
about 16-32 bytes of table plus the entry itself. Updates append a new entry and leave the old one as garbage,
which `compact()` (run automatically when garbage passes half the arena) reclaims.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from streams.packing import read_varint, write_varint

_EMPTY = 0


class SubjectStore:
    """Subject id -> bytes, in one arena plus a hash table; no per-entry Python objects."""

    __slots__ = ("_arena", "_count", "_hashes", "_live", "_mask", "_offsets")

    def __init__(self, capacity: int = 1024) -> None:
        size = 1
        while size < capacity * 2:
            size *= 2
        self._mask = size - 1
        self._hashes = array("q", bytes(8 * size))
        self._offsets = array("q", bytes(8 * size))  # entry offset + 1; 0 means an empty slot
        self._arena = bytearray()
        self._count = 0
        self._live = 0

    def __len__(self) -> int:
        return self._count

    def _slot(self, key: bytes, hashed: int) -> int:
        mask, hashes, offsets, arena = self._mask, self._hashes, self._offsets, self._arena
        slot = hashed & mask
        while True:
            offset = offsets[slot]
            if offset == _EMPTY:
                return slot
            if hashes[slot] == hashed:
                length, at = read_varint(arena, offset - 1)
                if arena[at : at + length] == key:
                    return slot
            slot = (slot + 1) & mask

    def get(self, subject_id: str) -> bytes | None:
        """The bytes stored for a subject, or None."""
        key = subject_id.encode()
        slot = self._slot(key, hash(key))
        offset = self._offsets[slot]
        if offset == _EMPTY:
            return None
        arena = self._arena
        length, at = read_varint(arena, offset - 1)
        size, at = read_varint(arena, at + length)
        return bytes(arena[at : at + size])

    def __contains__(self, subject_id: object) -> bool:
        if not isinstance(subject_id, str):
            return False
        key = subject_id.encode()
        return self._offsets[self._slot(key, hash(key))] != _EMPTY

    def put(self, subject_id: str, payload: bytes) -> None:
        """Store (or replace) a subject's bytes."""
        key = subject_id.encode()
        hashed = hash(key)
        slot = self._slot(key, hashed)
        arena = self._arena
        previous = self._offsets[slot]
        if previous != _EMPTY:
            self._live -= self._entry_size(previous - 1)
        start = len(arena)
        write_varint(arena, len(key))
        arena += key
        write_varint(arena, len(payload))
        arena += payload
        self._live += len(arena) - start
        self._hashes[slot] = hashed
        self._offsets[slot] = start + 1
        if previous == _EMPTY:
            self._count += 1
            if self._count * 10 > (self._mask + 1) * 7:
                self._resize((self._mask + 1) * 2)
        if len(arena) > 1 << 20 and self._live * 2 < len(arena):
            self.compact()

    def _entry_size(self, start: int) -> int:
        length, at = read_varint(self._arena, start)
        size, at = read_varint(self._arena, at + length)
        return at + size - start

    def _resize(self, size: int) -> None:
        old_hashes, old_offsets = self._hashes, self._offsets
        self._mask = size - 1
        self._hashes = array("q", bytes(8 * size))
        self._offsets = array("q", bytes(8 * size))
        mask, hashes, offsets = self._mask, self._hashes, self._offsets
        for hashed, offset in zip(old_hashes, old_offsets, strict=True):
            if offset == _EMPTY:
                continue
            slot = hashed & mask
            while offsets[slot] != _EMPTY:
                slot = (slot + 1) & mask
            hashes[slot] = hashed
            offsets[slot] = offset

    def compact(self) -> None:
        """Rewrite the arena with live entries only."""
        old = self._arena
        fresh = bytearray()
        offsets = self._offsets
        for slot, offset in enumerate(offsets):
            if offset == _EMPTY:
                continue
            start = offset - 1
            size = self._entry_size(start)
            offsets[slot] = len(fresh) + 1
            fresh += old[start : start + size]
        self._arena = fresh
        self._live = len(fresh)

    def keys(self) -> Iterator[str]:
        """Every subject id (in no particular order)."""
        arena = self._arena
        for offset in self._offsets:
            if offset != _EMPTY:
                length, at = read_varint(arena, offset - 1)
                yield arena[at : at + length].decode()

    def nbytes(self) -> int:
        """Bytes held by the arena and the table (not counting Python object headers)."""
        return len(self._arena) + self._hashes.itemsize * len(self._hashes) * 2
