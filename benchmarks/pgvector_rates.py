"""Read and write rates of the pgvector connector against raw psycopg binary COPY, same run.

Starts a throwaway PostgreSQL (fsync on), then for N x DIM float32 vectors with string ids:

- write: connector ``create`` + ``upsert`` (fresh load: binary COPY straight into the table),
  connector re-upsert of the same rows (the idempotent merge path), raw psycopg
  ``COPY ... FROM STDIN (FORMAT BINARY)`` with ``write_row`` (vectors pre-encoded);
- read: connector ``scan`` (keyset pages, binary results, Arrow batches), raw psycopg
  ``COPY ... TO STDOUT (FORMAT BINARY)`` bytes only, and the same parsed to rows by psycopg.

Each rate is the best of ``--repeat`` runs (the median is kept too), with the CPU seconds
the client and the server spent per 100k rows (steadier than wall time on a busy machine).
Writes JSON to benchmarks/results/pgvector_rates.json.

    python benchmarks/pgvector_rates.py --rows 100000 --dim 384
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pyarrow as pa
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.engines.postgres import start_postgres  # noqa: E402
from tests.datagen import make_batch, make_spec  # noqa: E402

from vecmigrate.connectors import IfExists, connect  # noqa: E402
from vecmigrate.connectors.base import Connector  # noqa: E402
from vecmigrate.connectors.pgvector.codec import encode_vectors  # noqa: E402
from vecmigrate.records import vectors_numpy  # noqa: E402


def server_cpu(postmaster: int) -> float:
    """CPU seconds used by the server so far: live backends plus those already reaped."""
    root = psutil.Process(postmaster)
    t = root.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in root.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += c.user + c.system
    return total


def _wait_backends_reaped(postmaster: int, count: int, timeout: float = 5.0) -> None:
    """Wait (bounded) until backends a run opened are gone and their CPU time is counted."""
    deadline = time.monotonic() + timeout
    while len(psutil.Process(postmaster).children()) > count and time.monotonic() < deadline:
        time.sleep(0.01)


def measure(
    runs: dict[str, Callable[[], int]], repeat: int, postmaster: int
) -> dict[str, dict[str, float]]:
    """Rounds of every run in turn (so a busy moment hits all of them): best and median rate,
    and CPU seconds per 100k rows of the client and the server (steadier than wall time)."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    client: dict[str, list[float]] = {name: [] for name in runs}
    server: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            backends = len(psutil.Process(postmaster).children())
            s0, c0, w0 = server_cpu(postmaster), time.process_time(), time.perf_counter()
            rows = fn()
            rates[name].append(rows / (time.perf_counter() - w0))
            _wait_backends_reaped(postmaster, backends)
            client[name].append((time.process_time() - c0) * 100_000 / rows)
            server[name].append((server_cpu(postmaster) - s0) * 100_000 / rows)
    return {
        name: {
            "best": round(max(rates[name])),
            "median": round(statistics.median(rates[name])),
            "client_cpu_s_per_100k": round(statistics.median(client[name]), 3),
            "server_cpu_s_per_100k": round(statistics.median(server[name]), 3),
        }
        for name in runs
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/pgvector_rates.json")
    args = parser.parse_args()
    n, dim, batch_size = args.rows, args.dim, args.batch

    spec = make_spec(dim=dim, documents=False, metadata=())
    batches = [make_batch(spec, s, min(batch_size, n - s)) for s in range(0, n, batch_size)]
    table = pa.Table.from_batches(batches)
    ids = table.column("id").to_pylist()
    payload = encode_vectors(vectors_numpy(table.column("vector"))).data
    vector_bytes = [payload[i].tobytes() for i in range(n)]

    results: dict[str, Any] = {}
    with start_postgres(durable=True) as pg:
        os.environ["PGPASSWORD"] = pg.password
        kwargs = pg.connect_kwargs()
        assert pg.process is not None
        pid = pg.process.pid
        raw = psycopg.connect(**kwargs, autocommit=True)
        runs = {"n": 0}

        def fresh_name(prefix: str) -> str:
            runs["n"] += 1
            return f"{prefix}_{runs['n']}"

        # -- writes -----------------------------------------------------------------
        def connector_write() -> int:
            with connect(pg.uri(fresh_name("conn"))) as conn:
                conn.create(spec, IfExists.REPLACE)
                for b in batches:
                    conn.upsert(b)
            return n

        def raw_write() -> int:
            name = sql.Identifier(fresh_name("raw"))
            raw.execute(
                sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, vector vector({}))").format(
                    name, sql.Literal(dim)
                )
            )
            stmt = sql.SQL("COPY {} (id, vector) FROM STDIN (FORMAT BINARY)").format(name)
            for start in range(0, n, batch_size):
                with raw.cursor() as cur, cur.copy(stmt) as copy:
                    copy.set_types(["text", "bytea"])
                    for i in range(start, min(start + batch_size, n)):
                        copy.write_row((ids[i], vector_bytes[i]))
            return n

        writes = {"write_connector_fresh": connector_write, "write_raw_psycopg_copy": raw_write}
        results.update(measure(writes, args.repeat, pid))

        target = pg.uri("conn_1")

        def connector_rewrite() -> int:
            with connect(target) as conn:
                conn.create(spec, IfExists.REUSE)
                for b in batches:
                    conn.upsert(b)
            return n

        resend = {"write_connector_resend_unchanged": connector_rewrite}
        results.update(measure(resend, args.repeat, pid))
        raw.execute("VACUUM ANALYZE conn_1")

        # -- reads ------------------------------------------------------------------
        def connector_read() -> int:
            with connect(target) as conn:
                return _scan_rows(conn, batch_size)

        copy_out = sql.SQL("COPY (SELECT id, vector FROM {}) TO STDOUT (FORMAT BINARY)").format(
            sql.Identifier("conn_1")
        )

        def raw_read_bytes() -> int:
            with raw.cursor() as cur, cur.copy(copy_out) as copy:
                size = sum(len(block) for block in copy)
            assert size > n * 4 * dim
            return n

        def raw_read_rows() -> int:
            with raw.cursor() as cur, cur.copy(copy_out) as copy:
                copy.set_types(["text", "bytea"])
                return sum(1 for _ in copy.rows())

        reads = {
            "read_connector_scan": connector_read,
            "read_raw_copy_bytes": raw_read_bytes,
            "read_raw_copy_rows": raw_read_rows,
        }
        results.update(measure(reads, args.repeat, pid))
        version = raw.execute("SELECT version()").fetchone()
        raw.close()

    report = {
        "benchmark": "pgvector_rates",
        "unit": "vectors per second",
        "rows": n,
        "dim": dim,
        "batch": batch_size,
        "repeat": args.repeat,
        "server": version[0] if version else None,
        "fsync": True,
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def _scan_rows(conn: Connector, batch_size: int) -> int:
    rows = 0
    for part in conn.partitions(1):
        for sb in conn.scan(part, None, batch_size):
            rows += sb.batch.num_rows
    return rows


if __name__ == "__main__":
    sys.exit(main())
