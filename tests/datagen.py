"""Deterministic test collections as Arrow batches."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vecmigrate.records import fixed_size_vectors
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType, Metric, VectorField

WORDS = ["alpha", "béta", "gamma", "δέλτα", "epsilon", "zeta 🚀", "eta", "theta"]


def make_spec(
    dim: int = 32,
    metric: Metric = Metric.COSINE,
    *,
    id_type: str = "string",
    documents: bool = True,
    metadata: tuple[MetadataType, ...] = (
        MetadataType.STRING,
        MetadataType.INT64,
        MetadataType.FLOAT64,
        MetadataType.BOOL,
    ),
    name: str = "items",
) -> CollectionSpec:
    names = {
        MetadataType.STRING: "category",
        MetadataType.INT64: "rank",
        MetadataType.FLOAT64: "score",
        MetadataType.BOOL: "active",
    }
    return CollectionSpec(
        name=name,
        id_type=id_type,  # type: ignore[arg-type]
        vectors=[VectorField(name="vector", dim=dim, metric=metric)],
        metadata=[MetadataField(name=names[t], type=t) for t in metadata],
        has_document=documents,
    )


def make_batch(
    spec: CollectionSpec, start: int, n: int, *, seed: int = 0, id_prefix: str = "doc-"
) -> pa.RecordBatch:
    """Rows start..start+n of a deterministic collection matching ``spec``."""
    rng = np.random.default_rng(seed + start)
    idx = np.arange(start, start + n)
    cols: dict[str, pa.Array] = {}
    if spec.id_type == "string":
        cols["id"] = pa.array([f"{id_prefix}{i:07d}" for i in idx], pa.string())
    else:
        cols["id"] = pa.array(idx + 1, pa.int64())
    for vf in spec.vectors:
        cols[vf.name] = fixed_size_vectors(rng.standard_normal((n, vf.dim), dtype=np.float32))
    if spec.has_document:
        cols["document"] = pa.array([f"document {i} about {WORDS[i % 8]}" for i in idx])
    for m in spec.metadata:
        if m.type is MetadataType.STRING:
            cols[m.name] = pa.array([WORDS[i % 8] for i in idx])
        elif m.type is MetadataType.INT64:
            cols[m.name] = pa.array((idx * 7919) % 100_003 - 50_000, pa.int64())
        elif m.type is MetadataType.FLOAT64:
            cols[m.name] = pa.array(rng.standard_normal(n) * 1e3, pa.float64())
        elif m.type is MetadataType.BOOL:
            cols[m.name] = pa.array(idx % 3 == 0)
        else:
            raise ValueError(m.type)
    return pa.RecordBatch.from_pydict(cols).cast(spec.arrow_schema())


def make_table(spec: CollectionSpec, n: int, *, batch: int = 5000, seed: int = 0) -> pa.Table:
    batches = [make_batch(spec, s, min(batch, n - s), seed=seed) for s in range(0, n, batch)]
    return pa.Table.from_batches(batches, spec.arrow_schema())
