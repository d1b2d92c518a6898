"""Redis 8 vector sets: sets made by others, quantised sets, types, errors (real server)."""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from tests.engines import RedisEngine, free_port
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import Connector
from vecmigrate.errors import (
    AuthError,
    NotFoundError,
    SchemaMismatch,
    TerminalError,
    TransientError,
    Unsupported,
)
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType, Metric, VectorField

redis = pytest.importorskip("redis")


@pytest.fixture
def client(redis_engine: RedisEngine) -> Iterator[Any]:
    r = redis.Redis(host=redis_engine.host, port=redis_engine.port, protocol=2)
    yield r
    r.close()


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return f"it-{request.node.name}"


def _scan(conn: Connector, parts: int = 1, batch_size: int = 100) -> pa.Table:
    batches = [sb.batch for p in conn.partitions(parts) for sb in conn.scan(p, None, batch_size)]
    return pa.Table.from_batches(batches)


def test_set_made_with_vadd_is_described_and_read(
    redis_engine: RedisEngine, client: Any, key: str
) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    for i, v in enumerate(vectors):
        attrs = {"genre": ["drama", "comedy"][i % 2], "year": 1990 + i, "rating": i / 4}
        if i % 5 == 0:
            attrs["document"] = f"film {i}"
        client.execute_command(
            "VADD", key, "FP32", v.tobytes(), f"film:{i}", "NOQUANT", "SETATTR", json.dumps(attrs)
        )
    with connect(redis_engine.uri(key)) as conn:
        spec = conn.describe()
        assert spec.id_type == "string"
        assert spec.vector().dim == 8
        assert spec.vector().metric is Metric.COSINE
        assert spec.has_document
        types = {m.name: m.type for m in spec.metadata}
        assert types == {
            "genre": MetadataType.STRING,
            "year": MetadataType.INT64,
            "rating": MetadataType.FLOAT64,
        }
        assert spec.system["redis"]["quant"] == "f32"
        assert spec.system["redis"]["made_by"] == "other"
        assert spec.indexes[0].kind == "hnsw"
        got = _scan(conn).to_pydict()
    order = np.argsort([int(i.split(":")[1]) for i in got["id"]])
    assert len(order) == 50
    got_vectors = np.array(got["vector"], dtype=np.float32)[order]
    np.testing.assert_array_max_ulp(got_vectors, vectors, maxulp=1)
    assert [got["year"][i] for i in order] == [1990 + i for i in range(50)]
    assert [got["document"][i] for i in order][:6] == ["film 0", None, None, None, None, "film 5"]


def test_quantised_set_is_described_as_such_and_dequantised(
    redis_engine: RedisEngine, client: Any, key: str
) -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((30, 16)).astype(np.float32)
    for i, v in enumerate(vectors):  # no NOQUANT: Redis's default, Q8
        client.execute_command("VADD", key, "FP32", v.tobytes(), str(i))
    with connect(redis_engine.uri(key)) as conn:
        spec = conn.describe()
        assert spec.system["redis"]["quant"] == "int8"
        assert spec.indexes[0].params["quant"] == "int8"
        got = _scan(conn).sort_by([("id", "ascending")])
        ids = got.column("id").to_pylist()
        order = [int(i) for i in ids]
        got_vectors = vectors_numpy(got.column("vector"))
        want = vectors[order]
        # Q8: each component within half a quantisation step of max |v|/127
        step = np.abs(want).max(axis=1, keepdims=True) / 127
        assert np.all(np.abs(got_vectors - want) <= step * 0.51 + 1e-6)
        assert not np.array_equal(got_vectors, want)
        # as Redis's own VEMB (non-RAW) dequantises
        emb = [float(x) for x in client.execute_command("VEMB", key, "0")]
        np.testing.assert_allclose(got_vectors[ids.index("0")], emb, rtol=1e-6)
        # writing through the connector keeps the set's quantisation
        new = CollectionSpec(vectors=[VectorField(dim=16)])
        conn.create(new, IfExists.REUSE)
        conn.upsert(
            pa.record_batch({"id": pa.array(["extra"]), "vector": fixed_size_vectors(vectors[:1])})
        )
        assert conn.count() == 31


