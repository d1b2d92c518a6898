"""Contract tests: the Weaviate connector against recorded responses.

CONTRACT TESTS, not tests against a live server. weaviate-client v4 speaks REST for schema
and tenants and gRPC for objects and batch imports. What is exercised here:

- REST, end to end through the real client: ``GET /v1/schema/{Collection}`` and
  ``GET /v1/schema/{Collection}/tenants`` replayed by a local HTTP server in the documented
  shapes (``fixtures/weaviate.json``) and parsed by the client itself, then mapped to a
  CollectionSpec; ``POST /v1/schema`` bodies that ``create()`` makes the client send.
- gRPC, at the function level only: query results and batch errors are built from the
  documented object shapes as the client's own ``Object`` values (dates as datetimes, geo
  coordinates as ``GeoCoordinate``, as its gRPC decoder returns them); the cursor scan runs
  against those pages in place of ``fetch_objects``. The gRPC wire format itself, the
  server's ordering by UUID and its batch semantics are NOT exercised.

The conformance suite covers all of it when VECMIGRATE_TEST_WEAVIATE_URL names a live server.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from tests.contract.replay import ReplayServer, Reply, load_fixture
from tests.datagen import make_batch, make_spec
from vecmigrate.connectors.base import IfExists, Partition
from vecmigrate.errors import DataError, TerminalError, TransientError
from vecmigrate.spec import ID, MetadataType, Metric

pytest.importorskip("weaviate")

from weaviate.collections.classes.internal import MetadataReturn, Object
from weaviate.collections.classes.types import GeoCoordinate

from vecmigrate.connectors.registry import connect
from vecmigrate.connectors.weaviate.connector import WeaviateConnector
from vecmigrate.connectors.weaviate.errors import refused_objects
from vecmigrate.connectors.weaviate.mapping import (
    ID_NAMESPACE,
    ID_PROPERTY,
    batch_to_objects,
    collection_body,
    objects_to_batch,
    weaviate_uuid,
)

FX = load_fixture("weaviate.json")


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        srv.add("GET", "/v1/meta", Reply(200, FX["meta"]["body"]), sticky=True)
        yield srv


def open_collection(server: ReplayServer, name: str, **options: str) -> WeaviateConnector:
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    conn = connect(f"weaviate://127.0.0.1:{server.port}?collection={name}&init_checks=false{extra}")
    assert isinstance(conn, WeaviateConnector)
    return conn


def client_object(rest: dict[str, Any]) -> Object[Any, Any]:
    """A documented REST object as the v4 client's gRPC decoder hands it over."""
    props: dict[str, Any] = {}
    for key, raw in rest.get("properties", {}).items():
        value = raw
        if key == "published":
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        elif key == "location":
            value = GeoCoordinate(**raw)
        props[key] = value
    vectors = rest.get("vectors") or {"default": rest["vector"]}
    return Object(
        uuid=uuid.UUID(rest["id"]),
        metadata=MetadataReturn(),
        properties=props,
        references=None,
        vector=vectors,
        collection=rest["class"],
    )


def serve_article(server: ReplayServer) -> None:
    server.add("GET", "/v1/schema/Article", Reply(200, FX["schema_article"]["body"]), sticky=True)


def fake_dims(conn: WeaviateConnector, dims: dict[str, int]) -> None:
    """Stand in for the gRPC reads describe() makes: vector dimensions (read from objects)
    and, on servers >= 1.25, the tenant list (the client's TenantOutput values, built from
    the documented REST tenant shape)."""
    from weaviate.collections.classes.tenants import TenantOutput

    conn._probe_dims = lambda config, tenants: dims  # type: ignore[method-assign]
    tenants = {
        t["name"]: TenantOutput(name=t["name"], activity_status=t["activityStatus"])
        for t in FX["tenants"]["body"]
    }
    conn._list_tenants = lambda: tenants  # type: ignore[method-assign]


