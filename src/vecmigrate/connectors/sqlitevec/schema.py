"""vec0 table definitions: parsing a ``CREATE VIRTUAL TABLE ... USING vec0(...)`` statement,
and the layout that maps a CollectionSpec's fields onto vec0 columns.

vec0 columns are: an optional ``primary key`` (text or integer; otherwise the rowid is the id),
vector columns ``name float[dim] distance_metric=l2|cosine|l1``, metadata columns
``name text|integer|float|boolean`` (filterable, never NULL), ``partition key`` columns and
auxiliary ``+name text|integer|float|blob`` columns (any value). Column names must be plain
identifiers, so field names that are not get a sanitised column name; the layout kept in the
``_vecmigrate_spec`` side table maps them back.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from vecmigrate.errors import ConfigError, SchemaMismatch, Unsupported
from vecmigrate.spec import (
    DOCUMENT,
    ID,
    CollectionSpec,
    IndexConfig,
    MetadataField,
    MetadataType,
    Metric,
    VectorField,
)

SPEC_TABLE = "_vecmigrate_spec"
MAX_METADATA = 16
MAX_AUXILIARY = 16
MAX_PARTITION_KEYS = 4
MAX_DIM = 8192
ROWID = "rowid"

_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESERVED = {"distance", "k", "rowid", "oid", "_rowid_", "chunk_size"}
_USING = re.compile(r"\busing\s+vec0\s*\(", re.IGNORECASE)
_VECTOR = re.compile(
    r"^(?P<name>\w+)\s+(?P<type>float|f32|int8|i8|bit)\s*\[\s*(?P<dim>\d+)\s*\]"
    r"(?:\s+distance_metric\s*=\s*(?P<metric>\w+))?$",
    re.IGNORECASE,
)
_OPTION = re.compile(r"^(?P<key>\w+)\s*=\s*(?P<value>\S+)$")
_METRICS = {"l2": Metric.L2, "cosine": Metric.COSINE}
_SCALAR = {
    "text": MetadataType.STRING,
    "integer": MetadataType.INT64,
    "int": MetadataType.INT64,
    "float": MetadataType.FLOAT64,
    "double": MetadataType.FLOAT64,
    "boolean": MetadataType.BOOL,
    "bool": MetadataType.BOOL,
}


def quote(name: str) -> str:
    """An SQL identifier in double quotes (embedded quotes doubled): never raw SQL."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Column:
    """One column as the vec0 definition declares it."""

    name: str
    role: str  # id | vector | metadata | partition | auxiliary
    sql_type: str  # text | integer | float | boolean | blob; vectors: float | int8 | bit
    dim: int = 0
    metric: str = "l2"


@dataclass(frozen=True)
class Vec0Definition:
    columns: list[Column]
    options: dict[str, str]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)


def split_arguments(body: str) -> list[str]:
    """Top-level comma-separated arguments, respecting quotes, brackets and parentheses."""
    args: list[str] = []
    depth = 0
    quote_char: str | None = None
    current: list[str] = []
    for ch in body:
        if quote_char:
            current.append(ch)
            if ch == quote_char:
                quote_char = None
            continue
        if ch in "\"'`":
            quote_char = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if "".join(current).strip():
        args.append("".join(current).strip())
    return args


def parse_vec0(sql: str, table: str) -> Vec0Definition:
    """The columns and options of a vec0 ``CREATE VIRTUAL TABLE`` statement."""
    match = _USING.search(sql)
    if match is None:
        raise Unsupported(f"sqlitevec: table {table!r} is not a vec0 virtual table: {sql}")
    body = sql[match.end() : sql.rstrip().rstrip(";").rstrip().rfind(")")]
    columns: list[Column] = []
    options: dict[str, str] = {}
    for arg in split_arguments(body):
        text = " ".join(arg.split())
        low = text.lower()
        vector = _VECTOR.match(text)
        option = _OPTION.match(text)
        if vector:
            columns.append(
                Column(
                    name=vector.group("name"),
                    role="vector",
                    sql_type={"f32": "float", "i8": "int8"}.get(
                        vector.group("type").lower(), vector.group("type").lower()
                    ),
                    dim=int(vector.group("dim")),
                    metric=(vector.group("metric") or "l2").lower(),
                )
            )
        elif option and " " not in text.split("=")[0].strip():
            options[option.group("key").lower()] = option.group("value")
        elif text.startswith("+"):
            name, _, sql_type = text[1:].strip().partition(" ")
            columns.append(Column(name=name, role="auxiliary", sql_type=sql_type.lower()))
        elif low.endswith(" primary key"):
            name, _, sql_type = text[: -len(" primary key")].partition(" ")
            columns.append(Column(name=name, role="id", sql_type=_sql_type(sql_type)))
        elif low.endswith(" partition key"):
            name, _, sql_type = text[: -len(" partition key")].partition(" ")
            columns.append(Column(name=name, role="partition", sql_type=_sql_type(sql_type)))
        else:
            name, _, sql_type = text.partition(" ")
            columns.append(Column(name=name, role="metadata", sql_type=_sql_type(sql_type)))
    return Vec0Definition(columns=columns, options=options)


