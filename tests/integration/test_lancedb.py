"""LanceDB connector against the real engine: what the shared conformance suite does not cover."""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.crashes import CrashingSource
from tests.datagen import make_batch, make_spec, make_table
from vecmigrate import dedup
from vecmigrate.connectors import Connector, IfExists, WriteToken, connect
from vecmigrate.connectors.lancedb import connector as lancedb_connector
from vecmigrate.connectors.memory.connector import MemoryStore
from vecmigrate.engine.copy import CopyOptions, copy
from vecmigrate.errors import ConfigError, DataError, NotFoundError, SchemaMismatch
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import (
    ID,
    SPARSE_TYPE,
    CollectionSpec,
    IndexConfig,
    MetadataField,
    MetadataType,
    Metric,
    VectorField,
)

lancedb = pytest.importorskip("lancedb")


def _uri(tmp_path: Path, table: str = "items", **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"table": table, **options}.items())
    return f"lancedb://{tmp_path}/db?{query}"


def _filled(uri: str, spec: CollectionSpec, batches: list[pa.RecordBatch]) -> Connector:
    conn = connect(uri)
    conn.create(spec, IfExists.REPLACE)
    for b in batches:
        conn.upsert(b)
    return conn


def _fresh_run(tmp_path: Path, spec: CollectionSpec) -> Connector:
    """A connector to a new, empty table with run "run-1" begun: a fresh run, which appends."""
    conn = connect(_uri(tmp_path))
    conn.create(spec, IfExists.REPLACE)
    conn.begin("run-1", resume=False)
    return conn


def _assert_holds(conn: Connector, batch: pa.RecordBatch) -> None:
    """``conn`` holds ``batch``'s ids once each with its vectors (make_batch ids sort in order)."""
    ids = batch.column("id").to_pylist()
    got = pa.Table.from_batches([conn.fetch(ids)]).sort_by("id")
    assert got.column("id").to_pylist() == sorted(ids)
    assert np.array_equal(
        vectors_numpy(got.column("vector")), vectors_numpy(batch.column("vector"))
    )


def _scan_ids(conn: Connector, hint: int = 4, batch: int = 333) -> list[Any]:
    return [
        i
        for p in conn.partitions(hint)
        for sb in conn.scan(p, None, batch)
        for i in sb.batch.column("id").to_pylist()
    ]


def test_scan_reads_the_version_pinned_when_planned(tmp_path: Path) -> None:
    spec = make_spec(dim=8)
    uri = _uri(tmp_path)
    conn = _filled(uri, spec, [make_batch(spec, s, 500) for s in range(0, 3000, 500)])
    parts = conn.partitions(3)
    versions = {p.bounds["version"] for p in parts}
    assert len(versions) == 1
    first = next(conn.scan(parts[0], None, 400))
    # the table changes after planning: rows added, deleted and replaced
    conn.upsert(make_batch(spec, 3000, 700))
    conn.delete([f"doc-{i:07d}" for i in range(0, 3000, 7)])
    conn.upsert(make_batch(spec, 100, 50, seed=5))
    assert conn.count() == len((set(range(3700)) - set(range(0, 3000, 7))) | set(range(100, 150)))
    # a new process resumes from the cursor and sees the planned version only
    with connect(uri) as again:
        ids = first.batch.column("id").to_pylist()
        ids += [
            i
            for sb in again.scan(parts[0], first.cursor, 400)
            for i in sb.batch.column("id").to_pylist()
        ]
        for p in parts[1:]:
            ids += [i for sb in again.scan(p, None, 400) for i in sb.batch.column("id").to_pylist()]
    assert ids == [f"doc-{i:07d}" for i in range(3000)]


