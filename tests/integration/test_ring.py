"""A ring of copies through every real engine, validated at every hop.

pgvector -> Milvus (Lite) -> Qdrant (edge) -> Chroma -> LanceDB -> sqlite-vec -> FAISS -> pgvector
on 20k x 384 records (cosine). The ring ends with the original ids, metadata and documents, and
vectors equal up to what the engines document: Qdrant and FAISS store cosine vectors normalised
(so from the Qdrant hop on, vectors equal the normalised originals within 1e-6), Chroma may
return a float32 component 1-2 ulp off and rounds float64 metadata to 16 significant digits.
Each hop's `validate` (completeness, metadata, query parity) passes, with the tolerance policy
derived from the two engines' capabilities.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.engine.copy import CopyOptions, copy
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import ID, Metric
from vecmigrate.validate.run import Thresholds, ValidateOptions, validate

N = 20_000
DIM = 384
NEEDS = ("psycopg", "pymilvus", "qdrant_edge", "chromadb", "lancedb", "sqlite_vec", "faiss")


def _read(uri: str) -> pa.Table:
    with connect(uri) as conn:
        parts = conn.partitions(4)
        return pa.Table.from_batches([sb.batch for p in parts for sb in conn.scan(p, None, 5_000)])


def _clustered(table: pa.Table) -> pa.Table:
    """Vectors around 64 centres, as real embeddings cluster by topic (uniform random vectors
    in 384 dimensions are the worst case for every approximate index on the ring)."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((64, DIM)).astype(np.float32)
    noise = 0.35 * rng.standard_normal((table.num_rows, DIM)).astype(np.float32)
    vectors = centres[np.arange(table.num_rows) % 64] + noise
    col = table.schema.get_field_index("vector")
    return table.set_column(col, table.schema.field(col), fixed_size_vectors(vectors))


@pytest.mark.slow
def test_ring_through_every_engine(postgres_engine: Any, tmp_path: Path) -> None:
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"clients not installed: {missing}")
    spec = make_spec(dim=DIM, metric=Metric.COSINE)
    original = _clustered(
        pa.Table.from_batches([make_batch(spec, s, 5_000) for s in range(0, N, 5_000)])
    )
    start = postgres_engine.uri("ring_start")
    with connect(start) as conn:
        conn.create(spec, IfExists.REPLACE)
        for b in original.to_batches():
            conn.upsert(b)
        conn.finalize(spec)
    ring = [
        start,
        f"milvus+lite://{tmp_path}/ring.db?collection=ring",
        f"qdrant+edge://{tmp_path}/qdrant",
        f"chroma://{tmp_path}/chroma?collection=ring",
        f"lancedb://{tmp_path}/lance?table=ring",
        f"sqlitevec://{tmp_path}/ring.sqlite?table=ring",
        f"faiss://{tmp_path}/ring.index",
        postgres_engine.uri("ring_end"),
    ]
    hops: list[dict[str, Any]] = []
    for src, dst in itertools.pairwise(ring):
        result = copy(src, dst, CopyOptions(state_dir=tmp_path / "state", batch_size=2_000))
        assert result.rows == N and result.target_count == N, (src, dst)
        check = validate(
            src, dst, ValidateOptions(queries=30, thresholds=Thresholds(min_recall=0.95))
        )
        hops.append({"hop": f"{src.split(':')[0]} -> {dst.split(':')[0]}", **check.as_dict()})
        assert check.passed, hops[-1]
    end = _read(ring[-1]).sort_by(ID)
    want = original.sort_by(ID)
    assert end.column(ID).to_pylist() == want.column(ID).to_pylist()
    for name in ("document", "category", "rank", "active"):
        assert end.column(name).to_pylist() == want.column(name).to_pylist(), name
    # Chroma rounds float64 metadata to 16 significant digits (its declared drift: <= 4 ulp)
    np.testing.assert_array_max_ulp(
        end.column("score").to_numpy(), want.column("score").to_numpy(), maxulp=4
    )
    got, orig = vectors_numpy(end.column("vector")), vectors_numpy(want.column("vector"))
    unit = orig / np.linalg.norm(orig, axis=1, keepdims=True)
    np.testing.assert_allclose(got, unit, rtol=0, atol=1e-6)  # normalised at the Qdrant hop
    with connect(ring[-1]) as conn:
        described = conn.describe()
    assert (described.vector().dim, described.vector().metric) == (DIM, Metric.COSINE)
