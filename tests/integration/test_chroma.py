"""Chroma connector against the real engine (local folder and ``chroma run`` server)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.datagen import make_batch, make_spec
from tests.engines import ChromaServer, free_port
from vecmigrate.connectors import Connector, IfExists, connect
from vecmigrate.errors import (
    ConfigError,
    DataError,
    NotFoundError,
    SchemaMismatch,
    TerminalError,
    TransientError,
)
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType, Metric, VectorField
from vecmigrate.uri import ConnectorURI

chromadb = pytest.importorskip("chromadb")
from chromadb.config import Settings  # noqa: E402

from vecmigrate.connectors.chroma.config import ChromaConfig  # noqa: E402


def _uri(tmp_path: Path, collection: str = "items") -> str:
    return f"chroma://{tmp_path}/db?collection={collection}"


def _client(tmp_path: Path) -> Any:
    return chromadb.PersistentClient(
        path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False)
    )


def _rows(conn: Connector, hint: int = 2, batch: int = 64) -> pa.Table:
    return pa.Table.from_batches(
        [sb.batch for p in conn.partitions(hint) for sb in conn.scan(p, None, batch)],
        conn.describe().arrow_schema(),
    )


def test_collection_made_with_chromadb(tmp_path: Path) -> None:
    client = _client(tmp_path)
    coll = client.create_collection("theirs", embedding_function=None)  # l2 by default
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 6)).astype(np.float32)
    metadatas: list[dict[str, Any] | None] = []
    for i in range(40):
        m: dict[str, Any] = {"title": f"t{i}", "year": 2000 + i, "mixed": i if i % 2 else "x"}
        if i % 3 == 0:
            m["score"] = i + 0.5 if i % 2 else i  # ints and floats under one key
        if i % 5 == 0:
            m["tags"] = ["a", "b"]
        if i == 39:
            m["late"] = True  # a key that only the last record has
        metadatas.append(m if i % 7 else None)
    coll.add(
        ids=[f"r{i}" for i in range(40)],
        embeddings=vectors,
        metadatas=metadatas,  # type: ignore[arg-type]
        documents=[None if i % 4 == 0 else f"doc {i}" for i in range(40)],
    )
    client.close()
    with connect(_uri(tmp_path, "theirs")) as conn:
        spec = conn.describe()
        assert spec.vector().dim == 6
        assert spec.vector().metric is Metric.L2
        assert spec.has_document
        assert {m.name: m.type for m in spec.metadata} == {
            "title": MetadataType.STRING,
            "year": MetadataType.INT64,
            "mixed": MetadataType.JSON,
            "score": MetadataType.FLOAT64,
            "tags": MetadataType.LIST_STRING,
            "late": MetadataType.BOOL,
        }
        rows = _rows(conn, 3, 7)
        assert rows.column("id").to_pylist() == [f"r{i}" for i in range(40)]  # insertion order
        assert np.array_equal(vectors_numpy(rows.column("vector")), vectors)  # l2: exact
        assert rows.column("title").to_pylist()[:8] == [None, *[f"t{i}" for i in range(1, 7)], None]
        assert rows.column("score").to_pylist()[:4] == [None, None, None, 3.5]
        assert rows.column("mixed").to_pylist()[1:3] == ["1", '"x"']
        assert rows.column("late").to_pylist()[-2:] == [None, True]
        assert rows.column("document").to_pylist()[:2] == [None, "doc 1"]
        result = conn.query(vectors[[5, 6]], 3)
        assert [r[0] for r in result.ids] == ["r5", "r6"]
        assert result.scores[0][0] == pytest.approx(0.0, abs=1e-5)


def test_legacy_space_metadata_gives_the_metric(tmp_path: Path) -> None:
    client = _client(tmp_path)
    coll = client.create_collection(
        "legacy", metadata={"hnsw:space": "ip", "owner": "team-a"}, embedding_function=None
    )
    coll.add(ids=["a"], embeddings=[[1.0, 0.0, 0.0]])
    client.close()
    with connect(_uri(tmp_path, "legacy")) as conn:
        spec = conn.describe()
        assert spec.vector().metric is Metric.IP
        assert spec.has_document is False
        assert spec.system["chroma"]["collection_metadata"] == {"owner": "team-a"}


def test_our_spec_round_trips_types_nulls_and_int_ids(tmp_path: Path) -> None:
    spec = CollectionSpec(
        name="typed",
        id_type="int64",
        vectors=[VectorField(name="embedding", dim=4, metric=Metric.IP)],
        metadata=[
            MetadataField(name="s", type=MetadataType.STRING),
            MetadataField(name="i", type=MetadataType.INT64),
            MetadataField(name="f", type=MetadataType.FLOAT64),
            MetadataField(name="b", type=MetadataType.BOOL),
            MetadataField(name="j", type=MetadataType.JSON),
            MetadataField(name="t", type=MetadataType.TIMESTAMP),
            MetadataField(name="ls", type=MetadataType.LIST_STRING),
            MetadataField(name="li", type=MetadataType.LIST_INT64),
            MetadataField(name="lf", type=MetadataType.LIST_FLOAT64),
        ],
        has_document=True,
    )
    n = 30
    rng = np.random.default_rng(4)
    at = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)

    def every(k: int, value: Any) -> list[Any]:
        return [None if i % k == 0 else value(i) for i in range(n)]

    batch = pa.RecordBatch.from_pydict(
        {
            "id": pa.array(np.arange(n) * 2**40 - 5, pa.int64()),
            "embedding": fixed_size_vectors(rng.standard_normal((n, 4), dtype=np.float32)),
            "document": pa.array(every(5, lambda i: f"doc {i}")),
            "s": pa.array(every(2, lambda i: "" if i == 3 else f"ü{i}")),
            "i": pa.array(every(3, lambda i: -(2**62) + i), pa.int64()),
            "f": pa.array(every(4, lambda i: float(rng.standard_normal()) * 1e300), pa.float64()),
            "b": pa.array(every(6, lambda i: i % 2 == 0), pa.bool_()),
            "j": pa.array(every(7, lambda i: json.dumps({"k": [i, None]}))),
            "t": pa.array(every(2, lambda i: at + dt.timedelta(days=i)), pa.timestamp("us", "UTC")),
            "ls": pa.array(every(3, lambda i: ["x", str(i)]), pa.list_(pa.string())),
            "li": pa.array(every(4, lambda i: [i, 2**60]), pa.list_(pa.int64())),
            "lf": pa.array(every(5, lambda i: [0.1, i / 3]), pa.list_(pa.float64())),
        }
    ).cast(spec.arrow_schema())
    uri = _uri(tmp_path, "typed")
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(batch)
    with connect(uri) as conn:
        got = conn.describe()
        assert got.id_type == "int64"
        assert got.metadata == spec.metadata
        assert got.vector() == spec.vector()
        rows = _rows(conn, 2, 8)
        want = pa.Table.from_batches([batch])
        exact = [n for n in want.schema.names if n not in ("f", "lf")]
        assert rows.select(exact).equals(want.select(exact))  # ip space: vectors are exact
        # Chroma rounds float64 metadata to 16 significant digits: up to 2 float64 ulp off
        for name in ("f", "lf"):
            got_f = pc.list_flatten(rows.column(name)) if name == "lf" else rows.column(name)
            want_f = pc.list_flatten(want.column(name)) if name == "lf" else want.column(name)
            assert got_f.is_null().equals(want_f.is_null())
            np.testing.assert_array_max_ulp(
                got_f.drop_null().to_numpy(), want_f.drop_null().to_numpy(), maxulp=2
            )
        fetched = conn.fetch([-5, 2**40 - 5, 12345])
        assert fetched.column("id").to_pylist() == [-5, 2**40 - 5]
        result = conn.query(vectors_numpy(batch.column("embedding"))[:2], 2)
        assert all(isinstance(i, int) for row in result.ids for i in row)


def test_upsert_replaces_metadata_and_removes_nulled_keys(tmp_path: Path) -> None:
    spec = make_spec(dim=4)
    conn = connect(_uri(tmp_path))
    conn.create(spec, IfExists.REPLACE)
    conn.upsert(make_batch(spec, 0, 5))
    changed = make_batch(spec, 0, 5).set_column(
        spec.arrow_schema().get_field_index("category"),
        "category",
        pa.nulls(5, pa.string()),
    )
    conn.upsert(changed)
    got = pa.Table.from_batches([conn.fetch(changed.column("id").to_pylist())])
    assert got.column("category").to_pylist() == [None] * 5
    assert got.column("rank").to_pylist() == changed.column("rank").to_pylist()
    assert conn.count() == 5


@pytest.mark.parametrize(
    ("field", "dtype", "value", "problem"),
    [
        ("score", MetadataType.FLOAT64, float("nan"), "NaN or infinite"),
        ("score", MetadataType.FLOAT64, float("inf"), "NaN or infinite"),
        ("tags", MetadataType.LIST_STRING, [], "empty list"),
        ("tags", MetadataType.LIST_STRING, ["a", None], "null inside a list"),
        ("vals", MetadataType.LIST_FLOAT64, [1.0, float("nan")], "NaN or infinite"),
    ],
)
def test_values_chroma_would_drop_are_refused(
    tmp_path: Path, field: str, dtype: MetadataType, value: Any, problem: str
) -> None:
    spec = make_spec(dim=4, metadata=())
    spec.metadata = [MetadataField(name=field, type=dtype)]
    batch = make_batch(spec.model_copy(update={"metadata": []}), 0, 4)
    column = pa.array([None, None, value, None], dtype.arrow())
    batch = pa.RecordBatch.from_arrays([*batch.columns, column], [*batch.schema.names, field])
    conn = connect(_uri(tmp_path))
    conn.create(spec, IfExists.REPLACE)
    with pytest.raises(DataError, match=problem) as info:
        conn.upsert(batch)
    assert info.value.row == 2
    assert info.value.record_id == "doc-0000002"
    assert info.value.field == field
    assert conn.count() == 0


def test_scan_stops_when_the_collection_changes(tmp_path: Path) -> None:
    spec = make_spec(dim=4)
    conn = connect(_uri(tmp_path))
    conn.create(spec, IfExists.REPLACE)
    conn.upsert(make_batch(spec, 0, 300))
    part = conn.partitions(1)[0]
    scan = conn.scan(part, None, 100)
    next(scan)
    conn.delete(["doc-0000000"])
    with pytest.raises(TerminalError, match="changed during the scan"):
        next(scan)


def test_missing_collection_and_folder(tmp_path: Path) -> None:
    spec = make_spec(dim=4)
    with connect(_uri(tmp_path)) as conn:
        conn.create(spec, IfExists.REPLACE)
    with connect(_uri(tmp_path, "nope")) as conn:
        assert not conn.exists()
        with pytest.raises(NotFoundError, match="'nope'"):
            conn.count()
    missing = tmp_path / "no" / "such"
    with (
        connect(f"chroma://{missing}?collection=items") as conn,
        pytest.raises(NotFoundError, match="does not exist"),
    ):
        conn.describe()
    assert not missing.exists()


def test_reuse_checks_dim_and_metric(tmp_path: Path) -> None:
    spec = make_spec(dim=4)
    conn = connect(_uri(tmp_path))
    conn.create(spec, IfExists.REPLACE)
    conn.create(spec, IfExists.REUSE)
    with pytest.raises(SchemaMismatch, match="metric"):
        conn.create(make_spec(dim=4, metric=Metric.L2), IfExists.REUSE)
    with pytest.raises(SchemaMismatch, match="already exists"):
        conn.create(spec, IfExists.FAIL)
    two = spec.model_copy(deep=True)
    two.vectors.append(VectorField(name="other", dim=3))
    with pytest.raises(SchemaMismatch, match="one dense vector"):
        conn.create(two, IfExists.REPLACE)


def test_reuse_with_new_fields_keeps_them_readable(tmp_path: Path) -> None:
    narrow = make_spec(dim=4, metadata=(MetadataType.STRING,), documents=False)
    wide = make_spec(dim=4)
    with connect(_uri(tmp_path)) as conn:
        conn.create(narrow, IfExists.REPLACE)
        conn.upsert(make_batch(narrow, 0, 10))
    with connect(_uri(tmp_path)) as conn:
        conn.create(wide, IfExists.REUSE)
        conn.upsert(make_batch(wide, 10, 10))
    with connect(_uri(tmp_path)) as conn:
        assert conn.describe().metadata == wide.metadata
        rows = _rows(conn).sort_by("id")
        assert rows.column("rank").null_count == 10
        assert (
            rows.column("document").to_pylist()[10:]
            == make_batch(wide, 10, 10).column("document").to_pylist()
        )


def test_batches_larger_than_the_client_limit_are_split(tmp_path: Path) -> None:
    spec = make_spec(dim=2, metadata=(), documents=False)
    conn = connect(_uri(tmp_path))
    conn.create(spec, IfExists.REPLACE)
    limit = chromadb.PersistentClient(
        path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False)
    ).get_max_batch_size()
    conn.upsert(make_batch(spec, 0, limit + 10))
    assert conn.count() == limit + 10
    ids = [f"doc-{i:07d}" for i in range(limit + 10)]
    assert conn.fetch(ids).num_rows == limit + 10
    conn.delete(ids[: limit + 5])
    assert conn.count() == 5


def test_http_options_and_token_header() -> None:
    cfg = ChromaConfig.from_uri(
        ConnectorURI.parse("chroma+http://db.example:9000?collection=abc&tenant=t1&database=d1")
    )
    assert (cfg.host, cfg.port, cfg.tenant, cfg.database, cfg.ssl) == (
        "db.example",
        9000,
        "t1",
        "d1",
        False,
    )
    with pytest.raises(ConfigError, match="token"):
        connect("chroma+http://h:1?collection=abc&token=secret")
    with pytest.raises(ConfigError, match="collection name"):
        connect("chroma:///data?collection=a")
    with pytest.raises(ConfigError, match="tenant"):
        connect("chroma:///data?collection=abc&tenant=x")


def test_token_is_sent_as_a_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_CHROMA_TOKEN", "s3cret")
    uri = ConnectorURI.parse("chroma+http://h:1?collection=abc&token_env=MY_CHROMA_TOKEN")
    assert ChromaConfig.from_uri(uri).headers() == {"Authorization": "Bearer s3cret"}
    uri = ConnectorURI.parse(
        "chroma+http://h:1?collection=abc&token_env=MY_CHROMA_TOKEN&token_header=x-chroma-token"
    )
    assert ChromaConfig.from_uri(uri).headers() == {"X-Chroma-Token": "s3cret"}
    assert "s3cret" not in uri.redacted()


def test_wrong_server_port_is_transient_and_says_where() -> None:
    port = free_port()
    with (
        connect(f"chroma+http://127.0.0.1:{port}?collection=items") as conn,
        pytest.raises(TransientError, match=f"127.0.0.1:{port}") as info,
    ):
        conn.count()
    assert "Could not connect" in str(info.value)
    assert info.value.__cause__ is not None


def test_server_database_option(chroma_server: ChromaServer) -> None:
    admin = chromadb.AdminClient(
        Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host=chroma_server.host,
            chroma_server_http_port=chroma_server.port,
            anonymized_telemetry=False,
        )
    )
    admin.create_database("second")
    spec = make_spec(dim=4, metric=Metric.L2)
    with connect(chroma_server.uri("scoped", database="second")) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 20))
        rows = _rows(conn)
        assert rows.num_rows == 20
        want = vectors_numpy(make_batch(spec, 0, 20).column("vector"))
        assert np.array_equal(vectors_numpy(rows.column("vector")), want)
    with connect(chroma_server.uri("scoped")) as default_db:
        assert not default_db.exists()
    with (
        connect(chroma_server.uri("scoped", database="nope")) as missing,
        pytest.raises(TerminalError, match="nope"),
    ):
        missing.count()
