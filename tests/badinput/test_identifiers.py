"""Names that look like SQL are quoted, never interpolated: a copy into them drops nothing.

A table named like an injection is created, written and read back as an ordinary name, and a
canary table next to it survives. Field names with quotes, spaces and unicode go through too.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pytest

from tests.datagen import make_batch
from vecmigrate.connectors import IfExists, connect
from vecmigrate.engine.copy import CopyOptions, copy
from vecmigrate.spec import ID, CollectionSpec, MetadataField, MetadataType, VectorField

HOSTILE_TABLE = "items\"; DROP TABLE canary; --'"
HOSTILE_FIELDS = ['say "hi"', "a'b", "naïve 名前", "x; DROP TABLE canary"]


def _spec() -> CollectionSpec:
    return CollectionSpec(
        name=HOSTILE_TABLE,
        vectors=[VectorField(name="vector", dim=4)],
        metadata=[MetadataField(name=n, type=MetadataType.STRING) for n in HOSTILE_FIELDS],
    )


def _batch(spec: CollectionSpec, n: int = 50) -> pa.RecordBatch:
    base = make_batch(CollectionSpec(vectors=spec.vectors), 0, n)
    cols = {ID: base.column(ID), "vector": base.column("vector")}
    for name in HOSTILE_FIELDS:
        cols[name] = pa.array([f"{name} {i}" for i in range(n)])
    return pa.RecordBatch.from_pydict(cols).cast(spec.arrow_schema())


def _source(tmp_path: Path) -> str:
    spec = _spec()
    uri = f"memory://hostile-{tmp_path.name}"
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(_batch(spec))
        conn.finalize(spec)
    return uri


def _read(uri: str) -> pa.Table:
    with connect(uri) as conn:
        spec = conn.describe()
        batches = [sb.batch for p in conn.partitions(2) for sb in conn.scan(p, None, 1_000)]
    return pa.Table.from_batches(batches, spec.arrow_schema())


def _assert_copied(target: str) -> None:
    got = _read(target).sort_by(ID)
    want = pa.Table.from_batches([_batch(_spec())]).sort_by(ID)
    assert got.num_rows == want.num_rows
    for name in HOSTILE_FIELDS:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is None, reason="psycopg missing")
def test_pgvector_quotes_hostile_names(postgres_engine: Any, tmp_path: Path) -> None:
    import psycopg

    pg = postgres_engine
    kwargs = {"host": pg.host, "port": pg.port, "user": pg.user, "dbname": pg.database}
    with psycopg.connect(**kwargs, password=pg.password, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS canary (x int)")
    target = pg.uri(HOSTILE_TABLE).split("?")[0] + f"?table={quote(HOSTILE_TABLE)}"
    copy(_source(tmp_path), target, CopyOptions(state_dir=tmp_path / "state"))
    _assert_copied(target)
    with psycopg.connect(**kwargs, password=pg.password, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('canary')").fetchone() == ("canary",)
        conn.execute(psycopg.sql.SQL("DROP TABLE {}").format(psycopg.sql.Identifier(HOSTILE_TABLE)))


@pytest.mark.skipif(importlib.util.find_spec("sqlite_vec") is None, reason="sqlite-vec missing")
def test_sqlitevec_quotes_hostile_names(tmp_path: Path) -> None:
    db = tmp_path / "vec.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE canary (x int)")
    target = f"sqlitevec://{db}?table={quote(HOSTILE_TABLE)}&metadata=columns"
    copy(_source(tmp_path), target, CopyOptions(state_dir=tmp_path / "state"))
    _assert_copied(target)
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "canary" in tables


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_datasets_keep_hostile_field_names(tmp_path: Path, fmt: str) -> None:
    target = f"{fmt}://{tmp_path / 'ds'}"
    copy(_source(tmp_path), target, CopyOptions(state_dir=tmp_path / "state"))
    _assert_copied(target)
