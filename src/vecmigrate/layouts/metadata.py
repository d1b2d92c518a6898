"""Framework metadata <-> canonical metadata columns, and the conventions for nested values.

A framework keeps one metadata dict per record. Canonically each top-level key is one column,
typed from every value the key holds in the collection (see :func:`type_of_kinds`): nested
values (dicts, lists of mixed or nested items, empty lists) and keys of mixed types are a JSON
column; writers that can nest (PostgreSQL jsonb, Qdrant payloads, Milvus dynamic fields) put
them back as nested values. Chroma cannot nest: there a nested value is stored as its JSON
text under the same key, and the key is listed in the collection's metadata under
``vecmigrate:json_keys`` (see :func:`chroma_value` / :func:`from_chroma_value`).

A key that would collide with a canonical column (``id``, ``document``, ``vector``, the
LlamaIndex node columns) is carried as ``metadata:<key>`` and restored on writing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from vecmigrate.errors import DataError
from vecmigrate.spec import ID, MetadataField, MetadataType

VECTOR = "vector"
NODE_CONTENT = "_node_content"  # LlamaIndex's serialized node (text removed), verbatim
NODE_TYPE = "_node_type"  # LlamaIndex's node class name
NODE_COLUMNS = (NODE_CONTENT, NODE_TYPE)
ESCAPE = "metadata:"
_CANONICAL = frozenset({ID, "document", VECTOR, *NODE_COLUMNS})
CHROMA_JSON_KEYS = "vecmigrate:json_keys"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def column_name(key: str) -> str:
    """The canonical column of a framework metadata key."""
    return ESCAPE + key if key in _CANONICAL or key.startswith(ESCAPE) else key


def key_name(column: str) -> str:
    """The framework metadata key of a canonical column (inverse of :func:`column_name`)."""
    return column[len(ESCAPE) :] if column.startswith(ESCAPE) else column


# -- types --------------------------------------------------------------------------------
def kind_of(value: Any) -> str | None:
    """A short name of a JSON value's shape; None for null (a null is an absent key)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if INT64_MIN <= value <= INT64_MAX else "bigint"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        items = sorted({kind_of(v) or "null" for v in value})
        return "array:" + ",".join(items)
    return "other"


def type_of_kinds(kinds: Iterable[str]) -> MetadataType:
    """The canonical type of a key from the shapes of all its values.

    Integers mixed with fractions become float64 (1 -> 1.0); lists are typed when every list
    is non-empty and holds one kind of scalar; everything else is JSON.
    """
    seen = set(kinds)
    if not seen:
        return MetadataType.STRING
    if seen == {"bool"}:
        return MetadataType.BOOL
    if seen == {"int"}:
        return MetadataType.INT64
    if seen <= {"int", "float"}:
        return MetadataType.FLOAT64
    if seen == {"string"}:
        return MetadataType.STRING
    if all(k.startswith("array:") for k in seen):
        items = {i for k in seen for i in k[len("array:") :].split(",")}
        if "" not in items:  # an empty list has no item kind
            if items == {"string"}:
                return MetadataType.LIST_STRING
            if items == {"int"}:
                return MetadataType.LIST_INT64
            if items <= {"int", "float"}:
                return MetadataType.LIST_FLOAT64
    return MetadataType.JSON


class KindTally:
    """Collects the shapes of each key's values over a collection (one pass, no values kept)."""

    def __init__(self) -> None:
        self.kinds: dict[str, set[str]] = {}

    def add(self, metadata: Mapping[str, Any] | None) -> None:
        for key, value in (metadata or {}).items():
            kind = kind_of(value)
            entry = self.kinds.setdefault(key, set())
            if kind is not None:
                entry.add(kind)

    def add_kind(self, key: str, kind: str | None) -> None:
        entry = self.kinds.setdefault(key, set())
        if kind is not None:
            entry.add(kind)

    def fields(self) -> list[MetadataField]:
        return fields_of(self.kinds)


def fields_of(kinds: Mapping[str, set[str]]) -> list[MetadataField]:
    """Canonical metadata fields, sorted by key."""
    return [
        MetadataField(name=column_name(key), type=type_of_kinds(kinds[key]))
        for key in sorted(kinds)
    ]