def test_partitions_cover_every_row_once_across_fragments_and_deletions(tmp_path: Path) -> None:
    spec = make_spec(dim=4, id_type="int64")
    conn = _filled(_uri(tmp_path), spec, [make_batch(spec, s, 317) for s in range(0, 5072, 317)])
    conn.delete(list(range(1, 5073, 11)))
    want = sorted(set(range(1, 5073)) - set(range(1, 5073, 11)))
    for hint, batch in [(1, 10_000), (4, 97), (7, 1000)]:
        got = _scan_ids(conn, hint, batch)
        assert got == want, (hint, batch)
    # resuming every partition from every cursor gives exactly the rest
    for p in conn.partitions(3):
        whole = list(conn.scan(p, None, 250))
        for k, sb in enumerate(whole[:-1]):
            rest = [
                i for s in conn.scan(p, sb.cursor, 250) for i in s.batch.column("id").to_pylist()
            ]
            assert rest == [i for s in whole[k + 1 :] for i in s.batch.column("id").to_pylist()]


def test_explicit_version_option(tmp_path: Path) -> None:
    spec = make_spec(dim=4)
    conn = _filled(_uri(tmp_path), spec, [make_batch(spec, 0, 100)])
    version = lancedb.connect(str(tmp_path / "db")).open_table("items").version
    conn.upsert(make_batch(spec, 100, 100))
    with connect(_uri(tmp_path, version=str(version))) as old:
        assert len(_scan_ids(old)) == 100
        assert {p.bounds["version"] for p in old.partitions(2)} == {version}
    with connect(_uri(tmp_path, version="99")) as missing, pytest.raises(NotFoundError, match="99"):
        missing.partitions(2)


def test_missing_table_and_folder_are_not_found_and_not_created(tmp_path: Path) -> None:
    spec = make_spec(dim=4)
    _filled(_uri(tmp_path), spec, [make_batch(spec, 0, 10)]).close()
    with connect(_uri(tmp_path, table="nope")) as conn:
        assert not conn.exists()
        with pytest.raises(NotFoundError, match="'nope'"):
            conn.count()
        with pytest.raises(NotFoundError, match="'nope'"):
            conn.describe()
    missing = tmp_path / "no" / "such"
    with connect(f"lancedb://{missing}?table=t") as conn:
        assert not conn.exists()
        with pytest.raises(NotFoundError, match="does not exist"):
            conn.partitions(2)
    assert not missing.exists()


def test_uri_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="table"):
        connect("lancedb:///data/db")
    with pytest.raises(ConfigError, match="tabel"):
        connect("lancedb:///data/db?table=t&tabel=x")
    with pytest.raises(ConfigError, match="search"):
        connect("lancedb:///data/db?table=t&search=fast")
    with pytest.raises(ConfigError, match="metadata_cache_mb"):
        connect("lancedb:///data/db?table=t&metadata_cache_mb=0")


def _made_by_lancedb(root: Path, *, with_index: bool) -> None:
    """A table created with LanceDB's own API, the way its users make them."""
    db = lancedb.connect(str(root))
    rng = np.random.default_rng(3)
    n = 300
    table = pa.table(
        {
            "pk": pa.array(np.arange(n) * 10, pa.int64()),
            "embedding": fixed_size_vectors(rng.standard_normal((n, 16), dtype=np.float32)),
            "half": pa.FixedSizeListArray.from_arrays(
                pa.array(rng.standard_normal(n * 4).astype(np.float16)), 4
            ),
            "title": pa.array([f"title {i}" for i in range(n)]),
            "price": pa.array(rng.random(n) * 100),
            "count": pa.array(np.arange(n, dtype=np.int32)),
            "tags": pa.array([["a", "b"][: i % 3] for i in range(n)], pa.list_(pa.string())),
            "extra": pa.array(
                [{"k": i, "s": "x"} for i in range(n)],
                pa.struct([("k", pa.int64()), ("s", pa.string())]),
            ),
            "when": pa.array(
                [dt.datetime(2024, 1, 1) + dt.timedelta(hours=i) for i in range(n)],
                pa.timestamp("ns"),
            ),
            "flag": pa.array([None if i % 4 else i % 8 == 0 for i in range(n)], pa.bool_()),
            "blob": pa.array([b"\x00\x01"] * n, pa.binary()),
        }
    )
    made = db.create_table("theirs", data=table)
    if with_index:
        from lancedb.index import IvfFlat

        made.create_index("embedding", config=IvfFlat(distance_type="cosine", num_partitions=2))


