"""Reading a shard past its bad rows (``import --on-error skip``).

A shard is read as without skipping until a row fails. From the chunk that failed on, it is
read as raw rows (lines, CSV records, an unconformed Parquet batch), each chunk whole; only a
chunk that fails is split: the row the error names is tried on its own, else the chunk is
halved, until every bad row stands alone with its reason. A good shard therefore costs what
it cost before, and each bad row a few extra reads of its neighbours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from vecmigrate.connectors.dataset.codec import ShardCodec, at
from vecmigrate.errors import DataError
from vecmigrate.records import check_batch, concat
from vecmigrate.spec import ID, CollectionSpec


@dataclass
class ShardChunk:
    """Rows ``first_row`` to ``first_row + consumed`` of a shard, split into good and bad.

    ``batch`` holds the good rows in shard order and ``kept`` their offsets in the chunk;
    ``rejected`` has (offset, error naming the shard row, raw record) for each bad one.
    """

    first_row: int
    consumed: int
    batch: pa.RecordBatch
    kept: np.ndarray
    rejected: list[tuple[int, DataError, Any]] = field(default_factory=list)


def split_readable(
    n: int, read: Callable[[int, int], pa.RecordBatch], first_row: int
) -> tuple[list[tuple[int, pa.RecordBatch]], list[tuple[int, DataError]]]:
    """Read rows ``0:n`` as (offset, batch) pieces, setting aside each row that fails alone."""
    pieces: list[tuple[int, pa.RecordBatch]] = []
    rejected: list[tuple[int, DataError]] = []
    todo = [(0, n)]
    while todo:
        lo, hi = todo.pop()
        if lo >= hi:
            continue
        try:
            pieces.append((lo, read(lo, hi)))
            continue
        except DataError as err:
            if hi - lo == 1:
                rejected.append((lo, err))
                continue
            named = None if err.row is None else err.row - first_row
        if named is not None and lo <= named < hi:
            try:
                read(named, named + 1)
            except DataError as alone:  # the named row is bad by itself: read around it
                rejected.append((named, alone))
                todo += [(named + 1, hi), (lo, named)]
                continue
        mid = (lo + hi) // 2  # the row is bad only with others (or none is named): halve
        todo += [(mid, hi), (lo, mid)]
    pieces.sort(key=lambda p: p[0])
    rejected.sort(key=lambda r: r[0])
    return pieces, rejected


def decode_rejecting(
    codec: ShardCodec,
    path: Path,
    spec: CollectionSpec,
    *,
    label: str,
    start: int,
    batch_size: int,
) -> Iterator[ShardChunk]:
    """The shard from row ``start`` in chunks whose bad rows are set aside, not raised.

    Problems of the whole shard (its header, its schema, a corrupt Parquet page) still raise.
    Duplicate ids across chunks are left to ``drop_seen_ids``.
    """
    row = start
    try:
        for first, batch in codec.decode(
            path, spec, label=label, start=start, batch_size=batch_size
        ):
            check_text(batch)
            check_batch(batch, spec)
            yield ShardChunk(first, batch.num_rows, batch, np.arange(batch.num_rows))
            row = first + batch.num_rows
        return
    except DataError:
        pass  # read again from the chunk that failed, row by row where needed
    for first_row, units in codec.raw_chunks(
        path, spec, label=label, start=row, batch_size=batch_size
    ):
        chunk = _Chunk(codec, units, spec, path=path, label=label, first_row=first_row)
        n = len(units)
        pieces, bad = split_readable(n, chunk.read, first_row)
        rejected = [
            (i, _placed(err, label, first_row + i), codec.record_of(units, i)) for i, err in bad
        ]
        if len(pieces) == 1:
            batch = pieces[0][1]
        else:
            batch = concat([b for _, b in pieces], spec.arrow_schema())
        kept = np.concatenate(
            [np.arange(lo, lo + b.num_rows) for lo, b in pieces] or [np.zeros(0, np.int64)]
        )
        yield ShardChunk(first_row, n, batch, kept, rejected)


class _Chunk:
    """Raw rows of a shard and how to read a range of them, checked like a whole batch."""

    def __init__(
        self,
        codec: ShardCodec,
        units: Any,
        spec: CollectionSpec,
        *,
        path: Path,
        label: str,
        first_row: int,
    ) -> None:
        self.codec, self.units, self.spec = codec, units, spec
        self.path, self.label, self.first_row = path, label, first_row

    def read(self, lo: int, hi: int) -> pa.RecordBatch:
        batch = self.codec.read_range(
            self.units,
            lo,
            hi,
            self.spec,
            path=self.path,
            label=self.label,
            first_row=self.first_row,
        )
        try:
            check_text(batch)
            check_batch(batch, self.spec)
        except DataError as err:
            line = None
            if err.row is not None:
                line = self.codec.line_in(
                    self.units, lo + err.row, path=self.path, first_row=self.first_row
                )
            raise at(err, file=self.label, row_offset=self.first_row + lo, line=line) from err
        return batch


def drop_seen_ids(chunk: ShardChunk, seen: dict[Any, int], *, label: str) -> None:
    """Set aside rows whose id came earlier in the shard (the first one stays), in place."""
    ids = chunk.batch.column(ID).to_pylist()
    if seen.keys().isdisjoint(ids) and len(set(ids)) == len(ids):
        seen.update((v, chunk.first_row + int(o)) for v, o in zip(ids, chunk.kept, strict=True))
        return
    keep = np.ones(len(ids), dtype=bool)
    for j, (value, offset) in enumerate(zip(ids, chunk.kept, strict=True)):
        row = chunk.first_row + int(offset)
        if value in seen:
            keep[j] = False
            err = DataError(
                f"duplicate id in the shard (first at row {seen[value]})",
                file=label,
                row=row,
                record_id=value,
                field=ID,
            )
            record = chunk.batch.slice(j, 1).to_pylist()[0]
            chunk.rejected.append((int(offset), err, record))
        else:
            seen[value] = row
    chunk.rejected.sort(key=lambda r: r[0])
    chunk.batch = chunk.batch.filter(pa.array(keep))
    chunk.kept = chunk.kept[keep]


def _placed(err: DataError, label: str, row: int) -> DataError:
    """``err`` for one row, naming the shard and that row even when it named neither."""
    if err.row is not None and err.file is not None:
        return err
    return DataError(
        err.reason, file=err.file or label, row=row, record_id=err.record_id, field=err.field
    )


def check_text(batch: pa.RecordBatch) -> None:
    """Refuse text that is not UTF-8 (Arrow's JSON reader passes it through), naming the row."""
    try:
        batch.validate(full=True)
    except pa.ArrowInvalid:
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                for i in range(len(col)):
                    try:
                        col[i].as_py()
                    except UnicodeDecodeError:
                        raise DataError("not valid UTF-8 text", row=i, field=name) from None
        raise