# -- dicts <-> columns --------------------------------------------------------------------
def to_columns(
    dicts: Sequence[Mapping[str, Any] | None],
    fields: Sequence[MetadataField],
    ids: Sequence[Any],
) -> dict[str, pa.Array]:
    """Canonical metadata columns from one metadata dict per record.

    A key that is not among ``fields`` (the collection changed after it was described) is an
    error naming the record, never a silent loss.
    """
    known = {key_name(f.name) for f in fields}
    for row, d in enumerate(dicts):
        extra = [k for k in (d or {}) if k not in known and (d or {})[k] is not None]
        if extra:
            raise DataError(
                f"metadata key {extra[0]!r} is not in the collection spec (was the collection "
                "changed after it was described?)",
                row=row,
                record_id=ids[row],
                field=extra[0],
            )
    out: dict[str, pa.Array] = {}
    for f in fields:
        key = key_name(f.name)
        values = [None if d is None else d.get(key) for d in dicts]
        out[f.name] = _column(values, f, ids)
    return out


def _column(values: list[Any], f: MetadataField, ids: Sequence[Any]) -> pa.Array:
    if f.type is MetadataType.JSON:
        return pa.array(
            [None if v is None else json.dumps(v, ensure_ascii=False) for v in values],
            pa.string(),
        )
    if f.type is MetadataType.FLOAT64:
        values = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]
    elif f.type is MetadataType.LIST_FLOAT64:
        values = [None if v is None else [float(x) for x in v] for v in values]
    try:
        return pa.array(values, f.type.arrow())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        for row, v in enumerate(values):
            try:
                pa.array([v], f.type.arrow())
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
                raise DataError(
                    f"value {v!r} is not {f.type} (the key's type when the collection was "
                    "described)",
                    row=row,
                    record_id=ids[row],
                    field=key_name(f.name),
                ) from exc
        raise DataError(f"metadata column does not fit {f.type}: {exc}", field=f.name) from exc


def to_dicts(batch: pa.RecordBatch, fields: Sequence[MetadataField]) -> list[dict[str, Any]]:
    """One framework metadata dict per record: nested values restored, nulls left out."""
    names: list[str] = []
    columns: list[list[Any]] = []
    for f in fields:
        if f.name not in batch.schema.names:
            continue
        names.append(key_name(f.name))
        columns.append(_python_values(batch.column(f.name), f.type))
    rows: list[dict[str, Any]] = [{} for _ in range(batch.num_rows)]
    for name, values in zip(names, columns, strict=True):
        for row, v in zip(rows, values, strict=True):
            if v is not None:
                row[name] = v
    return rows


def _python_values(column: pa.Array, mtype: MetadataType) -> list[Any]:
    values: list[Any] = column.to_pylist()
    if mtype is MetadataType.JSON:
        return [None if v is None else json.loads(v) for v in values]
    if mtype is MetadataType.TIMESTAMP:
        return [None if v is None else _iso(v) for v in values]
    return values


def _iso(value: dt.datetime | dt.date) -> str:
    text = value.isoformat()
    return text.replace("+00:00", "Z")


# -- the Chroma convention ----------------------------------------------------------------
def chroma_storable(value: Any) -> bool:
    """Whether Chroma holds ``value`` as it is (a scalar or a non-empty list of one scalar kind)."""
    if isinstance(value, str | bool | float):
        return True
    if isinstance(value, int):
        return kind_of(value) == "int"
    if isinstance(value, list) and value:
        kinds = {kind_of(v) for v in value}
        return len(kinds) == 1 and kinds <= {"string", "int", "float", "bool"}
    return False


def chroma_value(value: Any, *, json_key: bool) -> Any:
    """A metadata value as Chroma stores it: for keys of JSON type, strings and values Chroma
    cannot hold become JSON text (so every string of such a key is JSON)."""
    if not json_key:
        return value
    if isinstance(value, str) or not chroma_storable(value):
        return json.dumps(value, ensure_ascii=False)
    return value


def from_chroma_value(value: Any, *, json_key: bool) -> Any:
    """Inverse of :func:`chroma_value`."""
    if json_key and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value  # written by the application itself, not by this convention
    return value


def json_keys_of(fields: Sequence[MetadataField]) -> list[str]:
    return sorted(key_name(f.name) for f in fields if f.type is MetadataType.JSON)
