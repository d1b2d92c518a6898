"""Column-wise text encodings shared by the JSONL and CSV shards.

Floats are written as the shortest decimal that reads back to the same bits. A float32 is
written in its own shortest form when that text also survives a reader that parses it as a
double and then rounds to float32 (most JSON libraries do); for the rare values where that
double rounding would change the last bit, the double's shortest form is written instead,
which every reader brings back exactly.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.errors import DataError
from vecmigrate.spec import MetadataType

_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"


def _as_float_text(values: pa.Array, text: pa.Array) -> pa.Array:
    """Make integral spellings (``3``, ``-0``) read as floats everywhere (``3.0``, ``-0.0``)."""
    x = np.asarray(values.fill_null(0.5).to_numpy(zero_copy_only=False), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        candidates = np.nonzero(x == np.trunc(x))[0]  # only these can print as "123"
    if not len(candidates):
        return text
    spelled = pc.match_substring_regex(pc.take(text, pa.array(candidates)), r"[.eEnN]")
    bare = candidates[~spelled.to_numpy(zero_copy_only=False)]
    if not len(bare):
        return text
    mask = np.zeros(len(text), dtype=bool)
    mask[bare] = True
    return pc.if_else(pa.array(mask), pc.binary_join_element_wise(text, ".0", ""), text)


def float32_text(values: pa.Array) -> pa.Array:
    """Text of float32 values that reads back bit-exact through float32 or float64 parsers."""
    values = values.cast(pa.float32())
    text = values.cast(pa.string())
    if len(values):
        via_double = pc.cast(pc.cast(text, pa.float64()), pa.float32(), safe=False)
        want = np.asarray(values.fill_null(0).to_numpy(zero_copy_only=False)).view(np.uint32)
        got = np.asarray(via_double.fill_null(0).to_numpy(zero_copy_only=False)).view(np.uint32)
        drift = got != want
        if drift.any():
            longer = values.cast(pa.float64()).cast(pa.string())
            text = pc.if_else(pa.array(drift), longer, text)
    return _as_float_text(values, text)


def float64_text(values: pa.Array, *, json_tokens: bool) -> pa.Array:
    """Shortest round-trip text of float64 values; NaN/inf as JSON5 tokens when asked."""
    values = values.cast(pa.float64())
    text = _as_float_text(values, values.cast(pa.string()))
    if json_tokens:
        text = pc.replace_substring(pc.replace_substring(text, "-nan", "nan"), "nan", "NaN")
        text = pc.replace_substring(text, "inf", "Infinity")
    return text


def json_string(values: pa.Array) -> pa.Array:
    """Each string as a JSON string literal (quoted, escaped); nulls stay null."""
    values = values.cast(pa.string())
    if len(values) and pc.any(pc.match_substring_regex(values, _CONTROL)).as_py():
        return pa.array(
            [None if v is None else json.dumps(v, ensure_ascii=False) for v in values.to_pylist()],
            pa.string(),
        )
    for old, new in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        values = pc.replace_substring(values, old, new)
    return pc.binary_join_element_wise('"', values, '"', "")


def _join_lists(offsets: pa.Array, items: pa.Array, validity: pa.Array | None) -> pa.Array:
    """``[a,b,c]`` per row from element texts and list offsets; null where not ``validity``."""
    lists = pa.LargeListArray.from_arrays(offsets, items)
    joined = pc.binary_join(lists, ",")
    out = pc.binary_join_element_wise("[", joined, "]", "")
    if validity is not None:
        out = pc.if_else(validity, out, pa.nulls(len(out), pa.string()))
    return out


def vector_text(column: pa.Array) -> pa.Array:
    """A fixed-size-list float column as JSON array texts ``[0.1,-2.5,...]``."""
    n, dim = len(column), column.type.list_size
    flat = column.flatten()
    offsets = pa.array(np.arange(n + 1, dtype=np.int64) * dim)
    return _join_lists(offsets, float32_text(flat), None)


def list_text(column: pa.Array, mtype: MetadataType) -> pa.Array:
    """A list<string|int64|float64> column as JSON array texts; null lists stay null."""
    column = column.cast(mtype.arrow())
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten()
    if mtype is MetadataType.LIST_STRING:
        items = json_string(values)
    elif mtype is MetadataType.LIST_FLOAT64:
        items = float64_text(values, json_tokens=True)
    else:
        items = values.cast(pa.string())
    items = pc.fill_null(items, "null")
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]))
    validity = pc.is_valid(column) if column.null_count else None
    return _join_lists(offsets, items, validity)


def sparse_text(column: pa.Array) -> pa.Array:
    """Sparse vectors as JSON objects ``{"indices":[..],"values":[..]}`` (exact floats)."""
    out: list[str | None] = []
    for item in column.to_pylist():
        if item is None:
            out.append(None)
            continue
        vals = [float(np.float32(v)) for v in item["values"] or []]
        out.append(json.dumps({"indices": item["indices"] or [], "values": vals}))
    return pa.array(out, pa.string())


def parse_vector_text(text: pa.Array, dim: int, *, field: str) -> pa.Array:
    """JSON array texts back to fixed_size_list<float32>[dim]; errors name the first bad row."""
    if text.null_count:
        row = int(np.nonzero(text.is_null().to_numpy(zero_copy_only=False))[0][0])
        raise DataError("vector is missing", row=row, field=field)
    trimmed = pc.utf8_trim_whitespace(text)
    bracketed = pc.and_(pc.starts_with(trimmed, "["), pc.ends_with(trimmed, "]"))
    if not pc.all(bracketed).as_py():
        row = int(np.nonzero(~bracketed.to_numpy(zero_copy_only=False))[0][0])
        raise DataError("vector is not a JSON array of numbers", row=row, field=field)
    inner = pc.utf8_slice_codeunits(trimmed, 1, -1)
    parts = pc.split_pattern(inner, ",")
    lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(inner)), 0).to_numpy(
        zero_copy_only=False
    )
    lengths = np.where(empty, 0, lengths)
    bad = np.nonzero(lengths != dim)[0]
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"vector has {int(lengths[row])} dimensions, expected {dim}", row=row, field=field
        )
    items = pc.utf8_trim_whitespace(parts.flatten())
    try:
        values = pc.cast(items, pa.float32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = _first_unparsable(items, pa.float32()) // max(dim, 1)
        raise DataError("vector has a value that is not a number", row=row, field=field) from None
    return pa.FixedSizeListArray.from_arrays(values, dim)


def _first_unparsable(texts: pa.Array, dtype: pa.DataType) -> int:
    for i, value in enumerate(texts.to_pylist()):
        try:
            pa.scalar(value, pa.string()).cast(dtype)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return i
    return 0


def parse_json_texts(text: pa.Array, dtype: pa.DataType, *, field: str) -> pa.Array:
    """JSON texts (lists, sparse objects) to an Arrow type; errors name the first bad row."""
    values: list[Any] = []
    for row, item in enumerate(text.to_pylist()):
        if item is None:
            values.append(None)
            continue
        try:
            values.append(json.loads(item))
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON: {exc.msg}", row=row, field=field) from exc
    try:
        return pa.array(values, dtype)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        for row, value in enumerate(values):
            try:
                pa.array([value], dtype)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise DataError(f"expected {dtype}: {exc}", row=row, field=field) from exc
        raise
