"""Contract tests: the Elasticsearch and OpenSearch connectors against recorded responses.

CONTRACT TESTS, not tests against a live server. The official clients (elasticsearch-py 8,
opensearch-py) run unchanged and talk HTTP to a local replay server (``replay.py``) that
answers with responses in the shapes the systems document (``fixtures/elastic.json`` names
the page behind each one). What is exercised: the requests the clients really send (paths,
query strings, JSON and NDJSON bodies: PIT ids, ``search_after`` values, sort keys, bulk
lines), the mapping of index mappings to specs and back, cursor resume rules, and per-item
bulk error handling. What is not: how a real server behaves (consistency, refresh, kNN
quality, version quirks). The conformance suite does that when
VECMIGRATE_TEST_ELASTICSEARCH_URL / VECMIGRATE_TEST_OPENSEARCH_URL name a live server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.contract.replay import ReplayServer, Reply, load_fixture
from tests.datagen import make_batch, make_spec
from vecmigrate.connectors.base import Partition
from vecmigrate.errors import DataError, TerminalError, TransientError
from vecmigrate.spec import ID, MetadataType, Metric

pytest.importorskip("elasticsearch")
pytest.importorskip("opensearchpy")

from vecmigrate.connectors.elastic.connector import (
    ElasticsearchConnector,
    OpenSearchConnector,
    decode_cursor,
)
from vecmigrate.connectors.elastic.mapping import (
    Layout,
    check_bulk_response,
    describe_mapping,
    hits_to_batch,
    index_body,
)
from vecmigrate.connectors.registry import connect

FX = load_fixture("elastic.json")
ES_HEADERS = {"X-Elastic-Product": "Elasticsearch"}


def reply(name: str) -> Reply:
    entry = FX[name]
    return Reply(entry.get("status", 200), entry["body"], dict(entry.get("headers", {})))


@pytest.fixture
def es_server() -> Iterator[ReplayServer]:
    with ReplayServer(default_headers=ES_HEADERS) as server:
        server.add("GET", "/", reply("es_info"), sticky=True)
        yield server


@pytest.fixture
def os_server() -> Iterator[ReplayServer]:
    with ReplayServer() as server:
        server.add("GET", "/", reply("os_info"), sticky=True)
        yield server


def es(server: ReplayServer, index: str, **options: str) -> Any:
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    return connect(f"elasticsearch://127.0.0.1:{server.port}?index={index}{extra}")


def opensearch(server: ReplayServer, index: str) -> Any:
    return connect(f"opensearch://127.0.0.1:{server.port}?index={index}")


def serve_foreign_es_index(server: ReplayServer) -> None:
    server.add("HEAD", "/my-index", Reply(200), sticky=True)
    server.add("GET", "/my-index/_mapping", reply("es_mapping_foreign"), sticky=True)


# -- mapping <-> spec -----------------------------------------------------------------------
def test_describe_foreign_elasticsearch_mapping(es_server: ReplayServer) -> None:
    serve_foreign_es_index(es_server)
    with es(es_server, "my-index") as conn:
        spec = conn.describe()
    vf = spec.vector("my_vector")
    assert (vf.dim, vf.metric) == (3, Metric.IP)
    assert spec.indexes[0].kind == "hnsw"
    assert spec.indexes[0].params == {"similarity": "dot_product", "m": 32, "ef_construction": 100}
    types = {m.name: m.type for m in spec.metadata}
    assert types == {
        "my_text": MetadataType.STRING,
        "price": MetadataType.FLOAT64,
        "stock": MetadataType.INT64,
        "released": MetadataType.TIMESTAMP,
        "tags": MetadataType.STRING,
        "attrs": MetadataType.JSON,
    }
    assert spec.has_document
    assert spec.id_type == "string" and spec.id_mapping is None


def test_describe_foreign_opensearch_mapping(os_server: ReplayServer) -> None:
    os_server.add("HEAD", "/my-knn-index-1", Reply(200), sticky=True)
    os_server.add("GET", "/my-knn-index-1/_mapping", reply("os_mapping_foreign"), sticky=True)
    with opensearch(os_server, "my-knn-index-1") as conn:
        spec = conn.describe()
        assert conn.scan_mode() == "scroll"  # no _shard_doc in OpenSearch, no sort field
    vf = spec.vector("my_vector1")
    assert (vf.dim, vf.metric) == (3, Metric.L2)
    assert spec.indexes[0].params == {
        "space_type": "l2",
        "engine": "faiss",
        "ef_construction": 128,
        "m": 24,
    }


@pytest.mark.parametrize("dialect", ["elasticsearch", "opensearch"])
def test_index_body_round_trips_through_describe(dialect: str) -> None:
    spec = make_spec(dim=8, metric=Metric.IP, id_type="int64")
    spec.metadata.append(
        spec.metadata[0].model_copy(update={"name": "extra", "type": MetadataType.JSON})
    )
    body, _layout = index_body(spec, dialect=dialect, id_field="vecmigrate_id")  # type: ignore[arg-type]
    got, got_layout = describe_mapping(
        "items",
        body["mappings"],
        dialect=dialect,
        document_field="document",
        sort_field=None,  # type: ignore[arg-type]
    )
    assert got.id_type == "int64" and got_layout.id_field == "vecmigrate_id"
    assert got_layout.sort_field == "vecmigrate_id"
    assert (got.vector().dim, got.vector().metric) == (8, Metric.IP)
    assert [(m.name, m.type) for m in got.metadata] == [(m.name, m.type) for m in spec.metadata]
    assert got.has_document
    vector = body["mappings"]["properties"]["vector"]
    if dialect == "elasticsearch":
        assert vector["type"] == "dense_vector" and vector["similarity"] == "max_inner_product"
        assert "knn" not in body["settings"]["index"]
    else:
        assert vector["type"] == "knn_vector" and vector["method"]["space_type"] == "innerproduct"
        assert body["settings"]["index"]["knn"] is True


# -- scans ----------------------------------------------------------------------------------
def test_pit_scan_sends_pit_ids_and_search_after(es_server: ReplayServer) -> None:
    serve_foreign_es_index(es_server)
    es_server.add("POST", "/my-index/_pit", reply("es_pit_open"))
    es_server.add("POST", "/_search", reply("es_search_pit_page1"), reply("es_search_pit_page2"))
    es_server.add("DELETE", "/_pit", reply("es_pit_close"))
    with es(es_server, "my-index", keep_alive="3m") as conn:
        [part] = conn.partitions(4)
        assert part.bounds == {"mode": "pit"}
        got = list(conn.scan(part, None, 2))
    assert [sb.batch.num_rows for sb in got] == [2, 1]
    table = pa.Table.from_batches([sb.batch for sb in got])
    assert table.column(ID).to_pylist() == ["a1", "a2", "a3"]
    vectors = np.stack(table.column("my_vector").to_numpy(zero_copy_only=False))
    assert vectors.dtype == np.float32 and vectors[0].tolist() == [0.5, -1.25, 3.0]
    assert table.column("released").to_pylist()[:2] == [
        dt.datetime(2015, 1, 1, 12, 10, 30, tzinfo=dt.UTC),
        dt.datetime(2015, 1, 1, 0, 0, 0, 1000, tzinfo=dt.UTC),
    ]
    assert table.column("tags").to_pylist() == ["x", "z", None]
    assert table.column("attrs").to_pylist()[0] == '{"color": "red"}'
    assert table.column("document").to_pylist() == ["first doc", None, None]

    [open_pit] = es_server.calls("POST", "/my-index/_pit")
    assert open_pit.query["keep_alive"] == ["3m"]
    first, second = (r.json() for r in es_server.calls("POST", "/_search"))
    opened = FX["es_pit_open"]["body"]["id"]
    assert first["pit"] == {"id": opened, "keep_alive": "3m"}
    assert first["sort"] == [{"_shard_doc": "asc"}] and first["size"] == 2
    assert "search_after" not in first
    # the next request uses the most recent PIT id and the last hit's sort values
    assert second["pit"]["id"] == FX["es_search_pit_page1"]["body"]["pit_id"]
    assert second["search_after"] == [4294967299]
    [close] = es_server.calls("DELETE", "/_pit")
    assert close.json() == {"id": FX["es_search_pit_page2"]["body"]["pit_id"]}
    state = decode_cursor(got[0].cursor)
    assert state is not None
    assert state["pit"] == FX["es_search_pit_page1"]["body"]["pit_id"]
    assert state["after"] == [4294967299]
    assert decode_cursor(got[-1].cursor) == {
        "mode": "pit",
        "pit": FX["es_search_pit_page2"]["body"]["pit_id"],
        "after": [4294967300],
        "done": True,
    }


def test_pit_scan_resumes_from_cursor_without_a_new_pit(es_server: ReplayServer) -> None:
    serve_foreign_es_index(es_server)
    es_server.add("POST", "/_search", reply("es_search_pit_page2"))
    es_server.add("DELETE", "/_pit", reply("es_pit_close"))
    cursor = '{"after":[4294967299],"done":false,"mode":"pit","pit":"PIT-FROM-LEDGER"}'
    with es(es_server, "my-index") as conn:
        got = list(conn.scan(Partition("all", {"mode": "pit"}), cursor, 2))
    assert [sb.batch.column(ID).to_pylist() for sb in got] == [["a3"]]
    assert es_server.calls("POST", "/my-index/_pit") == []
    [search] = es_server.calls("POST", "/_search")
    assert search.json()["pit"]["id"] == "PIT-FROM-LEDGER"
    assert search.json()["search_after"] == [4294967299]


def test_expired_pit_on_resume_is_a_clear_terminal_error(es_server: ReplayServer) -> None:
    serve_foreign_es_index(es_server)
    es_server.add("POST", "/_search", reply("es_pit_missing"))
    cursor = '{"after":[1],"done":false,"mode":"pit","pit":"OLD"}'
    with es(es_server, "my-index") as conn, pytest.raises(TerminalError, match="expired"):
        list(conn.scan(Partition("all", {"mode": "pit"}), cursor, 2))


def test_multi_valued_scalar_field_is_reported() -> None:
    layout = Layout(vectors=["v"], properties=[describe_field("tags", MetadataType.STRING)])
    schema = pa.schema(
        [("id", pa.string()), ("v", pa.list_(pa.float32(), 1)), ("tags", pa.string())]
    )
    hits = [{"_id": "x", "_source": {"v": [1.0], "tags": ["a", "b"]}}]
    with pytest.raises(DataError, match="holds 2 values") as err:
        hits_to_batch(hits, layout, schema)
    assert err.value.field == "tags"


def describe_field(name: str, mtype: MetadataType) -> Any:
    from vecmigrate.spec import MetadataField

    return MetadataField(name=name, type=mtype)


# -- create, search_after on the id field, bulk ----------------------------------------------
def created_index(server: ReplayServer, spec: Any, dialect: str) -> dict[str, Any]:
    """Create the index through the connector; then serve its mapping back as created."""
    server.add("HEAD", "/items", Reply(404))
    server.add("PUT", "/items", Reply(200, FX["es_create_index"]["body"]))
    conn = es(server, "items") if dialect == "elasticsearch" else opensearch(server, "items")
    with conn:
        conn.create(spec)
    [put] = server.calls("PUT", "/items")
    body: dict[str, Any] = put.json()
    server.add("HEAD", "/items", Reply(200), sticky=True)
    server.add(
        "GET", "/items/_mapping", Reply(200, {"items": {"mappings": body["mappings"]}}), sticky=True
    )
    return body


def test_create_then_search_after_on_the_id_field(es_server: ReplayServer) -> None:
    spec = make_spec(dim=2, id_type="int64", documents=False, metadata=(MetadataType.INT64,))
    body = created_index(es_server, spec, "elasticsearch")
    vector = body["mappings"]["properties"]["vector"]
    assert vector == {
        "type": "dense_vector",
        "dims": 2,
        "element_type": "float",
        "index": True,
        "similarity": "cosine",
        "index_options": {"type": "hnsw"},
    }
    assert body["mappings"]["properties"]["vecmigrate_id"] == {"type": "long"}
    assert body["mappings"]["_meta"]["vecmigrate"]["id_type"] == "int64"
    es_server.add("POST", "/items/_pit", reply("es_pit_open"))
    es_server.add("POST", "/_search", reply("es_search_after_page"))
    es_server.add("DELETE", "/_pit", reply("es_pit_close"))
    with es(es_server, "items") as conn:
        [part] = conn.partitions(4)
        assert part.bounds == {"mode": "after"}
        [sb] = list(conn.scan(part, '{"after":[40],"done":false,"mode":"after"}', 5))
    assert sb.batch.column(ID).to_pylist() == [41, 42]
    assert sb.batch.schema.field(ID).type == pa.int64()
    assert decode_cursor(sb.cursor) == {"mode": "after", "after": [42], "done": True}
    [search] = es_server.calls("POST", "/_search")
    sent = search.json()
    assert sent["sort"] == [{"vecmigrate_id": "asc"}]
    assert sent["search_after"] == [40]  # a fresh PIT, resumed from the sort value alone
    assert sent["pit"]["id"] == FX["es_pit_open"]["body"]["id"]


def test_bulk_sends_ndjson_and_reports_refused_items(es_server: ReplayServer) -> None:
    spec = make_spec(dim=2, id_type="int64", documents=False, metadata=(MetadataType.STRING,))
    created_index(es_server, spec, "elasticsearch")
    es_server.add("PUT", "/_bulk", reply("es_bulk_errors"), reply("es_bulk_rejected"))
    batch = make_batch(spec, 0, 3)
    with es(es_server, "items") as conn:
        with pytest.raises(DataError) as err:
            conn.upsert(batch)
        assert err.value.row == 1 and err.value.record_id == "2"
        assert "document_parsing_exception" in str(err.value)
        with pytest.raises(TransientError, match="es_rejected_execution_exception"):
            conn.upsert(batch.slice(0, 2))
    first = es_server.calls("PUT", "/_bulk")[0]
    assert first.headers["content-type"].startswith("application/vnd.elasticsearch+x-ndjson")
    lines = first.ndjson()
    assert lines[0] == {"index": {"_index": "items", "_id": "1"}}
    src = lines[1]
    assert src["vecmigrate_id"] == 1 and src["category"] == "alpha"
    want = batch.column("vector").values.to_numpy()[:2].tolist()
    assert np.float32(src["vector"]).tolist() == want
    assert len(lines) == 6


def test_check_bulk_response_passes_clean_responses() -> None:
    check_bulk_response(FX["es_bulk_ok"]["body"], ["1", "2"], "elasticsearch")


# -- OpenSearch: scroll without a sort field, PIT with one ----------------------------------
def test_opensearch_scroll_scan_and_no_resume(os_server: ReplayServer) -> None:
    os_server.add("HEAD", "/my-knn-index-1", Reply(200), sticky=True)
    os_server.add("GET", "/my-knn-index-1/_mapping", reply("os_mapping_foreign"), sticky=True)
    os_server.add("POST", "/my-knn-index-1/_search", reply("os_scroll_first"))
    os_server.add("POST", "/_search/scroll", reply("os_scroll_next"))
    os_server.add("DELETE", "/_search/scroll", reply("os_clear_scroll"))
    with opensearch(os_server, "my-knn-index-1") as conn:
        [part] = conn.partitions(2)
        got = list(conn.scan(part, None, 2))
        with pytest.raises(TerminalError, match="scroll cannot resume"):
            list(conn.scan(part, got[0].cursor, 2))
    assert [sb.batch.column(ID).to_pylist() for sb in got] == [["1", "2"], ["3"]]
    assert got[0].batch.column("price").to_pylist() == [12.2, 7.1]
    [start] = os_server.calls("POST", "/my-knn-index-1/_search")
    assert start.query["scroll"] == ["10m"]
    assert start.json()["sort"] == ["_doc"]
    scroll_id = FX["os_scroll_first"]["body"]["_scroll_id"]
    [nxt] = os_server.calls("POST", "/_search/scroll")
    assert nxt.json() == {"scroll_id": scroll_id, "scroll": "10m"}
    [clear] = os_server.calls("DELETE", "/_search/scroll")
    assert clear.json() == {"scroll_id": [scroll_id]}


def test_opensearch_pit_with_sort_field(os_server: ReplayServer) -> None:
    spec = make_spec(dim=2, documents=False, metadata=())
    body = created_index(os_server, spec, "opensearch")
    assert body["settings"]["index"]["knn"] is True
    assert body["mappings"]["properties"]["vector"]["method"] == {
        "name": "hnsw",
        "space_type": "cosinesimil",
        "engine": "faiss",
    }
    os_server.add("POST", "/items/_search/point_in_time", reply("os_create_pit"))
    os_server.add("POST", "/_search", reply("os_search_pit_page"))
    os_server.add("DELETE", "/_search/point_in_time", reply("os_delete_pit"))
    with opensearch(os_server, "items") as conn:
        assert conn.scan_mode() == "after"
        [sb] = list(conn.scan(Partition("all", {"mode": "after"}), None, 10))
    assert sb.batch.column(ID).to_pylist() == ["doc-1"]
    [pit] = os_server.calls("POST", "/items/_search/point_in_time")
    assert pit.query["keep_alive"] == ["10m"]
    [search] = os_server.calls("POST", "/_search")
    pit_id = FX["os_create_pit"]["body"]["pit_id"]
    assert search.json()["pit"] == {"id": pit_id, "keep_alive": "10m"}
    assert search.json()["sort"] == [{"vecmigrate_id": "asc"}]
    [delete] = os_server.calls("DELETE", "/_search/point_in_time")
    assert delete.json() == {"pit_id": [pit_id]}


def test_capabilities_say_not_verified() -> None:
    for cls in (ElasticsearchConnector, OpenSearchConnector):
        assert cls.capabilities.verified is False
        assert "not verified against a live server" in cls.capabilities.notes


def test_opensearch_bulk_body_and_item_errors(os_server: ReplayServer) -> None:
    spec = make_spec(dim=2, documents=False, metadata=())
    created_index(os_server, spec, "opensearch")
    os_server.add("POST", "/_bulk", reply("os_bulk_errors"))
    with opensearch(os_server, "items") as conn, pytest.raises(DataError) as err:
        conn.upsert(make_batch(spec, 0, 2))
    assert err.value.row == 1 and err.value.record_id == "doc-0000001"
    assert "mapper_parsing_exception" in str(err.value)
    [bulk] = os_server.calls("POST", "/_bulk")
    lines = bulk.ndjson()
    assert lines[0] == {"index": {"_index": "items", "_id": "doc-0000000"}}
    assert set(lines[1]) == {"vecmigrate_id", "vector"}
