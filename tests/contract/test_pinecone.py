"""Contract tests: the Pinecone connector against recorded responses.

CONTRACT TESTS, not tests against a live server. The official pinecone SDK (10.x, REST) runs
unchanged against a local replay server (``replay.py``) that answers in the shapes Pinecone
documents for API 2026-07 (``fixtures/pinecone.json`` names the page behind each one). What is
exercised: index descriptions -> specs (serverless and pod deployments, dense and sparse
vectors, sampled metadata), the complete list + fetch pagination per namespace (tokens sent
back, cursors resumed), the upsert bodies the SDK sends, and error translation. What is not:
a real index's consistency (listings and counts lag writes), limits and latency. The
conformance suite does that when VECMIGRATE_TEST_PINECONE_INDEX (+ PINECONE_API_KEY) is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.contract.replay import ReplayServer, Reply, load_fixture
from vecmigrate.connectors.base import Partition
from vecmigrate.errors import DataError, SchemaMismatch, TransientError, Unsupported
from vecmigrate.spec import (
    ID,
    SPARSE_TYPE,
    CollectionSpec,
    MetadataField,
    MetadataType,
    Metric,
    VectorField,
)

pytest.importorskip("pinecone")

from vecmigrate.connectors.pinecone.connector import END, PineconeConnector
from vecmigrate.connectors.pinecone.errors import translate
from vecmigrate.connectors.registry import connect

FX = load_fixture("pinecone.json")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReplayServer]:
    monkeypatch.setenv("TEST_PINECONE_KEY", "pckey-contract-test")
    with ReplayServer() as srv:
        yield srv


def reply(name: str, server: ReplayServer) -> Reply:
    entry = FX[name]
    body = entry["body"]
    if isinstance(body, dict) and body.get("host") == "HOST":
        body = {**body, "host": server.url}
    return Reply(entry.get("status", 200), body)


def open_index(server: ReplayServer, namespace: str | None = None, **options: str) -> Any:
    opts = {
        "api_key_env": "TEST_PINECONE_KEY",
        "host": server.url,
        "control_host": server.url,
        **options,
    }
    if namespace is not None:
        opts["namespace"] = namespace
    query = "&".join(f"{k}={v}" for k, v in opts.items())
    return connect(f"pinecone://docs-example?{query}")


def serve_index(server: ReplayServer, describe: str = "describe_index") -> None:
    server.add("GET", "/indexes/docs-example", reply(describe, server), sticky=True)
    server.add("POST", "/describe_index_stats", reply("index_stats", server), sticky=True)


def serve_namespace(server: ReplayServer, sample_rounds: int = 1) -> None:
    """List/fetch replies for describe()'s sample pass(es) and then one full scan."""
    for _ in range(sample_rounds + 1):
        server.add("GET", "/vectors/list", reply("list_page1", server), reply("list_page2", server))
        server.add(
            "GET", "/vectors/fetch", reply("fetch_page1", server), reply("fetch_page2", server)
        )


# -- describe -------------------------------------------------------------------------------
def test_describe_serverless_dotproduct_index(server: ReplayServer) -> None:
    serve_index(server)
    serve_namespace(server, sample_rounds=0)
    with open_index(server, "example-namespace") as conn:
        spec = conn.describe()
    assert spec.vector("vector").dim == 3 and spec.vector("vector").metric is Metric.IP
    assert spec.vector("sparse").sparse  # dotproduct indexes can hold sparse values
    assert {m.name: m.type for m in spec.metadata} == {
        "genre": MetadataType.STRING,
        "public": MetadataType.BOOL,
        "tags": MetadataType.LIST_STRING,
        "year": MetadataType.FLOAT64,
    }
    assert spec.has_document
    system = spec.system["pinecone"]
    assert system["kind"] == "serverless"
    assert system["deployment"] == {
        "deployment_type": "managed",
        "cloud": "aws",
        "region": "us-east-1",
    }
    assert system["namespaces"] == {"example-namespace": 3}
    assert spec.partitions == []  # one namespace named in the URI: no namespace column
    key = [r.headers.get("api-key") for r in server.requests]
    assert set(key) == {"pckey-contract-test"}


def test_every_namespace_becomes_a_partition_with_a_namespace_column(server: ReplayServer) -> None:
    serve_index(server)
    for _ in range(2):  # sample: default namespace (page1+2), then example-namespace
        server.add("GET", "/vectors/list", reply("list_page1", server), reply("list_page2", server))
        server.add(
            "GET", "/vectors/fetch", reply("fetch_page1", server), reply("fetch_page2", server)
        )
    with open_index(server, sparse="false") as conn:
        spec = conn.describe()
        parts = conn.partitions(8)
    assert [p.bounds for p in parts] == [{"namespace": ""}, {"namespace": "example-namespace"}]
    assert spec.partitions == ["", "example-namespace"]
    assert spec.metadata_field("_namespace") is not None
    assert [v.name for v in spec.vectors] == ["vector"]  # ?sparse=false drops the column


def test_pod_based_index_is_refused_before_reading(server: ReplayServer) -> None:
    serve_index(server, "describe_pod_index")
    with open_index(server, "example-namespace") as conn, pytest.raises(Unsupported, match="pod"):
        conn.describe()


