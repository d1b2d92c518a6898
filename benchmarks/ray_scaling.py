"""LanceDB -> LanceDB copy rate by executor (local, Ray on local CPUs) and worker count.

    python benchmarks/ray_scaling.py --source 'lancedb:///abs/dir?table=items' \
        [--workers 1,2] [--batch-size 10000]

Each copy runs as its own ``vecmigrate copy`` process into a fresh table (after ``os.sync()``);
its rate is rows over the copy's plan, stream and finalize phases (``ray_start`` -- starting
Ray and its actors -- and ``connect`` are reported apart). Writes
benchmarks/results/ray_scaling.json. On a 2-core machine this documents overhead more than
speed-up: Ray's workers compete with the engines' own threads for the same two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import measured, write_result


def one(source: str, work: Path, executor: str, workers: int, batch: int) -> dict[str, Any]:
    dst, state = work / "dst", work / "state"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    os.sync()
    time.sleep(0.5)
    cmd = [
        sys.executable, "-m", "vecmigrate", "copy", source, f"lancedb://{dst}?table=items",
        "--json", "--quiet", "--workers", str(workers), "--batch-size", str(batch),
        "--state-dir", str(state), "--executor", executor,
    ]  # fmt: skip
    run = measured(cmd)
    if run["returncode"] != 0:
        raise SystemExit(f"copy failed: {run['stderr']}")
    summary = json.loads(run["stdout"])
    phases = summary["phases_s"]
    copying = sum(v for k, v in phases.items() if k not in ("connect", "ray_start"))
    return {
        "executor": executor,
        "workers": workers,
        "rows": summary["rows"],
        "rows_per_s": round(summary["rows"] / copying, 1),
        "end_to_end_rows_per_s": round(summary["rows"] / run["elapsed_s"], 1),
        "phases_s": phases,
        "peak_rss_mb": run["peak_rss_mb"],
        "counts_match": summary["counts_match"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--batch-size", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vm-ray-"))
    started = os.getloadavg()
    try:
        runs = [
            one(args.source, work, executor, int(w), args.batch_size)
            for w in args.workers.split(",")
            for executor in ("local", "ray")
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in runs:
        print(r, flush=True)
    path = write_result(
        "ray_scaling",
        {
            "source": args.source,
            "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in started],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "runs": runs,
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