def test_write_to_q8_set_on_request(redis_engine: RedisEngine, client: Any, key: str) -> None:
    spec = make_spec(dim=16)
    with connect(redis_engine.uri(key, quant="q8")) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 20))
        assert conn.describe().system["redis"]["quant"] == "int8"
    assert client.execute_command("VEMB", key, "doc-0000000", "RAW")[0] == b"int8"


def test_missing_key(redis_engine: RedisEngine, key: str) -> None:
    with connect(redis_engine.uri(key)) as conn:
        assert not conn.exists()
        with pytest.raises(NotFoundError, match=key):
            conn.describe()
        with pytest.raises(NotFoundError, match=key):
            conn.count()
        with pytest.raises(NotFoundError):
            conn.upsert(make_batch(make_spec(dim=4), 0, 2))


def test_key_of_another_type_is_refused(redis_engine: RedisEngine, client: Any, key: str) -> None:
    client.set(key, "not a vector set")
    with connect(redis_engine.uri(key)) as conn, pytest.raises(TerminalError, match="another type"):
        conn.count()


def test_wrong_password_is_an_auth_error(
    redis_engine: RedisEngine, client: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.execute_command("ACL", "SETUSER", "vm-test", "on", ">right-password", "~*", "+@all")
    monkeypatch.setenv("VM_TEST_REDIS_PASSWORD", "wrong-password")
    uri = f"redis://vm-test@{redis_engine.host}:{redis_engine.port}?key={key}"
    with connect(uri + "&password_env=VM_TEST_REDIS_PASSWORD") as conn:
        with pytest.raises(AuthError) as info:
            conn.exists()
        assert "wrong-password" not in str(info.value)
        assert isinstance(info.value.__cause__, redis.exceptions.AuthenticationError)
    monkeypatch.setenv("REDISCLI_AUTH", "right-password")
    with connect(uri) as conn:
        assert not conn.exists()


def test_nothing_listening_is_transient() -> None:
    uri = f"redis://127.0.0.1:{free_port()}?key=k&timeout=2"
    with connect(uri) as conn, pytest.raises(TransientError):
        conn.count()


def test_only_cosine_and_one_vector(redis_engine: RedisEngine, key: str) -> None:
    with connect(redis_engine.uri(key)) as conn:
        with pytest.raises(Unsupported, match="cosine"):
            conn.create(make_spec(dim=4, metric=Metric.L2))
        two = CollectionSpec(vectors=[VectorField(name="a", dim=4), VectorField(name="b", dim=4)])
        with pytest.raises(Unsupported, match="one dense vector"):
            conn.create(two)
        conn.create(make_spec(dim=4))
        with pytest.raises(SchemaMismatch):
            conn.create(make_spec(dim=4), IfExists.FAIL)
        with pytest.raises(SchemaMismatch, match="has string ids"):
            conn.create(make_spec(dim=4, id_type="int64"), IfExists.REUSE)


def test_int_ids_and_typed_metadata_round_trip(redis_engine: RedisEngine, key: str) -> None:
    spec = CollectionSpec(
        id_type="int64",
        vectors=[VectorField(dim=4)],
        has_document=True,
        metadata=[
            MetadataField(name="when", type=MetadataType.TIMESTAMP),
            MetadataField(name="tags", type=MetadataType.LIST_STRING),
            MetadataField(name="extra", type=MetadataType.JSON),
            MetadataField(name="x", type=MetadataType.FLOAT64),
            MetadataField(name="big", type=MetadataType.INT64),
        ],
    )
    when = dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=dt.UTC)
    rows = {
        "id": pa.array([-5, 2**62, 7], pa.int64()),
        "vector": fixed_size_vectors(np.arange(12, dtype=np.float32).reshape(3, 4) + 1),
        "document": pa.array(['quote " and \\ and \n', None, "ünïcödé 🚀"]),
        "when": pa.array([when, None, when], pa.timestamp("us", tz="UTC")),
        "tags": pa.array([["a", "b"], [], None], pa.list_(pa.string())),
        "extra": pa.array(['{"a": [1, 2.5, null]}', None, "[]"]),
        "x": pa.array([math.nan, -math.inf, 0.1 + 0.2]),
        "big": pa.array([-(2**63), 2**63 - 1, None], pa.int64()),
    }
    batch = pa.record_batch(rows).cast(spec.arrow_schema())
    with connect(redis_engine.uri(key)) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(batch)
    with connect(redis_engine.uri(key)) as conn:
        got = conn.describe()
        assert got.id_type == "int64"
        assert [(m.name, m.type) for m in got.metadata] == [(m.name, m.type) for m in spec.metadata]
        table = _scan(conn)
        assert table.schema == spec.arrow_schema()
        back = conn.fetch([7, -5, 2**62]).to_pydict()
    by_id = {i: n for n, i in enumerate(back["id"])}
    want = batch.to_pydict()
    for col in ("document", "when", "tags", "extra", "big"):
        assert [back[col][by_id[i]] for i in want["id"]] == want[col], col
    x = [back["x"][by_id[i]] for i in want["id"]]
    assert math.isnan(x[0]) and x[1] == -math.inf and x[2] == 0.1 + 0.2
    # int ids are element names in decimal; the scan order is by name bytes
    assert table.column("id").to_pylist() == [-5, 2**62, 7]


