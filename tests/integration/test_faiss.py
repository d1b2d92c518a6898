"""FAISS connector against the real library: indexes made by FAISS itself, HNSW and IVF
layouts, the sidecar's crash safety, and errors that name what is wrong."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.faiss.sidecar import Sidecar
from vecmigrate.errors import NotFoundError, SchemaMismatch, TerminalError, Unsupported
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import (
    ID,
    CollectionSpec,
    MetadataField,
    MetadataType,
    Metric,
    VectorField,
)

faiss = pytest.importorskip("faiss")

DIM = 16


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)


def _read_all(uri: str, hint: int = 3, batch: int = 333) -> pa.Table:
    with connect(uri) as conn:
        batches = [sb.batch for p in conn.partitions(hint) for sb in conn.scan(p, None, batch)]
    return pa.Table.from_batches(batches)


def _bits(m: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(m, dtype=np.float32).view(np.uint32)


# -- indexes written by FAISS itself (no sidecar) -----------------------------------------
def test_plain_flat_index_reads_with_positions_as_ids(tmp_path: Path) -> None:
    x = _vectors(2500)
    index = faiss.IndexFlatL2(DIM)
    index.add(x)
    path = tmp_path / "plain.index"
    faiss.write_index(index, str(path))
    uri = f"faiss://{path}"
    with connect(uri) as conn:
        spec = conn.describe()
        assert spec.id_type == "int64"
        assert spec.vector().dim == DIM
        assert spec.vector().metric is Metric.L2
        assert spec.metadata == [] and not spec.has_document
        assert spec.indexes[0].kind == "flat"
        assert spec.system["faiss"]["sidecar"] is False
        assert conn.count() == 2500
        got = conn.fetch([7, 3, 99_999])
        assert got.column(ID).to_pylist() == [7, 3]
        assert np.array_equal(_bits(vectors_numpy(got.column("vector"))), _bits(x[[7, 3]]))
        assert conn.query(x[[42]], 3).ids[0][0] == 42
    table = _read_all(uri)
    assert table.column(ID).to_pylist() == list(range(2500))
    assert np.array_equal(_bits(vectors_numpy(table.column("vector"))), _bits(x))


def test_idmap2_index_with_own_labels_is_read_in_label_order(tmp_path: Path) -> None:
    x = _vectors(1200, seed=1)
    labels = np.random.default_rng(2).permutation(10_000)[:1200].astype(np.int64) * 7
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    index.add_with_ids(x, labels)
    path = tmp_path / "idmap.index"
    faiss.write_index(index, str(path))
    uri = f"faiss://{path}"
    with connect(uri) as conn:
        spec = conn.describe()
        assert spec.vector().metric is Metric.IP
        assert spec.indexes[0].params.get("wrapper") == "IndexIDMap2"
        # resume from a cursor in the middle: exactly the remaining labels follow
        part = conn.partitions(1)[0]
        it = conn.scan(part, None, 500)
        first = next(it)
        it.close()  # type: ignore[attr-defined]
        rest = [sb.batch for sb in conn.scan(part, first.cursor, 500)]
    got = pa.Table.from_batches([first.batch, *rest])
    order = np.argsort(labels)
    assert got.column(ID).to_pylist() == labels[order].tolist()
    assert np.array_equal(_bits(vectors_numpy(got.column("vector"))), _bits(x[order]))


def test_ivf_with_own_ids_and_no_direct_map_is_readable(tmp_path: Path) -> None:
    x = _vectors(3000, seed=3)
    index = faiss.index_factory(DIM, "IVF8,Flat")
    index.train(x)
    index.add_with_ids(x, np.arange(3000, dtype=np.int64) * 3 + 1)
    index.nprobe = 3
    path = tmp_path / "ivf.index"
    faiss.write_index(index, str(path))
    uri = f"faiss://{path}"
    with connect(uri) as conn:
        spec = conn.describe()
        assert spec.indexes[0].kind == "ivf_flat"
        assert spec.indexes[0].params["nlist"] == 8
        assert spec.indexes[0].params["nprobe"] == 3
        assert spec.system["faiss"]["exact"] is True
        assert conn.count() == 3000
    table = _read_all(uri).sort_by(ID)
    assert table.column(ID).to_pylist() == (np.arange(3000) * 3 + 1).tolist()
    assert np.array_equal(_bits(vectors_numpy(table.column("vector"))), _bits(x))


def test_lossy_index_is_described_as_inexact(tmp_path: Path) -> None:
    x = _vectors(2000, seed=4)
    index = faiss.index_factory(DIM, "IVF4,PQ4x4")
    index.train(x)
    index.add(x)
    path = tmp_path / "pq.index"
    faiss.write_index(index, str(path))
    with connect(f"faiss://{path}") as conn:
        spec = conn.describe()
        assert spec.indexes[0].kind == "ivf_pq"
        assert (spec.indexes[0].params["m"], spec.indexes[0].params["nbits"]) == (4, 4)
        assert spec.system["faiss"]["exact"] is False


def test_foreign_index_is_not_written(tmp_path: Path) -> None:
    index = faiss.IndexFlatL2(DIM)
    index.add(_vectors(10))
    path = tmp_path / "foreign.index"
    faiss.write_index(index, str(path))
    spec = make_spec(dim=DIM, metric=Metric.L2, id_type="int64", documents=False, metadata=())
    with connect(f"faiss://{path}") as conn:
        with pytest.raises(Unsupported, match="not written by vecmigrate"):
            conn.upsert(make_batch(spec, 0, 5))
        with pytest.raises(Unsupported, match="not written by vecmigrate"):
            conn.create(spec, IfExists.REUSE)
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 5))
        conn.finalize(spec)
        assert conn.count() == 5


# -- layouts written here -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "kind", "params"),
    [
        ("HNSW16&ef_construction=80&ef_search=24", "hnsw", {"M": 16, "efConstruction": 80}),
        ("IVF16,Flat&nprobe=4", "ivf_flat", {"nlist": 16, "nprobe": 4}),
    ],
)
def test_hnsw_and_ivf_describe_params_and_round_trip(
    tmp_path: Path, option: str, kind: str, params: dict[str, int]
) -> None:
    uri = f"faiss://{tmp_path}/layout.index?index={option}"
    spec = make_spec(dim=DIM, metric=Metric.COSINE)
    batches = [make_batch(spec, s, 1000) for s in range(0, 4000, 1000)]
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        for b in batches:
            conn.upsert(b)
        conn.finalize(spec)
    with connect(uri) as conn:
        got_spec = conn.describe()
        index = got_spec.indexes[0]
        assert index.kind == kind
        assert index.metric is Metric.COSINE
        assert params.items() <= index.params.items()
        assert got_spec.system["faiss"]["index_metric"] == "ip"
        assert got_spec.system["faiss"]["normalized"] is True
        # replacing existing ids rebuilds HNSW / IVF; the count and values follow
        changed = make_batch(spec, 0, 10, seed=5)
        conn.upsert(changed)
        conn.delete(["doc-0003999"])
        conn.finalize(spec)
        assert conn.count() == 3999
        fetched = conn.fetch(changed.column(ID).to_pylist())
        want = vectors_numpy(changed.column("vector"))
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(vectors_numpy(fetched.column("vector")), want, atol=1e-6)
        top = conn.query(vectors_numpy(batches[2].column("vector"))[:5], 1)
        assert [r[0] for r in top.ids] == batches[2].column(ID).to_pylist()[:5]
    table = _read_all(uri)
    assert table.num_rows == 3999
    assert len(set(table.column(ID).to_pylist())) == 3999


def test_ivf_with_too_few_vectors_to_train_says_so(tmp_path: Path) -> None:
    spec = make_spec(dim=DIM)
    with connect(f"faiss://{tmp_path}/small.index?index=IVF64,Flat") as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 10))
        with pytest.raises(Exception, match="nlist=64 needs at least 64 vectors"):
            conn.finalize(spec)


def test_l2_vectors_and_every_metadata_type_round_trip_exactly(tmp_path: Path) -> None:
    spec = CollectionSpec(
        name="typed",
        id_type="int64",
        vectors=[VectorField(name="emb", dim=DIM, metric=Metric.L2)],
        metadata=[
            MetadataField(name="when", type=MetadataType.TIMESTAMP),
            MetadataField(name="payload", type=MetadataType.JSON),
            MetadataField(name="tags", type=MetadataType.LIST_STRING),
            MetadataField(name="nums", type=MetadataType.LIST_FLOAT64),
        ],
        has_document=True,
    )
    x = _vectors(3)
    batch = pa.RecordBatch.from_pydict(
        {
            ID: pa.array([10**15, -5, 0], pa.int64()),
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM),
            "document": ["ünïcode 🚀", None, ""],
            "when": pa.array([1_700_000_000_123_456, None, 0], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "payload": ['{"a": [1, 2.5]}', None, "null"],
            "tags": [["x", "y"], [], None],
            "nums": [[0.1, 1e-300], None, [float("inf")]],
        }
    ).cast(spec.arrow_schema())
    uri = f"faiss://{tmp_path}/typed.index"
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(batch)
        conn.finalize(spec)
    with connect(uri) as conn:
        got_spec = conn.describe()
        assert [(m.name, m.type) for m in got_spec.metadata] == [
            (m.name, m.type) for m in spec.metadata
        ]
        got = pa.Table.from_batches([conn.fetch([10**15, -5, 0])])
    assert got.equals(pa.Table.from_batches([batch]))


# -- failures and crash safety --------------------------------------------------------------
def test_missing_file_is_not_found_and_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.index"
    with connect(f"faiss://{path}") as conn:
        assert not conn.exists()
        with pytest.raises(NotFoundError, match=re.escape(str(path))):
            conn.count()
        with pytest.raises(NotFoundError, match=re.escape(str(path))):
            conn.describe()


def test_unreadable_file_is_terminal(tmp_path: Path) -> None:
    path = tmp_path / "garbage.index"
    path.write_bytes(b"not an index")
    with connect(f"faiss://{path}") as conn, pytest.raises(TerminalError, match=r"garbage\.index"):
        conn.describe()


def test_dimension_mismatch_on_reuse(tmp_path: Path) -> None:
    uri = f"faiss://{tmp_path}/dims.index"
    with connect(uri) as conn:
        conn.create(make_spec(dim=DIM), IfExists.REPLACE)
        with pytest.raises(SchemaMismatch, match="dim 16"):
            conn.create(make_spec(dim=8), IfExists.REUSE)
        with pytest.raises(SchemaMismatch, match="already exists"):
            conn.create(make_spec(dim=DIM), IfExists.FAIL)


def test_unfinalized_writes_survive_in_the_journal(tmp_path: Path) -> None:
    uri = f"faiss://{tmp_path}/journal.index"
    spec = make_spec(dim=DIM)
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 300))
        conn.finalize(spec)
        conn.upsert(make_batch(spec, 300, 200))
        conn.delete(["doc-0000000"])
        # closed without finalize: the process "crashed"
    assert faiss.read_index(str(tmp_path / "journal.index")).ntotal == 300
    with connect(uri) as conn:
        assert conn.count() == 499
        conn.finalize(spec)
    assert faiss.read_index(str(tmp_path / "journal.index")).ntotal == 499
    assert Sidecar(tmp_path / "journal.index.vecmigrate").journal_entries() == []


def test_crash_between_index_rename_and_commit_is_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"faiss://{tmp_path}/crash.index"
    spec = make_spec(dim=DIM)
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 400))
        conn.finalize(spec)
        changed = make_batch(spec, 100, 400, seed=9)  # 100..499: 300 replaced, 100 new
        conn.upsert(changed)
        conn.delete(["doc-0000001"])

        def crash(self: Sidecar, commit: object) -> None:
            raise OSError(5, "simulated crash before commit.json")

        monkeypatch.setattr(Sidecar, "write_commit", crash)
        with pytest.raises(TerminalError, match="simulated crash"):
            conn.finalize(spec)
    monkeypatch.undo()
    changed = make_batch(spec, 100, 400, seed=9)
    with connect(uri) as conn:
        assert conn.count() == 499
        got = pa.Table.from_batches([conn.fetch(["doc-0000150", "doc-0000001"])])
        assert got.column(ID).to_pylist() == ["doc-0000150"]
        want = vectors_numpy(changed.column("vector"))[50:51]
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(vectors_numpy(got.column("vector")), want, atol=1e-6)
        conn.finalize(spec)
    assert len(_read_all(uri)) == 499


def test_second_writer_is_refused(tmp_path: Path) -> None:
    uri = f"faiss://{tmp_path}/locked.index"
    spec = make_spec(dim=DIM)
    with connect(uri) as first, connect(uri) as second:
        first.create(spec, IfExists.REPLACE)
        with pytest.raises(TerminalError, match="another process is writing"):
            second.upsert(make_batch(spec, 0, 3))


# -- the copy engine, killed and resumed ----------------------------------------------------
def _ledger_rows(state: Path) -> int:
    files = list(state.glob("copy-*.sqlite"))
    if not files:
        return 0
    try:
        with sqlite3.connect(f"file:{files[0]}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COALESCE(SUM(rows), 0) FROM partitions").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_copy_into_faiss_killed_and_resumed_loses_nothing(tmp_path: Path) -> None:
    pytest.importorskip("sqlite_vec")
    n = 60_000
    spec = make_spec(dim=DIM)
    source = f"sqlitevec://{tmp_path}/src.db?table=items"
    batches = [make_batch(spec, s, 5000) for s in range(0, n, 5000)]
    with connect(source) as conn:
        conn.create(spec, IfExists.REPLACE)
        for b in batches:
            conn.upsert(b)
    target = f"faiss://{tmp_path}/dst.index"
    state = tmp_path / "state"
    cmd = [
        sys.executable,
        "-m",
        "vecmigrate",
        "copy",
        source,
        target,
        "--batch-size",
        "1000",
        "--state-dir",
        str(state),
        "--quiet",
        "--json",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if _ledger_rows(state) >= 20_000:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.01)
    finally:
        proc.wait(60)
    assert killed, "the copy finished before it could be killed"
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = _read_all(target, hint=4, batch=7000).sort_by(ID)
    want = pa.Table.from_batches(batches).sort_by(ID)
    assert got.column(ID).to_pylist() == want.column(ID).to_pylist()
    g, w = vectors_numpy(got.column("vector")), vectors_numpy(want.column("vector"))
    np.testing.assert_allclose(g, w / np.linalg.norm(w, axis=1, keepdims=True), atol=1e-6)
    for m in ("document", "category", "rank", "score", "active"):
        assert got.column(m).to_pylist() == want.column(m).to_pylist(), m