# -- scans ----------------------------------------------------------------------------------
def test_scan_lists_every_page_then_fetches(server: ReplayServer) -> None:
    serve_index(server)
    serve_namespace(server)
    with open_index(server, "example-namespace") as conn:
        conn.describe()
        [part] = conn.partitions(4)
        got = list(conn.scan(part, None, 2))
    assert [sb.batch.column(ID).to_pylist() for sb in got] == [
        ["doc1#chunk1", "doc1#chunk2"],
        ["doc2#chunk1"],
    ]
    token = FX["list_page1"]["body"]["pagination"]["next"]
    assert [sb.cursor for sb in got] == [token, END]
    lists = server.calls("GET", "/vectors/list")[2:]  # after describe()'s sample
    assert lists[0].query == {"namespace": ["example-namespace"], "limit": ["100"]}
    assert lists[1].query["paginationToken"] == [token]
    fetches = server.calls("GET", "/vectors/fetch")[2:]
    assert fetches[0].query["ids"] == ["doc1#chunk1", "doc1#chunk2"]
    assert fetches[0].query["namespace"] == ["example-namespace"]
    batch = got[0].batch
    assert batch.column("vector").type == pa.list_(pa.float32(), 3)
    assert np.stack(batch.column("vector").to_numpy(zero_copy_only=False))[0].tolist() == [
        0.5,
        -1.25,
        3.0,
    ]
    assert batch.column("sparse").type == SPARSE_TYPE
    assert batch.column("sparse").to_pylist() == [
        {"indices": [1, 312], "values": [0.5, 0.25]},
        None,
    ]
    assert batch.column("document").to_pylist() == ["chunk one", "chunk two"]
    assert batch.column("year").to_pylist() == [2019.0, 2020.5]
    assert batch.column("tags").to_pylist() == [["a", "b"], None]


def test_scan_resumes_from_the_saved_token(server: ReplayServer) -> None:
    serve_index(server)
    serve_namespace(server, sample_rounds=0)
    server.add("GET", "/vectors/list", reply("list_page2", server))
    server.add("GET", "/vectors/fetch", reply("fetch_page2", server))
    token = FX["list_page1"]["body"]["pagination"]["next"]
    with open_index(server, "example-namespace") as conn:
        conn.describe()
        got = list(conn.scan(Partition("ns", {"namespace": "example-namespace"}), token, 10))
        assert list(conn.scan(Partition("ns", {"namespace": "example-namespace"}), END, 10)) == []
    assert [sb.batch.column(ID).to_pylist() for sb in got] == [["doc2#chunk1"]]
    resumed = server.calls("GET", "/vectors/list")[-1]
    assert resumed.query["paginationToken"] == [token]


def test_metadata_key_missing_from_the_sample_is_reported(server: ReplayServer) -> None:
    serve_index(server)
    serve_namespace(server, sample_rounds=0)
    server.add("GET", "/vectors/list", reply("list_page2", server))
    server.add("GET", "/vectors/fetch", reply("fetch_unknown_key", server))
    with open_index(server, "example-namespace") as conn:
        conn.describe()
        with pytest.raises(DataError, match="sample") as err:
            list(conn.scan(Partition("ns", {"namespace": "example-namespace"}), None, 10))
    assert err.value.field == "rating" and err.value.record_id == "doc2#chunk1"


# -- writes ---------------------------------------------------------------------------------
def target_spec() -> CollectionSpec:
    return CollectionSpec(
        name="items",
        vectors=[
            VectorField(name="vector", dim=3, metric=Metric.IP),
            VectorField(name="sparse", dim=0, metric=Metric.IP, sparse=True),
        ],
        metadata=[
            MetadataField(name="rank", type=MetadataType.INT64),
            MetadataField(name="labels", type=MetadataType.LIST_STRING),
        ],
        has_document=True,
    )


def test_upsert_sends_vectors_sparse_values_and_metadata(server: ReplayServer) -> None:
    serve_index(server)
    server.add("POST", "/vectors/upsert", reply("upsert_ok", server))
    spec = target_spec()
    batch = pa.RecordBatch.from_pydict(
        {
            "id": ["a", "b"],
            "vector": [[0.5, 0.25, -1.0], [1.0, 2.0, 3.0]],
            "sparse": [{"indices": [3, 7], "values": [0.5, 0.75]}, None],
            "document": ["first", None],
            "rank": [1, None],
            "labels": [["x"], None],
        }
    )
    with open_index(server, "ns1") as conn:
        assert isinstance(conn, PineconeConnector)
        conn._use_write_layout(spec)
        conn.upsert(batch)
    [upsert] = server.calls("POST", "/vectors/upsert")
    body = upsert.json()
    assert body["namespace"] == "ns1"
    first, second = body["vectors"]
    assert first["id"] == "a" and first["values"] == [0.5, 0.25, -1.0]
    assert first["sparseValues"] == {"indices": [3, 7], "values": [0.5, 0.75]}
    assert first["metadata"] == {"rank": 1, "labels": ["x"], "document": "first"}
    assert second == {"id": "b", "values": [1.0, 2.0, 3.0]}


def test_upsert_error_for_a_wrong_dimension_is_a_schema_mismatch(server: ReplayServer) -> None:
    serve_index(server)
    server.add("POST", "/vectors/upsert", reply("error_dimension", server))
    spec = target_spec()
    batch = pa.RecordBatch.from_pydict({"id": ["a"], "vector": [[0.5, 0.25, -1.0]]})
    with open_index(server, "ns1") as conn:
        conn._use_write_layout(spec)
        with pytest.raises(SchemaMismatch, match="dimension"):
            conn.upsert(batch)


def test_rate_limits_are_transient() -> None:
    from pinecone.errors import RateLimitError

    body = FX["error_rate_limited"]["body"]
    err = translate(RateLimitError(message=body["message"], body=body), "upsert")
    assert isinstance(err, TransientError)


def test_capabilities_say_not_verified() -> None:
    assert PineconeConnector.capabilities.verified is False
    assert "not verified against a live server" in PineconeConnector.capabilities.notes
