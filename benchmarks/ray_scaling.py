"""LanceDB -> LanceDB copy rate by executor (local, Ray on local CPUs) and worker count.

    python benchmarks/ray_scaling.py --source 'lancedb:///abs/dir?table=items' \
        [--workers 1,2] [--batch-size 10000] [--out ray_scaling]

Each copy is ``copy_lancedb.our_copy``: its own ``vecmigrate copy`` process into a fresh
table, after ``os.sync()``, rated without its ``connect`` phase (``_common.copy_rate``); on Ray
the time to start the cluster's actors counts (``ray_start`` in ``phases_s``). Writes
benchmarks/results/ray_scaling.json. On a 2-core machine this documents overhead more than
speed-up: Ray's workers compete with the engines' own threads for the same two cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result
from copy_lancedb import our_copy


def _described(source: str) -> str:
    """The source URI with its folder reduced to its last part (no machine paths in results)."""
    scheme, _, rest = source.partition("://")
    path, sep, query = rest.partition("?")
    return f"{scheme}://.../{path.rstrip('/').rsplit('/', 1)[-1]}{sep}{query}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--out", default="ray_scaling", help="result name: results/OUT.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vm-ray-"))
    started = os.getloadavg()
    try:
        runs = [
            {
                "executor": executor,
                "workers": int(w),
                **our_copy(args.source, work, int(w), args.batch_size, executor=executor),
            }
            for w in args.workers.split(",")
            for executor in ("local", "ray")
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in runs:
        print(r, flush=True)
    path = write_result(
        args.out,
        {
            "source": _described(args.source),
            "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in started],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "runs": runs,
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
