"""Reading vdf-io folders: VDF_META.json plus Parquet files written through pandas.

The fixture is written by hand after vdf-io's documented layout (``VDFMeta``/``NamespaceMeta``
in its meta_types.py; ``data_path`` relative to the folder; numbered Parquet files with an
``id`` column, list<double> vectors and metadata columns, metric names as in Qdrant).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import Partition, WriteToken
from vecmigrate.errors import ConfigError, DataError, NotFoundError
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import ID, MetadataType, Metric

DIM = 8
ROWS = (120, 80)


def _vectors(start: int, n: int) -> np.ndarray:
    return np.random.default_rng(start).standard_normal((n, DIM)).astype(np.float32)


def _file(start: int, n: int, *, pandas_index: bool = False) -> pa.Table:
    idx = np.arange(start, start + n)
    cols: dict[str, Any] = {
        "id": pa.array([f"v{i}" for i in idx]),
        # pandas writes lists of Python floats as list<double>
        "vector": pa.array(_vectors(start, n).astype(np.float64).tolist(), pa.list_(pa.float64())),
        "title": pa.array([f"title {i} ü" if i % 9 else None for i in idx]),
        "price": pa.array(idx * 0.1),
        "stock": pa.array(idx.astype(np.int32)),
        "tags": pa.array([["a", f"t{i}"] for i in idx]),
        "meta": pa.array([{"k": int(i), "src": "x"} for i in idx]),
        "created": pa.array(idx * 1_000_000_000 + 1_700_000_000_000_000_000, pa.timestamp("ns")),
    }
    if pandas_index:
        cols["__index_level_0__"] = pa.array(idx)
    return pa.table(cols)


def write_vdf(folder: Path, *, metric: str = "Cosine", extra_index: bool = False) -> Path:
    data = folder / "products"
    data.mkdir(parents=True)
    start = 0
    files = []
    for k, n in enumerate(ROWS, start=1):
        pq.write_table(_file(start, n, pandas_index=k == 2), data / f"{k}.parquet")
        files.append(f"{folder.name}/products/{k}.parquet")
        start += n
    namespace = {
        "namespace": "",
        "index_name": "products",
        "total_vector_count": sum(ROWS),
        "exported_vector_count": sum(ROWS),
        "dimensions": DIM,
        "model_name": "text-embedding-ada-002",
        "model_map": {
            "vector": {
                "model_name": "text-embedding-ada-002",
                "text_column": "NOT_PROVIDED",
                "dimensions": DIM,
                "vector_column": "vector",
            }
        },
        "vector_columns": ["vector"],
        "data_path": "products",
        "metric": metric,
        "index_config": {"hnsw": {"m": 16}},
        "schema_dict_str": "id: string\nvector: list<item: double>",
    }
    indexes: dict[str, Any] = {"products": [namespace]}
    if extra_index:
        indexes["other"] = [dict(namespace, index_name="other")]
    meta = {
        "version": "0.1.260",
        "file_structure": [*files, f"{folder.name}/VDF_META.json"],
        "author": "tester",
        "exported_from": "lancedb",
        "indexes": indexes,
        "exported_at": "2024-05-01T12:00:00+00:00",
        "id_column": "id",
    }
    (folder / "VDF_META.json").write_text(json.dumps(meta, indent=4))
    return folder


def _all(conn: Any, hint: int = 2, batch_size: int = 50) -> pa.Table:
    parts = conn.partitions(hint)
    return pa.Table.from_batches(
        [sb.batch for p in parts for sb in conn.scan(p, None, batch_size)],
        conn.describe().arrow_schema(),
    )


def test_describe_reads_the_meta_and_schema(tmp_path: Path) -> None:
    conn = connect(f"vdf://{write_vdf(tmp_path / 'vdf')}")
    spec = conn.describe()
    assert spec.name == "products"
    assert spec.id_type == "string"
    vf = spec.vector()
    assert (vf.name, vf.dim, vf.metric) == ("vector", DIM, Metric.COSINE)
    assert vf.embedding_model == "text-embedding-ada-002"
    types = {m.name: m.type for m in spec.metadata}
    assert types == {
        "title": MetadataType.STRING,
        "price": MetadataType.FLOAT64,
        "stock": MetadataType.INT64,
        "tags": MetadataType.LIST_STRING,
        "meta": MetadataType.JSON,
        "created": MetadataType.TIMESTAMP,
    }
    assert spec.system["vdf"]["exported_from"] == "lancedb"
    assert conn.count() == sum(ROWS)
    assert conn.capabilities.write is False


def test_scan_returns_every_row_exactly(tmp_path: Path) -> None:
    conn = connect(f"vdf://{write_vdf(tmp_path / 'vdf')}")
    got = _all(conn).sort_by([("id", "ascending")])
    assert got.num_rows == sum(ROWS)
    want_vec = np.concatenate([_vectors(0, ROWS[0]), _vectors(ROWS[0], ROWS[1])])
    order = np.argsort([f"v{i}" for i in range(sum(ROWS))])
    assert np.array_equal(vectors_numpy(got.column("vector")), want_vec[order])
    row = got.filter(pa.compute.equal(got.column(ID), "v10")).to_pylist()[0]
    assert row["title"] == "title 10 ü"
    assert row["price"] == 1.0
    assert row["stock"] == 10
    assert row["tags"] == ["a", "t10"]
    assert json.loads(row["meta"]) == {"k": 10, "src": "x"}
    assert row["created"].isoformat() == "2023-11-14T22:13:30+00:00"
    assert "__index_level_0__" not in got.schema.names


def test_scan_resumes_from_a_cursor(tmp_path: Path) -> None:
    uri = f"vdf://{write_vdf(tmp_path / 'vdf')}"
    conn = connect(uri)
    (part,) = conn.partitions(1)
    part = Partition.from_json(part.to_json())
    it = conn.scan(part, None, 70)
    first = [next(it), next(it)]  # 140 rows: into the second file
    it.close()  # type: ignore[attr-defined]
    rest = list(connect(uri).scan(part, first[-1].cursor, 70))
    ids = [i for sb in first + rest for i in sb.batch.column(ID).to_pylist()]
    assert sorted(ids) == sorted(f"v{i}" for i in range(sum(ROWS)))


def test_fetch_and_query(tmp_path: Path) -> None:
    conn = connect(f"vdf://{write_vdf(tmp_path / 'vdf')}")
    assert sorted(conn.fetch(["v3", "v150", "nope"]).column(ID).to_pylist()) == ["v150", "v3"]
    queries = np.stack([_vectors(0, ROWS[0])[5], _vectors(ROWS[0], ROWS[1])[7]])
    result = conn.query(queries, 3)
    assert [r[0] for r in result.ids] == ["v5", f"v{ROWS[0] + 7}"]


def test_imports_into_a_dataset(tmp_path: Path) -> None:
    source = connect(f"vdf://{write_vdf(tmp_path / 'vdf')}")
    spec = source.describe()
    target = connect(f"parquet://{tmp_path / 'out'}")
    target.create(spec, IfExists.FAIL)
    target.begin("imp", resume=False)
    for i, part in enumerate(source.partitions(2)):
        rows = 0
        for sb in source.scan(part, None, 64):
            target.upsert(sb.batch, WriteToken("imp", i, rows))
            rows += sb.batch.num_rows
    target.finalize(spec)
    assert target.count() == sum(ROWS)
    assert _all(target).sort_by(ID).equals(_all(source).sort_by(ID))


def test_metric_names_and_override(tmp_path: Path) -> None:
    assert (
        connect(f"vdf://{write_vdf(tmp_path / 'a', metric='Euclid')}").describe().vector().metric
        == Metric.L2
    )
    assert (
        connect(f"vdf://{write_vdf(tmp_path / 'b', metric='Dot')}").describe().vector().metric
        == Metric.IP
    )
    manhattan = write_vdf(tmp_path / "c", metric="Manhattan")
    with pytest.raises(ConfigError, match="metric="):
        connect(f"vdf://{manhattan}").describe()
    assert connect(f"vdf://{manhattan}?metric=l2").describe().vector().metric == Metric.L2


def test_several_indexes_need_a_choice(tmp_path: Path) -> None:
    folder = write_vdf(tmp_path / "vdf", extra_index=True)
    with pytest.raises(ConfigError, match=r"\?index="):
        connect(f"vdf://{folder}").describe()
    assert connect(f"vdf://{folder}?index=products").count() == sum(ROWS)
    with pytest.raises(ConfigError, match="'nope' is not in"):
        connect(f"vdf://{folder}?index=nope").describe()


def test_missing_meta_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"VDF_META\.json is missing") as info:
        connect(f"vdf://{tmp_path}").describe()
    assert str(tmp_path) in str(info.value)


def test_data_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    folder = write_vdf(tmp_path / "vdf")
    meta = json.loads((folder / "VDF_META.json").read_text())
    meta["indexes"]["products"][0]["data_path"] = "../elsewhere"
    (folder / "VDF_META.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="inside the dataset folder") as info:
        connect(f"vdf://{folder}").describe()
    assert info.value.file == "../elsewhere"


def test_symlinked_file_outside_is_refused(tmp_path: Path) -> None:
    folder = write_vdf(tmp_path / "vdf")
    (folder / "products" / "1.parquet").rename(tmp_path / "real.parquet")
    os.symlink(tmp_path / "real.parquet", folder / "products" / "3.parquet")
    with pytest.raises(DataError, match="outside the dataset folder"):
        connect(f"vdf://{folder}").describe()


def test_bad_vectors_are_named(tmp_path: Path) -> None:
    folder = write_vdf(tmp_path / "vdf")
    table = _file(0, ROWS[0])
    vectors = table.column("vector").to_pylist()
    vectors[33] = vectors[33][:5]
    pq.write_table(
        table.set_column(1, "vector", pa.array(vectors)), folder / "products" / "1.parquet"
    )
    with pytest.raises(DataError, match="5 dimensions, expected 8") as info:
        _all(connect(f"vdf://{folder}"))
    err = info.value
    assert (err.file, err.row, err.field) == ("products/1.parquet", 33, "vector")

    vectors[33] = [float("nan")] * DIM
    pq.write_table(
        table.set_column(1, "vector", pa.array(vectors)), folder / "products" / "1.parquet"
    )
    with pytest.raises(DataError, match="NaN") as info:
        _all(connect(f"vdf://{folder}"))
    assert (info.value.file, info.value.row) == ("products/1.parquet", 33)


def test_duplicate_ids_are_named(tmp_path: Path) -> None:
    folder = write_vdf(tmp_path / "vdf")
    table = _file(0, ROWS[0])
    ids = table.column("id").to_pylist()
    ids[90] = ids[10]
    pq.write_table(table.set_column(0, "id", pa.array(ids)), folder / "products" / "1.parquet")
    with pytest.raises(DataError, match="duplicate id") as info:
        _all(connect(f"vdf://{folder}"), batch_size=50)
    assert (info.value.file, info.value.row, info.value.record_id) == (
        "products/1.parquet",
        90,
        "v10",
    )
