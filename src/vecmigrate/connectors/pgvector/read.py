"""Reading rows as Arrow batches: keyset pages on the key column, binary results.

Each batch is one ``SELECT ... WHERE key > last AND lo <= key < hi ORDER BY key LIMIT n``
(no transaction stays open between batches, so a slow consumer holds nothing on the server).
psycopg builds the rows in C; vectors arrive in pgvector's binary form and are decoded
column-wise with numpy; timestamps are read as microseconds and json as text. (A binary
``COPY TO`` stream was tried: psycopg parses it one Python call per row, which was slower;
ADBC's driver parses it in C++, see ``adbc_read``.)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
from psycopg import sql

from vecmigrate.connectors.base import Partition, ScanBatch
from vecmigrate.connectors.pgvector.codec import decode_sparse, decode_vectors
from vecmigrate.connectors.pgvector.describe import TableInfo
from vecmigrate.connectors.pgvector.sql import Column, id_read_expr, read_expr
from vecmigrate.errors import DataError
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType

if TYPE_CHECKING:
    from vecmigrate.connectors.pgvector.adbc_read import AdbcPages

UTC_MICROS = pa.timestamp("us", tz="UTC")
# a fetched page: its row count, its last key, and how to make its record batch
Page = tuple[int, Any, Callable[[], pa.RecordBatch]]


@dataclass(frozen=True)
class ReadPlan:
    """Which columns of a table become which batch columns, and how."""

    table: sql.Identifier
    key: Column
    spec: CollectionSpec
    vectors: list[Column]
    document: Column | None
    metadata: list[tuple[Column, MetadataField]]

    @classmethod
    def build(
        cls,
        info: TableInfo,
        key: Column,
        spec: CollectionSpec,
        vectors: list[Column],
        document_column: str,
    ) -> ReadPlan:
        metadata = []
        for m in spec.metadata:
            col = info.column(m.name)
            if col is not None:
                metadata.append((col, m))
        return cls(
            table=sql.Identifier(info.schema, info.table),
            key=key,
            spec=spec,
            vectors=vectors,
            document=info.column(document_column) if spec.has_document else None,
            metadata=metadata,
        )

    @property
    def schema(self) -> pa.Schema:
        return self.spec.arrow_schema()

    def select_list(self) -> sql.Composable:
        exprs: list[sql.Composable] = [id_read_expr(self.key)]
        exprs += [sql.Identifier(v.name) for v in self.vectors]
        if self.document is not None:
            exprs.append(read_expr(self.document, MetadataType.STRING))
        exprs += [read_expr(col, m.type) for col, m in self.metadata]
        return sql.SQL(", ").join(exprs)

    def to_batch(self, rows: Sequence[tuple[Any, ...]]) -> pa.RecordBatch:
        """Rows of ``select_list`` as one record batch of the spec's schema."""
        width = 1 + len(self.vectors) + (self.document is not None) + len(self.metadata)
        columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [()] * width
        schema = self.schema
        arrays: list[pa.Array] = [pa.array(columns[0], schema.field(0).type)]
        at = 1
        for col in self.vectors:
            values = columns[at]
            at += 1
            vf = self.spec.vector(col.name)
            if col.typname == "sparsevec":
                arrays.append(decode_sparse(values))
            else:
                try:
                    arrays.append(decode_vectors(values, vf.dim, half=col.typname == "halfvec"))
                except DataError as exc:
                    row = exc.row or 0
                    raise DataError(
                        exc.reason, row=row, record_id=columns[0][row], field=col.name
                    ) from exc
        if self.document is not None:
            arrays.append(pa.array(columns[at], pa.string()))
            at += 1
        for _, m in self.metadata:
            values = columns[at]
            at += 1
            if m.type is MetadataType.TIMESTAMP:
                arrays.append(pa.array(values, pa.int64()).cast(UTC_MICROS))
            else:
                arrays.append(pa.array(values, m.type.arrow()))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    # -- queries ------------------------------------------------------------------------
    def page_sql(self, *, after: bool, lo: bool, hi: bool) -> sql.Composed:
        """Up to ``limit`` rows of the partition after the cursor, in key order."""
        key = sql.Identifier(self.key.name)
        where: list[sql.Composable] = []
        if after:
            where.append(sql.SQL("{} > %(after)s").format(key))
        if lo:
            where.append(sql.SQL("{} >= %(lo)s").format(key))
        if hi:
            where.append(sql.SQL("{} < %(hi)s").format(key))
        clause = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
        return sql.SQL("SELECT {} FROM {}{} ORDER BY {} LIMIT %(limit)s").format(
            self.select_list(), self.table, clause, key
        )

    def scan(
        self,
        conn: psycopg.Connection[Any],
        partition: Partition,
        cursor: str | None,
        batch_size: int,
        adbc_conninfo: str | None = None,
    ) -> Iterator[ScanBatch]:
        """Pages of the partition after ``cursor``; each batch's cursor is its last key.

        The next page is fetched on a helper thread while this one is converted, so the
        server works while the client decodes. ``conn`` must not be used by anyone else.
        With ``adbc_conninfo`` the pages are read through ADBC (``adbc_read``) when every
        column suits it.
        """
        lo = partition.bounds.get("lo")
        hi = partition.bounds.get("hi")
        start = json.loads(cursor) if cursor is not None else None
        adbc = self._adbc(conn, adbc_conninfo)

        def page(after: Any) -> Page:
            query = self.page_sql(after=after is not None, lo=lo is not None, hi=hi is not None)
            params = {"after": after, "lo": lo, "hi": hi, "limit": batch_size}
            if adbc is not None:
                table = adbc.fetch(query, params)
                last = table.column(0)[-1].as_py() if table.num_rows else None
                return table.num_rows, last, lambda: adbc.to_batch(table)
            with conn.cursor(binary=True) as cur:
                cur.execute(query, params)
                rows = cur.fetchall()
            return len(rows), rows[-1][0] if rows else None, lambda: self.to_batch(rows)

        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgvector-scan") as pool:
                pending: Future[Page] | None = pool.submit(page, start)
                try:
                    while pending is not None:
                        count, last, build = pending.result()
                        pending = None
                        if not count:
                            return
                        if count == batch_size:
                            pending = pool.submit(page, last)
                        yield ScanBatch(batch=build(), cursor=json.dumps(last))
                finally:
                    if pending is not None:
                        pending.cancel()
                        with contextlib.suppress(Exception):
                            pending.result()  # never leave a query running on the connection
        finally:
            if adbc is not None:
                adbc.close()

    def _adbc(self, conn: psycopg.Connection[Any], conninfo: str | None) -> AdbcPages | None:
        """An ADBC page reader when asked for (``conninfo``) and every column suits it."""
        if conninfo is None:
            return None
        from vecmigrate.connectors.pgvector.adbc_read import AdbcPages, usable

        if not usable(self):
            return None
        return AdbcPages(self, conn, conninfo)

    def fetch(self, conn: psycopg.Connection[Any], ids: Sequence[Any]) -> pa.RecordBatch:
        query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s)").format(
            self.select_list(), self.table, sql.Identifier(self.key.name)
        )
        with conn.cursor(binary=True) as cur:
            cur.execute(query, (list(ids),))
            return self.to_batch(cur.fetchall())
