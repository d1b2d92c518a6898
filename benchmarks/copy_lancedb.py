"""LanceDB -> LanceDB copy vs LanceDB's own batched add, and peak RSS at 100k and 1M.

    python benchmarks/copy_lancedb.py [--rows 200000] [--dim 768] [--rss-rows 100000,1000000]

Writes benchmarks/results/copy_lancedb.json. Goals (issue: foundation): copy rate >= 0.8 x
LanceDB's own add of the same data in the same run; >= 10 x vdf-io's 7.6k vec/s end to end
(76k vec/s); peak RSS <= 512 MB and at 1M no more than 10% above 100k.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import measured, write_result

VDF_IO_RATE = 7_600.0  # vec/s, vdf-io export + import end to end on this kind of machine


def make_source(root: Path, rows: int, dim: int, chunk: int = 50_000) -> str:
    """A LanceDB table of ``rows`` random vectors with an id, a document and two fields."""
    db = lancedb.connect(str(root))
    schema = pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("document", pa.string()),
            pa.field("category", pa.string()),
            pa.field("rank", pa.int64()),
        ]
    )
    table = db.create_table("items", schema=schema)
    rng = np.random.default_rng(7)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        ids = pa.array([f"doc-{i:09d}" for i in range(start, start + n)])
        vec = pa.FixedSizeListArray.from_arrays(
            pa.array(rng.standard_normal(n * dim, dtype=np.float32)), dim
        )
        table.add(
            pa.table(
                {
                    "id": ids,
                    "vector": vec,
                    "document": pa.array([f"text {i}" for i in range(start, start + n)]),
                    "category": pa.array(["a", "b", "c", "d"] * (n // 4) + ["a"] * (n % 4)),
                    "rank": pa.array(np.arange(start, start + n)),
                },
                schema=schema,
            )
        )
    return f"lancedb://{root}?table=items"


def lance_own_add(root: Path, dst: Path) -> float:
    """LanceDB's own batched add: stream the source's batches into a new table (rows/s)."""
    src = lancedb.connect(str(root)).open_table("items")
    reader = src.search().limit(None).to_batches(10_000)
    db = lancedb.connect(str(dst))
    t0 = time.perf_counter()
    first = next(iter(reader))
    table = db.create_table("items", data=pa.Table.from_batches([first]))
    rows = first.num_rows
    for batch in reader:
        table.add(pa.Table.from_batches([batch]))
        rows += batch.num_rows
    return rows / (time.perf_counter() - t0)


def our_copy(source: str, dst: Path, state: Path, workers: int, batch: int) -> dict[str, object]:
    target = f"lancedb://{dst}?table=items"
    cmd = [
        sys.executable, "-m", "vecmigrate", "copy", source, target,
        "--json", "--quiet", "--workers", str(workers), "--batch-size", str(batch),
        "--state-dir", str(state),
    ]  # fmt: skip
    run = measured(cmd)
    if run["returncode"] != 0:
        raise SystemExit(f"copy failed: {run['stderr']}")
    summary = json.loads(run["stdout"])
    return {
        "rows": summary["rows"],
        "elapsed_s": run["elapsed_s"],
        "engine_rows_per_s": summary["rows_per_s"],
        "end_to_end_rows_per_s": round(summary["rows"] / run["elapsed_s"], 1),
        "peak_rss_mb": run["peak_rss_mb"],
        "counts_match": summary["counts_match"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--rss-rows", default="100000,1000000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vm-bench-"))
    try:
        source = make_source(work / "src", args.rows, args.dim)
        raw = lance_own_add(work / "src", work / "raw")
        ours = our_copy(source, work / "dst", work / "state", args.workers, args.batch_size)
        rate = float(ours["engine_rows_per_s"])  # type: ignore[arg-type]
        rss: dict[str, object] = {}
        for n in [int(x) for x in args.rss_rows.split(",") if x]:
            root = work / f"rss-{n}"
            src = make_source(root / "src", n, args.dim)
            rss[str(n)] = our_copy(src, root / "dst", root / "state", args.workers, args.batch_size)
            shutil.rmtree(root)
        peaks = [float(v["peak_rss_mb"]) for v in rss.values()]  # type: ignore[index]
        result = {
            "rows": args.rows,
            "dim": args.dim,
            "lancedb_own_add_rows_per_s": round(raw, 1),
            "copy": ours,
            "ratio_to_own_add": round(rate / raw, 3),
            "ratio_to_vdf_io": round(rate / VDF_IO_RATE, 1),
            "rss_by_rows": rss,
            "goals": {
                "ratio_to_own_add>=0.8": rate / raw >= 0.8,
                "ratio_to_vdf_io>=10": rate / VDF_IO_RATE >= 10,
                "peak_rss<=512MB": all(p <= 512 for p in peaks),
                "rss_growth<=10%": len(peaks) < 2 or peaks[-1] <= 1.10 * peaks[0],
            },
        }
        path = write_result("copy_lancedb", result)
        print(json.dumps(result, indent=2))
        print(f"written to {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