def test_describe_and_read_a_table_made_by_lancedb(tmp_path: Path) -> None:
    _made_by_lancedb(tmp_path / "db", with_index=True)
    with connect(_uri(tmp_path, table="theirs", id_column="pk")) as conn:
        spec = conn.describe()
        assert spec.id_type == "int64"
        vectors = {v.name: v for v in spec.vectors}
        assert vectors["embedding"].dim == 16
        assert vectors["embedding"].metric is Metric.COSINE  # from the vector index
        assert vectors["half"].metric is Metric.L2  # no index: LanceDB's default
        types = {m.name: m.type for m in spec.metadata}
        assert types == {
            "title": MetadataType.STRING,
            "price": MetadataType.FLOAT64,
            "count": MetadataType.INT64,
            "tags": MetadataType.LIST_STRING,
            "extra": MetadataType.JSON,
            "when": MetadataType.TIMESTAMP,
            "flag": MetadataType.BOOL,
        }
        assert spec.system["lancedb"]["skipped_columns"] == ["blob"]
        assert [(ix.field, ix.kind, ix.metric) for ix in spec.indexes] == [
            ("embedding", "ivf_flat", Metric.COSINE)
        ]
        rows = pa.Table.from_batches(
            [sb.batch for p in conn.partitions(2) for sb in conn.scan(p, None, 128)]
        )
        assert rows.schema == spec.arrow_schema()
        assert rows.column("id").to_pylist() == list(range(0, 3000, 10))
        assert json.loads(rows.column("extra")[5].as_py()) == {"k": 5, "s": "x"}
        assert rows.column("when")[1].as_py() == dt.datetime(2024, 1, 1, 1, tzinfo=dt.UTC)
        assert rows.column("flag").to_pylist()[:5] == [True, None, None, None, False]
        assert vectors_numpy(rows.column("half")).dtype == np.float32
        assert conn.fetch([0, 20, 99_999]).column("id").to_pylist() == [0, 20]


def test_table_made_elsewhere_without_id_column_says_how_to_name_it(tmp_path: Path) -> None:
    _made_by_lancedb(tmp_path / "db", with_index=False)
    with connect(_uri(tmp_path, table="theirs")) as conn, pytest.raises(ConfigError, match="pk"):
        conn.describe()


def test_reuse_checks_compatibility(tmp_path: Path) -> None:
    spec = make_spec(dim=8)
    conn = _filled(_uri(tmp_path), spec, [make_batch(spec, 0, 10)])
    conn.create(spec, IfExists.REUSE)  # same spec: fine
    other = make_spec(dim=8, metric=Metric.L2)
    with pytest.raises(SchemaMismatch, match="metric"):
        conn.create(other, IfExists.REUSE)
    retyped = spec.model_copy(deep=True)
    retyped.metadata[0].type = MetadataType.INT64
    with pytest.raises(SchemaMismatch, match="category"):
        conn.create(retyped, IfExists.REUSE)
    with pytest.raises(SchemaMismatch, match="already exists"):
        conn.create(spec, IfExists.FAIL)
    conn.create(other, IfExists.REPLACE)
    assert conn.count() == 0
    assert conn.describe().vector().metric is Metric.L2


def test_reuse_of_a_table_made_elsewhere_does_not_insist_on_a_metric(tmp_path: Path) -> None:
    _made_by_lancedb(tmp_path / "db", with_index=False)
    with connect(_uri(tmp_path, table="theirs", id_column="pk")) as conn:
        spec = conn.describe()
        spec.vector("embedding").metric = Metric.IP
        conn.create(spec, IfExists.REUSE)
        spec.vector("embedding").dim = 3
        with pytest.raises(SchemaMismatch, match="dim 16"):
            conn.create(spec, IfExists.REUSE)


def test_ids_that_need_quoting(tmp_path: Path) -> None:
    spec = make_spec(dim=4, metadata=())
    ids = ["it's", "a\\b", 'q"q', "x' OR '1'='1", "ünï 🚀", "%_", "back`tick", "semi;colon"]
    batch = make_batch(spec, 0, len(ids)).set_column(0, "id", pa.array(ids))
    conn = _filled(_uri(tmp_path), spec, [batch])
    assert sorted(conn.fetch(ids).column("id").to_pylist()) == sorted(ids)
    assert conn.fetch(["x"]).num_rows == 0
    conn.delete(["x' OR '1'='1", "it's"])
    assert sorted(conn.fetch(ids).column("id").to_pylist()) == sorted(
        set(ids) - {"x' OR '1'='1", "it's"}
    )
    assert conn.count() == len(ids) - 2