# -- describe over REST ---------------------------------------------------------------------
def test_describe_named_vectors_properties_and_tenants(server: ReplayServer) -> None:
    serve_article(server)
    with open_collection(server, "Article", inactive_tenants="skip") as conn:
        fake_dims(conn, {"title_vector": 3, "body_vector": 2})
        spec = conn.describe()
        parts = conn.partitions(8)
    title, body = spec.vector("title_vector"), spec.vector("body_vector")
    assert (title.dim, title.metric, title.embedding_model) == (
        3,
        Metric.COSINE,
        "text-embedding-3-small",
    )
    assert (body.dim, body.metric) == (2, Metric.IP)
    hnsw = next(i for i in spec.indexes if i.field == "title_vector")
    assert hnsw.kind == "hnsw"
    assert hnsw.params["maxConnections"] == 32 and hnsw.params["efConstruction"] == 128
    assert next(i for i in spec.indexes if i.field == "body_vector").kind == "flat"
    assert {m.name: m.type for m in spec.metadata} == {
        "title": MetadataType.STRING,
        "wordCount": MetadataType.INT64,
        "rating": MetadataType.FLOAT64,
        "published": MetadataType.TIMESTAMP,
        "tags": MetadataType.LIST_STRING,
        "isAccessible": MetadataType.BOOL,
        "location": MetadataType.JSON,
        "_tenant": MetadataType.STRING,
    }
    system = spec.system["weaviate"]
    assert system["vectorizers"]["title_vector"]["vectorizer"] == "text2vec-openai"
    assert system["vectorizers"]["title_vector"]["source_properties"] == ["title"]
    assert system["references"] == ["hasAuthors"]
    assert system["tenants"] == {"tenantA": "ACTIVE", "tenantB": "INACTIVE", "tenantC": "OFFLOADED"}
    assert spec.partitions == ["tenantA", "tenantB", "tenantC"]  # every tenant reported
    assert [p.bounds for p in parts] == [{"tenant": "tenantA"}]  # inactive ones skipped
    assert spec.id_type == "string" and spec.id_mapping is None and system["uuid_ids"]


def test_inactive_tenants_fail_by_default(server: ReplayServer) -> None:
    serve_article(server)
    with open_collection(server, "Article") as conn:
        fake_dims(conn, {"title_vector": 3, "body_vector": 2})
        with pytest.raises(TerminalError, match="tenantB \\(INACTIVE\\), tenantC \\(OFFLOADED\\)"):
            conn.partitions(8)


def test_one_tenant_reads_without_a_tenant_column(server: ReplayServer) -> None:
    serve_article(server)
    with open_collection(server, "Article", tenant="tenantA") as conn:
        fake_dims(conn, {"title_vector": 3, "body_vector": 2})
        spec = conn.describe()
        assert [p.bounds for p in conn.partitions(8)] == [{"tenant": "tenantA"}]
    assert spec.metadata_field("_tenant") is None


def test_describe_legacy_collection_with_mapped_ids(server: ReplayServer) -> None:
    server.add("GET", "/v1/schema/Legacy", Reply(200, FX["schema_legacy"]["body"]), sticky=True)
    with open_collection(server, "Legacy") as conn:
        fake_dims(conn, {"vector": 2})
        spec = conn.describe()
    assert spec.id_type == "int64"
    assert spec.id_mapping is not None and ID_PROPERTY in spec.id_mapping
    assert str(ID_NAMESPACE) in spec.id_mapping
    assert (spec.vector().name, spec.vector().metric) == ("vector", Metric.L2)
    assert spec.has_document
    assert [(m.name, m.type) for m in spec.metadata] == [("extra", MetadataType.JSON)]
    assert spec.system["weaviate"]["legacy_vector"] is True


# -- create over REST -----------------------------------------------------------------------
def test_create_posts_the_collection_definition(server: ReplayServer) -> None:
    server.add("GET", "/v1/schema/Items", Reply(404), Reply(404))
    server.add("POST", "/v1/schema", Reply(200, {"class": "Items"}))
    spec = make_spec(dim=4, metric=Metric.IP, id_type="int64")
    with open_collection(server, "Items") as conn:
        conn.create(spec, IfExists.FAIL)
    [post] = server.calls("POST", "/v1/schema")
    body = post.json()
    assert body["class"] == "Items"
    vector = body["vectorConfig"]["vector"]
    assert vector["vectorizer"] == {"none": {}}
    assert vector["vectorIndexType"] == "hnsw"
    assert vector["vectorIndexConfig"]["distance"] == "dot"
    props = {p["name"]: p for p in body["properties"]}
    assert props[ID_PROPERTY]["dataType"] == ["int"]
    assert props[ID_PROPERTY]["description"] == "vecmigrate:id"
    assert props["document"]["dataType"] == ["text"]
    assert [props[m]["dataType"] for m in ("category", "rank", "score", "active")] == [
        ["text"],
        ["int"],
        ["number"],
        ["boolean"],
    ]
    assert "multiTenancyConfig" not in body


