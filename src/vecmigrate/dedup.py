"""Repeated values of a column too big for memory: its 64-bit hashes, not its values.

A scan hashes each batch (``column_hash``), and the hashes are split by ``hash % parts`` into
parts of at most ``part_rows`` values, each kept in memory or appended to a file of raw uint64s;
each part is then sorted alone. Hashes that repeat are suspects: a second scan collects the
values that hash to one and counts those exactly, so a 64-bit collision never reports a value
that occurs once. Integer ids hash to themselves (no collisions at all). When nothing repeats,
which is the common case, the column is read once and holds 8 bytes per row on disk at most.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.hashing import column_hash

PART_ROWS = 4_000_000  # hashes sorted at once: 32 MB
FLUSH_BYTES = 32 << 20  # hashes held in memory by all parts before the largest is written out


def repeated_values(ids: pa.ChunkedArray | pa.Array) -> list[Any]:
    """The values that occur more than once in ``ids`` (exact; nulls are not values)."""
    if pc.count_distinct(ids).as_py() == len(ids) - ids.null_count:
        return []
    counts = pc.value_counts(ids)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    return [v for v in repeated.to_pylist() if v is not None]


class _Parts:
    """Hashes split into parts by value; past FLUSH_BYTES held, the largest part goes to its
    file (so memory stays bounded however many parts there are)."""

    def __init__(self, parts: int, root: Path) -> None:
        self.parts = parts
        self.root = root
        self.held: list[list[np.ndarray]] = [[] for _ in range(parts)]
        self.held_bytes = [0] * parts
        self.held_total = 0
        self.files: list[Path | None] = [None] * parts

    def add(self, hashes: np.ndarray) -> None:
        if self.parts == 1:
            self._hold(0, hashes)
            return
        part_of = hashes % np.uint64(self.parts)
        if self.parts < 1 << 16:
            part_of = part_of.astype(np.uint16)  # numpy sorts 16-bit keys by radix: O(n)
        order = np.argsort(part_of, kind="stable")
        bounds = np.searchsorted(part_of[order], np.arange(self.parts + 1))
        grouped = hashes[order]
        for part in np.nonzero(np.diff(bounds))[0]:
            self._hold(int(part), grouped[bounds[part] : bounds[part + 1]])

    def _hold(self, part: int, hashes: np.ndarray) -> None:
        self.held[part].append(hashes)
        self.held_bytes[part] += hashes.nbytes
        self.held_total += hashes.nbytes
        if self.parts > 1 and self.held_total >= FLUSH_BYTES:
            self._flush(max(range(self.parts), key=self.held_bytes.__getitem__))

    def _flush(self, part: int) -> None:
        path = self.files[part] or self.root / f"part-{part:05d}.u64"
        self.files[part] = path
        with path.open("ab") as out:
            for chunk in self.held[part]:
                chunk.tofile(out)
        self.held_total -= self.held_bytes[part]
        self.held[part], self.held_bytes[part] = [], 0

    def repeated(self) -> np.ndarray:
        """Hashes seen more than once, over all parts, one part in memory at a time."""
        found: list[np.ndarray] = []
        for part in range(self.parts):
            chunks = self.held[part]
            path = self.files[part]
            if path is not None:
                chunks = [np.fromfile(path, dtype=np.uint64), *chunks]
            self.held[part] = []
            if not chunks:
                continue
            hashes = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]  # ours to sort
            del chunks
            hashes.sort()
            same = hashes[1:] == hashes[:-1]
            if same.any():
                found.append(np.unique(hashes[1:][same]))
            del hashes
        return np.concatenate(found) if found else np.zeros(0, dtype=np.uint64)


def repeated_ids(
    scan: Callable[[], Iterable[pa.Array | pa.ChunkedArray]],
    rows: int,
    *,
    part_rows: int | None = None,
) -> list[Any]:
    """Values that occur more than once in the column ``scan()`` yields (called once, or twice
    when some hash repeats); ``rows`` (an estimate) sets how many parts the hashes take."""
    parts = max(1, -(-rows // (part_rows or PART_ROWS)))
    with tempfile.TemporaryDirectory(prefix="vecmigrate-ids-") as tmp:
        hashes = _Parts(parts, Path(tmp))
        for column in scan():
            if len(column):
                hashes.add(_hashes(column))
        suspects = hashes.repeated()
    if not suspects.size:
        return []
    values: list[pa.Array] = []
    for scanned in scan():
        column = _array(scanned)
        if len(column):
            hit = np.isin(column_hash(column), suspects)
            if column.null_count:
                hit &= column.is_valid().to_numpy(zero_copy_only=False)
            if hit.any():
                values.append(column.filter(pa.array(hit)))
    return repeated_values(pa.chunked_array(values)) if values else []


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _hashes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    values = _array(column)
    hashes = column_hash(values)
    if values.null_count:  # a null is no id: never a suspect
        valid = values.is_valid().to_numpy(zero_copy_only=False)
        hashes = hashes[valid]
    return hashes