def test_json_sparse_and_named_vectors_round_trip(tmp_path: Path) -> None:
    spec = CollectionSpec(
        name="multi",
        id_type="int64",
        vectors=[
            VectorField(name="text", dim=6, metric=Metric.IP),
            VectorField(name="image", dim=3, metric=Metric.L2),
            VectorField(name="sparse", dim=0, sparse=True, metric=Metric.IP),
        ],
        metadata=[
            MetadataField(name="payload", type=MetadataType.JSON),
            MetadataField(name="at", type=MetadataType.TIMESTAMP),
            MetadataField(name="scores", type=MetadataType.LIST_FLOAT64),
        ],
    )
    rng = np.random.default_rng(1)
    n = 50
    batch = pa.RecordBatch.from_pydict(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "text": fixed_size_vectors(rng.standard_normal((n, 6), dtype=np.float32)),
            "image": fixed_size_vectors(rng.standard_normal((n, 3), dtype=np.float32)),
            "sparse": pa.array(
                [{"indices": [i, i + 7], "values": [0.5, -1.0]} for i in range(n)], SPARSE_TYPE
            ),
            "payload": pa.array([json.dumps({"i": i, "nested": [i]}) for i in range(n)]),
            "at": pa.array([dt.datetime(2020, 1, 1, tzinfo=dt.UTC)] * n, pa.timestamp("us", "UTC")),
            "scores": pa.array([[0.1, float(i)] for i in range(n)], pa.list_(pa.float64())),
        }
    ).cast(spec.arrow_schema())
    uri = _uri(tmp_path, table="multi")
    _filled(uri, spec, [batch]).close()
    with connect(uri) as conn:
        got = conn.describe()
        assert got.vectors == spec.vectors
        assert got.metadata == spec.metadata
        rows = pa.Table.from_batches(
            [sb.batch for p in conn.partitions(1) for sb in conn.scan(p, None, 64)]
        )
        assert rows.equals(pa.Table.from_batches([batch]))
        image = vectors_numpy(batch.column("image"))
        result = conn.query(image[[3, 9]], 2, vector_field="image")
        assert [r[0] for r in result.ids] == [3, 9]
        assert result.scores[0][0] == pytest.approx(0.0, abs=1e-6)


def test_query_returns_k_per_query_in_distance_order(tmp_path: Path) -> None:
    spec = make_spec(dim=16, metric=Metric.COSINE, metadata=())
    batch = make_batch(spec, 0, 400)
    conn = _filled(_uri(tmp_path), spec, [batch])
    vectors = vectors_numpy(batch.column("vector"))
    result = conn.query(vectors[:20], 7)
    assert len(result.ids) == 20
    for i, (ids, scores) in enumerate(zip(result.ids, result.scores, strict=True)):
        assert ids[0] == f"doc-{i:07d}"
        assert len(ids) == 7
        assert scores == sorted(scores)
    assert conn.query(vectors[:1], 1000).ids[0].__len__() == 400


def test_fresh_run_appends_and_resends_merge(tmp_path: Path) -> None:
    spec = make_spec(dim=8)
    conn = _fresh_run(tmp_path, spec)
    table = conn._latest()  # type: ignore[attr-defined]
    calls: list[str] = []
    add, merge = table.add, table.merge_insert
    table.add = lambda *a, **k: (calls.append("add"), add(*a, **k))[1]
    table.merge_insert = lambda *a, **k: (calls.append("merge"), merge(*a, **k))[1]
    batches = [make_batch(spec, s, 250) for s in range(0, 1000, 250)]
    for s, b in zip(range(0, 1000, 250), batches, strict=True):
        conn.upsert(b, WriteToken("run-1", 0, s))
    conn.upsert(batches[1], WriteToken("run-1", 0, 250))  # re-sent after a retry
    conn.upsert(batches[2], None)  # no token: nothing is known
    conn.upsert(batches[3], WriteToken("other-run", 0, 750))
    assert calls == ["add"] * 4 + ["merge"] * 3
    conn.finalize(spec)
    assert conn.count() == 1000
    # a resumed run merges everything
    conn.begin("run-1", resume=True)
    calls.clear()
    conn.upsert(batches[0], WriteToken("run-1", 1, 0))
    assert calls == ["merge"]
    assert conn.count() == 1000


