"""Milvus-specific behaviour against the real Milvus Lite engine (milvus-lite 2.5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.milvus.lite import LiteEngines
from vecmigrate.errors import DataError, NotFoundError, SchemaMismatch
from vecmigrate.spec import ID, MetadataType, Metric

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "m.db"


@pytest.fixture
def raw(db: Path) -> Iterator[Any]:
    """A pymilvus client on the same Lite engine the connectors use."""
    client = LiteEngines.open_client(db, 60)
    yield client
    client.close()
    LiteEngines.release(db)


def _made_by_client(raw: Any, name: str = "films") -> None:
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("emb", DataType.FLOAT_VECTOR, dim=8)
    schema.add_field("title", DataType.VARCHAR, max_length=100)
    schema.add_field("year", DataType.INT32)
    schema.add_field(
        "tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=8, max_length=20
    )
    params = raw.prepare_index_params()
    params.add_index("emb", index_type="FLAT", metric_type="L2")
    raw.create_collection(name, schema=schema, index_params=params)
    rng = np.random.default_rng(3)
    rows = [
        {
            "pk": i * 10,
            "emb": rng.standard_normal(8).astype(np.float32),
            "title": f'film "{i}" δ',
            "year": 1990 + i,
            "tags": ["a", "b"][: i % 3],
            "rating": i / 3,  # dynamic key
            **({"extra": {"k": i}} if i % 2 else {}),  # dynamic key in some rows only
        }
        for i in range(50)
    ]
    raw.insert(name, rows)


def test_describe_a_collection_made_with_the_client(db: Path, raw: Any) -> None:
    _made_by_client(raw)
    with connect(f"milvus+lite://{db}?collection=films") as conn:
        spec = conn.describe()
        assert spec.id_type == "int64"
        assert spec.system["milvus"]["pk_field"] == "pk"
        assert spec.system["milvus"]["auto_id"] is False
        assert spec.system["milvus"]["enable_dynamic_field"] is True
        vf = spec.vector("emb")
        assert (vf.dim, vf.metric) == (8, Metric.L2)
        assert [(ix.field, ix.kind, ix.metric) for ix in spec.indexes] == [
            ("emb", "flat", Metric.L2)
        ]
        types = {m.name: m.type for m in spec.metadata}
        assert types["title"] is MetadataType.STRING
        assert types["year"] is MetadataType.INT64
        assert types["tags"] is MetadataType.LIST_STRING
        assert types["rating"] is MetadataType.FLOAT64  # found in the dynamic field
        assert types["milvus_dynamic"] is MetadataType.JSON  # keys a sample may miss
        assert spec.metadata_field("title").max_length == 100  # type: ignore[union-attr]
        assert spec.partitions == [] and spec.aliases == []  # Milvus Lite has neither
        got = pa.Table.from_batches([sb.batch for sb in conn.scan(conn.partitions(1)[0], None, 16)])
    assert got.num_rows == 50
    assert sorted(got.column(ID).to_pylist()) == [i * 10 for i in range(50)]
    row = got.filter(pa.compute.equal(got.column(ID), 30)).to_pylist()[0]
    assert row["title"] == 'film "3" δ' and row["rating"] == 1.0 and row["tags"] == []
    assert json.loads(row["extra"]) == {"k": 3}  # sampled, so named
    assert row["milvus_dynamic"] is None


def test_round_trip_into_milvus_keeps_dynamic_keys(db: Path, raw: Any) -> None:
    _made_by_client(raw)
    with (
        connect(f"milvus+lite://{db}?collection=films") as src,
        connect(f"milvus+lite://{db}?collection=copy") as dst,
    ):
        spec = src.describe()
        dst.create(spec, IfExists.REPLACE)
        for sb in src.scan(src.partitions(1)[0], None, 20):
            dst.upsert(sb.batch)
        dst.finalize(spec)
        assert dst.count() == 50
        back = dst.fetch([10, 20]).to_pylist()
    by_id = {r[ID]: r for r in back}
    assert json.loads(by_id[10]["extra"]) == {"k": 1}
    assert by_id[20]["extra"] is None and by_id[20]["rating"] == 2 / 3


def test_missing_collection_is_named(db: Path) -> None:
    with connect(f"milvus+lite://{db}?collection=nowhere") as conn:
        assert not conn.exists()
        with pytest.raises(NotFoundError, match="nowhere"):
            conn.describe()
        with pytest.raises(NotFoundError, match="nowhere"):
            conn.count()


def test_dimension_mismatch_with_a_client_made_collection(db: Path, raw: Any) -> None:
    _made_by_client(raw)
    with connect(f"milvus+lite://{db}?collection=films") as conn:
        wanted = make_spec(dim=16, id_type="int64")
        wanted.vectors[0].name = "emb"
        with pytest.raises(SchemaMismatch, match="dim 8"):
            conn.create(wanted, IfExists.REUSE)


def test_duplicate_primary_keys_are_read_once_and_none_is_lost(db: Path, raw: Any) -> None:
    spec = make_spec(dim=4)
    with connect(f"milvus+lite://{db}?collection=dups") as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 300))
        # a second *insert* (not upsert) of 40 keys: Milvus keeps both rows
        again = make_batch(spec, 100, 40, seed=7)
        rows = conn._to_rows(again)  # the rows pymilvus takes
        raw.insert("dups", rows)
        conn.finalize(spec)
        assert conn.count() == 340  # count(*) counts both copies
        ids = [
            i
            for sb in conn.scan(conn.partitions(1)[0], None, 7)
            for i in sb.batch.column(ID).to_pylist()
        ]
    assert len(ids) == 300 and len(set(ids)) == 300
    assert ids == sorted(ids)


def test_string_ids_with_quotes_and_unicode_scan_and_fetch(db: Path) -> None:
    spec = make_spec(dim=4)
    batch = make_batch(spec, 0, 6)
    odd = ['a"b', "c\\d", "δέλτα", "zeta 🚀", "new line", "plain"]
    batch = batch.set_column(0, pa.field(ID, pa.string(), False), pa.array(odd))
    with connect(f"milvus+lite://{db}?collection=odd") as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(batch)
        conn.finalize(spec)
        seen = []
        for part in [conn.partitions(1)[0]]:
            cursor = None
            for sb in conn.scan(part, None, 2):
                seen += sb.batch.column(ID).to_pylist()
                cursor = sb.cursor
                break
            seen += [
                i for sb in conn.scan(part, cursor, 2) for i in sb.batch.column(ID).to_pylist()
            ]
        assert sorted(seen) == sorted(odd)
        assert sorted(conn.fetch(odd).column(ID).to_pylist()) == sorted(odd)
        conn.delete(['a"b'])
        assert conn.count() == 5
        with pytest.raises(DataError, match="control characters"):
            conn.fetch(["new\nline"])


def test_partitions_are_key_ranges_that_cover_every_row_once(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vecmigrate.connectors.milvus.connector as milvus_connector

    monkeypatch.setattr(milvus_connector, "SPLIT_MIN_ROWS", 1_000)
    spec = make_spec(dim=2, id_type="int64", documents=False, metadata=())
    with connect(f"milvus+lite://{db}?collection=parts") as conn:
        conn.create(spec, IfExists.REPLACE)
        for start in range(0, 5_000, 1_000):
            conn.upsert(make_batch(spec, start, 1_000))
        conn.finalize(spec)
        parts = [type(p).from_json(p.to_json()) for p in conn.partitions(4)]  # persisted and back
        assert len(parts) == 4
        ids = [
            i
            for p in parts
            for sb in conn.scan(p, None, 900)
            for i in sb.batch.column(ID).to_pylist()
        ]
    assert sorted(ids) == list(range(1, 5_001))