def _sql_type(text: str) -> str:
    low = text.strip().lower()
    return {"int": "integer", "double": "float", "bool": "boolean"}.get(low, low)


@dataclass(frozen=True)
class FieldColumn:
    """Where one field of the spec lives, and how its values are stored."""

    field: str  # id, a vector name, document, or a metadata name
    column: str  # the vec0 column ("rowid" when the table has no primary key)
    role: str  # id | vector | metadata | partition | auxiliary
    storage: str  # text | integer | float | boolean | json | list_json | timestamp_us | vector


@dataclass
class Layout:
    """A CollectionSpec placed onto a vec0 table."""

    spec: CollectionSpec
    columns: list[FieldColumn]
    options: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # columns nothing here can carry

    def of(self, name: str) -> FieldColumn:
        return next(c for c in self.columns if c.field == name)

    @property
    def id_column(self) -> FieldColumn:
        return self.of(ID)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "spec": self.spec.to_dict(),
                "columns": [asdict(c) for c in self.columns],
                "options": self.options,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Layout:
        raw = json.loads(text)
        return cls(
            spec=CollectionSpec.model_validate(raw["spec"]),
            columns=[FieldColumn(**c) for c in raw["columns"]],
            options=dict(raw.get("options", {})),
        )

    def matches(self, definition: Vec0Definition) -> bool:
        """Whether this layout still describes the table (nobody recreated it differently)."""
        for c in self.columns:
            if c.column == ROWID:
                continue
            col = definition.column(c.column)
            if col is None or col.role != c.role:
                return False
            if c.role == "vector" and col.dim != self.spec.vector(c.field).dim:
                return False
        return True

    def ddl(self, table: str) -> str:
        parts: list[str] = []
        for c in self.columns:
            if c.role == "id":
                parts.append(f"{c.column} {c.storage} primary key")
            elif c.role == "vector":
                vf = self.spec.vector(c.field)
                parts.append(f"{c.column} float[{vf.dim}] distance_metric={vf.metric.value}")
            elif c.role == "metadata":
                parts.append(f"{c.column} {c.storage}")
            elif c.role == "partition":
                parts.append(f"{c.column} {c.storage} partition key")
            else:
                parts.append(f"+{c.column} {_AUX_SQL[c.storage]}")
        parts += [f"{k}={v}" for k, v in self.options.items()]
        return f"CREATE VIRTUAL TABLE {quote(table)} USING vec0({', '.join(parts)})"


_AUX_SQL = {
    "text": "text",
    "integer": "integer",
    "float": "float",
    "boolean": "integer",
    "json": "text",
    "list_json": "text",
    "timestamp_us": "integer",
}
_AUX_STORAGE = {
    MetadataType.STRING: "text",
    MetadataType.INT64: "integer",
    MetadataType.FLOAT64: "float",
    MetadataType.BOOL: "boolean",
    MetadataType.TIMESTAMP: "timestamp_us",
    MetadataType.JSON: "json",
    MetadataType.LIST_STRING: "list_json",
    MetadataType.LIST_INT64: "list_json",
    MetadataType.LIST_FLOAT64: "list_json",
}
_COLUMN_STORAGE = {
    MetadataType.STRING: "text",
    MetadataType.INT64: "integer",
    MetadataType.FLOAT64: "float",
    MetadataType.BOOL: "boolean",
}


def _column_name(name: str, taken: set[str]) -> str:
    """``name`` if vec0 accepts it as a column name, else a sanitised unique one."""
    base = name
    if not _IDENT.match(base) or base.lower() in _RESERVED:
        base = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if not _IDENT.match(base) or base.lower() in _RESERVED:
            base = f"c_{base}"
    candidate, n = base, 2
    while candidate.lower() in taken:
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate.lower())
    return candidate