def test_scan_resumes_and_partitions_stay_valid_after_new_elements(
    redis_engine: RedisEngine, key: str
) -> None:
    spec = make_spec(dim=8, documents=False, metadata=())
    with connect(redis_engine.uri(key)) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 3000))
        parts = conn.partitions(3)
        assert len(parts) == 3
        # the plan is persisted as JSON; elements added later still fall in exactly one part
        parts = [type(p).from_json(p.to_json()) for p in parts]
        conn.upsert(make_batch(spec, 3000, 500, id_prefix="late-"))
        seen: list[str] = []
        for part in parts:
            it = conn.scan(part, None, 250)
            first = next(it)
            it.close()  # type: ignore[attr-defined]
            seen += first.batch.column("id").to_pylist()
            for sb in conn.scan(part, first.cursor, 250):
                seen += sb.batch.column("id").to_pylist()
    assert len(seen) == 3500 == len(set(seen))


def test_query_exact_and_scores(redis_engine: RedisEngine, key: str) -> None:
    spec = make_spec(dim=8, documents=False, metadata=())
    batch = make_batch(spec, 0, 300)
    with connect(redis_engine.uri(key, exact="true")) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(batch)
        queries = vectors_numpy(batch.column("vector"))[[3, 200]]
        result = conn.query(queries, 3)
    assert [r[0] for r in result.ids] == ["doc-0000003", "doc-0000200"]
    # Redis reports similarity: 1 for the same direction, falling with the cosine distance
    assert all(abs(r[0] - 1.0) < 1e-6 and r[0] >= r[1] >= r[2] for r in result.scores)


def test_vector_values_within_one_ulp(redis_engine: RedisEngine, client: Any, key: str) -> None:
    vector = np.array([1e-30, -3.5, 7.0, 123456.789], dtype=np.float32)
    spec = CollectionSpec(vectors=[VectorField(dim=4)])
    with connect(redis_engine.uri(key)) as conn:
        conn.create(spec)
        conn.upsert(pa.record_batch({"id": ["v"], "vector": fixed_size_vectors(vector[None])}))
        got = vectors_numpy(conn.fetch(["v"]).column("vector"))[0]
    np.testing.assert_array_max_ulp(got, vector, maxulp=1)
    quant, blob, norm = client.execute_command("VEMB", key, "v", "RAW")
    assert quant == b"f32"  # stored normalised: a unit vector and its norm
    stored = np.array(struct.unpack("<4f", blob), dtype=np.float32)
    assert abs(float(np.linalg.norm(stored)) - 1) < 1e-6
    assert abs(float(norm) - float(np.linalg.norm(vector))) < 1e-2
