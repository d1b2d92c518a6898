"""sqlite-vec: one ``vec0`` virtual table in a SQLite file.

Reading is one cursor over the table in vec0's own order (chunk by chunk); the cursor is the
row position plus the last id, checked on resume so a table changed in between is noticed
instead of skipping or repeating rows. Writing deletes the batch's ids and inserts the rows in
one transaction (vec0 has no UPSERT). What the vec0 definition cannot say (documents, JSON,
timestamps, the original field names) is kept in the ``_vecmigrate_spec`` side table.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.connectors.base import (
    Capabilities,
    Connector,
    IfExists,
    Partition,
    QueryResult,
    ScanBatch,
    WriteToken,
)
from vecmigrate.connectors.sqlitevec.config import SqliteVecConfig
from vecmigrate.connectors.sqlitevec.errors import sqlite_errors
from vecmigrate.connectors.sqlitevec.schema import (
    MAX_DIM,
    SPEC_TABLE,
    Layout,
    Vec0Definition,
    described,
    layout_from_definition,
    parse_vec0,
    plan_layout,
    quote,
)
from vecmigrate.errors import (
    DataError,
    MissingDependency,
    NotFoundError,
    SchemaMismatch,
    TerminalError,
)
from vecmigrate.records import conform, fixed_size_vectors, vectors_numpy
from vecmigrate.spec import ID, CollectionSpec, MetadataType, Metric
from vecmigrate.uri import ConnectorURI


def _dbapi() -> Any:
    """``pysqlite3`` when installed (it can load extensions), else the standard ``sqlite3``."""
    try:
        from pysqlite3 import dbapi2
    except ImportError:
        import sqlite3

        return sqlite3
    return dbapi2


def _to_arrow(values: Sequence[Any], storage: str, dtype: pa.DataType) -> pa.Array:
    """One column of SQLite values as an Arrow array of the field's type."""
    if storage == "boolean":
        return pa.array(values, pa.int64()).cast(pa.bool_())
    if storage == "timestamp_us":
        return pa.array(values, pa.int64()).cast(dtype)
    if storage == "list_json":
        return pa.array([None if v is None else json.loads(v) for v in values], dtype)
    try:
        return pa.array(values, dtype)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        if pa.types.is_string(dtype):  # an untyped value in a text column
            return pa.array([None if v is None else str(v) for v in values], dtype)
        raise


def _to_sql(column: pa.Array, storage: str) -> list[Any]:
    """One Arrow column as the Python values SQLite stores."""
    if storage == "timestamp_us":
        return list(column.cast(pa.int64()).to_pylist())
    if storage == "list_json":
        return [None if v is None else json.dumps(v) for v in column.to_pylist()]
    return list(column.to_pylist())


