"""What every shard format provides: encode a batch to bytes, decode a file back in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from vecmigrate.errors import DataError
from vecmigrate.records import conform
from vecmigrate.spec import CollectionSpec

TEXT_SLICE_ROWS = 1024  # rows a text format encodes at a time


def at(err: DataError, *, file: str, row_offset: int, line: int | None = None) -> DataError:
    """``err`` placed in a shard: rows shifted by the rows before the batch, line when known."""
    moved = err.located(file=file, row_offset=row_offset)
    if line is None:
        return moved
    return DataError(
        f"{moved.reason} (line {line})",
        file=moved.file,
        row=moved.row,
        record_id=moved.record_id,
        field=moved.field,
    )


class ShardCodec:
    """One shard format. Decoded batches have exactly ``spec.arrow_schema()``."""

    format: ClassVar[str] = ""
    extension: ClassVar[str] = ""

    def encode(self, batch: pa.RecordBatch, spec: CollectionSpec) -> bytes | memoryview:
        """The shard file's bytes (a memoryview where the writer's buffer can be lent)."""
        raise NotImplementedError

    def pieces(self, batch: pa.RecordBatch, spec: CollectionSpec) -> Iterator[bytes | memoryview]:
        """The shard file in consecutive pieces, as :func:`write_shard` writes them; formats
        whose rows are text encode a slice of rows at a time (a 768-d vector is ~10 KB of
        text: a whole batch of it would be held several times over while it is joined)."""
        yield self.encode(batch, spec)

    def decode(
        self, path: Path, spec: CollectionSpec, *, label: str, start: int, batch_size: int
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        """(first row, batch) pairs from row ``start`` on; errors name ``label`` and the row."""
        raise NotImplementedError

    def line_of(self, path: Path, row: int) -> int | None:
        """The line a row starts on, for messages (None for binary formats)."""
        return None

    # -- reading past bad rows (see rejecting.py) ----------------------------------------
    def raw_chunks(
        self, path: Path, spec: CollectionSpec, *, label: str, start: int, batch_size: int
    ) -> Iterator[tuple[int, Any]]:
        """(first row, raw rows) from row ``start``: rows as read, before any parsing that a
        single bad row could fail (lines, CSV records, or an unconformed batch)."""
        raise NotImplementedError

    def read_range(
        self,
        units: Any,
        lo: int,
        hi: int,
        spec: CollectionSpec,
        *,
        path: Path,
        label: str,
        first_row: int,
    ) -> pa.RecordBatch:
        """Raw rows ``lo:hi`` of a chunk as a batch of the spec; errors name the shard row."""
        raise NotImplementedError

    def record_of(self, units: Any, i: int) -> Any:
        """Raw row ``i`` as it may go to a dead-letter file (a dict, or its text)."""
        raise NotImplementedError

    def line_in(self, units: Any, i: int, *, path: Path, first_row: int) -> int | None:
        """The line raw row ``i`` of a chunk starts on (None for binary formats)."""
        return self.line_of(path, first_row + i)

    def read_ids(self, path: Path, spec: CollectionSpec, *, label: str) -> pa.Array:
        """The id column of a whole shard."""
        parts = [
            b.column(0) for _, b in self.decode(path, spec, label=label, start=0, batch_size=65_536)
        ]
        id_type = spec.arrow_schema().field(0).type
        return pa.concat_arrays(parts) if parts else pa.array([], id_type)

    def conformed(
        self,
        batch: pa.RecordBatch,
        spec: CollectionSpec,
        *,
        path: Path,
        label: str,
        first_row: int,
        lines: Callable[[int], int | None] | None = None,
    ) -> pa.RecordBatch:
        """Cast a decoded batch to the spec, locating any error in the shard.

        ``lines`` maps a shard row to its line when the caller knows it (else ``line_of``).
        """
        try:
            return conform(batch, spec)
        except DataError as err:
            line_of = lines or (lambda row: self.line_of(path, row))
            line = line_of(first_row + err.row) if err.row is not None else None
            raise at(err, file=label, row_offset=first_row, line=line) from err


def _take_rows(
    pending: list[pa.RecordBatch], n: int
) -> tuple[pa.RecordBatch, list[pa.RecordBatch], int]:
    """The first ``n`` rows of the pending chunks as one batch, and what is left."""
    table = pa.Table.from_batches(pending)
    head = table.slice(0, n).combine_chunks()
    rest = table.slice(n)
    out = (
        head.to_batches()[0]
        if head.num_rows
        else pa.RecordBatch.from_pylist([], schema=table.schema)
    )
    left = [b for b in rest.to_batches() if b.num_rows]
    return out, left, rest.num_rows


def regroup(
    parts: Iterable[tuple[int, pa.RecordBatch]], batch_size: int
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Consecutive ``(first row, batch)`` parts joined into batches of ``batch_size`` rows
    (the last one shorter), each with the row of its first record."""
    pending: list[pa.RecordBatch] = []
    held = 0
    first = 0
    for row, part in parts:
        if not held:
            first = row
        pending.append(part)
        held += part.num_rows
        while held >= batch_size:
            out, pending, held = _take_rows(pending, batch_size)
            yield first, out
            first += out.num_rows
    if held:
        out, _, _ = _take_rows(pending, held)
        yield first, out
