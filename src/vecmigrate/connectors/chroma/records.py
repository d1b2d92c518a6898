"""Record batches <-> Chroma's row-oriented lists (ids, embeddings, metadatas, documents).

Ids, vectors and documents convert column-wise; metadata is one dict per record in Chroma's
API, so it goes through ``pa.array(dicts, struct)`` on the way in and one ``zip`` on the way
out. Values Chroma would silently drop (NaN, empty lists) are refused with the record named.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.errors import DataError
from vecmigrate.records import conform, fixed_size_vectors, vectors_numpy
from vecmigrate.spec import DOCUMENT, ID, CollectionSpec, MetadataField, MetadataType

# how Chroma holds each logical type (timestamps as int64 microseconds since the epoch, UTC)
HELD: dict[MetadataType, pa.DataType] = {
    MetadataType.STRING: pa.string(),
    MetadataType.INT64: pa.int64(),
    MetadataType.FLOAT64: pa.float64(),
    MetadataType.BOOL: pa.bool_(),
    MetadataType.JSON: pa.string(),
    MetadataType.TIMESTAMP: pa.int64(),
    MetadataType.LIST_STRING: pa.list_(pa.string()),
    MetadataType.LIST_INT64: pa.list_(pa.int64()),
    MetadataType.LIST_FLOAT64: pa.list_(pa.float64()),
}
_LISTS = {MetadataType.LIST_STRING, MetadataType.LIST_INT64, MetadataType.LIST_FLOAT64}


def type_of_values(values: set[type], list_items: set[type]) -> MetadataType:
    """The logical type of one metadata key from the Python types seen in its values."""
    if values == {bool}:
        return MetadataType.BOOL
    if values == {int}:
        return MetadataType.INT64
    if values and values <= {int, float}:
        return MetadataType.FLOAT64
    if values == {str}:
        return MetadataType.STRING
    if values == {list}:
        if list_items == {str}:
            return MetadataType.LIST_STRING
        if list_items == {int}:
            return MetadataType.LIST_INT64
        if list_items and list_items <= {int, float}:
            return MetadataType.LIST_FLOAT64
    return MetadataType.JSON


# -- reading ----------------------------------------------------------------------------------
def from_chroma(
    got: dict[str, Any],
    spec: CollectionSpec,
    *,
    foreign_json: frozenset[str] = frozenset(),
    ignored_keys: frozenset[str] = frozenset(),
) -> pa.RecordBatch:
    """A ``get`` result as a record batch of the spec's schema.

    ``foreign_json`` names keys whose values are JSON-encoded on the way in (keys of mixed
    types in a collection made elsewhere); a key neither in the spec nor ``ignored_keys`` is an
    error rather than a silent loss.
    """
    ids: list[str] = got["ids"]
    n = len(ids)
    cols: dict[str, pa.Array] = {ID: _ids_in(ids, spec)}
    vf = spec.vector()
    embeddings = got.get("embeddings")
    matrix = np.asarray(embeddings if embeddings is not None else [], dtype=np.float32)
    cols[vf.name] = fixed_size_vectors(matrix.reshape(n, vf.dim))
    if spec.has_document:
        cols[DOCUMENT] = pa.array(got.get("documents") or [None] * n, pa.string())
    metadatas: list[dict[str, Any] | None] = got.get("metadatas") or [None] * n
    if spec.metadata:
        cols.update(_metadata_in(metadatas, ids, spec, foreign_json))
    known = {m.name for m in spec.metadata} | ignored_keys
    unknown = sorted(set().union(*(m for m in metadatas if m)) - known)
    if unknown:
        row = next(i for i, m in enumerate(metadatas) if m and unknown[0] in m)
        raise DataError(
            f"metadata key {unknown[0]!r} is not in the collection spec (was the collection "
            "changed after it was described?)",
            row=row,
            record_id=ids[row],
            field=unknown[0],
        )
    return conform(pa.RecordBatch.from_pydict(cols), spec)


def _ids_in(ids: list[str], spec: CollectionSpec) -> pa.Array:
    arr = pa.array(ids, pa.string())
    if spec.id_type == "string":
        return arr
    try:
        return pc.cast(arr, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        bad = next(i for i, v in enumerate(ids) if not v.lstrip("-").isdigit())
        raise DataError(
            "id is not a whole number (the spec says int64 ids)", row=bad, record_id=ids[bad]
        ) from exc


def _metadata_in(
    metadatas: list[dict[str, Any] | None],
    ids: list[str],
    spec: CollectionSpec,
    foreign_json: frozenset[str],
) -> dict[str, pa.Array]:
    fields = spec.metadata
    struct = pa.struct(
        [pa.field(m.name, pa.string() if m.name in foreign_json else HELD[m.type]) for m in fields]
    )
    rows = metadatas
    if foreign_json:
        rows = [
            {k: json.dumps(v, ensure_ascii=False) if k in foreign_json else v for k, v in m.items()}
            if m
            else m
            for m in metadatas
        ]
    try:
        columns = pa.array(rows, type=struct).flatten()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _metadata_error(rows, ids, spec, exc) from exc
    return {
        m.name: column.cast(m.type.arrow()) if m.type is MetadataType.TIMESTAMP else column
        for m, column in zip(fields, columns, strict=True)
    }


def _metadata_error(
    rows: list[dict[str, Any] | None], ids: list[str], spec: CollectionSpec, exc: Exception
) -> DataError:
    """Name the first record and key whose value does not fit its type."""
    for m in spec.metadata:
        for i, row in enumerate(rows):
            value = (row or {}).get(m.name)
            if value is None:
                continue
            try:
                pa.array([value], HELD[m.type])
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return DataError(
                    f"value {value!r} is not {m.type}", row=i, record_id=ids[i], field=m.name
                )
    return DataError(f"metadata does not fit the collection spec: {exc}")


# -- writing ----------------------------------------------------------------------------------
def to_chroma(
    batch: pa.RecordBatch, spec: CollectionSpec
) -> tuple[list[str], np.ndarray, list[dict[str, Any]] | None, list[str | None] | None]:
    """Ids (as strings), a float32 matrix, metadata dicts and documents for ``upsert``."""
    ids_col = batch.column(ID)
    if spec.id_type == "int64":
        ids_col = pc.cast(ids_col, pa.string())
    embeddings = vectors_numpy(batch.column(spec.vector().name))
    documents = batch.column(DOCUMENT).to_pylist() if spec.has_document else None
    return ids_col.to_pylist(), embeddings, _metadata_out(batch, spec), documents


def _metadata_out(batch: pa.RecordBatch, spec: CollectionSpec) -> list[dict[str, Any]] | None:
    """One dict per record; nulls are sent as None, which removes the key from a record."""
    if not spec.metadata:
        return None
    ids = batch.column(ID)
    names: list[str] = []
    columns: list[list[Any]] = []
    for m in spec.metadata:
        column = batch.column(m.name)
        _check_storable(column, m, ids)
        if m.type is MetadataType.TIMESTAMP:
            column = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        names.append(m.name)
        columns.append(column.to_pylist())
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _first(mask: pa.Array) -> int | None:
    """The first row where a boolean mask is true (nulls count as false)."""
    hits = np.nonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))[0]
    return int(hits[0]) if len(hits) else None


def _check_storable(column: pa.Array, m: MetadataField, ids: pa.Array) -> None:
    """Refuse values Chroma would drop or reject, naming the first such record."""
    problem = ""
    row: int | None = None
    if m.type is MetadataType.FLOAT64 and column.null_count < len(column):
        row, problem = _first(pc.invert(pc.is_finite(column))), "NaN or infinite number"
    elif m.type in _LISTS and len(column):
        row, problem = _first(pc.equal(pc.list_value_length(column), 0)), "empty list"
        parents = pc.list_parent_indices(column)
        flat = pc.list_flatten(column)
        if row is None:
            row, problem = _first_parent(parents, pc.is_null(flat)), "null inside a list"
        if row is None and m.type is MetadataType.LIST_FLOAT64:
            row = _first_parent(parents, pc.invert(pc.is_finite(flat)))
            problem = "NaN or infinite number in a list"
    if row is not None:
        raise DataError(
            f"Chroma cannot store a {problem} (map the field to json to keep it)",
            row=row,
            record_id=ids[row].as_py(),
            field=m.name,
        )


def _first_parent(parents: pa.Array, mask: pa.Array) -> int | None:
    """The record of the first list item where ``mask`` is true."""
    hits = parents.filter(pc.fill_null(mask, False))
    return int(hits[0].as_py()) if len(hits) else None