class SqliteVecConnector(Connector):
    scheme = "sqlitevec"
    capabilities = Capabilities(
        query=True,
        fetch=True,
        delete=True,
        named_vectors=True,
        metrics=frozenset({Metric.COSINE, Metric.L2}),
        max_dim=MAX_DIM,
        notes=(
            "vec0 has no inner-product distance",
            "KNN queries are exact (vec0 scans); distances are vec0's (L2, or 1 - cosine)",
            "metadata columns cannot hold NULL: see the metadata= option",
            "one writer at a time (SQLite file lock)",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = SqliteVecConfig.from_uri(uri)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._layout: Layout | None = None

    @property
    def _table(self) -> str:
        return quote(self.config.table)

    @property
    def _where(self) -> str:
        return f"table {self.config.table!r} in {self.config.path}"

    # -- connection ---------------------------------------------------------------------
    def _connect(self, *, create: bool = False) -> Any:
        if self._conn is not None:
            return self._conn
        path = self.config.path
        if not create and not path.exists():
            raise NotFoundError(f"sqlitevec: database file {path} does not exist")
        dbapi = _dbapi()
        import sqlite_vec

        with sqlite_errors(f"opening {path}"):
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = dbapi.connect(
                f"{path.as_uri()}?mode={'rwc' if create else 'rw'}",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=30,
            )
            try:
                conn.enable_load_extension(True)
                sqlite_vec.load(conn)
                conn.enable_load_extension(False)
            except AttributeError as exc:
                conn.close()
                raise MissingDependency("pysqlite3", "sqlitevec") from exc
        self._conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._layout = None

    def exists(self) -> bool:
        if not self.config.path.exists():
            return False
        with self._lock:
            return self._definition_sql() is not None

    # -- schema -------------------------------------------------------------------------
    def _definition_sql(self) -> str | None:
        conn = self._connect()
        with sqlite_errors(f"reading the schema of {self.config.path}"):
            row = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                (self.config.table,),
            ).fetchone()
        return None if row is None else str(row[0])

    def _definition(self) -> Vec0Definition:
        sql = self._definition_sql()
        if sql is None:
            raise NotFoundError(
                f"sqlitevec: table {self.config.table!r} not found in {self.config.path}"
            )
        return parse_vec0(sql, self.config.table)

    def _load_layout(self) -> Layout:
        if self._layout is not None:
            return self._layout
        definition = self._definition()
        conn = self._connect()
        stored = None
        with sqlite_errors(f"reading {SPEC_TABLE} in {self.config.path}"):
            has_side = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SPEC_TABLE,)
            ).fetchone()
            if has_side:
                stored = conn.execute(
                    f"SELECT layout FROM {quote(SPEC_TABLE)} WHERE table_name = ?",
                    (self.config.table,),
                ).fetchone()
        layout = Layout.from_json(stored[0]) if stored else None
        if layout is None or not layout.matches(definition):
            layout = layout_from_definition(definition, self.config.table)
        self._layout = layout
        return layout

    @staticmethod
    def _usable_ids(layout: Layout, ids: Sequence[Any]) -> list[Any]:
        """The ids of the table's id type (others cannot match and vec0 would refuse them)."""
        if layout.spec.id_type == "string":
            return [v for v in ids if isinstance(v, str)]
        return [int(v) for v in ids if isinstance(v, int | np.integer) and not isinstance(v, bool)]

    def _select_list(self, layout: Layout) -> str:
        return ", ".join(quote(c.column) for c in layout.columns)

    def _batch(self, layout: Layout, rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
        """Rows in layout column order -> a record batch, column by column."""
        schema = layout.spec.arrow_schema()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in layout.columns]
        by_field = {c.field: (c, values) for c, values in zip(layout.columns, columns, strict=True)}
        arrays = []
        for f in schema:
            c, values = by_field[f.name]
            if c.role == "vector":
                dim = f.type.list_size
                blob = b"".join(values)
                if len(blob) != len(values) * dim * 4:
                    raise DataError(
                        f"{self._where}: vector column {c.column!r} holds values that are not "
                        f"float32[{dim}]",
                        field=f.name,
                    )
                matrix = np.frombuffer(blob, dtype=np.float32).reshape(len(values), dim)
                arrays.append(fixed_size_vectors(matrix))
            else:
                try:
                    arrays.append(_to_arrow(values, c.storage, f.type))
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
                    raise DataError(
                        f"{self._where}: column {c.column!r} holds a value that is not "
                        f"{f.type}: {exc}",
                        field=f.name,
                    ) from exc
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    # -- source -------------------------------------------------------------------------
    def describe(self) -> CollectionSpec:
        with self._lock:
            layout = self._load_layout()
            return described(layout, self.config.table, self._definition())

    def count(self) -> int:
        with self._lock:
            self._load_layout()
            with sqlite_errors(f"counting {self._where}"):
                return int(
                    self._connect().execute(f"SELECT count(*) FROM {self._table}").fetchone()[0]
                )

    def partitions(self, hint: int) -> list[Partition]:
        """One partition: vec0 can only scan the whole table in its own order."""
        return [Partition(key="all", estimated_rows=self.count())]

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        """The table in vec0 order; the cursor is ``[rows read, last id]``."""
        with self._lock:
            layout = self._load_layout()
            conn = self._connect()
        id_col = quote(layout.id_column.column)
        position = 0
        if cursor is not None:
            position, last_id = json.loads(cursor)
            with self._lock, sqlite_errors(f"resuming a scan of {self._where}"):
                row = conn.execute(
                    f"SELECT {id_col} FROM {self._table} LIMIT 1 OFFSET ?", (position - 1,)
                ).fetchone()
            if row is None or row[0] != last_id:
                raise TerminalError(
                    f"sqlitevec: {self._where} changed since the scan began (row {position} "
                    f"is no longer id {last_id!r}): start the copy again with --restart"
                )
        with sqlite_errors(f"scanning {self._where}"):
            cur = conn.execute(
                f"SELECT {self._select_list(layout)} FROM {self._table} LIMIT -1 OFFSET ?",
                (position,),
            )
        id_index = layout.columns.index(layout.id_column)
        try:
            while True:
                with self._lock, sqlite_errors(f"scanning {self._where}"):
                    rows = cur.fetchmany(batch_size)
                if not rows:
                    return
                position += len(rows)
                batch = self._batch(layout, rows)
                yield ScanBatch(batch=batch, cursor=json.dumps([position, rows[-1][id_index]]))
        finally:
            cur.close()

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        """Point lookups by primary key (vec0 turns ``IN (...)`` into a full scan)."""
        with self._lock:
            layout = self._load_layout()
            conn = self._connect()
            sql = (
                f"SELECT {self._select_list(layout)} FROM {self._table} "
                f"WHERE {quote(layout.id_column.column)} = ?"
            )
            rows: list[tuple[Any, ...]] = []
            with sqlite_errors(f"fetching from {self._where}"):
                for value in self._usable_ids(layout, ids):
                    row = conn.execute(sql, (value,)).fetchone()
                    if row is not None:
                        rows.append(row)
            return self._batch(layout, rows)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        """Exact KNN through ``MATCH``; distances as vec0 reports them."""
        with self._lock:
            layout = self._load_layout()
            vf = layout.spec.vector(vector_field)
            column = layout.of(vf.name).column
            q = np.ascontiguousarray(vectors, dtype=np.float32)
            if q.ndim == 1:
                q = q[None, :]
            if q.shape[1] != vf.dim:
                raise DataError(
                    f"query vectors have {q.shape[1]} dimensions, {self._where} has {vf.dim}"
                )
            sql = (
                f"SELECT {quote(layout.id_column.column)}, distance FROM {self._table} "
                f"WHERE {quote(column)} MATCH ? AND k = ? ORDER BY distance"
            )
            out_ids: list[list[Any]] = []
            out_scores: list[list[float]] = []
            conn = self._connect()
            with sqlite_errors(f"querying {self._where}"):
                for row in q:
                    got = conn.execute(sql, (row.tobytes(), int(k))).fetchall() if k > 0 else []
                    out_ids.append([r[0] for r in got])
                    out_scores.append([float(r[1]) for r in got])
            return QueryResult(ids=out_ids, scores=out_scores)

    # -- target -------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        with self._lock:
            self._connect(create=True)
            if self._definition_sql() is not None:
                if if_exists is IfExists.FAIL:
                    raise SchemaMismatch(f"sqlitevec: {self._where} already exists")
                if if_exists is IfExists.REUSE:
                    self._check_compatible(self._load_layout(), spec)
                    return
                self.drop()
            layout = plan_layout(spec, self.config.metadata, self.config.partition_keys)
            conn = self._connect()
            with sqlite_errors(f"creating {self._where}"):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {quote(SPEC_TABLE)} "
                        "(table_name TEXT PRIMARY KEY, layout TEXT NOT NULL)"
                    )
                    conn.execute(layout.ddl(self.config.table))
                    conn.execute(
                        f"INSERT OR REPLACE INTO {quote(SPEC_TABLE)} (table_name, layout) "
                        "VALUES (?, ?)",
                        (self.config.table, layout.to_json()),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            self._layout = layout

    def _check_compatible(self, layout: Layout, spec: CollectionSpec) -> None:
        have = layout.spec
        if have.id_type != spec.id_type:
            raise SchemaMismatch(
                f"sqlitevec: {self._where} has {have.id_type} ids, the source has {spec.id_type}"
            )
        for vf in spec.vectors:
            old = next((v for v in have.vectors if v.name == vf.name), None)
            if old is None or (old.dim, old.metric) != (vf.dim, vf.metric):
                found = f"dim {old.dim} ({old.metric})" if old else "no vector of that name"
                raise SchemaMismatch(
                    f"sqlitevec: {self._where} vector {vf.name!r}: table has {found}, the "
                    f"source has dim {vf.dim} ({vf.metric})"
                )
        for m in spec.metadata:
            old_m = have.metadata_field(m.name)
            if old_m is None:
                raise SchemaMismatch(
                    f"sqlitevec: {self._where} has no column for metadata field {m.name!r} "
                    "(vec0 tables cannot gain columns: use if_exists=replace)"
                )
            if old_m.type is not m.type:
                raise SchemaMismatch(
                    f"sqlitevec: metadata field {m.name!r} of {self._where} is {old_m.type}, "
                    f"the source has {m.type}"
                )
        if spec.has_document and not have.has_document:
            raise SchemaMismatch(f"sqlitevec: {self._where} has no document column")

    def _for_write(self, batch: pa.RecordBatch) -> tuple[Layout, pa.RecordBatch]:
        layout = self._load_layout()
        spec = layout.spec
        rows = conform(batch, spec)
        for c in layout.columns:
            if c.role in ("metadata", "partition", "vector") and rows.column(c.field).null_count:
                col = rows.column(c.field)
                i = int(np.nonzero(col.is_null().to_numpy(zero_copy_only=False))[0][0])
                raise DataError(
                    f"{self._where}: vec0 {c.role} column {c.column!r} cannot hold NULL "
                    "(create the table with metadata=auxiliary to keep NULLs)",
                    row=i,
                    record_id=rows.column(ID)[i].as_py(),
                    field=c.field,
                )
        for m in layout.spec.metadata:
            if m.type is MetadataType.FLOAT64:
                nan = pc.fill_null(pc.is_nan(rows.column(m.name)), False)
                bad = np.nonzero(nan.to_numpy(zero_copy_only=False))[0]
                if len(bad):
                    i = int(bad[0])
                    raise DataError(
                        f"{self._where}: SQLite cannot store NaN (it would become NULL)",
                        row=i,
                        record_id=rows.column(ID)[i].as_py(),
                        field=m.name,
                    )
        return layout, rows

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        """Delete the batch's ids and insert its rows, in one transaction."""
        with self._lock:
            layout, rows = self._for_write(batch)
            values: list[list[Any]] = []
            for c in layout.columns:
                col = rows.column(c.field)
                if c.role == "vector":
                    matrix = vectors_numpy(col)
                    values.append([r.tobytes() for r in matrix])
                else:
                    values.append(_to_sql(col, c.storage))
            id_col = quote(layout.id_column.column)
            names = ", ".join(quote(c.column) for c in layout.columns)
            marks = ", ".join("?" for _ in layout.columns)
            conn = self._connect()
            with sqlite_errors(f"writing to {self._where}"):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        f"DELETE FROM {self._table} WHERE {id_col} = ?",
                        [(v,) for v in values[0]],
                    )
                    conn.executemany(
                        f"INSERT INTO {self._table} ({names}) VALUES ({marks})",
                        zip(*values, strict=True),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

    def delete(self, ids: Sequence[Any]) -> None:
        with self._lock:
            layout = self._load_layout()
            conn = self._connect()
            with sqlite_errors(f"deleting from {self._where}"):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        f"DELETE FROM {self._table} WHERE {quote(layout.id_column.column)} = ?",
                        [(v,) for v in self._usable_ids(layout, ids)],
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

    def drop(self) -> None:
        with self._lock:
            if not self.config.path.exists():
                return
            conn = self._connect()
            with sqlite_errors(f"dropping {self._where}"):
                conn.execute(f"DROP TABLE IF EXISTS {self._table}")
                if conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SPEC_TABLE,)
                ).fetchone():
                    conn.execute(
                        f"DELETE FROM {quote(SPEC_TABLE)} WHERE table_name = ?",
                        (self.config.table,),
                    )
            self._layout = None
