"""PostgreSQL binary formats, column-wise with numpy.

pgvector's binary forms: ``vector`` is int16 dim, int16 unused, dim big-endian float32;
``halfvec`` the same with float16; ``sparsevec`` is int32 dim, int32 nnz, int32 unused, nnz
int32 indices (0-based), nnz float32 values. A binary COPY stream is a header, one tuple per
row (int16 field count, then per field an int32 length, -1 for NULL, and the bytes) and an
int16 -1 trailer.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.errors import DataError
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import SPARSE_TYPE

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
COPY_TRAILER = b"\xff\xff"
SPARSEVEC_MAX_DIM = 1_000_000_000
TEXT_OID, INT8_OID, FLOAT8_OID = 25, 20, 701

_U8 = np.uint8
_BE_I32 = np.dtype(">i4")


@dataclass(frozen=True)
class Field:
    """One column encoded for COPY: per-row byte lengths (-1 for NULL) and the value bytes.

    ``width`` is set when every row has a value of that same size (``data`` is then n x width).
    """

    lengths: np.ndarray  # int64, one per row
    data: np.ndarray  # uint8: concatenated values of the non-null rows, or (n, width)
    width: int | None = None


def _fixed(matrix: np.ndarray) -> Field:
    n, width = matrix.shape
    return Field(lengths=np.full(n, width, dtype=np.int64), data=matrix, width=width)


def _numeric(values: np.ndarray, valid: np.ndarray | None, dtype: str) -> Field:
    be = values.astype(dtype, copy=False)
    width = be.dtype.itemsize
    if valid is None:
        return _fixed(np.ascontiguousarray(be).view(_U8).reshape(len(be), width))
    lengths = np.where(valid, width, -1).astype(np.int64)
    return Field(lengths=lengths, data=np.ascontiguousarray(be[valid]).view(_U8).reshape(-1))


def _valid(arr: pa.Array) -> np.ndarray | None:
    if arr.null_count == 0:
        return None
    out: np.ndarray = arr.is_valid().to_numpy(zero_copy_only=False)
    return out


PG_EPOCH_MICROS = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970


def encode_column(arr: pa.Array, pg_type: str, dim: int = 0) -> Field:
    """An Arrow column in the binary form of ``pg_type`` (a ``CREATE_TYPE`` or vector type)."""
    valid = _valid(arr)
    if pg_type in ("vector", "halfvec"):
        if arr.null_count:
            raise DataError("vector is null")
        return encode_vectors(vectors_numpy(arr), half=pg_type == "halfvec")
    if pg_type == "sparsevec":
        return _encode_sparse(arr, dim or SPARSEVEC_MAX_DIM)
    if pg_type == "timestamptz":
        t = arr.type
        if not pa.types.is_timestamp(t):
            raise DataError(f"cannot write Arrow type {t} as a timestamp")
        micros = pc.cast(arr, pa.timestamp("us", tz=t.tz)).cast(pa.int64()).fill_null(0)
        return _numeric(micros.to_numpy() - PG_EPOCH_MICROS, valid, ">i8")
    if pg_type == "int8":
        return _numeric(arr.cast(pa.int64()).fill_null(0).to_numpy(), valid, ">i8")
    if pg_type == "float8":
        return _numeric(arr.cast(pa.float64()).fill_null(0).to_numpy(), valid, ">f8")
    if pg_type == "bool":
        bools = arr.fill_null(False).to_numpy(zero_copy_only=False).astype(_U8)
        return _numeric(bools, valid, "u1")
    if pg_type in ("text", "jsonb"):
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            arr = arr.cast(pa.string())
        return _encode_strings(arr, valid, prefix=b"\x01" if pg_type == "jsonb" else b"")
    if pg_type in ("_text", "_int8", "_float8"):
        return _encode_lists(arr, pg_type)
    raise DataError(f"cannot write Arrow type {arr.type} as PostgreSQL {pg_type}")


def _encode_strings(arr: pa.Array, valid: np.ndarray | None, prefix: bytes = b"") -> Field:
    """UTF-8 strings; ``prefix`` (jsonb's version byte) goes before each non-null value."""
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    lengths = np.diff(offsets).astype(np.int64)
    data_buf = arr.buffers()[2]
    raw = np.frombuffer(data_buf, dtype=_U8) if data_buf is not None else np.zeros(0, _U8)
    if valid is not None and lengths[~valid].any():  # null slots that still own bytes
        return _encode_strings(pa.array(arr.to_pylist(), pa.string()), valid, prefix)
    data = raw[offsets[0] : offsets[-1]] if n else raw[:0]
    if prefix:
        keep = np.ones(n, dtype=bool) if valid is None else valid
        kept = lengths[keep]
        out = np.empty(len(data) + len(kept) * len(prefix), dtype=_U8)
        starts = np.cumsum(kept + len(prefix)) - (kept + len(prefix))
        for k, byte in enumerate(prefix):
            out[starts + k] = byte
        shift = np.repeat(np.arange(1, len(kept) + 1) * len(prefix), kept)
        out[np.arange(len(data)) + shift] = data
        data = out
        lengths = np.where(keep, lengths + len(prefix), lengths)
    if valid is not None:
        lengths = np.where(valid, lengths, -1)
    return Field(lengths=lengths, data=data)


def _array_bytes(values: list[object] | None, oid: int, fmt: str) -> bytes | None:
    """One 1-d PostgreSQL array in binary form (ndim, has-null, element oid, size, lbound)."""
    if values is None:
        return None
    if not values:
        return struct.pack(">iii", 0, 0, oid)
    parts = [struct.pack(">iiiii", 1, int(any(v is None for v in values)), oid, len(values), 1)]
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        elif fmt == "text":
            b = str(v).encode()
            parts.append(struct.pack(">i", len(b)) + b)
        else:
            parts.append(struct.pack(">i" + fmt, 8, v))
    return b"".join(parts)


def _from_pieces(pieces: Sequence[bytes | None]) -> Field:
    lengths = np.array([-1 if p is None else len(p) for p in pieces], dtype=np.int64)
    data = np.frombuffer(b"".join(p for p in pieces if p is not None), dtype=_U8)
    return Field(lengths=lengths, data=data)


def _encode_lists(arr: pa.Array, pg_type: str) -> Field:
    oid, fmt = {"_text": (TEXT_OID, "text"), "_int8": (INT8_OID, "q")}.get(
        pg_type, (FLOAT8_OID, "d")
    )
    return _from_pieces([_array_bytes(v, oid, fmt) for v in arr.to_pylist()])


def _encode_sparse(arr: pa.Array, dim: int) -> Field:
    pieces: list[bytes | None] = []
    for row in arr.to_pylist():
        if row is None:
            pieces.append(None)
            continue
        idx = np.asarray(row["indices"], dtype=np.int64)
        val = np.asarray(row["values"], dtype=np.float32)
        keep = val != 0  # pgvector refuses stored zeros
        idx, val = idx[keep], val[keep]
        order = np.argsort(idx, kind="stable")
        idx, val = idx[order], val[order]
        head = struct.pack(">iii", dim, len(idx), 0)
        pieces.append(head + idx.astype(">i4").tobytes() + val.astype(">f4").tobytes())
    return _from_pieces(pieces)


def encode_vectors(matrix: np.ndarray, *, half: bool = False) -> Field:
    """n x dim floats -> n rows of pgvector's binary ``vector`` (or ``halfvec``)."""
    n, dim = matrix.shape
    width = 2 if half else 4
    out = np.empty((n, 4 + width * dim), dtype=_U8)
    out[:, 0:2] = np.frombuffer(struct.pack(">h", dim), dtype=_U8)
    out[:, 2:4] = 0
    # convert and byte-swap straight into the row layout (one pass, no temporary)
    np.copyto(out[:, 4:].view(">f2" if half else ">f4"), matrix, casting="same_kind")
    return _fixed(out)


def copy_rows(fields: Sequence[Field], n: int, head_count: int) -> list[memoryview]:
    """``n`` tuples of a binary COPY stream (no header or trailer), as buffers to send.

    The first ``head_count`` fields must have a fixed width: that head of every row is one
    n x W matrix built column by column. The other fields form each row's tail, scattered
    into one buffer. When every tail has the same size (fixed-width ids, no nulls) the rows
    are one n x (W + T) matrix; otherwise rows are sent as head, tail, head, tail.
    """
    head_fields, tail_fields = fields[:head_count], fields[head_count:]
    head_width = 2 + sum(4 + (f.width or 0) for f in head_fields)
    if any(f.width is None for f in head_fields):
        raise ValueError("the head fields must have a fixed width")
    sizes = [4 + np.maximum(f.lengths, 0) for f in tail_fields]
    tail_len = np.sum(sizes, axis=0) if sizes else np.zeros(n, dtype=np.int64)
    uniform = n > 0 and bool((tail_len == tail_len[0]).all())
    row_width = head_width + (int(tail_len[0]) if uniform else 0)
    head = np.empty((n, row_width), dtype=_U8)
    head[:, 0:2] = np.frombuffer(struct.pack(">h", len(fields)), dtype=_U8)
    pos = 2
    for f in head_fields:
        width = f.width or 0
        head[:, pos : pos + 4] = np.frombuffer(struct.pack(">i", width), dtype=_U8)
        head[:, pos + 4 : pos + 4 + width] = f.data
        pos += 4 + width
    if not tail_fields:
        return [memoryview(head.reshape(-1).data)]
    tail_end = np.cumsum(tail_len)
    tail_start = tail_end - tail_len
    tail = np.empty(int(tail_end[-1]) if n else 0, dtype=_U8)
    at = tail_start.copy()
    four = np.arange(4)
    for f, size in zip(tail_fields, sizes, strict=True):
        lens_be = f.lengths.astype(_BE_I32).view(_U8).reshape(n, 4)
        tail[(at[:, None] + four).reshape(-1)] = lens_be.reshape(-1)
        nbytes = np.maximum(f.lengths, 0)
        total = int(nbytes.sum())
        if total:
            src_start = np.cumsum(nbytes) - nbytes
            dest = np.repeat(at + 4 - src_start, nbytes) + np.arange(total)
            tail[dest] = f.data.reshape(-1)
        at += size
    if uniform:
        head[:, head_width:] = tail.reshape(n, row_width - head_width)
        return [memoryview(head.reshape(-1).data)]
    head_mv, tail_mv = memoryview(head.reshape(-1).data), memoryview(tail.data)
    pieces: list[memoryview] = []
    starts, ends = tail_start.tolist(), tail_end.tolist()
    for r in range(n):
        pieces.append(head_mv[r * head_width : (r + 1) * head_width])
        pieces.append(tail_mv[starts[r] : ends[r]])
    return pieces


# -- reading ----------------------------------------------------------------------------
def decode_vectors(values: Sequence[bytes | None], dim: int, *, half: bool = False) -> pa.Array:
    """pgvector ``vector`` / ``halfvec`` binary values -> fixed_size_list<float32>[dim]."""
    n = len(values)
    width = 2 if half else 4
    nulls = [i for i, v in enumerate(values) if v is None]
    blank = b"\x00" * (4 + width * dim)
    joined = b"".join(blank if v is None else v for v in values)
    raw = np.frombuffer(joined, dtype=_U8)
    if raw.size != n * (4 + width * dim):
        bad = next(
            (i for i, v in enumerate(values) if v is not None and len(v) != 4 + width * dim), 0
        )
        value = values[bad]
        got = struct.unpack(">h", value[:2])[0] if value else "?"
        raise DataError(f"vector has {got} dimensions, expected {dim}", row=bad)
    if not nulls:
        return vectors_from_binary(raw, n, dim, half=half)
    mask = np.zeros(n, dtype=bool)
    mask[nulls] = True
    return vectors_from_binary(raw, n, dim, half=half, mask=pa.array(mask))


def vectors_from_binary(
    raw: np.ndarray, n: int, dim: int, *, half: bool = False, mask: pa.Array | None = None
) -> pa.Array:
    """``n`` pgvector binary values of ``dim`` laid end to end (uint8) -> fixed_size_list."""
    rows = raw.reshape(n, 4 + (2 if half else 4) * dim)
    body = np.ascontiguousarray(rows[:, 4:]).view(">f2" if half else ">f4")
    flat = pa.array(body.astype(np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=mask)


def decode_sparse(values: Sequence[bytes | None]) -> pa.Array:
    """pgvector ``sparsevec`` binary values -> struct<indices, values>."""
    indices: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    offsets = [0]
    valid: list[bool] = []
    for v in values:
        if v is None:
            valid.append(False)
            offsets.append(offsets[-1])
            continue
        _, nnz, _ = struct.unpack_from(">iii", v, 0)
        indices.append(np.frombuffer(v, dtype=">i4", count=nnz, offset=12))
        weights.append(np.frombuffer(v, dtype=">f4", count=nnz, offset=12 + 4 * nnz))
        offsets.append(offsets[-1] + nnz)
        valid.append(True)
    idx = np.concatenate(indices).astype(np.uint32) if indices else np.zeros(0, np.uint32)
    val = np.concatenate(weights).astype(np.float32) if weights else np.zeros(0, np.float32)
    off = pa.array(offsets, pa.int32())
    mask = pa.array([not x for x in valid]) if not all(valid) else None
    return pa.StructArray.from_arrays(
        [
            pa.ListArray.from_arrays(off, pa.array(idx)),
            pa.ListArray.from_arrays(off, pa.array(val)),
        ],
        fields=list(SPARSE_TYPE),
        mask=mask,
    )


def vector_text(vector: np.ndarray) -> str:
    """A float32 vector in pgvector's text form, exact (each value round-trips)."""
    return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist())) + "]"
