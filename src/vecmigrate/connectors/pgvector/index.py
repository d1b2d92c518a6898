"""Vector indexes (HNSW, IVFFlat) built after loading, from the spec's IndexConfig.

Index kinds of other systems map to the nearest pgvector method: IVF variants to IVFFlat,
graph indexes (HNSW, DiskANN, ...) to HNSW; ``flat`` means no index (exact search).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from vecmigrate.connectors.pgvector.config import IDENTIFIER_MAX_BYTES
from vecmigrate.connectors.pgvector.describe import HNSW_DEFAULTS, IVFFLAT_DEFAULTS
from vecmigrate.connectors.pgvector.sql import OPCLASS_SUFFIX
from vecmigrate.errors import Unsupported
from vecmigrate.spec import CollectionSpec, IndexConfig, Metric, VectorField

# largest dimension pgvector can index, per column type
INDEX_MAX_DIM = {"vector": 2000, "halfvec": 4000, "sparsevec": 1000}
_PARAM_ALIASES = {
    "m": "m",
    "M": "m",
    "ef_construction": "ef_construction",
    "efConstruction": "ef_construction",
    "ef_construct": "ef_construction",
    "lists": "lists",
    "nlist": "lists",
}


@dataclass(frozen=True)
class IndexPlan:
    column: str
    pg_type: str  # vector, halfvec or sparsevec
    method: str  # hnsw or ivfflat
    metric: Metric
    params: dict[str, int]

    @property
    def opclass(self) -> str:
        return f"{self.pg_type}_{OPCLASS_SUFFIX[self.metric]}"

    def name(self, table: str) -> str:
        """``<table>_<column>_<method>`` shortened to fit PostgreSQL's 63-byte names."""
        name = f"{table}_{self.column}_{self.method}"
        if len(name.encode()) <= IDENTIFIER_MAX_BYTES:
            return name
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        head = name.encode()[: IDENTIFIER_MAX_BYTES - 9].decode(errors="ignore")
        return f"{head}_{digest}"

    def ddl(self, schema: str, table: str) -> sql.Composed:
        opts = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.SQL(k), sql.Literal(int(v)))
            for k, v in sorted(self.params.items())
        )
        with_clause = sql.SQL(" WITH ({})").format(opts) if self.params else sql.SQL("")
        return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING {} ({} {}){}").format(
            sql.Identifier(self.name(table)),
            sql.Identifier(schema, table),
            sql.SQL(self.method),
            sql.Identifier(self.column),
            sql.SQL(self.opclass),
            with_clause,
        )


def _method(kind: str) -> str | None:
    k = kind.lower().replace("-", "_")
    if k in ("flat", "none", "brute_force", "exact"):
        return None
    if k.startswith("ivf"):
        return "ivfflat"
    return "hnsw"


def plan_indexes(
    spec: CollectionSpec, column_types: dict[str, str], choice: str
) -> list[IndexPlan]:
    """The indexes to build: as the spec says (``auto``), forced (``hnsw``/``ivfflat``) or none."""
    if choice == "none":
        return []
    wanted: list[tuple[VectorField, IndexConfig | None]] = []
    if choice == "auto":
        for config in spec.indexes:
            vf = next((v for v in spec.vectors if v.name == config.field), None)
            if vf is not None:
                wanted.append((vf, config))
    else:
        wanted = [(vf, None) for vf in spec.vectors]
    plans: dict[str, IndexPlan] = {}
    for vf, ix in wanted:
        method = choice if ix is None else _method(ix.kind)
        if method is None or vf.name in plans:
            continue
        pg_type = column_types.get(vf.name, "vector")
        defaults = HNSW_DEFAULTS if method == "hnsw" else IVFFLAT_DEFAULTS
        params: dict[str, Any] = dict(defaults)
        for key, value in (ix.params if ix else {}).items():
            name = _PARAM_ALIASES.get(key)
            if name in defaults and isinstance(value, int | float) and not isinstance(value, bool):
                params[name] = int(value)
        metric = (ix.metric if ix and ix.metric else None) or vf.metric
        plans[vf.name] = IndexPlan(vf.name, pg_type, method, metric, params)
    return list(plans.values())


def check_indexable(plans: list[IndexPlan], dims: dict[str, int]) -> None:
    """Refuse, before loading, an index pgvector cannot build (too many dimensions)."""
    for p in plans:
        limit = INDEX_MAX_DIM.get(p.pg_type, 2000)
        if p.method == "ivfflat" and p.pg_type == "sparsevec":
            raise Unsupported(f"pgvector: IVFFlat cannot index sparse column {p.column!r}")
        if dims.get(p.column, 0) > limit:
            raise Unsupported(
                f"pgvector: {p.method} indexes {p.pg_type} columns of up to {limit} dimensions; "
                f"{p.column!r} has {dims[p.column]} (use float16 vectors, or index=none)"
            )
