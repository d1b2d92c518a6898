"""JSONL shards: one JSON object per line, keys in the collection's column order.

Encodings (docs/dataset-format.md): vectors are arrays of numbers that read back bit-exact as
float32; float64 metadata is the shortest round-trip decimal, NaN/Infinity as the JSON5 tokens
``NaN``, ``Infinity``, ``-Infinity``; timestamps are ISO-8601 UTC strings with microseconds;
``json`` metadata is a string holding the JSON text; nulls are ``null``.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from vecmigrate.connectors.dataset.codec import TEXT_SLICE_ROWS, ShardCodec, regroup
from vecmigrate.connectors.dataset.textvalues import (
    float64_text,
    json_string,
    list_text,
    sparse_text,
    vector_text,
)
from vecmigrate.errors import DataError
from vecmigrate.spec import DOCUMENT, ID, SPARSE_TYPE, CollectionSpec, MetadataType


def value_text(column: pa.Array, name: str, spec: CollectionSpec) -> pa.Array:
    """JSON value texts of one column (null where the value is null)."""
    vf = next((v for v in spec.vectors if v.name == name), None)
    if vf is not None:
        return sparse_text(column) if vf.sparse else vector_text(column)
    if name in (ID, DOCUMENT):
        return json_string(column) if pa.types.is_string(column.type) else column.cast(pa.string())
    field = spec.metadata_field(name)
    mtype = field.type if field is not None else MetadataType.STRING
    if mtype in (MetadataType.STRING, MetadataType.JSON):
        return json_string(column)
    if mtype is MetadataType.FLOAT64:
        return float64_text(column, json_tokens=True)
    if mtype is MetadataType.TIMESTAMP:
        return json_string(pc.replace_substring(column.cast(pa.string()), " ", "T"))
    if mtype in (MetadataType.LIST_STRING, MetadataType.LIST_INT64, MetadataType.LIST_FLOAT64):
        return list_text(column, mtype)
    return column.cast(pa.string())  # int64, bool


def read_schema(spec: CollectionSpec) -> pa.Schema:
    """The schema the Arrow JSON reader parses into (vectors as variable lists first)."""
    fields = []
    for f in spec.arrow_schema():
        vf = next((v for v in spec.vectors if v.name == f.name), None)
        if vf is not None:
            fields.append(pa.field(f.name, SPARSE_TYPE if vf.sparse else pa.list_(pa.float32())))
        else:
            fields.append(pa.field(f.name, f.type))
    return pa.schema(fields)


class JsonlCodec(ShardCodec):
    format = "jsonl"
    extension = "jsonl"

    def encode(self, batch: pa.RecordBatch, spec: CollectionSpec) -> bytes | memoryview:
        if batch.num_rows == 0:
            return b""
        parts = []
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            key = json.dumps(name, ensure_ascii=False) + ":"
            text = pc.fill_null(value_text(column, name, spec), "null")
            parts.append(pc.binary_join_element_wise(key, text, ""))
        body = pc.binary_join_element_wise(*parts, ",")
        lines = pc.binary_join_element_wise("{", body, "}\n", "").cast(pa.large_string())
        _, offsets_buf, data = lines.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[lines.offset :]
        first, last = int(offsets[0]), int(offsets[len(lines)])
        return b"" if data is None else memoryview(data)[first:last]

    def pieces(self, batch: pa.RecordBatch, spec: CollectionSpec) -> Iterator[bytes | memoryview]:
        for start in range(0, batch.num_rows, TEXT_SLICE_ROWS):
            yield self.encode(batch.slice(start, TEXT_SLICE_ROWS), spec)

    def line_of(self, path: Path, row: int) -> int | None:
        return row + 1

    def decode(
        self, path: Path, spec: CollectionSpec, *, label: str, start: int, batch_size: int
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        schema = read_schema(spec)

        def parsed() -> Iterator[tuple[int, pa.RecordBatch]]:
            for row, lines in self.raw_chunks(
                path, spec, label=label, start=start, batch_size=min(batch_size, TEXT_SLICE_ROWS)
            ):
                batch = self._parse(lines, schema, spec, label=label, first_row=row)
                yield row, self.conformed(batch, spec, path=path, label=label, first_row=row)

        # parsed a slice of lines at a time (a batch of vectors held as text is ~3x its
        # float32 size), joined into batches of ``batch_size`` rows
        yield from regroup(parsed(), batch_size)

    def raw_chunks(
        self, path: Path, spec: CollectionSpec, *, label: str, start: int, batch_size: int
    ) -> Iterator[tuple[int, list[bytes]]]:
        with path.open("rb") as fh:
            skipped = sum(1 for _ in itertools.islice(fh, start))
            if skipped < start:
                raise DataError(f"cursor row {start} is past the end ({skipped} lines)", file=label)
            row = start
            while True:
                lines = list(itertools.islice(fh, batch_size))
                if not lines:
                    return
                yield row, lines
                row += len(lines)

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
        first = first_row + lo
        batch = self._parse(units[lo:hi], read_schema(spec), spec, label=label, first_row=first)
        return self.conformed(batch, spec, path=path, label=label, first_row=first)

    def record_of(self, units: Any, i: int) -> Any:
        raw: bytes = units[i]
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            record = None
        if isinstance(record, dict):
            return record
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")

    def _parse(
        self,
        lines: list[bytes],
        schema: pa.Schema,
        spec: CollectionSpec,
        *,
        label: str,
        first_row: int,
    ) -> pa.RecordBatch:
        for i, line in enumerate(lines):
            if line[:1] == b"{":
                continue
            if not line.strip():
                raise DataError(
                    f"empty line (line {first_row + i + 1})", file=label, row=first_row + i
                )
            if not line.lstrip().startswith(b"{"):
                # a record is an object; and Arrow's JSON reader must never see another
                # value first: a first line of `null` crashes it (pyarrow 26, segfault)
                raise _diagnose(
                    [line], schema, label=label, first_row=first_row + i,
                    exc=ValueError("not a JSON object"),
                )  # fmt: skip
        data = b"".join(lines)
        try:
            table = pj.read_json(
                io.BytesIO(data),
                read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 1),
                parse_options=pj.ParseOptions(
                    explicit_schema=schema, unexpected_field_behavior="error"
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise _diagnose(lines, schema, label=label, first_row=first_row, exc=exc) from exc
        if table.num_rows != len(lines):
            raise DataError(
                f"lines {first_row + 1}-{first_row + len(lines)} hold {table.num_rows} records "
                f"for {len(lines)} lines",
                file=label,
                row=first_row,
            )
        arrays = [table.column(f.name).combine_chunks() for f in schema]
        return pa.RecordBatch.from_arrays(arrays, names=schema.names)

    def read_ids(self, path: Path, spec: CollectionSpec, *, label: str) -> pa.Array:
        # shards written here start every line with the id: decode just that value
        id_type = spec.arrow_schema().field(ID).type
        decoder = json.JSONDecoder()
        ids: list[Any] = []
        with path.open("rb") as fh:
            for raw in fh:
                if not raw.startswith(_ID_PREFIX):
                    return super().read_ids(path, spec, label=label)  # precise errors
                try:
                    value, _ = decoder.raw_decode(raw[len(_ID_PREFIX) :].decode("utf-8"))
                except (ValueError, UnicodeDecodeError):
                    return super().read_ids(path, spec, label=label)
                ids.append(value)
        try:
            return pa.array(ids, id_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return super().read_ids(path, spec, label=label)


_ID_PREFIX = b'{"id":'
_JSON_KIND = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def _diagnose(
    lines: list[bytes], schema: pa.Schema, *, label: str, first_row: int, exc: Exception
) -> DataError:
    """Find the line and field the Arrow JSON reader refused, with a clear reason."""
    for i, raw in enumerate(lines):
        row, line = first_row + i, first_row + i + 1
        try:
            record: Any = json.loads(raw)
        except UnicodeDecodeError:
            return DataError(f"line is not UTF-8 (line {line})", file=label, row=row)
        except json.JSONDecodeError as err:
            return DataError(
                f"malformed JSON: {err.msg} at column {err.colno} (line {line})",
                file=label,
                row=row,
            )
        if not isinstance(record, dict):
            kind = _JSON_KIND.get(type(record), type(record).__name__)
            return DataError(
                f"expected a JSON object, got {kind} (line {line})", file=label, row=row
            )
        for key, value in record.items():
            if key not in schema.names:
                return DataError(f"unknown field (line {line})", file=label, row=row, field=key)
            dtype = schema.field(key).type
            if not _fits(value, dtype):
                kind = _JSON_KIND.get(type(value), type(value).__name__)
                return DataError(
                    f"expected {_describe(dtype)}, got {kind} (line {line})",
                    file=label,
                    row=row,
                    record_id=record.get(ID) if key != ID else None,
                    field=key,
                )
    return DataError(
        f"cannot read lines {first_row + 1}-{first_row + len(lines)}: {exc}",
        file=label,
        row=first_row,
    )


def _fits(value: Any, dtype: pa.DataType) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) and not pa.types.is_boolean(dtype):
        return False
    try:
        if pa.types.is_timestamp(dtype):
            if not isinstance(value, str):
                return False
            pa.scalar(value, pa.string()).cast(dtype)
        else:
            pa.array([value], dtype)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return False
    return True


def _describe(dtype: pa.DataType) -> str:
    if pa.types.is_timestamp(dtype):
        return "an ISO-8601 timestamp string"
    if pa.types.is_list(dtype):
        return f"an array of {_describe(dtype.value_type)}"
    if pa.types.is_struct(dtype):
        return "an object " + ", ".join(f.name for f in dtype)
    return str(dtype)