def test_fresh_run_drops_duplicate_ids_sent_in_different_batches(tmp_path: Path) -> None:
    spec = make_spec(dim=8)
    conn = _fresh_run(tmp_path, spec)
    conn.upsert(make_batch(spec, 0, 100), WriteToken("run-1", 0, 0))
    newer = make_batch(spec, 50, 100, seed=42)  # ids 50..149, 50 of them already written
    conn.upsert(newer, WriteToken("run-1", 1, 0))
    conn.finalize(spec)
    assert conn.count() == 150
    _assert_holds(conn, newer.slice(0, 50))


def test_workers_that_join_a_fresh_run_append_and_finalize_removes_resent_rows(
    tmp_path: Path,
) -> None:
    """Ray workers write through their own connectors: they append in a fresh run, a slice
    re-sent by another worker (its first actor was lost) adds its rows a second time, and the
    driver's finalize keeps one row per id, the last written."""
    spec = make_spec(dim=8)
    driver = _fresh_run(tmp_path, spec)
    handoff = json.loads(json.dumps(driver.handoff()))  # travels to the workers as JSON
    assert handoff == {"fresh": True}
    first, second = connect(_uri(tmp_path)), connect(_uri(tmp_path))
    calls: list[str] = []
    for worker in (first, second):
        worker.join("run-1", handoff)
        table = worker._latest()  # type: ignore[attr-defined]
        add = table.add
        table.add = lambda *a, _add=add, **k: (calls.append("add"), _add(*a, **k))[1]
    first.upsert(make_batch(spec, 0, 100), WriteToken("run-1", 0, 0))
    resent = make_batch(spec, 0, 100, seed=9)  # same ids, other values: the last write wins
    second.upsert(resent, WriteToken("run-1", 0, 0))
    second.upsert(make_batch(spec, 100, 100), WriteToken("run-1", 1, 0))
    assert calls == ["add"] * 3
    assert first.count() == 300
    driver.finalize(spec)
    assert driver.count() == 200
    _assert_holds(driver, resent)
    # a resumed run hands off "not fresh": its workers merge
    driver.begin("run-1", resume=True)
    assert driver.handoff() == {"fresh": False}


@pytest.mark.parametrize("crash_after", [12, 20])
def test_a_resumed_fresh_run_still_removes_duplicate_ids(
    crashing_source: type[CrashingSource], tmp_path: Path, crash_after: int
) -> None:
    """A fresh run appends; its checkpoint keeps that, so after a crash the resumed run
    (which re-sends the batches after the last checkpoint) still leaves each id once, also an
    id the source holds in two batches (the engine checks one batch at a time)."""
    spec = make_spec(dim=8)
    table = make_table(spec, 7_000)
    ids = table.column(ID).to_pylist()
    ids[3_000] = ids[100]  # in batches 0 and 12 of 250 rows
    MemoryStore.put("src", spec, table.set_column(0, ID, pa.array(ids)))
    options = CopyOptions(state_dir=tmp_path / "state", batch_size=250, workers=1)
    crashing_source.budget = crash_after
    with pytest.raises(RuntimeError, match="simulated crash"):
        copy(f"{crashing_source.scheme}://src", _uri(tmp_path), options)
    crashing_source.budget = 10**9
    result = copy(f"{crashing_source.scheme}://src", _uri(tmp_path), options)
    assert result.resumed
    target = connect(_uri(tmp_path))
    assert target.count() == 6_999
    got = pa.Table.from_batches([target.fetch(ids)])
    assert sorted(got.column(ID).to_pylist()) == sorted(set(ids))


