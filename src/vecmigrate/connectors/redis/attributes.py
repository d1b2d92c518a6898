"""Metadata and documents as a vector set element's JSON attributes, converted column-wise.

Each row's attributes are one JSON object: ``{"document": "...", "<field>": value, ...}``;
nulls are left out and a row with nothing becomes no attribute at all. Values keep their
types: integers as JSON integers, floats by their shortest exact repr (non-finite floats as
the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``), timestamps as ISO 8601 UTC strings,
JSON metadata as its text (a JSON string), lists as arrays.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.errors import DataError
from vecmigrate.spec import DOCUMENT, JSON_FIELD_META, RESERVED, MetadataField, MetadataType

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _float_json(v: float) -> str:
    if math.isfinite(v):
        return repr(float(v))
    return '"NaN"' if math.isnan(v) else ('"Infinity"' if v > 0 else '"-Infinity"')


def _json_values(column: pa.Array, field: pa.Field) -> list[str | None]:
    """The JSON text of each value of a column (None for nulls)."""
    t = column.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if pa.types.is_timestamp(t) and t.tz is None:
            column = column.cast(pa.timestamp(t.unit, tz="UTC"))
        text = pc.utf8_replace_slice(column.cast(pa.string()), 10, 11, "T")
        return [None if s is None else f'"{s}"' for s in text.to_pylist()]
    values = column.to_pylist()
    is_json = bool(field.metadata and field.metadata.get(JSON_FIELD_META))
    if pa.types.is_boolean(t):
        return [None if v is None else ("true" if v else "false") for v in values]
    if pa.types.is_integer(t):
        return [None if v is None else str(v) for v in values]
    if pa.types.is_floating(t):
        return [None if v is None else _float_json(v) for v in values]
    if (pa.types.is_string(t) or pa.types.is_large_string(t)) and not is_json:
        return [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
    if is_json:  # keep the text verbatim: a JSON string holding it
        return [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
    return [
        None if v is None else json.dumps(v, ensure_ascii=False, allow_nan=False, default=str)
        for v in values
    ]


def encode(batch: pa.RecordBatch, names: Sequence[str]) -> list[str]:
    """One JSON object per row for the columns ``names`` ("" for a row with no values)."""
    columns: list[list[str | None]] = []
    for name in names:
        frag = json.dumps(name, ensure_ascii=False) + ":"
        field = batch.schema.field(name)
        columns.append(
            [None if v is None else frag + v for v in _json_values(batch.column(name), field)]
        )
    if not columns:
        return [""] * batch.num_rows
    out: list[str] = []
    for row in zip(*columns, strict=True):
        parts = [p for p in row if p is not None]
        out.append("{" + ",".join(parts) + "}" if parts else "")
    return out


def parse(texts: Sequence[bytes | str | None], ids: Sequence[Any]) -> list[dict[str, Any] | None]:
    """The attribute objects of elements (None where an element has none)."""
    out: list[dict[str, Any] | None] = []
    for i, text in enumerate(texts):
        if not text:
            out.append(None)
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise DataError(f"attributes are not JSON: {exc}", record_id=ids[i]) from exc
        if not isinstance(value, dict):
            raise DataError("attributes are not a JSON object", record_id=ids[i])
        out.append(value)
    return out


def _to_float(v: Any) -> Any:
    if isinstance(v, str) and v in _NON_FINITE:
        return _NON_FINITE[v]
    return v


def _to_json_text(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def column(
    attrs: Sequence[dict[str, Any] | None], name: str, mtype: MetadataType, ids: Sequence[Any]
) -> pa.Array:
    """The Arrow column of one field (``DOCUMENT`` for documents) from parsed attributes."""
    values = [None if a is None else a.get(name) for a in attrs]
    if mtype is MetadataType.FLOAT64:
        values = [_to_float(v) for v in values]
    elif mtype is MetadataType.JSON:
        values = [_to_json_text(v) for v in values]
    elif mtype is MetadataType.TIMESTAMP:
        text = pa.array([v if isinstance(v, str) else None for v in values], pa.string())
        bad = [i for i, v in enumerate(values) if v is not None and not isinstance(v, str)]
        if not bad:
            try:
                result: pa.Array = text.cast(mtype.arrow())
                return result
            except pa.ArrowInvalid as exc:
                raise DataError(f"not an ISO 8601 timestamp: {exc}", field=name) from exc
        raise DataError(
            f"expected an ISO 8601 timestamp, got {values[bad[0]]!r}",
            record_id=ids[bad[0]],
            field=name,
        )
    try:
        return pa.array(values, mtype.arrow())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        for i, v in enumerate(values):
            try:
                pa.array([v], mtype.arrow())
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                raise DataError(
                    f"attribute value {v!r} is not {mtype.value}", record_id=ids[i], field=name
                ) from exc
        raise DataError(f"attributes are not {mtype.value}: {exc}", field=name) from exc


def _type_of(values: list[Any]) -> MetadataType:
    kinds = {type(v) for v in values}
    if kinds == {bool}:
        return MetadataType.BOOL
    if kinds == {int}:
        return MetadataType.INT64
    if kinds <= {int, float}:
        return MetadataType.FLOAT64
    if kinds == {str}:
        return MetadataType.STRING
    if kinds == {list}:
        inner = {type(x) for v in values for x in v}
        if inner and inner == {str}:
            return MetadataType.LIST_STRING
        if inner and inner == {int}:
            return MetadataType.LIST_INT64
        if inner and inner <= {int, float}:
            return MetadataType.LIST_FLOAT64
    return MetadataType.JSON


def infer(
    attrs: Sequence[dict[str, Any] | None],
) -> tuple[list[MetadataField], bool, list[str]]:
    """Metadata fields, whether there is a document, and skipped names, from sampled attributes.

    A string attribute named ``document`` is taken as the document; an attribute named ``id``
    cannot be a metadata field and is reported as skipped.
    """
    seen: dict[str, list[Any]] = {}
    for a in attrs:
        for key, value in (a or {}).items():
            if value is not None:
                seen.setdefault(key, []).append(value)
    has_document = False
    fields: list[MetadataField] = []
    skipped: list[str] = []
    for key in sorted(seen):
        mtype = _type_of(seen[key])
        if key == DOCUMENT and mtype is MetadataType.STRING:
            has_document = True
        elif key in RESERVED:
            skipped.append(key)
        else:
            fields.append(MetadataField(name=key, type=mtype))
    return fields, has_document, skipped
