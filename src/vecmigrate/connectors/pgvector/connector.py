"""A pgvector table as a vecmigrate collection (psycopg 3, binary protocol throughout).

One row per record: the key column is the id, each ``vector``/``halfvec``/``sparsevec``
column a vector field, a text column named like ``document_column`` the document, the rest
metadata. Reads page by key (resumable, partitioned by key ranges from the table's
statistics); writes are binary COPY (see ``copy.py``); indexes are built by ``finalize``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import psycopg
import psycopg.conninfo
import pyarrow as pa
from psycopg import sql

from vecmigrate.connectors.base import (
    AccessReport,
    Capabilities,
    Connector,
    IfExists,
    Partition,
    QueryResult,
    ScanBatch,
    WriteToken,
)
from vecmigrate.connectors.pgvector import adbc_read
from vecmigrate.connectors.pgvector.access import grant_entries
from vecmigrate.connectors.pgvector.codec import vector_text
from vecmigrate.connectors.pgvector.config import PgvectorConfig, check_identifier
from vecmigrate.connectors.pgvector.copy import WritePlan
from vecmigrate.connectors.pgvector.describe import (
    TableInfo,
    build_spec,
    find_table,
    key_column,
    require_table,
    sample_dimension,
    settings_comment,
    vector_columns,
)
from vecmigrate.connectors.pgvector.errors import translated
from vecmigrate.connectors.pgvector.index import check_indexable, plan_indexes
from vecmigrate.connectors.pgvector.read import ReadPlan
from vecmigrate.connectors.pgvector.sql import (
    OPERATOR,
    Column,
    create_metadata_type,
    id_read_expr,
    id_type_of,
    vector_type,
)
from vecmigrate.errors import (
    ConfigError,
    MissingDependency,
    SchemaMismatch,
    TerminalError,
    Unsupported,
)
from vecmigrate.records import check_batch, conform
from vecmigrate.spec import AccessEntry, CollectionSpec, Metric, VectorField
from vecmigrate.uri import ConnectorURI

ROWS_PER_PARTITION_MIN = 1000
HNSW_DEFAULT_EF_SEARCH = 40
HNSW_MAX_EF_SEARCH = 1000


class PgvectorConnector(Connector):
    scheme = "pgvector"
    capabilities = Capabilities(
        query=True,
        fetch=True,
        delete=True,
        sparse_vectors=True,
        named_vectors=True,
        max_dim=16000,
        exact_float32=True,
        access_control=True,
        apply_access=True,
        notes=(
            "kNN is exact until finalize() builds an HNSW/IVFFlat index, approximate after "
            "(?search=exact forces exact search)",
            "HNSW/IVFFlat index vector columns of up to 2,000 dimensions (halfvec 4,000)",
            "jsonb keeps JSON values, not their text: key order and spacing are normalised",
            "grants are described; they are applied to the target table only on request "
            "(--apply-access), one GRANT per privilege",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = PgvectorConfig.from_uri(uri)
        self._local = threading.local()
        self._opened: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._spec: CollectionSpec | None = None  # what create() was given
        self._info: TableInfo | None = None
        self._described: CollectionSpec | None = None
        self._write_plan: tuple[int, WritePlan] | None = None
        self._schema: str | None = self.config.schema

    # -- connections --------------------------------------------------------------------
    @property
    def where(self) -> str:
        schema = self._schema or self.config.schema
        return f"{schema}.{self.config.table}" if schema else self.config.table

    def _translated(self, what: str) -> Any:
        return translated(self.where, what, secret=self.config.password)

    def _conn(self) -> psycopg.Connection[Any]:
        """This thread's connection (autocommit), opened on first use and after a failure."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        conn = self._connect()
        self._local.conn = conn
        with self._lock:
            self._opened.append(conn)
        return conn

    def _connect(self) -> psycopg.Connection[Any]:
        with self._translated("connect"):
            return psycopg.connect(**self.config.connect_kwargs(), autocommit=True)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()

    # -- catalog ------------------------------------------------------------------------
    def _forget(self) -> None:
        self._info = None
        self._described = None
        self._write_plan = None

    def _table(self) -> TableInfo:
        if self._info is None:
            with self._translated("describe"):
                self._info = require_table(self._conn(), self.config.schema, self.config.table)
            self._schema = self._info.schema
        return self._info

    def _dims(self, info: TableInfo, vectors: list[Column]) -> dict[str, int]:
        dims: dict[str, int] = {}
        for col in vectors:
            if col.dim or col.typname == "sparsevec":
                dims[col.name] = col.dim
            else:
                with self._translated("sample a vector dimension"):
                    dims[col.name] = sample_dimension(self._conn(), info, col)
        return dims

    def exists(self) -> bool:
        with self._translated("look up the table"):
            return find_table(self._conn(), self.config.schema, self.config.table) is not None

    def describe(self) -> CollectionSpec:
        if self._described is None:
            info = self._table()
            key = key_column(info, self.config.id_column)
            vectors = vector_columns(info, self.config.vector_columns)
            self._described = build_spec(
                info,
                key=key,
                vectors=vectors,
                dims=self._dims(info, vectors),
                document_column=self.config.document_column,
            )
        return self._described.model_copy(deep=True)

    def _read_plan(self) -> ReadPlan:
        info = self._table()
        spec = self.describe()
        key = key_column(info, self.config.id_column)
        vectors = vector_columns(info, self.config.vector_columns)
        return ReadPlan.build(info, key, spec, vectors, self.config.document_column)

    # -- source -------------------------------------------------------------------------
    def count(self) -> int:
        query = sql.SQL("SELECT count(*) FROM {}").format(self._ident())
        with self._translated("count rows"):
            row = self._conn().execute(query).fetchone()
        return int(row[0]) if row else 0

    def _ident(self) -> sql.Identifier:
        info = self._table()
        return sql.Identifier(info.schema, info.table)

    def partitions(self, hint: int) -> list[Partition]:
        """Key ranges ``[lo, hi)`` cut at quantiles of the key (from pg_stats when present)."""
        info = self._table()
        key = key_column(info, self.config.id_column)
        rows = info.estimated_rows
        if rows is None or rows <= 0:
            rows = self.count()
        parts = max(1, min(hint, rows // ROWS_PER_PARTITION_MIN))
        cuts = self._cut_points(info, key, parts) if parts > 1 else []
        edges: list[Any] = [None, *cuts, None]
        n = len(edges) - 1
        return [
            Partition(
                key=f"key-range-{i:04d}-of-{n:04d}",
                bounds={"column": key.name, "lo": edges[i], "hi": edges[i + 1]},
                estimated_rows=rows // n,
            )
            for i in range(n)
        ]

    def _cut_points(self, info: TableInfo, key: Column, parts: int) -> list[Any]:
        is_int = id_type_of(key) == "int64"
        array_type = sql.SQL("int8[]" if is_int else "text[]")
        stats = sql.SQL(
            "SELECT u.b FROM pg_stats s, unnest(s.histogram_bounds::text::{}) "
            "WITH ORDINALITY AS u(b, i) "
            "WHERE s.schemaname = %s AND s.tablename = %s AND s.attname = %s ORDER BY u.i"
        ).format(array_type)
        fractions = [i / parts for i in range(1, parts)]
        exact = sql.SQL(
            "SELECT unnest(percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY {})) FROM {}"
        ).format(sql.Identifier(key.name), self._ident())
        with self._translated("plan key ranges"):
            conn = self._conn()
            bounds = [r[0] for r in conn.execute(stats, (info.schema, info.table, key.name))]
            if len(bounds) > parts:
                picks = [bounds[round(f * (len(bounds) - 1))] for f in fractions]
            else:
                picks = [r[0] for r in conn.execute(exact, (fractions,))]
        cuts: list[Any] = []
        for pick in picks:
            if pick is None:
                continue
            value = int(pick) if is_int else str(pick)
            if value not in cuts:
                cuts.append(value)
        return cuts

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        plan = self._read_plan()
        column = partition.bounds.get("column")
        if column is not None and column != plan.key.name:
            raise ConfigError(
                f"pgvector {self.where}: partition {partition.key!r} is over column {column!r}, "
                f"the table's key is {plan.key.name!r}"
            )
        with self._translated("scan"):
            conn = self._connect()  # its own: the scan runs a query on a helper thread
            try:
                yield from plan.scan(conn, partition, cursor, batch_size, self._adbc_conninfo())
            finally:
                conn.close()

    def _adbc_conninfo(self) -> str | None:
        """libpq connection string for ADBC scans (``?reader=``), None to read with psycopg."""
        reader = self.config.reader
        if reader == "psycopg":
            return None
        if not adbc_read.available():
            if reader == "adbc":
                raise MissingDependency("adbc_driver_postgresql", "pgvector")
            return None
        return psycopg.conninfo.make_conninfo(**self.config.connect_kwargs())

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        plan = self._read_plan()
        with self._translated("fetch by id"):
            return plan.fetch(self._conn(), ids)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        spec = self.describe()
        vf = spec.vector(vector_field)
        if vf.sparse:
            raise Unsupported(f"pgvector {self.where}: kNN on sparse field {vf.name!r}")
        info = self._table()
        key = key_column(info, self.config.id_column)
        col = info.column(vf.name)
        pg_type = col.typname if col is not None else "vector"
        target = sql.SQL("%(q)s::{}").format(sql.SQL(pg_type))
        distance = sql.SQL("{} {} {}").format(
            sql.Identifier(vf.name), sql.SQL(OPERATOR[vf.metric]), target
        )
        stmt = sql.SQL("SELECT {}, {} FROM {} ORDER BY {} LIMIT %(k)s").format(
            id_read_expr(key), distance, self._ident(), distance
        )
        ids: list[list[Any]] = []
        scores: list[list[float]] = []
        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        with self._translated("kNN query"):
            conn = self._conn()
            with conn.transaction():
                self._search_settings(conn, int(k))
                for q in queries:
                    rows = conn.execute(stmt, {"q": vector_text(q), "k": int(k)}).fetchall()
                    ids.append([r[0] for r in rows])
                    scores.append([float(r[1]) for r in rows])
        return QueryResult(ids=ids, scores=scores)

    def _search_settings(self, conn: psycopg.Connection[Any], k: int) -> None:
        """Settings for the query's transaction: exact search, ef_search, probes.

        HNSW returns at most ``ef_search`` rows (40 by default), so it is raised to ``k``.
        """
        settings: dict[str, str] = {}
        if self.config.search == "exact":
            settings["enable_indexscan"] = "off"
        wanted = k if k > HNSW_DEFAULT_EF_SEARCH else 0
        ef_search = min(max(self.config.ef_search or 0, wanted), HNSW_MAX_EF_SEARCH)
        if ef_search:
            settings["hnsw.ef_search"] = str(ef_search)
        if self.config.probes:
            settings["ivfflat.probes"] = str(self.config.probes)
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))

    # -- target -------------------------------------------------------------------------
    def _resolve_schema(self, conn: psycopg.Connection[Any]) -> str:
        if self.config.schema:
            return self.config.schema
        row = conn.execute("SELECT current_schema()").fetchone()
        if row is None or row[0] is None:
            raise ConfigError(
                f"pgvector {self.config.table}: the search path names no schema: pass ?schema="
            )
        return str(row[0])

    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        key_name = self.config.id_column or "id"
        document = self.config.document_column
        names = [key_name, *(v.name for v in spec.vectors), *(m.name for m in spec.metadata)]
        if spec.has_document:
            names.append(document)
        for name in names:
            check_identifier(name, "column")
        if len(set(names)) != len(names):
            raise ConfigError(
                f"pgvector {self.where}: column names collide: {sorted(names)} "
                "(see ?id_column= and ?document_column=)"
            )
        dims = {v.name: v.dim for v in spec.vectors}
        types = {v.name: _pg_vector_kind(v) for v in spec.vectors}
        plans = plan_indexes(spec, types, self.config.index)
        check_indexable(plans, dims)
        self._forget()
        with self._translated("create the table"):
            conn = self._conn()
            schema = self._resolve_schema(conn)
            self._schema = schema
            existing = find_table(conn, schema, self.config.table)
            if existing is not None:
                if if_exists is IfExists.FAIL:
                    raise SchemaMismatch(
                        f"pgvector: table {existing.qualified!r} already exists (if_exists=fail)"
                    )
                if if_exists is IfExists.REUSE:
                    self._check_compatible(existing, spec)
                    self._spec = spec
                    return
            self._ensure_extension(conn)
            table = sql.Identifier(schema, self.config.table)
            defs: list[sql.Composable] = [
                sql.SQL("{} {} PRIMARY KEY").format(
                    sql.Identifier(key_name),
                    sql.SQL("bigint" if spec.id_type == "int64" else "text"),
                )
            ]
            defs += [
                sql.SQL("{} {}").format(sql.Identifier(v.name), vector_type(types[v.name], v.dim))
                for v in spec.vectors
            ]
            if spec.has_document:
                defs.append(sql.SQL("{} text").format(sql.Identifier(document)))
            defs += [
                sql.SQL("{} {}{}").format(
                    sql.Identifier(m.name),
                    create_metadata_type(m),
                    sql.SQL("" if m.nullable else " NOT NULL"),
                )
                for m in spec.metadata
            ]
            with conn.transaction():
                if existing is not None:
                    conn.execute(sql.SQL("DROP TABLE {}").format(table))
                conn.execute(
                    sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(defs))
                )
                conn.execute(
                    sql.SQL("COMMENT ON TABLE {} IS {}").format(
                        table, sql.Literal(settings_comment(spec))
                    )
                )
        self._spec = spec

    def _ensure_extension(self, conn: psycopg.Connection[Any]) -> None:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            return
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise TerminalError(
                f"pgvector {self.where}: the vector extension is not installed in database "
                f"{self.config.database!r} and could not be created ({exc}); ask an "
                "administrator to run CREATE EXTENSION vector"
            ) from exc

    def _check_compatible(self, info: TableInfo, spec: CollectionSpec) -> None:
        """REUSE: the existing table must hold this spec's ids, vectors and fields."""
        where = info.qualified
        key = key_column(info, self.config.id_column)
        if id_type_of(key) != spec.id_type:
            raise SchemaMismatch(
                f"pgvector: table {where!r} has {id_type_of(key)} ids ({key.typname}), "
                f"the source has {spec.id_type} ids"
            )
        index_metric = {ix.column: ix.metric for ix in info.indexes if ix.metric is not None}
        stored = info.stored_settings().get("metrics", {})
        for vf in spec.vectors:
            col = info.column(vf.name)
            if col is None or col.typname not in ("vector", "halfvec", "sparsevec"):
                raise SchemaMismatch(f"pgvector: table {where!r} has no vector column {vf.name!r}")
            if (col.typname == "sparsevec") != vf.sparse:
                raise SchemaMismatch(
                    f"pgvector: column {vf.name!r} of {where!r} is {col.typname}, the source "
                    f"field is {'sparse' if vf.sparse else 'dense'}"
                )
            dim = col.dim
            if not dim and not vf.sparse:
                try:
                    dim = sample_dimension(self._conn(), info, col)
                except SchemaMismatch:
                    dim = vf.dim  # empty table, no declared dimension: anything fits
            if not vf.sparse and dim != vf.dim:
                raise SchemaMismatch(
                    f"pgvector: column {vf.name!r} of {where!r} holds {dim}-dimensional "
                    f"vectors, the source has {vf.dim}"
                )
            have = index_metric.get(vf.name)
            if have is None and isinstance(stored.get(vf.name), str):
                have = Metric.parse(stored[vf.name])
            if have is not None and have != vf.metric:
                raise SchemaMismatch(
                    f"pgvector: column {vf.name!r} of {where!r} is indexed/declared for "
                    f"{have.value} distance, the source uses {vf.metric.value}"
                )
        if spec.has_document and info.column(self.config.document_column) is None:
            raise SchemaMismatch(
                f"pgvector: table {where!r} has no document column "
                f"{self.config.document_column!r} (see ?document_column=)"
            )
        missing = [m.name for m in spec.metadata if info.column(m.name) is None]
        if missing:
            raise SchemaMismatch(
                f"pgvector: table {where!r} has no column for metadata field(s) "
                f"{', '.join(map(repr, missing))}"
            )

    def _target_spec(self) -> CollectionSpec:
        return self._spec if self._spec is not None else self.describe()

    def _writer(self, spec: CollectionSpec) -> WritePlan:
        if self._write_plan is None or self._write_plan[0] != id(spec):
            info = self._table()
            key = key_column(info, self.config.id_column)
            plan = WritePlan.build(info, key, spec, self.config.document_column)
            self._write_plan = (id(spec), plan)
        return self._write_plan[1]

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        spec = self._target_spec()
        if batch.schema != spec.arrow_schema():
            batch = conform(batch, spec)
        check_batch(batch, spec)
        if batch.num_rows == 0:
            return
        plan = self._writer(spec)
        with self._translated(f"write {batch.num_rows} rows"):
            plan.write(self._conn(), batch)

    def delete(self, ids: Sequence[Any]) -> None:
        info = self._table()
        key = key_column(info, self.config.id_column)
        stmt = sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(
            self._ident(), sql.Identifier(key.name)
        )
        with self._translated("delete by id"):
            self._conn().execute(stmt, (list(ids),))

    def finalize(self, spec: CollectionSpec) -> None:
        """Build the vector indexes (after loading: much faster than before) and ANALYZE."""
        info = self._table()
        types = {c.name: c.typname for c in info.columns}
        plans = plan_indexes(spec, types, self.config.index)
        with self._translated("build indexes"):
            conn = self._conn()
            if self.config.maintenance_work_mem:
                conn.execute(
                    "SELECT set_config('maintenance_work_mem', %s, false)",
                    (self.config.maintenance_work_mem,),
                )
            for plan in plans:
                conn.execute(plan.ddl(info.schema, info.table))
            conn.execute(sql.SQL("ANALYZE {}").format(self._ident()))
        self._forget()

    def drop(self) -> None:
        with self._translated("drop the table"):
            conn = self._conn()
            schema = self._resolve_schema(conn)
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, self.config.table))
            )
        self._forget()
        self._spec = None

    def apply_access(self, entries: Sequence[AccessEntry]) -> AccessReport:
        """GRANT the entries' table privileges on this table (a missing role is reported)."""
        info = self._table()
        with self._translated("apply access entries"):
            return grant_entries(
                self._conn(), info.schema, info.table, entries, secret=self.config.password
            )

    # -- aliases: a view over the table, replaced in one transaction ---------------------
    def switch_alias(self, alias: str) -> str | None:
        """Make view ``alias`` select this table; returns the table it selected before."""
        check_identifier(alias, "alias")
        marker = "vecmigrate alias of "
        with self._translated(f"switch alias {alias!r}"):
            conn = self._conn()
            schema = self._resolve_schema(conn)
            view = sql.Identifier(schema, alias)
            row = conn.execute(
                "SELECT c.relkind, obj_description(c.oid, 'pg_class') FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND "
                "c.relname = %s",
                (schema, alias),
            ).fetchone()
            previous = None
            if row is not None:
                if row[0] != "v" or not str(row[1] or "").startswith(marker):
                    raise SchemaMismatch(
                        f"pgvector: {schema}.{alias} exists and is not an alias view made by "
                        "vecmigrate; refusing to replace it"
                    )
                previous = str(row[1])[len(marker) :]
            with conn.transaction():
                conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
                conn.execute(
                    sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(view, self._ident())
                )
                conn.execute(
                    sql.SQL("COMMENT ON VIEW {} IS {}").format(
                        view, sql.Literal(marker + self.where)
                    )
                )
        return previous

    def drop_alias(self, alias: str) -> None:
        check_identifier(alias, "alias")
        with self._translated(f"drop alias {alias!r}"):
            conn = self._conn()
            schema = self._resolve_schema(conn)
            conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(schema, alias)))


def _pg_vector_kind(vf: VectorField) -> str:
    if vf.sparse:
        return "sparsevec"
    return "halfvec" if vf.dtype == "float16" else "vector"