def test_duplicate_ids_of_a_large_table_are_found_on_disk_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past PART_ROWS rows the id check splits the ids' hashes into parts held in files
    (bounded memory); the older copies are deleted by row id in one commit per chunk, nothing
    is rewritten."""
    monkeypatch.setattr(dedup, "PART_ROWS", 100)
    monkeypatch.setattr(dedup, "FLUSH_BYTES", 256)
    monkeypatch.setattr(lancedb_connector, "DEDUP_READ_ROWS", 64)
    spec = make_spec(dim=8)
    conn = _fresh_run(tmp_path, spec)
    for start in range(0, 600, 100):
        conn.upsert(make_batch(spec, start, 100), WriteToken("run-1", 0, start))
    again = make_batch(spec, 150, 200, seed=5)  # ids 150..349 a second time, newer values
    conn.upsert(again, WriteToken("run-1", 1, 0))
    assert conn.count() == 800
    conn.finalize(spec)
    assert conn.count() == 600
    _assert_holds(conn, again)


def test_appends_from_several_threads_at_once_all_land(tmp_path: Path) -> None:
    """Appends do not wait for each other (Lance retries a commit on the newer version)."""
    spec = make_spec(dim=8)
    conn = _fresh_run(tmp_path, spec)
    batches = [make_batch(spec, s, 100) for s in range(0, 2_000, 100)]

    def write(part: int) -> None:
        for i in range(part, len(batches), 4):
            conn.upsert(batches[i], WriteToken("run-1", part, i * 100))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    conn.finalize(spec)
    assert conn.count() == 2_000
    _assert_holds(conn, pa.concat_batches(batches))


def test_failed_append_switches_to_merge(tmp_path: Path) -> None:
    """An add that committed but reported an error must not duplicate rows on retry."""
    spec = make_spec(dim=8)
    conn = _fresh_run(tmp_path, spec)
    table = conn._latest()  # type: ignore[attr-defined]
    add = table.add

    def add_then_fail(*args: Any, **kwargs: Any) -> Any:
        add(*args, **kwargs)
        raise OSError(104, "Connection reset by peer")

    table.add = add_then_fail
    batch = make_batch(spec, 0, 300)
    from vecmigrate.errors import TransientError

    with pytest.raises(TransientError):
        conn.upsert(batch, WriteToken("run-1", 0, 0))
    conn.upsert(batch, WriteToken("run-1", 0, 0))
    conn.upsert(make_batch(spec, 300, 10), WriteToken("run-1", 0, 300))
    assert conn.count() == 310


def test_duplicate_ids_in_one_batch_are_refused(tmp_path: Path) -> None:
    spec = make_spec(dim=4)
    conn = _fresh_run(tmp_path, spec)
    batch = make_batch(spec, 0, 5)
    doubled = pa.concat_batches([batch, batch.slice(2, 1)])
    with pytest.raises(DataError, match="duplicate id"):
        conn.upsert(doubled, WriteToken("run-1", 0, 0))
    with pytest.raises(DataError, match="duplicate id"):
        conn.upsert(doubled)
    assert conn.count() == 0


def test_finalize_compacts_many_small_fragments_and_keeps_old_versions(tmp_path: Path) -> None:
    spec = make_spec(dim=4)
    uri = _uri(tmp_path)
    conn = _filled(uri, spec, [make_batch(spec, s, 15) for s in range(0, 1050, 15)])
    table = lancedb.connect(str(tmp_path / "db")).open_table("items")
    before = table.stats()["fragment_stats"]["num_fragments"]
    old_version = table.version
    conn.finalize(spec)
    table.checkout_latest()
    assert before == 70
    assert table.stats()["fragment_stats"]["num_fragments"] < before
    assert conn.count() == 1050
    with connect(_uri(tmp_path, version=str(old_version))) as old:
        assert len(_scan_ids(old)) == 1050


def test_finalize_builds_the_index_the_spec_asks_for(tmp_path: Path) -> None:
    spec = make_spec(dim=16, metric=Metric.COSINE, metadata=())
    spec.indexes = [IndexConfig(field="vector", kind="hnsw", metric=Metric.COSINE, params={"M": 8})]
    batches = [make_batch(spec, s, 1000) for s in range(0, 2000, 1000)]
    with connect(_uri(tmp_path, index="always")) as conn:
        conn.create(spec, IfExists.REPLACE)
        for b in batches:
            conn.upsert(b)
        conn.finalize(spec)
        got = conn.describe()
        assert [(ix.field, ix.kind, ix.metric) for ix in got.indexes] == [
            ("vector", "ivf_hnsw_sq", Metric.COSINE)
        ]
        queries = vectors_numpy(batches[0].column("vector"))[:5]
        assert [r[0] for r in conn.query(queries, 3).ids] == [f"doc-{i:07d}" for i in range(5)]
    with connect(_uri(tmp_path, search="exact")) as exact:
        assert [r[0] for r in exact.query(queries, 3).ids] == [f"doc-{i:07d}" for i in range(5)]
    for option in ("auto", "none"):  # auto waits for 100k rows: exact search is fast below
        with connect(_uri(tmp_path, table=f"t_{option}", index=option)) as conn:
            conn.create(spec, IfExists.REPLACE)
            for b in batches:
                conn.upsert(b)
            conn.finalize(spec)
            assert conn.describe().indexes == []


def test_a_batch_read_in_many_small_queries_is_whole_and_resumes_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lancedb_connector, "READ_BYTES", 1)  # the fewest rows per query
    spec = make_spec(dim=8)
    batches = [make_batch(spec, s, 250) for s in range(0, 1000, 250)]  # four fragments
    conn = _filled(_uri(tmp_path), spec, batches)
    want = pa.Table.from_batches(batches)
    (part,) = conn.partitions(1)
    got = list(conn.scan(part, None, 300))
    assert [sb.batch.num_rows for sb in got] == [300, 300, 300, 100]
    assert [sb.cursor for sb in got] == ["300", "600", "900", "1000"]
    rows = pa.Table.from_batches([sb.batch for sb in got])
    assert rows.column("id").to_pylist() == want.column("id").to_pylist()
    assert np.array_equal(vectors_numpy(rows.column("vector")), vectors_numpy(want["vector"]))
    assert rows.drop_columns(["vector"]).equals(want.drop_columns(["vector"]))
    for cursor in ("0", "63", "64", "299", "301", "999"):
        rest = [i for sb in conn.scan(part, cursor, 300) for i in sb.batch.column("id").to_pylist()]
        assert rest == want.column("id").to_pylist()[int(cursor) :]
    assert list(conn.scan(part, "1000", 300)) == []


def test_null_vectors_keep_their_rows_across_small_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lancedb_connector, "READ_BYTES", 1)
    n = 200
    values = np.random.default_rng(5).standard_normal((n, 4), dtype=np.float32)
    null = np.zeros(n, dtype=bool)
    null[[0, 130, 199]] = True
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array(values.reshape(-1)), 4, mask=pa.array(null)
    )
    db = lancedb.connect(str(tmp_path / "db"))
    db.create_table("theirs", data=pa.table({"id": pa.array(range(n), pa.int64()), "v": vectors}))
    with connect(_uri(tmp_path, table="theirs")) as conn:
        (part,) = conn.partitions(1)
        got = pa.concat_arrays([sb.batch.column("v") for sb in conn.scan(part, None, 150)])
    assert got.is_null().to_pylist() == null.tolist()
    assert np.array_equal(vectors_numpy(got.filter(got.is_valid())), values[~null])


def test_float64_vectors_of_a_table_made_elsewhere_arrive_as_float32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lancedb_connector, "READ_BYTES", 1)
    n = 300
    values = np.random.default_rng(6).standard_normal((n, 8))
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 8)
    db = lancedb.connect(str(tmp_path / "db"))
    db.create_table("theirs", data=pa.table({"id": pa.array(range(n), pa.int64()), "v": vectors}))
    with connect(_uri(tmp_path, table="theirs")) as conn:
        (part,) = conn.partitions(1)
        batches = [sb.batch for sb in conn.scan(part, None, 128)]
    assert batches[0].schema.field("v").type == pa.list_(pa.float32(), 8)
    got = np.concatenate([vectors_numpy(b.column("v")) for b in batches])
    assert np.array_equal(got, values.astype(np.float32))
