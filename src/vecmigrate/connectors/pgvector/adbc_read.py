"""Keyset pages read through ADBC's PostgreSQL driver: a binary COPY parsed into Arrow in C++.

The same query as ``ReadPlan.page_sql`` (its values quoted by psycopg), but the rows never
become Python objects: the driver fills Arrow arrays with the GIL released, about half the
client CPU per row of psycopg's tuples (200k x 768 here: 4.5 vs 8.9 us a row), which on two
cores goes to the servers. pgvector's ``vector``/``halfvec`` arrive as opaque binary values and
are decoded column-wise with numpy. Used when ``adbc-driver-postgresql`` is installed and no
column is a ``sparsevec`` (``?reader=psycopg`` turns it off).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import errors as pgerr

from vecmigrate.connectors.pgvector.codec import decode_vectors, vectors_from_binary
from vecmigrate.connectors.pgvector.read import UTC_MICROS, ReadPlan
from vecmigrate.errors import DataError
from vecmigrate.spec import MetadataType

_U8 = np.dtype(np.uint8)


def available() -> bool:
    return importlib.util.find_spec("adbc_driver_postgresql") is not None


def usable(plan: ReadPlan) -> bool:
    """Whether every column of ``plan`` reads the same through ADBC (no sparsevec)."""
    return all(c.typname in ("vector", "halfvec") for c in plan.vectors)


class AdbcPages:
    """Pages of one scan through one ADBC connection (the psycopg one quotes the values)."""

    def __init__(self, plan: ReadPlan, conn: psycopg.Connection[Any], conninfo: str) -> None:
        from adbc_driver_postgresql import dbapi

        self.plan = plan
        self.quoting = psycopg.ClientCursor(conn)
        with _as_psycopg_errors():
            self._adbc = dbapi.connect(conninfo)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._adbc.close()

    def fetch(self, query: Any, params: dict[str, Any]) -> pa.Table:
        text = self.quoting.mogrify(query, params)
        with _as_psycopg_errors(), self._adbc.cursor() as cur:
            cur.execute(text)
            table: pa.Table = cur.fetch_arrow_table()
        return table

    def to_batch(self, table: pa.Table) -> pa.RecordBatch:
        """A page's table as one record batch of the spec's schema."""
        plan, schema = self.plan, self.plan.schema
        columns = [_plain(table.column(i)) for i in range(table.num_columns)]
        arrays: list[pa.Array] = [columns[0].cast(schema.field(0).type)]
        at = 1
        for col in plan.vectors:
            vf = plan.spec.vector(col.name)
            arrays.append(
                _vectors(
                    columns[at],
                    vf.dim,
                    half=col.typname == "halfvec",
                    ids=columns[0],
                    field=col.name,
                )
            )
            at += 1
        if plan.document is not None:
            arrays.append(columns[at].cast(pa.string()))
            at += 1
        for _, m in plan.metadata:
            values = columns[at]
            at += 1
            if m.type is MetadataType.TIMESTAMP:
                arrays.append(values.cast(pa.int64()).cast(UTC_MICROS))
            else:
                arrays.append(values.cast(m.type.arrow()))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _plain(column: pa.ChunkedArray) -> pa.Array:
    array = column.combine_chunks()
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    return array


def _vectors(values: pa.Array, dim: int, *, half: bool, ids: pa.Array, field: str) -> pa.Array:
    """pgvector binary values (4-byte header, big-endian floats) -> fixed_size_list<float32>."""
    width = 2 if half else 4
    size = 4 + width * dim
    binary = values.cast(pa.large_binary())
    n = len(binary)
    if n == 0:
        return pa.array([], pa.list_(pa.float32(), dim))
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)[
        binary.offset : binary.offset + n + 1
    ]
    lengths = np.diff(offsets)
    if binary.null_count or (lengths != size).any():  # nulls, or a wrong dimension
        try:
            return decode_vectors(binary.to_pylist(), dim, half=half)
        except DataError as exc:
            row = exc.row or 0
            raise DataError(exc.reason, row=row, record_id=ids[row].as_py(), field=field) from exc
    start = int(offsets[0])
    raw = np.frombuffer(binary.buffers()[2], dtype=_U8)[start : start + n * size]
    return vectors_from_binary(raw, n, dim, half=half)


@contextlib.contextmanager
def _as_psycopg_errors() -> Iterator[None]:
    """ADBC's DB-API errors as the psycopg error of their SQLSTATE, so ``translate`` maps
    them as it maps psycopg's (a lost connection is transient, a missing table not found)."""
    from adbc_driver_manager import Error as AdbcError

    try:
        yield
    except AdbcError as exc:
        state = getattr(exc, "sqlstate", None)
        cls: type[psycopg.Error] = psycopg.OperationalError
        if state:
            with contextlib.suppress(KeyError):
                cls = pgerr.lookup(state)
        raise cls(str(exc)) from exc
