"""Parquet shards: the Arrow schema of the collection, stored as is (bit-exact, typed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vecmigrate.connectors.dataset.codec import ShardCodec
from vecmigrate.errors import DataError
from vecmigrate.spec import ID, CollectionSpec


class ParquetCodec(ShardCodec):
    format = "parquet"
    extension = "parquet"

    def __init__(self, compression: str = "zstd") -> None:
        self.compression = compression

    def encode(self, batch: pa.RecordBatch, spec: CollectionSpec) -> bytes | memoryview:
        # vectors: no dictionary (random floats never repeat), byte-stream-split (compresses
        # float bits better and reads faster); everything else: the writer's defaults
        dense = {v.name for v in spec.vectors if not v.sparse}
        sink = pa.BufferOutputStream()
        pq.write_table(
            pa.Table.from_batches([batch]),
            sink,
            compression=self.compression,
            use_dictionary=[n for n in batch.schema.names if n not in dense],
            use_byte_stream_split=[f"{n}.list.element" for n in sorted(dense)] or False,
            write_statistics=[ID],
        )
        return memoryview(sink.getvalue())  # the written file as it is: no second copy

    def _open(self, path: Path, spec: CollectionSpec, label: str) -> pq.ParquetFile:
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"not a readable Parquet file: {exc}", file=label) from exc
        names = pf.schema_arrow.names
        known = set(spec.arrow_schema().names)
        for name in names:
            if name not in known:
                raise DataError(
                    "column is not in the manifest's collection spec", file=label, field=name
                )
        if ID not in names:
            raise DataError("shard has no id column", file=label, field=ID)
        return pf

    def decode(
        self, path: Path, spec: CollectionSpec, *, label: str, start: int, batch_size: int
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        for pos, batch in self.raw_chunks(
            path, spec, label=label, start=start, batch_size=batch_size
        ):
            yield pos, self.conformed(batch, spec, path=path, label=label, first_row=pos)

    def raw_chunks(
        self, path: Path, spec: CollectionSpec, *, label: str, start: int, batch_size: int
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        pf = self._open(path, spec, label)
        meta = pf.metadata
        groups: list[int] = []
        row = 0
        skip = 0
        for i in range(meta.num_row_groups):
            n = meta.row_group(i).num_rows
            if row + n > start:
                if not groups:
                    skip = start - row
                groups.append(i)
            row += n
        if start > row:
            raise DataError(f"cursor row {start} is past the end ({row} rows)", file=label)
        if not groups:
            return
        pos = start - skip
        batches = pf.iter_batches(batch_size=batch_size, row_groups=groups, use_threads=False)
        while True:
            try:
                raw = next(batches, None)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(
                    f"Parquet data is corrupt near row {pos}: {exc}", file=label, row=pos
                ) from exc
            if raw is None:
                return
            cut = min(skip, raw.num_rows)
            skip -= cut
            pos += cut
            batch = raw.slice(cut) if cut else raw
            if batch.num_rows == 0:
                continue
            yield pos, batch
            pos += batch.num_rows

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
        piece = units.slice(lo, hi - lo)
        return self.conformed(piece, spec, path=path, label=label, first_row=first_row + lo)

    def record_of(self, units: Any, i: int) -> Any:
        return units.slice(i, 1).to_pylist()[0]

    def read_ids(self, path: Path, spec: CollectionSpec, *, label: str) -> pa.Array:
        pf = self._open(path, spec, label)
        try:
            col = pf.read(columns=[ID], use_threads=False).column(ID).combine_chunks()
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"Parquet data is corrupt: {exc}", file=label) from exc
        want = spec.arrow_schema().field(ID).type
        return col if col.type == want else col.cast(want)
