"""Arrow record batches: conformance to a spec, validation of vectors and ids, conversion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.errors import DataError
from vecmigrate.spec import ID, CollectionSpec, VectorField

__all__ = [
    "check_batch",
    "conform",
    "fixed_size_vectors",
    "vectors_numpy",
]


def vectors_numpy(column: pa.Array | pa.ChunkedArray, dim: int | None = None) -> np.ndarray:
    """A fixed-size-list float column as a 2-d float32 array (zero-copy where possible)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        dim = column.type.list_size
        values = column.flatten()
    else:
        values = column.flatten()
        if dim is None:
            dim = len(values) // max(len(column), 1)
    arr = values.to_numpy(zero_copy_only=False)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    out: np.ndarray = arr.reshape(len(column), dim) if len(column) else arr.reshape(0, dim or 0)
    return out


def fixed_size_vectors(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A 2-d numpy array as a fixed-size-list<float32> Arrow array (zero-copy for float32)."""
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    if m.ndim != 2:
        raise DataError(f"vectors must be a 2-d array, got shape {m.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1])


def _dense_column(column: pa.Array, vf: VectorField, *, id_col: pa.Array) -> pa.Array:
    """Bring a vector column to fixed_size_list<float32>[dim], naming the first bad row."""
    target = vf.arrow()
    if column.type == target:
        return column
    t = column.type
    if pa.types.is_fixed_size_list(t) and t.list_size != vf.dim:
        raise DataError(
            f"vector has {t.list_size} dimensions, expected {vf.dim}",
            row=0,
            record_id=_id_at(id_col, 0),
            field=vf.name,
        )
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
            raise DataError(
                f"vector values must be numbers, got {t.value_type}", row=0, field=vf.name
            )
        if not pa.types.is_fixed_size_list(t):
            lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy(zero_copy_only=False)
            bad = np.nonzero(lengths != vf.dim)[0]
            bad = bad[lengths[bad] >= 0]
            if len(bad):
                i = int(bad[0])
                raise DataError(
                    f"vector has {int(lengths[i])} dimensions, expected {vf.dim}",
                    row=i,
                    record_id=_id_at(id_col, i),
                    field=vf.name,
                )
        values = pc.cast(column.flatten(), pa.float32())
        if column.null_count:
            i = int(np.nonzero(column.is_null().to_numpy(zero_copy_only=False))[0][0])
            raise DataError("vector is null", row=i, record_id=_id_at(id_col, i), field=vf.name)
        return pa.FixedSizeListArray.from_arrays(values, vf.dim)
    raise DataError(f"vector column has type {t}, expected a list of floats", field=vf.name)


def _id_at(ids: pa.Array, i: int) -> object:
    return ids[i].as_py() if 0 <= i < len(ids) else None


def conform(batch: pa.RecordBatch, spec: CollectionSpec) -> pa.RecordBatch:
    """Cast a batch to the spec's schema: column order, vector shape, metadata types.

    Missing metadata columns become nulls; columns the spec does not know are an error.
    """
    schema = spec.arrow_schema()
    if ID not in batch.schema.names:
        raise DataError(f"batch has no {ID!r} column")
    known = set(schema.names)
    extra = [n for n in batch.schema.names if n not in known]
    if extra:
        raise DataError(f"column {extra[0]!r} is not in the collection spec", field=extra[0])
    ids = batch.column(ID)
    arrays: list[pa.Array] = []
    for f in schema:
        if f.name not in batch.schema.names:
            if not f.nullable:
                raise DataError("required column is missing", field=f.name)
            arrays.append(pa.nulls(batch.num_rows, f.type))
            continue
        col = batch.column(f.name)
        vf = next((v for v in spec.vectors if v.name == f.name), None)
        if vf is not None and not vf.sparse:
            arrays.append(_dense_column(col, vf, id_col=ids))
        elif col.type != f.type:
            try:
                arrays.append(col.cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    f"cannot convert {col.type} to {f.type}: {exc}", field=f.name
                ) from exc
        else:
            arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def check_batch(batch: pa.RecordBatch, spec: CollectionSpec) -> None:
    """Refuse null ids, duplicate ids, null or non-finite vectors. Rows are 0-based in batch."""
    ids = batch.column(ID)
    if ids.null_count:
        i = int(np.nonzero(ids.is_null().to_numpy(zero_copy_only=False))[0][0])
        raise DataError("id is null", row=i, field=ID)
    if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
        empty = pc.equal(pc.utf8_length(ids), 0).to_numpy(zero_copy_only=False)
        if empty.any():
            raise DataError("id is empty", row=int(np.nonzero(empty)[0][0]), field=ID)
    counts = pc.value_counts(ids)
    dup = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    if len(dup):
        dup_id = dup[0]["values"].as_py()
        rows = np.nonzero(pc.equal(ids, dup[0]["values"]).to_numpy(zero_copy_only=False))[0]
        raise DataError(
            f"duplicate id (rows {', '.join(str(int(r)) for r in rows[:5])})",
            row=int(rows[1]),
            record_id=dup_id,
            field=ID,
        )
    for vf in spec.vectors:
        if vf.sparse or vf.name not in batch.schema.names:
            continue
        col = batch.column(vf.name)
        if col.null_count:
            i = int(np.nonzero(col.is_null().to_numpy(zero_copy_only=False))[0][0])
            raise DataError("vector is null", row=i, record_id=_id_at(ids, i), field=vf.name)
        m = vectors_numpy(col)
        with np.errstate(over="ignore", invalid="ignore"):
            sums = m.sum(axis=1)  # NaN/inf make a row's sum non-finite (overflow is rechecked)
        if m.size and not np.isfinite(sums).all():
            finite = np.isfinite(m).all(axis=1)
            bad = np.nonzero(~finite)[0]
            if len(bad):
                i = int(bad[0])
                kind = "NaN" if np.isnan(m[i]).any() else "inf"
                raise DataError(
                    f"vector contains {kind}", row=i, record_id=_id_at(ids, i), field=vf.name
                )


def concat(batches: Sequence[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
    """One batch from many (empty batch of the schema for none)."""
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=schema)
    return pa.Table.from_batches(list(batches), schema).combine_chunks().to_batches()[0]


def row_problems(batch: pa.RecordBatch, spec: CollectionSpec) -> list[tuple[int, str, str]]:
    """Every bad row of a raw batch as (row, field, reason); later duplicates of an id count."""
    problems: dict[int, tuple[str, str]] = {}
    ids = batch.column(ID)
    id_null = ids.is_null().to_numpy(zero_copy_only=False)
    for i in np.nonzero(id_null)[0]:
        problems.setdefault(int(i), (ID, "id is null"))
    if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
        empty = pc.fill_null(pc.equal(pc.utf8_length(ids), 0), False).to_numpy(zero_copy_only=False)
        for i in np.nonzero(empty)[0]:
            problems.setdefault(int(i), (ID, "id is empty"))
    seen: dict[object, int] = {}
    counts = pc.value_counts(ids)
    dup_values = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(dup_values):
        rows = np.nonzero(pc.is_in(ids, dup_values).to_numpy(zero_copy_only=False))[0]
        for i in rows:
            key = ids[int(i)].as_py()
            if key in seen:
                problems.setdefault(int(i), (ID, f"duplicate id (first at row {seen[key]})"))
            else:
                seen[key] = int(i)
    for vf in spec.vectors:
        if vf.sparse or vf.name not in batch.schema.names:
            continue
        col = batch.column(vf.name)
        null = col.is_null().to_numpy(zero_copy_only=False)
        for i in np.nonzero(null)[0]:
            problems.setdefault(int(i), (vf.name, "vector is null"))
        if pa.types.is_fixed_size_list(col.type):
            lengths = np.full(len(col), col.type.list_size)
        else:
            lengths = pc.fill_null(pc.list_value_length(col), vf.dim).to_numpy(zero_copy_only=False)
        for i in np.nonzero((lengths != vf.dim) & ~null)[0]:
            problems.setdefault(
                int(i), (vf.name, f"vector has {int(lengths[i])} dimensions, expected {vf.dim}")
            )
        ok_rows = np.nonzero((lengths == vf.dim) & ~null)[0]
        if len(ok_rows) and pa.types.is_floating(col.type.value_type):
            good = col if len(ok_rows) == len(col) else col.take(pa.array(ok_rows))
            vals = good.flatten().to_numpy(zero_copy_only=False)  # a view for float32
            if vals.dtype != np.float32:
                with np.errstate(over="ignore", invalid="ignore"):
                    vals = vals.astype(np.float32)  # values beyond float32 range become inf
            # a row sum (in float64, which cannot overflow here) is finite iff every value is
            sums = vals.reshape(len(ok_rows), vf.dim).sum(axis=1, dtype=np.float64)
            finite = np.isfinite(sums)
            for i in ok_rows[~finite]:
                problems.setdefault(int(i), (vf.name, "vector contains NaN or inf"))
    return sorted((row, f, reason) for row, (f, reason) in problems.items())
