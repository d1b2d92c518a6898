"""Redis 8 vector sets: write and read rates through the connector vs raw pipelined commands.

    python benchmarks/redis_rates.py [--rows 20000] [--dim 384] [--pipeline 1000]

Needs the server built by scripts/engines/build-redis.sh; starts it on a free port. Writes
benchmarks/results/redis_rates.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result
from tests.datagen import make_batch, make_spec
from tests.engines import start_redis

from vecmigrate.connectors import IfExists, connect


def _rate(rows: int, seconds: float) -> float:
    return round(rows / seconds, 1)


def raw_write(r: redis.Redis, key: str, matrix: np.ndarray, step: int, cas: bool) -> float:
    start = time.perf_counter()
    extra = ["CAS"] if cas else []
    for s in range(0, len(matrix), step):
        pipe = r.pipeline(transaction=False)
        for i in range(s, min(s + step, len(matrix))):
            pipe.execute_command(
                "VADD", key, "FP32", matrix[i].tobytes(), f"e{i}", "NOQUANT", *extra
            )
        pipe.execute()
    return time.perf_counter() - start


def raw_read(r: redis.Redis, key: str, step: int, with_attrs: bool) -> tuple[float, int]:
    start = time.perf_counter()
    names = r.execute_command("VRANDMEMBER", key, 2**62)
    rows = 0
    for s in range(0, len(names), step):
        pipe = r.pipeline(transaction=False)
        for n in names[s : s + step]:
            pipe.execute_command("VEMB", key, n, "RAW")
            if with_attrs:
                pipe.execute_command("VGETATTR", key, n)
        rows += len(pipe.execute()) // (2 if with_attrs else 1)
    return time.perf_counter() - start, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--pipeline", type=int, default=1000)
    args = parser.parse_args()
    n, dim, step = args.rows, args.dim, args.pipeline
    results: dict[str, Any] = {"rows": n, "dim": dim, "pipeline": step}
    engine = start_redis()
    try:
        r = redis.Redis(host=engine.host, port=engine.port, protocol=2)
        spec = make_spec(dim=dim)
        bare = make_spec(dim=dim, documents=False, metadata=())
        batches = [make_batch(spec, s, min(step, n - s)) for s in range(0, n, step)]
        bare_batches = [b.select(["id", "vector"]) for b in batches]
        matrix = np.vstack(
            [b.column("vector").flatten().to_numpy().reshape(-1, dim) for b in batches]
        )

        for cas in (False, True):
            name = "raw_write_cas" if cas else "raw_write"
            secs = raw_write(r, f"raw-{cas}", matrix, step, cas)
            results[name] = _rate(n, secs)
            print(f"{name}: {results[name]} vec/s", flush=True)
        secs, rows = raw_read(r, "raw-False", step, with_attrs=False)
        results["raw_read_vemb"] = _rate(rows, secs)
        print(f"raw_read_vemb: {results['raw_read_vemb']} vec/s", flush=True)

        for label, sp, data, opts in (
            ("connector_write_bare", bare, bare_batches, {}),
            ("connector_write_cas_bare", bare, bare_batches, {"cas": "true"}),
            ("connector_write_meta", spec, batches, {}),
        ):
            with connect(engine.uri(label, pipeline=str(step), **opts)) as conn:
                conn.create(sp, IfExists.REPLACE)
                start = time.perf_counter()
                for b in data:
                    conn.upsert(b)
                results[label] = _rate(n, time.perf_counter() - start)
                print(f"{label}: {results[label]} vec/s", flush=True)

        secs, rows = raw_read(r, "connector_write_meta", step, with_attrs=True)
        results["raw_read_vemb_vgetattr"] = _rate(rows, secs)
        print(f"raw_read_vemb_vgetattr: {results['raw_read_vemb_vgetattr']} vec/s", flush=True)
        for label in ("connector_write_bare", "connector_write_meta"):
            with connect(engine.uri(label, pipeline=str(step))) as conn:
                start = time.perf_counter()
                rows = 0
                for part in conn.partitions(1):
                    for sb in conn.scan(part, None, step):
                        rows += sb.batch.num_rows
                name = label.replace("write", "scan")
                results[name] = _rate(rows, time.perf_counter() - start)
                print(f"{name}: {results[name]} vec/s ({rows} rows)", flush=True)
                assert rows == n, rows
                part = conn.partitions(1)[0]
                got = pa.Table.from_batches([sb.batch for sb in conn.scan(part, None, 5000)])
                got = got.sort_by("id")
                want = pa.Table.from_batches(batches).sort_by("id")
                ulp = np.abs(
                    got.column("vector").combine_chunks().flatten().to_numpy().view(np.int32)
                    - want.column("vector").combine_chunks().flatten().to_numpy().view(np.int32)
                )
                results[f"{name}_max_ulp"] = int(ulp.max())
                results[f"{name}_share_off_by_1ulp"] = round(float((ulp > 0).mean()), 4)
        r.close()
    finally:
        engine.stop()
    print(write_result("redis_rates", results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
