"""sqlite-vec connector against the real extension: tables made by hand with vec0 SQL, the
metadata/auxiliary placement, identifiers that look like SQL, and errors that name things."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.errors import DataError, NotFoundError, SchemaMismatch, TerminalError
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import (
    ID,
    CollectionSpec,
    MetadataField,
    MetadataType,
    Metric,
    VectorField,
)

sqlite_vec = pytest.importorskip("sqlite_vec")

DIM = 8


def _raw(path: Path) -> Any:
    """A connection made with the library directly, as someone else's program would."""
    try:
        from pysqlite3 import dbapi2 as dbapi
    except ImportError:
        dbapi = sqlite3
    db = dbapi.connect(str(path), isolation_level=None)
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.enable_load_extension(False)
    return db


def _read_all(uri: str, batch: int = 333) -> pa.Table:
    with connect(uri) as conn:
        batches = [sb.batch for p in conn.partitions(3) for sb in conn.scan(p, None, batch)]
    return pa.Table.from_batches(batches)


def _bits(m: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(m, dtype=np.float32).view(np.uint32)


def test_table_made_with_vec0_sql_is_described_and_read(tmp_path: Path) -> None:
    path = tmp_path / "movies.db"
    db = _raw(path)
    db.execute(
        "create virtual table vec_movies using vec0("
        "movie_id integer primary key, synopsis_embedding float[8] distance_metric=cosine, "
        "genre text, num_reviews int, mean_rating float, contains_violence boolean, "
        "year integer partition key, +title text, +poster blob, chunk_size=64)"
    )
    x = np.random.default_rng(0).standard_normal((300, DIM), dtype=np.float32)
    rows = [
        (i * 10, x[i].tobytes(), ["scifi", "drama"][i % 2], i, i / 7, i % 3 == 0,
         2000 + i % 4, f"Movie {i} ü", b"\x89PNG")
        for i in range(300)
    ]  # fmt: skip
    db.execute("begin")
    db.executemany(
        "insert into vec_movies(movie_id, synopsis_embedding, genre, num_reviews, mean_rating, "
        "contains_violence, year, title, poster) values (?,?,?,?,?,?,?,?,?)",
        rows,
    )
    db.execute("commit")
    db.close()
    uri = f"sqlitevec://{path}?table=vec_movies"
    with connect(uri) as conn:
        spec = conn.describe()
        assert spec.id_type == "int64"
        assert spec.vector().name == "synopsis_embedding"
        assert (spec.vector().dim, spec.vector().metric) == (DIM, Metric.COSINE)
        types = {m.name: (m.type, m.nullable) for m in spec.metadata}
        assert types == {
            "genre": (MetadataType.STRING, False),
            "num_reviews": (MetadataType.INT64, False),
            "mean_rating": (MetadataType.FLOAT64, False),
            "contains_violence": (MetadataType.BOOL, False),
            "year": (MetadataType.INT64, False),
            "title": (MetadataType.STRING, True),
        }
        system = spec.system["sqlitevec"]
        assert system["partition_keys"] == ["year"]
        assert system["unsupported_columns"] == ["poster (blob auxiliary)"]
        assert spec.indexes[0].params == {"chunk_size": 64}
        assert conn.count() == 300
        got = conn.fetch([20, 30, 31])
        assert got.column(ID).to_pylist() == [20, 30]
        assert conn.query(x[[5]], 2).ids[0][0] == 50
    table = _read_all(uri).sort_by(ID)
    assert table.column(ID).to_pylist() == [i * 10 for i in range(300)]
    assert np.array_equal(_bits(vectors_numpy(table.column("synopsis_embedding"))), _bits(x))
    assert table.column("contains_violence").to_pylist() == [i % 3 == 0 for i in range(300)]
    assert table.column("mean_rating").to_pylist() == [i / 7 for i in range(300)]
    assert table.column("title").to_pylist()[:2] == ["Movie 0 ü", "Movie 1 ü"]


def test_table_without_primary_key_uses_rowids(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    db = _raw(path)
    db.execute("create virtual table chunks using vec0(embedding float[8], +contents text)")
    x = np.random.default_rng(1).standard_normal((50, DIM), dtype=np.float32)
    db.executemany(
        "insert into chunks(rowid, embedding, contents) values (?,?,?)",
        [(i + 100, x[i].tobytes(), f"chunk {i}") for i in range(50)],
    )
    db.close()
    uri = f"sqlitevec://{path}?table=chunks"
    with connect(uri) as conn:
        spec = conn.describe()
        assert spec.id_type == "int64"
        assert spec.id_mapping == "vec0 rowid"
        assert spec.vector().metric is Metric.L2
    table = _read_all(uri, batch=7)
    assert table.column(ID).to_pylist() == list(range(100, 150))
    assert table.column("contents").to_pylist() == [f"chunk {i}" for i in range(50)]


def test_missing_file_and_missing_table_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with connect(f"sqlitevec://{missing}?table=t") as conn:
        assert not conn.exists()
        with pytest.raises(NotFoundError, match=re.escape(str(missing))):
            conn.count()
    assert not missing.exists()  # reading did not create it
    path = tmp_path / "some.db"
    with connect(f"sqlitevec://{path}?table=present") as conn:
        conn.create(make_spec(dim=DIM), IfExists.REPLACE)
    with connect(f"sqlitevec://{path}?table=absent") as conn:
        assert not conn.exists()
        with pytest.raises(NotFoundError, match="'absent'"):
            conn.describe()


def test_dimension_and_metric_mismatch_on_reuse(tmp_path: Path) -> None:
    uri = f"sqlitevec://{tmp_path}/dims.db?table=items"
    with connect(uri) as conn:
        conn.create(make_spec(dim=DIM), IfExists.REPLACE)
        with pytest.raises(SchemaMismatch, match="dim 8"):
            conn.create(make_spec(dim=4), IfExists.REUSE)
        with pytest.raises(SchemaMismatch, match="dim 8"):
            conn.create(make_spec(dim=DIM, metric=Metric.L2), IfExists.REUSE)
        with pytest.raises(SchemaMismatch, match="already exists"):
            conn.create(make_spec(dim=DIM), IfExists.FAIL)
        conn.create(make_spec(dim=DIM), IfExists.REUSE)


def test_inner_product_is_refused(tmp_path: Path) -> None:
    with (
        connect(f"sqlitevec://{tmp_path}/ip.db?table=items") as conn,
        pytest.raises(SchemaMismatch, match="no 'ip' distance"),
    ):
        conn.create(make_spec(dim=DIM, metric=Metric.IP), IfExists.REPLACE)


@pytest.mark.parametrize("table", ['items"; DROP TABLE keep; --', "my table", "select"])
def test_sql_like_table_names_are_quoted(tmp_path: Path, table: str) -> None:
    path = tmp_path / "names.db"
    db = _raw(path)
    db.execute("create table keep (x integer)")
    db.close()
    from urllib.parse import quote

    uri = f"sqlitevec://{path}?table={quote(table, safe='')}"
    spec = make_spec(dim=DIM)
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 120))
        conn.delete(["doc-0000003"])
        assert conn.count() == 119
        assert conn.describe().system["sqlitevec"]["table"] == table
    assert _read_all(uri).num_rows == 119
    db = _raw(path)
    names = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
    db.close()
    assert {"keep", table} <= names


