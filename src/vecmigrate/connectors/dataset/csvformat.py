"""CSV shards (RFC 4180, UTF-8, header row, ``\\n`` line ends).

Encodings (docs/dataset-format.md): strings and documents are always quoted; an empty
unquoted cell is null and ``""`` is the empty string. A vector is one cell holding a JSON
array of numbers that read back bit-exact as float32; list and sparse columns are JSON texts;
float64 is the shortest round-trip decimal (``nan``, ``inf``, ``-inf`` spelled out); booleans
are ``true``/``false``; timestamps are ``YYYY-MM-DD HH:MM:SS.ffffffZ`` (UTC).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv

from vecmigrate.connectors.dataset.codec import ShardCodec, at
from vecmigrate.connectors.dataset.textvalues import (
    list_text,
    parse_json_texts,
    parse_vector_text,
    sparse_text,
    vector_text,
)
from vecmigrate.errors import DataError
from vecmigrate.spec import ID, SPARSE_TYPE, CollectionSpec, MetadataType

_LISTS = (MetadataType.LIST_STRING, MetadataType.LIST_INT64, MetadataType.LIST_FLOAT64)


def _cell_types(spec: CollectionSpec) -> dict[str, pa.DataType]:
    """How each column is read from text before conversion (JSON texts stay strings)."""
    types: dict[str, pa.DataType] = {}
    for f in spec.arrow_schema():
        vf = next((v for v in spec.vectors if v.name == f.name), None)
        m = spec.metadata_field(f.name)
        if vf is not None or (m is not None and m.type in _LISTS):
            types[f.name] = pa.string()
        else:
            types[f.name] = f.type
    return types


class CsvCodec(ShardCodec):
    format = "csv"
    extension = "csv"

    def encode(self, batch: pa.RecordBatch, spec: CollectionSpec) -> bytes:
        arrays = []
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            vf = next((v for v in spec.vectors if v.name == name), None)
            m = spec.metadata_field(name)
            if vf is not None:
                arrays.append(sparse_text(column) if vf.sparse else vector_text(column))
            elif m is not None and m.type in _LISTS:
                arrays.append(list_text(column, m.type))
            else:
                arrays.append(column)
        table = pa.Table.from_arrays(arrays, names=batch.schema.names)
        sink = io.BytesIO()
        pcsv.write_csv(table, sink, pcsv.WriteOptions(quoting_style="needed"))
        return sink.getvalue()

    def _options(self, spec: CollectionSpec) -> pcsv.ConvertOptions:
        return pcsv.ConvertOptions(
            column_types=_cell_types(spec),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
            true_values=["true"],
            false_values=["false"],
            check_utf8=True,
        )

    def decode(
        self, path: Path, spec: CollectionSpec, *, label: str, start: int, batch_size: int
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        types = _cell_types(spec)
        try:
            reader = pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(use_threads=False, block_size=1 << 22),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=self._options(spec),
            )
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                return
            raise self._diagnose(path, spec, label, exc) from exc
        try:
            names = reader.schema.names
        except UnicodeDecodeError as exc:
            raise DataError("the header row is not UTF-8 (line 1)", file=label) from exc
        for name in names:
            if name not in types:
                raise DataError("unknown column (line 1)", file=label, field=name)
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise DataError("column appears twice (line 1)", file=label, field=dup)
        pending: list[pa.RecordBatch] = []
        held = 0
        row = 0  # rows read so far
        try:
            for chunk in reader:
                if row + chunk.num_rows <= start:
                    row += chunk.num_rows
                    continue
                part = chunk.slice(start - row) if row < start else chunk
                row = max(row, start)
                pending.append(part)
                held += part.num_rows
                while held >= batch_size:
                    out, pending, held = _take(pending, batch_size)
                    yield row, self._convert(out, spec, path=path, label=label, first_row=row)
                    row += out.num_rows
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise self._diagnose(path, spec, label, exc) from exc
        if row < start:
            raise DataError(f"cursor row {start} is past the end ({row} rows)", file=label)
        if held:
            out, _, _ = _take(pending, held)
            yield row, self._convert(out, spec, path=path, label=label, first_row=row)

    def _convert(
        self,
        batch: pa.RecordBatch,
        spec: CollectionSpec,
        *,
        path: Path,
        label: str,
        first_row: int,
    ) -> pa.RecordBatch:
        arrays = []
        for name, text in zip(batch.schema.names, batch.columns, strict=True):
            vf = next((v for v in spec.vectors if v.name == name), None)
            m = spec.metadata_field(name)
            column = text
            try:
                if vf is not None and not vf.sparse:
                    column = parse_vector_text(text, vf.dim, field=name)
                elif vf is not None:
                    column = parse_json_texts(text, SPARSE_TYPE, field=name)
                elif m is not None and m.type in _LISTS:
                    column = parse_json_texts(text, m.type.arrow(), field=name)
            except DataError as err:
                line = self.line_of(path, first_row + (err.row or 0))
                raise at(err, file=label, row_offset=first_row, line=line) from err
            arrays.append(column)
        out = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
        return self.conformed(out, spec, path=path, label=label, first_row=first_row)

    def line_of(self, path: Path, row: int) -> int | None:
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                next(reader, None)
                line = reader.line_num + 1
                for i, _ in enumerate(reader):
                    if i == row:
                        return line
                    line = reader.line_num + 1
        except (UnicodeDecodeError, csv.Error):
            return None
        return None

    def _diagnose(self, path: Path, spec: CollectionSpec, label: str, exc: Exception) -> DataError:
        """Find the record and cell the Arrow CSV reader refused."""
        types = _cell_types(spec)
        row, line = 0, 1
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh, strict=True)
                header = next(reader, [])
                line = reader.line_num + 1
                for record in reader:
                    bad = _bad_cell(header, record, types, line)
                    if bad is not None:
                        reason, field = bad
                        return DataError(reason, file=label, row=row, field=field)
                    line = reader.line_num + 1
                    row += 1
        except UnicodeDecodeError as err:
            return DataError(f"CSV file is not UTF-8 (byte {err.start})", file=label)
        except csv.Error as err:
            hint = " (a quoted cell is not closed)" if "end of data" in str(err) else ""
            return DataError(f"malformed CSV: {err}{hint} (line {line})", file=label, row=row)
        return DataError(f"cannot read CSV: {exc}", file=label)

    def read_ids(self, path: Path, spec: CollectionSpec, *, label: str) -> pa.Array:
        id_type = spec.arrow_schema().field(ID).type
        try:
            table = pcsv.read_csv(
                path,
                read_options=pcsv.ReadOptions(use_threads=False),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(
                    column_types={ID: id_type},
                    include_columns=[ID],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    null_values=[""],
                ),
            )
            ids = table.column(ID).combine_chunks()
            if not ids.null_count:
                return ids
        except (pa.ArrowInvalid, KeyError):
            pass
        return super().read_ids(path, spec, label=label)


def _bad_cell(
    header: list[str], record: list[str], types: dict[str, pa.DataType], line: int
) -> tuple[str, str | None] | None:
    """Why a CSV record cannot be read (reason, field), or None when it can."""
    if len(record) != len(header):
        return (
            f"CSV record has {len(record)} cells, the header has {len(header)} (line {line})",
            None,
        )
    for name, value in zip(header, record, strict=True):
        dtype = types.get(name, pa.string())
        if value == "" or pa.types.is_string(dtype):
            continue
        try:
            pa.scalar(value, pa.string()).cast(dtype)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return f"CSV cell {value[:40]!r} is not a valid {dtype} (line {line})", name
    return None


def _take(
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
