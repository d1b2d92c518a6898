"""What a table is, from the catalog: columns, key, vector indexes, grants, comments.

Tables created by vecmigrate carry a small JSON table comment (``{"vecmigrate": {...}}``) with
what the catalog cannot hold before an index exists: each vector field's metric and embedding
model. Indexes, when present, say the metric themselves and win.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psycopg

from vecmigrate.connectors.pgvector.sql import (
    VECTOR_TYPES,
    Column,
    id_type_of,
    metric_of_opclass,
)
from vecmigrate.errors import NotFoundError, SchemaMismatch
from vecmigrate.spec import (
    RESERVED,
    AccessEntry,
    CollectionSpec,
    IndexConfig,
    MetadataField,
    Metric,
    VectorField,
)

COMMENT_KEY = "vecmigrate"
HNSW_DEFAULTS = {"m": 16, "ef_construction": 64}
IVFFLAT_DEFAULTS = {"lists": 100}


@dataclass(frozen=True)
class VectorIndex:
    name: str
    column: str
    method: str  # hnsw | ivfflat
    opclass: str
    metric: Metric | None
    params: dict[str, Any]


@dataclass
class TableInfo:
    schema: str
    table: str
    oid: int
    relkind: str
    columns: list[Column]
    key: list[str]
    indexes: list[VectorIndex] = field(default_factory=list)
    grants: dict[str, list[str]] = field(default_factory=dict)
    comment: str | None = None
    children: list[str] = field(default_factory=list)
    estimated_rows: int | None = None

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def stored_settings(self) -> dict[str, Any]:
        """The ``vecmigrate`` part of the table comment, if the comment is ours."""
        if not self.comment:
            return {}
        try:
            parsed = json.loads(self.comment)
        except ValueError:
            return {}
        if isinstance(parsed, dict) and isinstance(parsed.get(COMMENT_KEY), dict):
            settings: dict[str, Any] = parsed[COMMENT_KEY]
            return settings
        return {}


_TABLE = """
SELECT c.oid, c.relkind, obj_description(c.oid, 'pg_class'), n.nspname, c.reltuples::int8
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %(table)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND (n.nspname = %(schema)s OR (%(schema)s IS NULL AND n.nspname = ANY(current_schemas(false))))
ORDER BY array_position(current_schemas(false), n.nspname::name)
LIMIT 1
"""
_COLUMNS = """
SELECT a.attname, t.typname, a.atttypmod, a.attnotnull, col_description(a.attrelid, a.attnum)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_KEY = """
SELECT a.attname
FROM pg_index i
JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisprimary
ORDER BY k.pos
"""
_INDEXES = """
SELECT ic.relname, am.amname, a.attname, opc.opcname, ic.reloptions
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_opclass opc ON opc.oid = i.indclass[0]
LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = %s AND am.amname IN ('hnsw', 'ivfflat')
ORDER BY ic.relname
"""
# aclexplode sees every grant; information_schema.role_table_grants only those that involve
# the current user's roles.
_GRANTS = """
SELECT coalesce(r.rolname, 'PUBLIC'), g.privilege_type
FROM pg_class c, aclexplode(c.relacl) g
LEFT JOIN pg_roles r ON r.oid = g.grantee
WHERE c.oid = %s
ORDER BY 1, 2
"""
_CHILDREN = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = %s ORDER BY c.relname
"""


def _options(reloptions: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in reloptions or []:
        key, _, value = item.partition("=")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def find_table(conn: psycopg.Connection[Any], schema: str | None, table: str) -> TableInfo | None:
    """The table's catalog entry, or None when there is no such table."""
    row = conn.execute(_TABLE, {"table": table, "schema": schema}).fetchone()
    if row is None:
        return None
    oid, relkind, comment, nspname, reltuples = row
    columns = [
        Column(name=r[0], typname=r[1], typmod=int(r[2]), not_null=bool(r[3]), comment=r[4])
        for r in conn.execute(_COLUMNS, (oid,)).fetchall()
    ]
    key = [r[0] for r in conn.execute(_KEY, (oid,)).fetchall()]
    indexes = []
    for name, method, column, opclass, reloptions in conn.execute(_INDEXES, (oid,)).fetchall():
        if column is None:
            continue  # an index on an expression: not a column's index
        defaults = HNSW_DEFAULTS if method == "hnsw" else IVFFLAT_DEFAULTS
        params = {**defaults, **_options(reloptions)}
        indexes.append(
            VectorIndex(name, column, method, opclass, metric_of_opclass(opclass), params)
        )
    grants: dict[str, list[str]] = {}
    for grantee, privilege in conn.execute(_GRANTS, (oid,)).fetchall():
        grants.setdefault(grantee, []).append(privilege)
    children = [r[0] for r in conn.execute(_CHILDREN, (oid,)).fetchall()]
    return TableInfo(
        schema=nspname,
        table=table,
        oid=int(oid),
        relkind=relkind,
        columns=columns,
        key=key,
        indexes=indexes,
        grants=grants,
        comment=comment,
        children=children,
        estimated_rows=int(reltuples) if reltuples is not None and reltuples >= 0 else None,
    )


def require_table(conn: psycopg.Connection[Any], schema: str | None, table: str) -> TableInfo:
    info = find_table(conn, schema, table)
    if info is None:
        where = f"{schema}.{table}" if schema else table
        raise NotFoundError(f"pgvector: table {where!r} does not exist")
    return info


