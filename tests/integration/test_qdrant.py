"""Qdrant-specific behaviour: the Edge engine (real Rust engine) and qdrant-client local mode."""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.qdrant.points import ID_NAMESPACE, ORIGINAL_ID
from vecmigrate.errors import NotFoundError, SchemaMismatch
from vecmigrate.spec import ID, MetadataType, Metric

pytest.importorskip("qdrant_client")
pytest.importorskip("qdrant_edge")


def _ids(conn: object) -> list[object]:
    c = conn  # a connector
    return [
        i
        for p in c.partitions(1)  # type: ignore[attr-defined]
        for sb in c.scan(p, None, 50)  # type: ignore[attr-defined]
        for i in sb.batch.column(ID).to_pylist()
    ]


def test_string_ids_map_to_uuids_and_back(tmp_path: Path) -> None:
    spec = make_spec(dim=8)
    batch = make_batch(spec, 0, 120)
    keep = str(uuid.UUID(int=7))  # a canonical UUID is stored as it is
    ids = pa.array([keep, *batch.column(ID).to_pylist()[1:]])
    batch = batch.set_column(0, pa.field(ID, pa.string(), False), ids)
    with connect(f"qdrant+edge://{tmp_path}/edge") as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(batch)
        conn.finalize(spec)
        described = conn.describe()
        assert described.id_mapping and "uuid5" in described.id_mapping
        raw = conn.shard.retrieve(  # type: ignore[attr-defined]
            [str(uuid.uuid5(ID_NAMESPACE, "doc-0000001")), keep], True, False
        )
        by_id = {str(r.id): r.payload for r in raw}
        assert by_id[str(uuid.uuid5(ID_NAMESPACE, "doc-0000001"))][ORIGINAL_ID] == "doc-0000001"
        assert ORIGINAL_ID not in by_id[keep]
        got = _ids(conn)
        assert sorted(got) == sorted(ids.to_pylist())  # type: ignore[type-var]
        # a migration back gets the original ids
        with connect("memory://back") as back:
            back.create(described, IfExists.REPLACE)
            for sb in conn.scan(conn.partitions(1)[0], None, 33):
                back.upsert(sb.batch)
            assert sorted(back.fetch(ids.to_pylist()).column(ID).to_pylist()) == sorted(
                ids.to_pylist()
            )
        hits = conn.query(
            pa.Table.from_batches([batch])
            .column("vector")
            .combine_chunks()
            .flatten()
            .to_numpy()
            .reshape(-1, 8)[:3],
            1,
        )
        assert [row[0] for row in hits.ids] == ids.to_pylist()[:3]


def test_negative_int_ids_round_trip(tmp_path: Path) -> None:
    spec = make_spec(dim=4, id_type="int64")
    batch = make_batch(spec, 0, 10)
    batch = batch.set_column(0, pa.field(ID, pa.int64(), False), pa.array(range(-5, 5)))
    with connect(f"qdrant+edge://{tmp_path}/neg") as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(batch)
        assert sorted(_ids(conn)) == list(range(-5, 5))  # type: ignore[type-var]
        assert sorted(conn.fetch([-5, 4, 99]).column(ID).to_pylist()) == [-5, 4]
        conn.delete([-5])
        assert conn.count() == 9


def test_float64_metadata_is_exact(tmp_path: Path) -> None:
    spec = make_spec(dim=4)
    batch = make_batch(spec, 0, 2_000)
    with connect(f"qdrant+edge://{tmp_path}/floats") as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(batch)
        got = pa.Table.from_batches(
            [sb.batch for sb in conn.scan(conn.partitions(1)[0], None, 500)]
        )
    assert (
        got.sort_by(ID).column("score").to_pylist()
        == pa.Table.from_batches([batch]).sort_by(ID).column("score").to_pylist()
    )


