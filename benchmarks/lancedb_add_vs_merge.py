"""LanceDB write paths: its own batched add vs merge_insert, and the connector's two paths.

    python benchmarks/lancedb_add_vs_merge.py [--rows 200000] [--dim 768] [--batch 10000]

The connector appends (add) while a fresh run sends each batch for the first time and merges
(merge_insert on id) otherwise; this measures why. Each case writes the same batches into a
new table, ``--repeat`` times; the median rows/s is reported. Writes
benchmarks/results/lancedb_add_vs_merge.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result

from vecmigrate.connectors import IfExists, WriteToken, connect
from vecmigrate.records import fixed_size_vectors
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType, VectorField


def make_batches(rows: int, dim: int, batch: int) -> tuple[CollectionSpec, list[pa.RecordBatch]]:
    spec = CollectionSpec(
        name="items",
        vectors=[VectorField(name="vector", dim=dim)],
        metadata=[
            MetadataField(name="category", type=MetadataType.STRING),
            MetadataField(name="rank", type=MetadataType.INT64),
        ],
        has_document=True,
    )
    rng = np.random.default_rng(7)
    out = []
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        idx = np.arange(start, start + n)
        out.append(
            pa.RecordBatch.from_pydict(
                {
                    "id": pa.array([f"doc-{i:09d}" for i in idx]),
                    "vector": fixed_size_vectors(rng.standard_normal((n, dim), dtype=np.float32)),
                    "document": pa.array([f"text {i}" for i in idx]),
                    "category": pa.array([("a", "b", "c", "d")[i % 4] for i in idx]),
                    "rank": pa.array(idx, pa.int64()),
                }
            ).cast(spec.arrow_schema())
        )
    return spec, out


def raw_lancedb(
    root: Path, spec: CollectionSpec, batches: list[pa.RecordBatch], merge: bool
) -> None:
    table = lancedb.connect(str(root)).create_table("items", schema=spec.arrow_schema())
    for b in batches:
        if merge:
            table.merge_insert(
                "id"
            ).when_matched_update_all().when_not_matched_insert_all().execute(b)
        else:
            table.add(b)


def connector(
    root: Path, spec: CollectionSpec, batches: list[pa.RecordBatch], tokens: bool
) -> None:
    with connect(f"lancedb://{root}?table=items") as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.begin("bench", resume=False)
        rows = 0
        for b in batches:
            conn.upsert(b, WriteToken("bench", 0, rows) if tokens else None)
            rows += b.num_rows
        conn.finalize(spec)
        assert conn.count() == rows


def timed(fn: Callable[[Path], None], rows: int) -> float:
    """Rows/s of one run of ``fn`` into a new folder."""
    root = Path(tempfile.mkdtemp(prefix="vm-lance-"))
    try:
        t0 = time.perf_counter()
        fn(root)
        return round(rows / (time.perf_counter() - t0), 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec, batches = make_batches(args.rows, args.dim, args.batch)
    cases: dict[str, Callable[[Path], None]] = {
        "lancedb_add": lambda root: raw_lancedb(root, spec, batches, merge=False),
        "lancedb_merge_insert": lambda root: raw_lancedb(root, spec, batches, merge=True),
        "connector_fresh_run": lambda root: connector(root, spec, batches, tokens=True),
        "connector_merge": lambda root: connector(root, spec, batches, tokens=False),
    }
    # interleave the cases so that a busy machine slows all of them alike
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, fn in cases.items():
            rates[name].append(timed(fn, args.rows))
    result: dict[str, object] = {"rows": args.rows, "dim": args.dim, "batch": args.batch}
    median = {name: statistics.median(runs) for name, runs in rates.items()}
    for name, runs in rates.items():
        result[name] = {"median_rows_per_s": median[name], "runs": runs}
    for name in ("lancedb_merge_insert", "connector_fresh_run", "connector_merge"):
        result[f"ratio_{name}_to_add"] = round(median[name] / median["lancedb_add"], 3)
    path = write_result("lancedb_add_vs_merge", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