def key_column(info: TableInfo, id_column: str | None) -> Column:
    """The column rows are identified and ordered by: ``id_column`` or the primary key."""
    name = id_column
    if name is None:
        if len(info.key) != 1:
            what = "no primary key" if not info.key else f"a composite key {info.key}"
            raise SchemaMismatch(
                f"pgvector: table {info.qualified!r} has {what}: pass ?id_column=... naming a "
                "unique, not-null column"
            )
        name = info.key[0]
    col = info.column(name)
    if col is None:
        raise SchemaMismatch(f"pgvector: table {info.qualified!r} has no column {name!r}")
    id_type_of(col)
    return col


def vector_columns(info: TableInfo, wanted: tuple[str, ...]) -> list[Column]:
    cols = [c for c in info.columns if c.typname in VECTOR_TYPES]
    if wanted:
        named = {c.name: c for c in cols}
        missing = [w for w in wanted if w not in named]
        if missing:
            raise SchemaMismatch(
                f"pgvector: table {info.qualified!r} has no vector column {missing[0]!r} "
                f"(vector columns: {', '.join(named) or 'none'})"
            )
        cols = [named[w] for w in wanted]
    return cols


def sample_dimension(conn: psycopg.Connection[Any], info: TableInfo, col: Column) -> int:
    """Dimension of a vector column declared without one, from its first non-null value."""
    from psycopg import sql

    query = sql.SQL("SELECT vector_dims({}) FROM {} WHERE {} IS NOT NULL LIMIT 1").format(
        sql.Identifier(col.name),
        sql.Identifier(info.schema, info.table),
        sql.Identifier(col.name),
    )
    row = conn.execute(query).fetchone()
    if row is None:
        raise SchemaMismatch(
            f"pgvector: column {col.name!r} of {info.qualified!r} declares no dimension and "
            "the table is empty"
        )
    return int(row[0])


def build_spec(
    info: TableInfo,
    *,
    key: Column,
    vectors: list[Column],
    dims: dict[str, int],
    document_column: str,
) -> CollectionSpec:
    """The CollectionSpec of a table (what ``create`` made round-trips through this)."""
    settings = info.stored_settings()
    metrics = settings.get("metrics", {})
    models = settings.get("models", {})
    index_metric = {ix.column: ix.metric for ix in info.indexes if ix.metric is not None}
    fields: list[VectorField] = []
    for col in vectors:
        metric = index_metric.get(col.name) or Metric.parse(metrics.get(col.name, "cosine"))
        fields.append(
            VectorField(
                name=col.name,
                dim=dims.get(col.name, col.dim),
                metric=metric,
                dtype="float16" if col.typname == "halfvec" else "float32",
                sparse=col.typname == "sparsevec",
                embedding_model=models.get(col.name),
            )
        )
    doc = info.column(document_column)
    has_document = doc is not None and doc.typname in ("text", "varchar", "bpchar")
    skip = {key.name, *(c.name for c in info.columns if c.typname in VECTOR_TYPES)}
    if has_document:
        skip.add(document_column)
    metadata = [
        MetadataField(
            name=c.name, type=c.metadata_type(), nullable=not c.not_null, max_length=c.max_length
        )
        for c in info.columns
        if c.name not in skip and c.name not in RESERVED
    ]
    indexes = [
        IndexConfig(
            field=ix.column,
            kind="ivf_flat" if ix.method == "ivfflat" else ix.method,
            metric=ix.metric,
            params=dict(ix.params),
        )
        for ix in info.indexes
        if ix.column in {v.name for v in vectors}
    ]
    access = [
        AccessEntry(principal=who, privileges=sorted(privs), resource=info.qualified)
        for who, privs in sorted(info.grants.items())
    ]
    system: dict[str, Any] = {
        "schema": info.schema,
        "table": info.table,
        "id_column": key.name,
        "id_pg_type": key.typname,
        "column_types": {c.name: c.typname for c in info.columns},
        "index_names": {ix.column: ix.name for ix in info.indexes},
        "index_opclasses": {ix.column: ix.opclass for ix in info.indexes},
    }
    if info.comment and not settings:
        system["comment"] = info.comment
    comments = {c.name: c.comment for c in info.columns if c.comment}
    if comments:
        system["column_comments"] = comments
    dropped = [c.name for c in info.columns if c.name in RESERVED and c.name not in skip]
    if dropped:
        system["unmapped_columns"] = dropped
    return CollectionSpec(
        name=info.table,
        id_type=id_type_of(key),
        vectors=fields,
        metadata=metadata,
        has_document=has_document,
        indexes=indexes,
        partitions=list(info.children),
        access=access,
        id_mapping=settings.get("id_mapping"),
        system={"postgres": system},
    )


def settings_comment(spec: CollectionSpec) -> str:
    """The table comment ``create`` writes: metrics and models of the vector fields."""
    body: dict[str, Any] = {"version": 1, "metrics": {v.name: v.metric.value for v in spec.vectors}}
    models = {v.name: v.embedding_model for v in spec.vectors if v.embedding_model}
    if models:
        body["models"] = models
    if spec.id_mapping:
        body["id_mapping"] = spec.id_mapping
    return json.dumps({COMMENT_KEY: body}, sort_keys=True)
