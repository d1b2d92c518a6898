"""Idempotent writes by binary COPY.

A batch is first copied straight into the table: when none of its ids is there yet (a fresh
load) that is the whole write. When an id already exists (a batch re-sent after a crash, or an
update) the COPY fails as a whole, and the batch goes through a per-session staging table:
COPY into it, then ``INSERT ... ON CONFLICT (key) DO UPDATE`` only where something changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import errors as pgerr
from psycopg import sql

from vecmigrate.connectors.pgvector.codec import (
    COPY_HEADER,
    COPY_TRAILER,
    copy_rows,
    encode_column,
)
from vecmigrate.connectors.pgvector.describe import TableInfo
from vecmigrate.connectors.pgvector.sql import (
    NO_EQUALITY,
    VECTOR_TYPES,
    Column,
    insert_expr,
    vector_type,
)
from vecmigrate.errors import SchemaMismatch
from vecmigrate.spec import DOCUMENT, ID, CollectionSpec, MetadataType

COPY_CHUNK = 1 << 20
ENCODE_ROWS = 2048  # rows encoded at a time
FIXED_WIDTH = frozenset({"int8", "float8", "bool", "timestamptz", "vector", "halfvec"})


@dataclass(frozen=True)
class WriteColumn:
    arrow_name: str  # column of the record batch
    stage_name: str  # c0, c1, ... in the staging table
    pg_type: str  # natural type the batch is encoded as (CREATE_TYPE or a vector type)
    stage_type: sql.Composable
    target: Column  # the table's column
    dim: int = 0

    @property
    def direct(self) -> bool:
        """Whether the encoded bytes are valid for the target column as they are."""
        t = self.target.typname
        if self.pg_type in VECTOR_TYPES:
            return t == self.pg_type
        if self.pg_type == "int8":
            return t == "int8"
        return t == self.pg_type or (self.pg_type == "text" and t == "varchar")


MERGE_RUN = 32  # batches merged directly after a plain COPY met existing ids


@dataclass(frozen=True)
class WritePlan:
    """How the batches of one spec go into one table."""

    table: sql.Identifier
    stage: sql.Identifier
    key: WriteColumn
    columns: list[WriteColumn]  # key first
    # batches left to merge before a plain COPY is tried again (after one hit existing ids)
    _merge_for: list[int] = field(default_factory=lambda: [0], compare=False, repr=False)

    @classmethod
    def build(
        cls, info: TableInfo, key: Column, spec: CollectionSpec, document_column: str
    ) -> WritePlan:
        cols: list[WriteColumn] = []

        def add(arrow_name: str, pg_type: str, target: Column, dim: int = 0) -> None:
            stage = vector_type(pg_type, dim) if pg_type in VECTOR_TYPES else sql.SQL(pg_type)
            cols.append(WriteColumn(arrow_name, f"c{len(cols)}", pg_type, stage, target, dim))

        add(ID, "int8" if spec.id_type == "int64" else "text", key)
        for vf in spec.vectors:
            target = _target(info, vf.name)
            kind = target.typname if target.typname in VECTOR_TYPES else "vector"
            add(vf.name, kind, target, target.dim or vf.dim)
        if spec.has_document:
            add(DOCUMENT, "text", _target(info, document_column))
        for m in spec.metadata:
            add(m.name, _natural(m.type), _target(info, m.name))
        return cls(
            table=sql.Identifier(info.schema, info.table),
            stage=sql.Identifier(f"vecmigrate_stage_{info.oid}"),
            key=cols[0],
            columns=cols,
        )

    @property
    def direct(self) -> bool:
        return all(c.direct for c in self.columns)

    # -- statements (composed once per plan) ----------------------------------------------
    @cached_property
    def stage_ddl(self) -> sql.Composed:
        defs = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.stage_name), c.stage_type)
            for c in self.columns
        )
        return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
            self.stage, defs
        )

    @cached_property
    def merge_sql(self) -> sql.Composed:
        targets = sql.SQL(", ").join(sql.Identifier(c.target.name) for c in self.columns)
        values = sql.SQL(", ").join(insert_expr(c.stage_name, c.target) for c in self.columns)
        rest = [c for c in self.columns if c is not self.key]
        key = sql.Identifier(self.key.target.name)
        if not rest:
            action: sql.Composable = sql.SQL("DO NOTHING")
        else:
            sets = sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(
                    sql.Identifier(c.target.name), sql.Identifier(c.target.name)
                )
                for c in rest
            )
            action = sql.SQL("DO UPDATE SET {}").format(sets)
            if not any(c.target.typname in NO_EQUALITY for c in rest):
                old = sql.SQL(", ").join(sql.Identifier("t", c.target.name) for c in rest)
                new = sql.SQL(", ").join(
                    sql.SQL("EXCLUDED.{}").format(sql.Identifier(c.target.name)) for c in rest
                )
                action = sql.SQL("{} WHERE ROW({}) IS DISTINCT FROM ROW({})").format(
                    action, old, new
                )
        return sql.SQL(
            "INSERT INTO {} AS t ({}) SELECT {} FROM {} AS s ON CONFLICT ({}) {}"
        ).format(self.table, targets, values, self.stage, key, action)

    def order(self, batch: pa.RecordBatch) -> tuple[list[WriteColumn], int]:
        """COPY column order: columns of fixed width over the whole batch first, and how many."""
        fixed = [
            c
            for c in self.columns
            if c.pg_type in FIXED_WIDTH and batch.column(c.arrow_name).null_count == 0
        ]
        rest = [c for c in self.columns if c not in fixed]
        return fixed + rest, len(fixed)

    def encode(
        self, batch: pa.RecordBatch, order: list[WriteColumn], head_count: int
    ) -> Iterator[memoryview]:
        """The batch's COPY tuples, encoded slice by slice (bounded extra memory)."""
        for start in range(0, batch.num_rows, ENCODE_ROWS):
            part = batch.slice(start, ENCODE_ROWS)
            fields = [encode_column(part.column(c.arrow_name), c.pg_type, c.dim) for c in order]
            yield from copy_rows(fields, part.num_rows, head_count)

    def write(self, conn: psycopg.Connection[Any], batch: pa.RecordBatch) -> None:
        """Insert or replace the batch's rows by key (``conn`` is in autocommit mode)."""
        order, head_count = self.order(batch)
        if self.direct and self._merge_for[0] == 0:
            try:
                _copy(
                    conn,
                    self.table,
                    [sql.Identifier(c.target.name) for c in order],
                    self.encode(batch, order, head_count),
                )
                return
            except pgerr.UniqueViolation:
                # some ids exist already: merge this batch, and the next few without first
                # paying a failed COPY each (updates tend to come in runs)
                self._merge_for[0] = MERGE_RUN
        self._merge_for[0] = max(0, self._merge_for[0] - 1)
        with conn.transaction():
            conn.execute(self.stage_ddl)
            _copy(
                conn,
                self.stage,
                [sql.Identifier(c.stage_name) for c in order],
                self.encode(batch, order, head_count),
            )
            conn.execute(self.merge_sql)