def test_describe_a_collection_made_with_the_client(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "local"))
    client.create_collection(
        "films",
        vectors_config={
            "text": models.VectorParams(size=6, distance=models.Distance.DOT),
            "image": models.VectorParams(size=3, distance=models.Distance.EUCLID),
        },
        sparse_vectors_config={"bm25": models.SparseVectorParams()},
        hnsw_config=models.HnswConfigDiff(m=32, ef_construct=200),
    )
    with warnings.catch_warnings():  # local mode warns (once per process) that it ignores this
        warnings.simplefilter("ignore", UserWarning)
        client.create_payload_index("films", "year", field_schema="integer")
    client.update_collection_aliases(
        change_aliases_operations=[
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name="films", alias_name="films-live")
            )
        ]
    )
    client.upsert(
        "films",
        points=[
            models.PointStruct(
                id=i,
                vector={
                    "text": [float(i)] * 6,
                    "image": [1.0, 2.0, float(i)],
                    "bm25": models.SparseVector(indices=[i, 100], values=[0.5, 1.5]),
                },
                payload={"title": f"film {i}", "year": 1990 + i, "document": f"plot {i}"},
            )
            for i in range(1, 21)
        ],
    )
    client.close()
    with connect(f"qdrant+local://{tmp_path}/local?collection=films") as conn:
        spec = conn.describe()
        assert spec.id_type == "int64"
        assert spec.aliases == ["films-live"]
        vectors = {v.name: v for v in spec.vectors}
        assert (vectors["text"].dim, vectors["text"].metric) == (6, Metric.IP)
        assert (vectors["image"].dim, vectors["image"].metric) == (3, Metric.L2)
        assert vectors["bm25"].sparse
        hnsw = next(ix for ix in spec.indexes if ix.field == "text")
        # local mode keeps its own default HNSW settings; the server would report m=32
        assert hnsw.kind == "hnsw" and {"m", "ef_construct"} <= set(hnsw.params)
        # local mode keeps no payload indexes (the Edge test checks that they are reported)
        types = {m.name: m.type for m in spec.metadata}
        assert types["title"] is MetadataType.STRING and types["year"] is MetadataType.INT64
        assert spec.has_document
        rows = pa.Table.from_batches(
            [sb.batch for sb in conn.scan(conn.partitions(1)[0], None, 7)]
        ).to_pylist()
    assert [r[ID] for r in rows] == list(range(1, 21))
    assert rows[2]["bm25"] == {"indices": [3, 100], "values": [0.5, 1.5]}
    assert rows[2]["document"] == "plot 3" and rows[2]["qdrant_payload"] is None


def test_describe_a_shard_made_with_qdrant_edge(tmp_path: Path) -> None:
    import qdrant_edge as qe

    path = tmp_path / "shard"
    shard = qe.EdgeShard.create(
        str(path),
        qe.EdgeConfig(vectors={"v": qe.EdgeVectorParams(size=4, distance=qe.Distance.Euclid)}),
    )
    shard.update(
        qe.UpdateOperation.upsert_points(
            [
                qe.Point(
                    id=i, vector={"v": [1.0, 0.0, 0.0, float(i)]}, payload={"n": i, "tag": {"k": i}}
                )
                for i in range(5)
            ]
        )
    )
    shard.update(qe.UpdateOperation.create_field_index("n", qe.PayloadSchemaType.Integer))
    shard.close()
    with connect(f"qdrant+edge://{path}") as conn:
        spec = conn.describe()
        assert spec.vector("v").metric is Metric.L2 and spec.vector("v").dim == 4
        assert {m.name: m.type for m in spec.metadata}["tag"] is MetadataType.JSON
        assert any(ix.field == "n" and ix.kind == "payload:integer" for ix in spec.indexes)
        row = conn.fetch([3]).to_pylist()[0]
    assert row["v"] == [1.0, 0.0, 0.0, 3.0] and json.loads(row["tag"]) == {"k": 3}


def test_missing_collection_is_named(tmp_path: Path) -> None:
    local = connect(f"qdrant+local://{tmp_path}/local?collection=nowhere")
    with local, pytest.raises(NotFoundError, match="nowhere"):
        local.describe()
    with connect(f"qdrant+edge://{tmp_path}/no-shard") as conn:
        assert not conn.exists()
        with pytest.raises(NotFoundError, match="no-shard"):
            conn.count()


@pytest.mark.parametrize("scheme", ["qdrant+edge", "qdrant+local"])
def test_dimension_mismatch_with_existing_collection(tmp_path: Path, scheme: str) -> None:
    uri = (
        f"{scheme}://{tmp_path}/dims"
        if scheme == "qdrant+edge"
        else f"{scheme}://{tmp_path}/dims?collection=c"
    )
    with connect(uri) as conn:
        conn.create(make_spec(dim=8), IfExists.REPLACE)
        conn.upsert(make_batch(make_spec(dim=8), 0, 5))
        with pytest.raises(SchemaMismatch, match="dim 8"):
            conn.create(make_spec(dim=16), IfExists.REUSE)
        with pytest.raises(SchemaMismatch):
            conn.create(make_spec(dim=8, metric=Metric.L2), IfExists.REUSE)
