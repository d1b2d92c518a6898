"""What the PostgreSQL framework layouts share: connections, metadata typing in SQL, staged writes.

Metadata keys and their shapes are counted by the server (``jsonb_each`` over the collection);
rows are read in pages with each known key extracted as its JSON text, and written through a
binary COPY into a temporary table merged into the framework's table in one transaction.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from vecmigrate.connectors.pgvector.codec import (
    COPY_HEADER,
    COPY_TRAILER,
    copy_rows,
    decode_vectors,
    encode_column,
    encode_vectors,
    vector_text,
)
from vecmigrate.connectors.pgvector.config import PgvectorConfig
from vecmigrate.connectors.pgvector.errors import translated
from vecmigrate.connectors.pgvector.sql import OPERATOR, metric_of_opclass
from vecmigrate.errors import ConfigError, DataError, TerminalError
from vecmigrate.layouts.base import LayoutConnector, system_uri
from vecmigrate.layouts.metadata import key_name
from vecmigrate.spec import MetadataField, Metric
from vecmigrate.uri import ConnectorURI

PASSED_OPTIONS = {"schema", "connect_timeout", "sslmode"}

_NUMBER_KIND = (
    "CASE WHEN {v}::text ~ '^-?[0-9]+$' THEN CASE WHEN {v}::text::numeric "
    "BETWEEN -9223372036854775808 AND 9223372036854775807 THEN 'int' ELSE 'bigint' END "
    "ELSE 'float' END"
)


def _kind_sql(v: str) -> str:
    """The shape names of :func:`vecmigrate.layouts.metadata.kind_of`, computed in SQL."""
    scalar = (
        f"CASE jsonb_typeof({v}) WHEN 'number' THEN {_NUMBER_KIND.format(v=v)} "
        f"WHEN 'boolean' THEN 'bool' WHEN 'array' THEN 'array' ELSE jsonb_typeof({v}) END"
    )
    return (
        f"CASE jsonb_typeof({v}) WHEN 'null' THEN NULL WHEN 'array' THEN 'array:' || "
        f"COALESCE((SELECT string_agg(k, ',' ORDER BY k) FROM (SELECT DISTINCT "
        f"{scalar.replace(v, 'x')} AS k FROM jsonb_array_elements({v}) x) s), '') "
        f"ELSE {scalar} END"
    )


KINDS_SQL = _kind_sql("e.value")


class PostgresLayout(LayoutConnector):
    """A framework's tables in one PostgreSQL database (psycopg 3, autocommit)."""

    system: ClassVar[str] = "pgvector"
    own_options: ClassVar[set[str]] = set()
    physical_table: ClassVar[str] = ""

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        table = self.table_name(uri)
        self.pg = PgvectorConfig.from_uri(
            system_uri(uri, own=self.own_options, passed=PASSED_OPTIONS, table=table)
        )
        self.schema_name = self.pg.schema or "public"
        self._local = threading.local()
        self._opened: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def table_name(self, uri: ConnectorURI) -> str:
        return self.physical_table

    # -- connections --------------------------------------------------------------------
    def translated(self, what: str) -> AbstractContextManager[None]:
        return translated(self.where, what, secret=self.pg.password)

    def connect_new(self) -> psycopg.Connection[Any]:
        with self.translated("connect"):
            conn = psycopg.connect(**self.pg.connect_kwargs(), autocommit=True)
        with self._lock:
            self._opened.append(conn)
        return conn

    def conn(self) -> psycopg.Connection[Any]:
        """This thread's connection, opened on first use and after a failure."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self.connect_new()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()

    def ident(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.schema_name, table)

    def table_exists(self, table: str) -> bool:
        with self.translated("look up the table"):
            row = (
                self.conn()
                .execute(
                    "SELECT to_regclass(%s) IS NOT NULL",
                    (sql.Identifier(self.schema_name, table).as_string(self.conn()),),
                )
                .fetchone()
            )
        return bool(row and row[0])

    def ensure_extension(self, conn: psycopg.Connection[Any]) -> None:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            return
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise TerminalError(
                f"{self.where}: the vector extension is not installed in database "
                f"{self.pg.database!r} and could not be created ({exc})"
            ) from exc

    # -- describing ---------------------------------------------------------------------
    def kinds(self, md_expr: sql.Composable, source: sql.Composable) -> dict[str, set[str]]:
        """Each metadata key's value shapes, counted by the server over ``source`` rows."""
        query = sql.SQL(
            "WITH md AS (SELECT {md} AS m FROM {src}) "
            "SELECT e.key, " + KINDS_SQL + " FROM md, jsonb_each(md.m) e GROUP BY 1, 2"
        ).format(md=md_expr, src=source)
        kinds: dict[str, set[str]] = {}
        with self.translated("read the metadata keys"):
            for key, kind in self.conn().execute(query).fetchall():
                entry = kinds.setdefault(key, set())
                if kind is not None:
                    entry.add(kind)
        return kinds

    def index_metric(self, table: str, column: str) -> tuple[Metric | None, dict[str, Any]]:
        """The metric and options of an HNSW/IVFFlat index on ``column``, if there is one."""
        query = """
            SELECT opc.opcname, am.amname, ic.reloptions
            FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
            JOIN pg_am am ON am.oid = ic.relam
            JOIN pg_opclass opc ON opc.oid = i.indclass[0]
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = to_regclass(%s) AND a.attname = %s
              AND am.amname IN ('hnsw', 'ivfflat')
            LIMIT 1
        """
        name = self.ident(table).as_string(self.conn())
        with self.translated("look up vector indexes"):
            row = self.conn().execute(query, (name, column)).fetchone()
        if row is None:
            return None, {}
        options = {}
        for item in row[2] or []:
            k, _, v = item.partition("=")
            options[k] = int(v) if v.isdigit() else v
        return metric_of_opclass(row[0]), {"kind": row[1], **options}

    # -- reading ------------------------------------------------------------------------
    @staticmethod
    def extract_list(md: sql.Composable, fields: Sequence[MetadataField]) -> list[sql.Composable]:
        """One select-list item per metadata field: the key's value as JSON text."""
        return [
            sql.SQL("({} -> {})::text").format(md, sql.Literal(key_name(f.name))) for f in fields
        ]

    @staticmethod
    def metadata_dicts(
        rows: Sequence[tuple[Any, ...]], start: int, fields: Sequence[MetadataField]
    ) -> list[dict[str, Any]]:
        """Metadata dicts from the JSON-text columns ``start...`` of ``rows``."""
        out: list[dict[str, Any]] = [{} for _ in rows]
        for i, f in enumerate(fields):
            key = key_name(f.name)
            for d, row in zip(out, rows, strict=True):
                text = row[start + i]
                if text is not None and text != "null":
                    d[key] = json.loads(text)
        return out

    @staticmethod
    def vectors(values: Sequence[bytes | None], dim: int) -> np.ndarray:
        arr = decode_vectors(values, dim)
        return np.asarray(arr.flatten().to_numpy(zero_copy_only=False)).reshape(len(values), dim)

    def paged(
        self,
        first: sql.Composed,
        following: sql.Composed,
        params: dict[str, Any],
        cursor: Any,
        batch_size: int,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Keyset pages: ``first`` (from the start) and ``following`` (after %(after)s) take
        %(limit)s; the first column of each row is the key the pages follow."""
        conn = self.connect_new()  # its own: a scan runs while the engine writes elsewhere
        try:
            after = cursor
            while True:
                query = first if after is None else following
                with self.translated("scan"), conn.cursor(binary=True) as cur:
                    cur.execute(query, {**params, "after": after, "limit": batch_size})
                    rows = cur.fetchall()
                if not rows:
                    return
                yield rows
                if len(rows) < batch_size:
                    return
                after = rows[-1][0]
        finally:
            conn.close()

    def knn(
        self, query: sql.Composed, params: dict[str, Any], vectors: np.ndarray, k: int
    ) -> tuple[list[list[Any]], list[list[float]]]:
        """Run ``query`` (taking %(q)s and %(k)s, returning id and distance) per vector."""
        ids: list[list[Any]] = []
        scores: list[list[float]] = []
        with self.translated("kNN query"):
            conn = self.conn()
            for q in np.atleast_2d(np.asarray(vectors, dtype=np.float32)):
                rows = conn.execute(query, {**params, "q": vector_text(q), "k": int(k)}).fetchall()
                ids.append([r[0] for r in rows])
                scores.append([float(r[1]) for r in rows])
        return ids, scores

    # -- writing ------------------------------------------------------------------------
    def stage(
        self,
        conn: psycopg.Connection[Any],
        vectors: np.ndarray,
        texts: dict[str, Sequence[str | None]],
    ) -> None:
        """A temporary table ``stage`` (dropped at commit) holding the rows, by binary COPY.

        Call inside a transaction. Columns: ``embedding`` then ``texts``' keys, all text.
        """
        names = list(texts)
        columns = sql.SQL(", ").join(
            [sql.SQL("embedding vector")]
            + [sql.SQL("{} text").format(sql.Identifier(n)) for n in names]
        )
        conn.execute(sql.SQL("CREATE TEMP TABLE stage ({}) ON COMMIT DROP").format(columns))
        n = len(vectors)
        fields = [encode_vectors(np.ascontiguousarray(vectors, dtype=np.float32))]
        fields += [encode_column(pa.array(list(texts[k]), pa.string()), "text") for k in names]
        target = sql.SQL("COPY stage ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in ["embedding", *names])
        )
        with conn.cursor().copy(target) as copy:
            copy.write(COPY_HEADER)
            for piece in copy_rows(fields, n, head_count=1):
                copy.write(piece)
            copy.write(COPY_TRAILER)

    def distance_sql(self, metric: Metric) -> sql.Composable:
        return sql.SQL("embedding {} %(q)s::vector").format(sql.SQL(OPERATOR[metric]))


def json_texts(dicts: Sequence[dict[str, Any] | None]) -> list[str | None]:
    return [None if d is None else json.dumps(d, ensure_ascii=False) for d in dicts]


def check_text(values: Sequence[str | None], ids: Sequence[str], what: str) -> None:
    """PostgreSQL text cannot hold NUL characters: name the record instead of failing late."""
    for row, v in enumerate(values):
        if v is not None and "\x00" in v:
            raise DataError(f"{what} contains a NUL character", row=row, record_id=ids[row])


def metric_option(value: str | None) -> Metric | None:
    if value is None:
        return None
    try:
        return Metric.parse(value)
    except ConfigError as exc:
        raise ConfigError(f"metric={value!r}: {exc}") from exc
