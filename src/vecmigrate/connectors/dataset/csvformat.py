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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv

from vecmigrate.connectors.dataset.codec import TEXT_SLICE_ROWS, ShardCodec, at, regroup
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

    def encode(self, batch: pa.RecordBatch, spec: CollectionSpec, *, header: bool = True) -> bytes:
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
        pcsv.write_csv(
            table, sink, pcsv.WriteOptions(quoting_style="needed", include_header=header)
        )
        return sink.getvalue()

    def pieces(self, batch: pa.RecordBatch, spec: CollectionSpec) -> Iterator[bytes | memoryview]:
        yield self.encode(batch.slice(0, TEXT_SLICE_ROWS), spec)  # the header, and a slice
        for start in range(TEXT_SLICE_ROWS, batch.num_rows, TEXT_SLICE_ROWS):
            yield self.encode(batch.slice(start, TEXT_SLICE_ROWS), spec, header=False)

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

        def converted() -> Iterator[tuple[int, pa.RecordBatch]]:
            row = 0  # rows read so far
            try:
                for chunk in reader:
                    if row + chunk.num_rows <= start:
                        row += chunk.num_rows
                        continue
                    part = chunk.slice(start - row) if row < start else chunk
                    row = max(row, start)
                    yield row, self._convert(part, spec, path=path, label=label, first_row=row)
                    row += part.num_rows
            except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                raise self._diagnose(path, spec, label, exc) from exc
            if row < start:
                raise DataError(f"cursor row {start} is past the end ({row} rows)", file=label)

        # converted as each block arrives: a batch of vectors held as text is ~3x its float32
        # size, and the conversion's intermediates more
        yield from regroup(converted(), batch_size)

    def _convert(
        self,
        batch: pa.RecordBatch,
        spec: CollectionSpec,
        *,
        path: Path,
        label: str,
        first_row: int,
        lines: Callable[[int], int | None] | None = None,
    ) -> pa.RecordBatch:
        line_of = lines or (lambda row: self.line_of(path, row))
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
                line = line_of(first_row + (err.row or 0))
                raise at(err, file=label, row_offset=first_row, line=line) from err
            arrays.append(column)
        out = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
        return self.conformed(out, spec, path=path, label=label, first_row=first_row, lines=lines)

    # -- reading past bad rows: records split by Python's csv module, read by Arrow -------
    def raw_chunks(
        self, path: Path, spec: CollectionSpec, *, label: str, start: int, batch_size: int
    ) -> Iterator[tuple[int, _Records]]:
        types = _cell_types(spec)
        with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
            records = _split_records(fh)
            header = next(records, None)
            if header is None:
                return
            if header.cells is None or _not_utf8(header.text):
                raise DataError("the header row is not readable CSV UTF-8 (line 1)", file=label)
            names = header.cells
            for name in names:
                if name not in types:
                    raise DataError("unknown column (line 1)", file=label, field=name)
            if len(set(names)) != len(names):
                dup = next(n for n in names if names.count(n) > 1)
                raise DataError("column appears twice (line 1)", file=label, field=dup)
            row = 0
            chunk: list[_Record] = []
            for record in records:
                if row < start:
                    row += 1
                    continue
                chunk.append(record)
                if len(chunk) == batch_size:
                    yield row, _Records(header, chunk)
                    row += len(chunk)
                    chunk = []
            if row < start:
                raise DataError(f"cursor row {start} is past the end ({row} rows)", file=label)
            if chunk:
                yield row, _Records(header, chunk)

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
        records: _Records = units
        header = records.header.cells or []
        types = _cell_types(spec)
        for i in range(lo, hi):
            reason = _unreadable(header, records.rows[i])
            if reason is not None:
                raise DataError(reason, file=label, row=first_row + i)
        data = records.header.text + "".join(r.text for r in records.rows[lo:hi])
        try:
            table = pcsv.read_csv(
                io.BytesIO(data.encode("utf-8", errors="surrogateescape")),
                read_options=pcsv.ReadOptions(use_threads=False, block_size=len(data) + 1),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=self._options(spec),
            )
        except pa.ArrowInvalid as exc:
            if hi - lo > 1:  # no row named: the caller splits the range
                raise DataError(f"cannot read CSV: {exc}", file=label) from exc
            record = records.rows[lo]
            if _not_utf8(record.text):
                reason, field = f"CSV record is not UTF-8 (line {record.line})", None
            else:
                bad = _bad_cell(header, record.cells or [], types, record.line)
                reason, field = bad or (f"cannot read CSV: {exc} (line {record.line})", None)
            raise DataError(reason, file=label, row=first_row + lo, field=field) from exc
        if table.num_rows != hi - lo:
            row = first_row + lo if hi - lo == 1 else None
            raise DataError(
                f"{hi - lo} CSV records read as {table.num_rows} rows", file=label, row=row
            )
        table = table.combine_chunks()
        batch = (
            table.to_batches()[0]
            if table.num_rows
            else pa.RecordBatch.from_pylist([], schema=table.schema)
        )
        return self._convert(
            batch,
            spec,
            path=path,
            label=label,
            first_row=first_row + lo,
            lines=lambda row: records.rows[row - first_row].line,
        )

    def record_of(self, units: Any, i: int) -> Any:
        records: _Records = units
        record = records.rows[i]
        header = records.header.cells or []
        cells = record.cells
        if cells is not None and len(cells) == len(header) and not _not_utf8(record.text):
            return dict(zip(header, cells, strict=True))
        raw = record.text.encode("utf-8", errors="surrogateescape")
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")

    def line_in(self, units: Any, i: int, *, path: Path, first_row: int) -> int | None:
        records: _Records = units
        return records.rows[i].line

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


@dataclass(frozen=True)
class _Record:
    """One CSV record as written: its text, its cells (None if it is not valid CSV), its line."""

    text: str
    cells: list[str] | None
    line: int
    error: str | None = None


@dataclass(frozen=True)
class _Records:
    header: _Record
    rows: list[_Record]

    def __len__(self) -> int:
        return len(self.rows)


class _LineTap:
    """The lines a csv.reader takes, kept until the record they make is complete."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.taken: list[str] = []
        self.count = 0

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.taken.append(line)
        self.count += 1
        return line

    def cut(self) -> tuple[str, int]:
        """The text of the lines taken since the last cut, and the line it starts on."""
        text = "".join(self.taken)
        first = self.count - len(self.taken) + 1
        self.taken = []
        return text, first


def _split_records(lines: Iterator[str]) -> Iterator[_Record]:
    """Every record of a CSV text, with its own text; blank lines are no records (as in Arrow)."""
    tap = _LineTap(lines)
    reader = csv.reader(tap, strict=True)
    while True:
        try:
            cells: list[str] | None = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as exc:
            cells, error = None, str(exc)
        text, line = tap.cut()
        if cells == []:
            continue
        yield _Record(text, cells, line, error)


def _not_utf8(text: str) -> bool:
    """Whether text read with errors="surrogateescape" held bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unreadable(header: list[str], record: _Record) -> str | None:
    """Why a record is not CSV with as many cells as the header, or None when it is."""
    line = record.line
    if record.cells is None:
        hint = " (a quoted cell is not closed)" if "end of data" in (record.error or "") else ""
        return f"malformed CSV: {record.error}{hint} (line {line})"
    if len(record.cells) != len(header):
        return (
            f"CSV record has {len(record.cells)} cells, the header has {len(header)} (line {line})"
        )
    return None


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