def test_null_metadata_is_refused_in_columns_and_kept_in_auxiliary(tmp_path: Path) -> None:
    spec = make_spec(dim=DIM)
    batch = make_batch(spec, 0, 5)
    nulls = batch.set_column(
        batch.schema.get_field_index("rank"),
        batch.schema.field("rank"),
        pa.array([1, 2, None, 4, 5], pa.int64()),
    )
    with connect(f"sqlitevec://{tmp_path}/n.db?table=strict&metadata=columns") as conn:
        conn.create(spec, IfExists.REPLACE)
        with pytest.raises(DataError, match="cannot hold NULL") as info:
            conn.upsert(nulls)
        assert (info.value.row, info.value.record_id, info.value.field) == (
            2,
            "doc-0000002",
            "rank",
        )
        assert conn.count() == 0
    uri = f"sqlitevec://{tmp_path}/n.db?table=lenient"  # metadata=auto: nullable -> auxiliary
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(nulls)
        columns = conn.describe().system["sqlitevec"]["columns"]
        assert {c["field"]: c["role"] for c in columns}["rank"] == "auxiliary"
    got = _read_all(uri)
    assert got.column("rank").to_pylist() == [1, 2, None, 4, 5]
    strict = spec.model_copy(deep=True)
    for m in strict.metadata:
        m.nullable = False
    with connect(f"sqlitevec://{tmp_path}/n.db?table=auto_strict") as conn:
        conn.create(strict, IfExists.REPLACE)
        columns = conn.describe().system["sqlitevec"]["columns"]
        assert {c["role"] for c in columns if c["field"] in ("rank", "category")} == {"metadata"}


