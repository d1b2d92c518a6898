"""PostgreSQL types for collection fields, and the SQL fragments that read and write them.

Every name is quoted with ``psycopg.sql.Identifier``; type names come only from the constant
tables here (never from a URI, a spec or the catalog).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from psycopg import sql

from vecmigrate.errors import SchemaMismatch
from vecmigrate.spec import MetadataField, MetadataType, Metric

VECTOR_TYPES = frozenset({"vector", "halfvec", "sparsevec"})
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name", "citext"})
INT_TYPES = frozenset({"int2", "int4", "int8"})
FLOAT_TYPES = frozenset({"float4", "float8", "numeric"})
TIME_TYPES = frozenset({"timestamptz", "timestamp", "date"})
JSON_TYPES = frozenset({"json", "jsonb"})

# column type when vecmigrate creates the table
CREATE_TYPE: dict[MetadataType, str] = {
    MetadataType.STRING: "text",
    MetadataType.INT64: "bigint",
    MetadataType.FLOAT64: "double precision",
    MetadataType.BOOL: "boolean",
    MetadataType.TIMESTAMP: "timestamptz",
    MetadataType.JSON: "jsonb",
    MetadataType.LIST_STRING: "text[]",
    MetadataType.LIST_INT64: "bigint[]",
    MetadataType.LIST_FLOAT64: "double precision[]",
}

# types without an equality operator (an upsert cannot skip unchanged rows on them)
NO_EQUALITY = frozenset(
    {"json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle"}
)

# existing column types a staged value is cast to on insert (keys are pg_type.typname)
CAST_TO: dict[str, str] = {
    "text": "text",
    "varchar": "varchar",
    "bpchar": "bpchar",
    "citext": "text",
    "uuid": "uuid",
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "numeric": "numeric",
    "bool": "boolean",
    "json": "json",
    "jsonb": "jsonb",
    "_text": "text[]",
    "_varchar": "varchar[]",
    "_uuid": "uuid[]",
    "_int2": "smallint[]",
    "_int4": "integer[]",
    "_int8": "bigint[]",
    "_float4": "real[]",
    "_float8": "double precision[]",
    "_numeric": "numeric[]",
    "halfvec": "halfvec",
    "vector": "vector",
    "sparsevec": "sparsevec",
}

OPCLASS_SUFFIX: dict[Metric, str] = {
    Metric.COSINE: "cosine_ops",
    Metric.L2: "l2_ops",
    Metric.IP: "ip_ops",
}
OPERATOR: dict[Metric, str] = {Metric.COSINE: "<=>", Metric.L2: "<->", Metric.IP: "<#>"}


def metric_of_opclass(opclass: str) -> Metric | None:
    """``vector_cosine_ops`` -> cosine; ``l1`` and bit opclasses have no vecmigrate metric."""
    for metric, suffix in OPCLASS_SUFFIX.items():
        if opclass.endswith("_" + suffix):
            return metric
    return None


@dataclass(frozen=True)
class Column:
    """A table column as the catalog describes it."""

    name: str
    typname: str  # pg_type.typname; arrays start with "_"
    typmod: int
    not_null: bool
    comment: str | None = None

    @property
    def dim(self) -> int:
        """Declared dimension of a vector column (0 when it has none)."""
        return max(self.typmod, 0) if self.typname in VECTOR_TYPES else 0

    @property
    def max_length(self) -> int | None:
        if self.typname in ("varchar", "bpchar") and self.typmod > 4:
            return self.typmod - 4
        return None

    def metadata_type(self) -> MetadataType:
        t = self.typname
        if t in TEXT_TYPES or t == "uuid":
            return MetadataType.STRING
        if t in INT_TYPES:
            return MetadataType.INT64
        if t in FLOAT_TYPES:
            return MetadataType.FLOAT64
        if t == "bool":
            return MetadataType.BOOL
        if t in TIME_TYPES:
            return MetadataType.TIMESTAMP
        if t in JSON_TYPES:
            return MetadataType.JSON
        if t.startswith("_"):
            elem = t[1:]
            if elem in TEXT_TYPES or elem == "uuid":
                return MetadataType.LIST_STRING
            if elem in INT_TYPES:
                return MetadataType.LIST_INT64
            if elem in FLOAT_TYPES:
                return MetadataType.LIST_FLOAT64
            return MetadataType.JSON
        return MetadataType.STRING  # read as its text form


def read_expr(col: Column, mtype: MetadataType) -> sql.Composable:
    """SELECT-list expression giving a metadata column in the Arrow-friendly PG type."""
    c = sql.Identifier(col.name)
    t = col.typname
    if mtype is MetadataType.STRING:
        return c if t in TEXT_TYPES - {"citext"} else sql.SQL("{}::text").format(c)
    if mtype is MetadataType.INT64:
        return c if t == "int8" else sql.SQL("{}::int8").format(c)
    if mtype is MetadataType.FLOAT64:
        return c if t == "float8" else sql.SQL("{}::float8").format(c)
    if mtype is MetadataType.BOOL:
        return c
    if mtype is MetadataType.TIMESTAMP:
        return sql.SQL("(extract(epoch FROM {}) * 1000000)::int8").format(c)
    if mtype is MetadataType.JSON:
        return (
            sql.SQL("{}::text").format(c)
            if t in JSON_TYPES
            else sql.SQL("to_jsonb({})::text").format(c)
        )
    if mtype is MetadataType.LIST_STRING:
        return c if t == "_text" else sql.SQL("{}::text[]").format(c)
    if mtype is MetadataType.LIST_INT64:
        return c if t == "_int8" else sql.SQL("{}::int8[]").format(c)
    return c if t == "_float8" else sql.SQL("{}::float8[]").format(c)


def id_read_expr(col: Column) -> sql.Composable:
    c = sql.Identifier(col.name)
    if col.typname in INT_TYPES:
        return c if col.typname == "int8" else sql.SQL("{}::int8").format(c)
    return c if col.typname in TEXT_TYPES - {"citext"} else sql.SQL("{}::text").format(c)


def id_type_of(col: Column) -> Literal["string", "int64"]:
    """``int64`` or ``string``; other key types cannot be scanned in order."""
    if col.typname in INT_TYPES:
        return "int64"
    if col.typname in TEXT_TYPES or col.typname == "uuid":
        return "string"
    raise SchemaMismatch(
        f"pgvector: key column {col.name!r} has type {col.typname}; vecmigrate reads integer, "
        "text and uuid keys (pass ?id_column=... naming another unique column)"
    )


def cast_to(expr: sql.Composable, col: Column) -> sql.Composable:
    """``expr`` cast to an existing column's type (types outside the table: no cast)."""
    target = CAST_TO.get(col.typname)
    if target is None:
        return expr
    return sql.SQL("CAST({} AS {})").format(expr, sql.SQL(target))


def insert_expr(stage_col: str, target: Column) -> sql.Composable:
    """A staged value (in its ``CREATE_TYPE``) as the existing target column's type."""
    s = sql.Identifier("s", stage_col)
    if target.typname == "timestamp":
        return sql.SQL("({} AT TIME ZONE 'UTC')").format(s)
    if target.typname == "date":
        return sql.SQL("({} AT TIME ZONE 'UTC')::date").format(s)
    return cast_to(s, target)


def create_metadata_type(field: MetadataField) -> sql.Composable:
    if field.type is MetadataType.STRING and field.max_length:
        return sql.SQL("varchar({})").format(sql.Literal(int(field.max_length)))
    return sql.SQL(CREATE_TYPE[field.type])


def vector_type(kind: str, dim: int) -> sql.Composable:
    """``vector(dim)``, ``halfvec(dim)`` or ``sparsevec[(dim)]``."""
    if kind not in VECTOR_TYPES:
        raise ValueError(kind)
    if dim > 0:
        return sql.SQL("{}({})").format(sql.SQL(kind), sql.Literal(int(dim)))
    return sql.SQL(kind)