def test_multi_tenant_round_trip_definition() -> None:
    """Weaviate -> Weaviate keeps tenants: the _tenant column makes the target multi-tenant."""
    from weaviate.collections.classes.config_methods import _collection_config_from_json

    from vecmigrate.connectors.weaviate.mapping import describe_config

    config = _collection_config_from_json(FX["schema_article"]["body"])
    spec, _ = describe_config(
        config,
        dims={"title_vector": 3, "body_vector": 2},
        document_property="document",
        tenant_field="_tenant",
        tenants={"tenantA": "ACTIVE"},
    )
    body, layout = collection_body(
        spec, name="Copy", multi_tenant=True, tenant_field="_tenant", keep_vectorizers=True
    )
    assert body["multiTenancyConfig"]["enabled"] is True
    assert "_tenant" not in {p["name"] for p in body["properties"]}
    assert layout.tenant_field == "_tenant"
    assert body["vectorConfig"]["title_vector"]["vectorizer"] == {
        "text2vec-openai": {
            "model": "text-embedding-3-small",
            "vectorizeClassName": False,
            "properties": ["title"],
        }
    }
    assert body["vectorConfig"]["title_vector"]["vectorIndexConfig"]["maxConnections"] == 32
    assert ID_PROPERTY not in {p["name"] for p in body["properties"]}  # UUID ids stay as they are


# -- objects <-> batches (gRPC results at the function level) --------------------------------
def test_objects_become_a_batch(server: ReplayServer) -> None:
    serve_article(server)
    with open_collection(server, "Article", inactive_tenants="skip") as conn:
        fake_dims(conn, {"title_vector": 3, "body_vector": 2})
        spec = conn.describe()
        _, layout = conn._read_layout()
    objects = [client_object(o) for o in FX["article_objects"]["body"]["objects"]]
    batch = objects_to_batch(objects, layout, spec.arrow_schema(), tenant="tenantA")
    assert batch.column(ID).to_pylist() == [
        o["id"] for o in FX["article_objects"]["body"]["objects"]
    ]
    assert batch.column("title_vector").to_pylist()[0] == [0.5, -1.25, 3.0]
    assert batch.column("body_vector").type == pa.list_(pa.float32(), 2)
    assert batch.column("published").to_pylist()[0] == dt.datetime(2023, 3, 1, 10, tzinfo=dt.UTC)
    assert batch.column("location").to_pylist() == ['{"latitude": 52.37, "longitude": 4.89}', None]
    assert batch.column("tags").to_pylist() == [["history", "art"], None]
    assert batch.column("_tenant").to_pylist() == ["tenantA", "tenantA"]


def test_non_uuid_ids_are_mapped_and_restored(server: ReplayServer) -> None:
    server.add("GET", "/v1/schema/Legacy", Reply(200, FX["schema_legacy"]["body"]), sticky=True)
    with open_collection(server, "Legacy") as conn:
        fake_dims(conn, {"vector": 2})
        spec = conn.describe()
        _, layout = conn._read_layout()
    [rest] = FX["legacy_objects"]["body"]["objects"]
    batch = objects_to_batch([client_object(rest)], layout, spec.arrow_schema())
    assert batch.column(ID).to_pylist() == [42] and batch.schema.field(ID).type == pa.int64()
    assert batch.column("document").to_pylist() == ["forty-two"]
    assert batch.column("extra").to_pylist() == ['{"k": 1}']
    # writing it back: uuid5 of the id, the original id kept in the property
    [obj] = batch_to_objects(batch, layout)
    assert obj.uuid == str(uuid.uuid5(ID_NAMESPACE, "42"))
    assert obj.properties == {ID_PROPERTY: 42, "document": "forty-two", "extra": '{"k": 1}'}
    assert obj.vector == [1.5, 2.5]  # the unnamed vector