def test_every_type_and_awkward_field_names_round_trip(tmp_path: Path) -> None:
    spec = CollectionSpec(
        name="typed",
        id_type="string",
        vectors=[
            VectorField(name="text vec", dim=DIM, metric=Metric.COSINE),
            VectorField(name="image", dim=3, metric=Metric.L2),
        ],
        metadata=[
            MetadataField(name="user name", type=MetadataType.STRING),
            MetadataField(name="distance", type=MetadataType.FLOAT64),
            MetadataField(name="_flag", type=MetadataType.BOOL),
            MetadataField(name="when", type=MetadataType.TIMESTAMP),
            MetadataField(name="payload", type=MetadataType.JSON),
            MetadataField(name="tags", type=MetadataType.LIST_STRING),
            MetadataField(name="nums", type=MetadataType.LIST_INT64),
        ],
        has_document=True,
    )
    rng = np.random.default_rng(3)
    batch = pa.RecordBatch.from_pydict(
        {
            ID: ["a", "b\"'; --", "ü"],
            "text vec": pa.FixedSizeListArray.from_arrays(
                pa.array(rng.standard_normal(3 * DIM, dtype=np.float32)), DIM
            ),
            "image": pa.FixedSizeListArray.from_arrays(
                pa.array(rng.standard_normal(9, dtype=np.float32)), 3
            ),
            "document": ["doc 🚀", None, ""],
            "user name": ["x", None, "z"],
            "distance": [0.1, None, -0.0],
            "_flag": [True, None, False],
            "when": pa.array([1_700_000_000_123_456, None, 0], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "payload": ['{"a": 1}', None, "[]"],
            "tags": [["x", "y"], [], None],
            "nums": [[1, -(2**62)], None, []],
        }
    ).cast(spec.arrow_schema())
    uri = f"sqlitevec://{tmp_path}/typed.db?table=typed&metadata=auxiliary"
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(batch)
        conn.upsert(batch)
        got_spec = conn.describe()
        assert [v.name for v in got_spec.vectors] == ["text vec", "image"]
        assert [(m.name, m.type) for m in got_spec.metadata] == [
            (m.name, m.type) for m in spec.metadata
        ]
        top = conn.query(vectors_numpy(batch.column("image"))[[1]], 1, vector_field="image")
        assert top.ids == [["b\"'; --"]]
    got = _read_all(uri)
    want = pa.Table.from_batches([batch])
    for name in got.column_names:
        assert got.column(name).equals(want.column(name)), name
    assert str(got.column("distance")[2].as_py()) == "-0.0"


def test_nan_metadata_is_refused_not_turned_into_null(tmp_path: Path) -> None:
    spec = make_spec(dim=DIM)
    batch = make_batch(spec, 0, 4)
    nan = batch.set_column(
        batch.schema.get_field_index("score"),
        batch.schema.field("score"),
        pa.array([1.0, 3.0, float("nan"), 2.0]),
    )
    for mode in ("columns", "auxiliary"):
        with connect(f"sqlitevec://{tmp_path}/nan.db?table=t_{mode}&metadata={mode}") as conn:
            conn.create(spec, IfExists.REPLACE)
            with pytest.raises(DataError, match="cannot store NaN") as info:
                conn.upsert(nan)
            assert (info.value.row, info.value.field) == (2, "score")


def test_resume_on_a_changed_table_is_refused(tmp_path: Path) -> None:
    uri = f"sqlitevec://{tmp_path}/c.db?table=items"
    spec = make_spec(dim=DIM)
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 100))
        part = conn.partitions(1)[0]
        it = conn.scan(part, None, 40)
        first = next(it)
        it.close()  # type: ignore[attr-defined]
        assert [len(sb.batch) for sb in conn.scan(part, first.cursor, 40)] == [40, 20]
        conn.delete(first.batch.column(ID).to_pylist()[-1:])
        with pytest.raises(TerminalError, match="changed since the scan began"):
            list(conn.scan(part, first.cursor, 40))


def _ledger_rows(state: Path) -> int:
    files = list(state.glob("copy-*.sqlite"))
    if not files:
        return 0
    try:
        with sqlite3.connect(f"file:{files[0]}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COALESCE(SUM(rows), 0) FROM partitions").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_copy_from_faiss_killed_and_resumed_loses_nothing(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    n = 40_000
    spec = make_spec(dim=DIM, metric=Metric.L2)
    source = f"faiss://{tmp_path}/src.index"
    batches = [make_batch(spec, s, 5000) for s in range(0, n, 5000)]
    with connect(source) as conn:
        conn.create(spec, IfExists.REPLACE)
        for b in batches:
            conn.upsert(b)
        conn.finalize(spec)
    target = f"sqlitevec://{tmp_path}/dst.db?table=items"
    state = tmp_path / "state"
    cmd = [sys.executable, "-m", "vecmigrate", "copy", source, target, "--batch-size", "500"]
    cmd += ["--workers", "2", "--state-dir", str(state), "--quiet", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if _ledger_rows(state) >= 10_000:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.01)
    finally:
        proc.wait(60)
    assert killed, "the copy finished before it could be killed"
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = _read_all(target, batch=7000).sort_by(ID)
    assert got.equals(pa.Table.from_batches(batches).sort_by(ID))