def _copy(
    conn: psycopg.Connection[Any],
    table: sql.Identifier,
    columns: list[sql.Identifier],
    rows: Iterator[memoryview],
) -> None:
    """One binary COPY FROM STDIN of the encoded rows, sent in chunks of about 1 MiB."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(columns)
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        chunk: list[Any] = [COPY_HEADER]
        size = len(COPY_HEADER)
        for piece in rows:
            if len(piece) >= COPY_CHUNK:
                copy.write(b"".join(chunk))
                chunk, size = [], 0
                for at in range(0, len(piece), COPY_CHUNK):
                    copy.write(piece[at : at + COPY_CHUNK])
                continue
            chunk.append(piece)
            size += len(piece)
            if size >= COPY_CHUNK:
                copy.write(b"".join(chunk))
                chunk, size = [], 0
        chunk.append(COPY_TRAILER)
        copy.write(b"".join(chunk))


def _natural(mtype: MetadataType) -> str:
    return {
        MetadataType.STRING: "text",
        MetadataType.INT64: "int8",
        MetadataType.FLOAT64: "float8",
        MetadataType.BOOL: "bool",
        MetadataType.TIMESTAMP: "timestamptz",
        MetadataType.JSON: "jsonb",
        MetadataType.LIST_STRING: "_text",
        MetadataType.LIST_INT64: "_int8",
        MetadataType.LIST_FLOAT64: "_float8",
    }[mtype]


def _target(info: TableInfo, name: str) -> Column:
    col = info.column(name)
    if col is None:
        raise SchemaMismatch(f"pgvector: table {info.qualified!r} has no column {name!r}")
    return col