def test_uuid_ids_are_kept_and_string_ids_are_mapped() -> None:
    canonical = "a0000000-0000-4000-8000-00000000000b"
    assert weaviate_uuid(canonical) == canonical
    assert weaviate_uuid(canonical.upper()) != canonical.upper()  # not canonical: mapped
    assert weaviate_uuid("doc-1") == str(uuid.uuid5(ID_NAMESPACE, "doc-1"))
    spec = make_spec(dim=3, documents=False, metadata=())
    _body, layout = collection_body(spec, name="Items", multi_tenant=False, tenant_field=None)
    batch = make_batch(spec, 0, 2)
    objs = batch_to_objects(batch, layout)
    assert [o.properties[ID_PROPERTY] for o in objs] == ["doc-0000000", "doc-0000001"]
    assert all(set(o.vector) == {"vector"} for o in objs)  # type: ignore[arg-type]
    back = [
        Object(
            uuid=uuid.UUID(o.uuid),
            metadata=MetadataReturn(),
            properties=o.properties,
            references=None,
            vector=o.vector,  # type: ignore[arg-type]
            collection="Items",
        )
        for o in objs
    ]
    again = objects_to_batch(back, layout, spec.arrow_schema())
    assert again.equals(batch)


# -- cursor scan (fetch_objects pages stood in at the function level) ------------------------
def test_cursor_scan_passes_the_last_uuid_and_resumes(server: ReplayServer) -> None:
    server.add("GET", "/v1/schema/Legacy", Reply(200, FX["schema_legacy"]["body"]), sticky=True)
    rest = FX["legacy_objects"]["body"]["objects"][0]
    pages: dict[str | None, list[Object[Any, Any]]] = {}
    ids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(1, 6)]
    objects = [
        client_object({**rest, "id": u, "properties": {**rest["properties"], "_vecmigrate_id": i}})
        for i, u in enumerate(ids)
    ]
    pages[None] = objects[0:2]
    pages[ids[1]] = objects[2:4]
    pages[ids[3]] = objects[4:5]
    asked: list[tuple[str | None, int]] = []

    def fetch_page(tenant: str | None, after: str | None, limit: int, layout: Any) -> list[Any]:
        asked.append((after, limit))
        return pages.get(after, [])

    with open_collection(server, "Legacy") as conn:
        fake_dims(conn, {"vector": 2})
        conn._fetch_page = fetch_page  # type: ignore[method-assign]
        got = list(conn.scan(Partition("all"), None, 2))
        resumed = list(conn.scan(Partition("all"), got[0].cursor, 2))
    assert [sb.cursor for sb in got] == [ids[1], ids[3], ids[4]]
    assert [sb.batch.column(ID).to_pylist() for sb in got] == [[0, 1], [2, 3], [4]]
    assert asked[:3] == [(None, 2), (ids[1], 2), (ids[3], 2)]
    assert [sb.batch.column(ID).to_pylist() for sb in resumed] == [[2, 3], [4]]


# -- batch import errors ----------------------------------------------------------------------
def test_refused_objects_name_rows_and_ids() -> None:
    results = FX["batch_errors"]["body"]
    messages = {
        i: r["result"]["errors"]["error"][0]["message"]
        for i, r in enumerate(results)
        if r["result"].get("errors")
    }
    ids = ["a", "b", "c", "d"]
    err = refused_objects(messages, rows=[1, 2, 3], ids=ids, sent=3)
    assert isinstance(err, DataError)
    assert err.row == 2 and err.record_id == "c"
    assert "vector lengths don't match" in str(err)
    only_transient = refused_objects({2: messages[2]}, rows=[1, 2, 3], ids=ids, sent=3)
    assert isinstance(only_transient, TransientError)
    assert refused_objects({}, rows=[], ids=[], sent=0) is None


def test_capabilities_say_not_verified() -> None:
    assert WeaviateConnector.capabilities.verified is False
    assert "not verified against a live server" in WeaviateConnector.capabilities.notes