def plan_layout(spec: CollectionSpec, mode: str, partition_keys: tuple[str, ...]) -> Layout:
    """Place a spec on a new vec0 table (``mode``: auto | columns | auxiliary)."""
    if not spec.vectors or any(v.sparse for v in spec.vectors):
        raise SchemaMismatch("sqlitevec: vec0 holds dense float vectors only, and needs one")
    taken: set[str] = {"id", DOCUMENT}
    columns = [FieldColumn(ID, "id", "id", "text" if spec.id_type == "string" else "integer")]
    for vf in spec.vectors:
        if vf.metric not in _METRICS.values():
            raise SchemaMismatch(
                f"sqlitevec: vec0 has no {vf.metric.value!r} distance for vector {vf.name!r} "
                "(it has l2, cosine and l1)"
            )
        if vf.dim > MAX_DIM:
            raise SchemaMismatch(
                f"sqlitevec: vector {vf.name!r} has {vf.dim} dimensions; vec0 allows {MAX_DIM}"
            )
        columns.append(FieldColumn(vf.name, _column_name(vf.name, taken), "vector", "vector"))
    unknown = [k for k in partition_keys if spec.metadata_field(k) is None]
    if unknown:
        raise ConfigError(f"sqlitevec: partition_key {unknown[0]!r} is not a metadata field")
    if len(partition_keys) > MAX_PARTITION_KEYS:
        raise ConfigError(f"sqlitevec: vec0 allows at most {MAX_PARTITION_KEYS} partition keys")
    filterable = 0
    aux: list[FieldColumn] = []
    if spec.has_document:
        aux.append(FieldColumn(DOCUMENT, DOCUMENT, "auxiliary", "text"))
    for m in spec.metadata:
        name = _column_name(m.name, taken)
        if m.name in partition_keys:
            if m.type not in (MetadataType.STRING, MetadataType.INT64):
                raise ConfigError(
                    f"sqlitevec: partition key {m.name!r} must be text or integer, not {m.type}"
                )
            columns.append(FieldColumn(m.name, name, "partition", _COLUMN_STORAGE[m.type]))
            continue
        as_column = m.type in _COLUMN_STORAGE and (
            mode == "columns" or (mode == "auto" and not m.nullable)
        )
        if as_column and filterable < MAX_METADATA:
            filterable += 1
            columns.append(FieldColumn(m.name, name, "metadata", _COLUMN_STORAGE[m.type]))
        else:
            aux.append(FieldColumn(m.name, name, "auxiliary", _AUX_STORAGE[m.type]))
    if len(aux) > MAX_AUXILIARY:
        raise SchemaMismatch(
            f"sqlitevec: the collection needs {len(aux)} auxiliary columns; vec0 allows "
            f"{MAX_AUXILIARY} (use metadata=columns to make scalar fields metadata columns)"
        )
    return Layout(spec=spec, columns=columns + aux)


def layout_from_definition(definition: Vec0Definition, table: str) -> Layout:
    """What a vec0 table made elsewhere holds, as a spec and a layout."""
    columns: list[FieldColumn] = []
    vectors: list[VectorField] = []
    metadata: list[MetadataField] = []
    skipped: list[str] = []
    has_document = False
    id_col = next((c for c in definition.columns if c.role == "id"), None)
    if id_col is None:
        id_type = "int64"
        columns.append(FieldColumn(ID, ROWID, "id", "integer"))
    else:
        id_type = "string" if id_col.sql_type == "text" else "int64"
        columns.append(FieldColumn(ID, id_col.name, "id", id_col.sql_type))
    for c in definition.columns:
        if c.role == "vector":
            if c.sql_type != "float" or c.metric not in _METRICS:
                skipped.append(f"{c.name} ({c.sql_type}[{c.dim}] distance_metric={c.metric})")
                continue
            vectors.append(VectorField(name=c.name, dim=c.dim, metric=_METRICS[c.metric]))
            columns.append(FieldColumn(c.name, c.name, "vector", "vector"))
        elif c.role in ("metadata", "partition"):
            mtype = _SCALAR.get(c.sql_type)
            if mtype is None:
                skipped.append(f"{c.name} ({c.sql_type})")
                continue
            metadata.append(MetadataField(name=c.name, type=mtype, nullable=False))
            columns.append(FieldColumn(c.name, c.name, c.role, _COLUMN_STORAGE[mtype]))
        elif c.role == "auxiliary":
            mtype = _SCALAR.get(c.sql_type)
            if mtype is None or mtype is MetadataType.BOOL:
                skipped.append(f"{c.name} ({c.sql_type or 'untyped'} auxiliary)")
                continue
            if c.name.lower() == DOCUMENT and mtype is MetadataType.STRING:
                has_document = True
                columns.append(FieldColumn(DOCUMENT, c.name, "auxiliary", "text"))
                continue
            metadata.append(MetadataField(name=c.name, type=mtype))
            columns.append(FieldColumn(c.name, c.name, "auxiliary", _AUX_STORAGE[mtype]))
    if not vectors:
        raise Unsupported(
            f"sqlitevec: table {table!r} has no float vector column with an l2 or cosine "
            f"distance that vecmigrate can read ({', '.join(skipped) or 'no vector column'})"
        )
    spec = CollectionSpec(
        name=table,
        id_type=id_type,  # type: ignore[arg-type]
        vectors=vectors,
        metadata=metadata,
        has_document=has_document,
        id_mapping=None if id_col is not None else "vec0 rowid",
    )
    return Layout(spec=spec, columns=columns, options=definition.options, skipped=skipped)


def described(layout: Layout, table: str, definition: Vec0Definition) -> CollectionSpec:
    """The layout's spec with the table's index facts and column placement."""
    spec = layout.spec.model_copy(deep=True)
    spec.indexes = [
        IndexConfig(
            field=v.name,
            kind="flat",
            metric=v.metric,
            params={k: _number(val) for k, val in definition.options.items()},
        )
        for v in spec.vectors
    ]
    system: dict[str, Any] = {
        "table": table,
        "columns": [asdict(c) for c in layout.columns],
        "partition_keys": [c.field for c in layout.columns if c.role == "partition"],
    }
    if layout.skipped:
        system["unsupported_columns"] = layout.skipped
    spec.system = {**spec.system, "sqlitevec": system}
    return spec


def _number(text: str) -> int | str:
    return int(text) if text.isdigit() else text
