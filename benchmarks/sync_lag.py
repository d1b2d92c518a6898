"""Lag of ``vecmigrate sync`` pgvector -> pgvector under a steady stream of changes.

    python benchmarks/sync_lag.py [--rows 20000] [--dim 128] [--rate 1000] [--seconds 40]
        [--tx-rows 10] [--cdc logical,trigger] [--fsync on] [--snapshot-grant on]

A throwaway PostgreSQL (``scripts/engines/postgres.py``) holds both tables (the target in a
second database unless ``--target-in same-database``). For each change
source: the source table is filled, a first ``sync --once`` takes the snapshot, then a
following sync runs while a writer commits ``--rate`` changes per second through plain SQL
(half inserts, 35% updates, 15% deletes of rows that exist, ``--tx-rows`` per transaction).
With ``--snapshot-grant on`` the sync's role may run ``pg_log_standby_snapshot()``, which lets
the logical decoding slot's restart point follow the sync (less WAL decoded per poll).

Lag is taken two ways: as the sync reports it (per change set: seconds since its oldest change
committed, when the set is applied), and sampled every 0.1 s from outside (seconds since the
oldest change not yet applied committed; 0 when caught up), with the changes pending. After
the writer stops, the time to catch up is kept and ``validate`` checks the target equals the
source. Goal (issue: zero-downtime): lag under 1 s at 1,000 changes/s.
Writes benchmarks/results/sync_lag.json.
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from _common import write_result  # noqa: E402
from scripts.engines.postgres import PostgresEngine, start_postgres  # noqa: E402
from tests.datagen import make_batch, make_spec  # noqa: E402

from vecmigrate.cdc.sync import SyncJob, SyncOptions  # noqa: E402
from vecmigrate.connectors import IfExists, connect  # noqa: E402
from vecmigrate.spec import CollectionSpec, Metric  # noqa: E402
from vecmigrate.validate.run import ValidateOptions, validate  # noqa: E402

GOAL_S = 1.0


def write_changes(
    connect_kwargs: dict[str, Any], table: str, dim: int, args: dict[str, Any], log: Any
) -> None:
    """Commit ``rate`` changes/s in transactions of ``tx_rows``; log (commit time, total)."""
    commits, totals, count = log
    rng = np.random.default_rng(5)
    live = [f"doc-{i:07d}" for i in range(args["rows"])]  # ids that exist
    next_id = args["rows"]
    t = sql.Identifier(table)
    insert = sql.SQL(
        "INSERT INTO {} (id, vector, document, category, rank, score, active) "
        "VALUES (%s, %s, %s, 'live', %s, 0.5, true)"
    ).format(t)
    update = sql.SQL("UPDATE {} SET vector = %s, category = 'updated' WHERE id = %s").format(t)
    delete = sql.SQL("DELETE FROM {} WHERE id = %s").format(t)
    tx_rows, total = args["tx_rows"], 0
    with psycopg.connect(**connect_kwargs, autocommit=True) as conn:
        start = time.monotonic()
        due = start
        while time.monotonic() - start < args["seconds"] and count.value < len(commits):
            ops = rng.random(tx_rows)
            vecs = rng.standard_normal((tx_rows, dim)).round(5)
            ins: list[tuple[Any, ...]] = []
            upd: list[tuple[Any, ...]] = []
            dels: list[tuple[Any, ...]] = []
            for op, vec in zip(ops, vecs, strict=True):
                text = "[" + ",".join(map(str, vec.tolist())) + "]"
                if op < 0.5 or len(live) - len(ins) < 2:
                    row_id = f"doc-{next_id:07d}"
                    ins.append((row_id, text, f"new {next_id}", next_id))
                    live.append(row_id)
                    next_id += 1
                elif op < 0.85:
                    upd.append((text, live[int(rng.integers(len(live)))]))
                else:  # an id that exists and was not inserted in this transaction
                    at = int(rng.integers(len(live) - len(ins)))
                    live[at], live[-1 - len(ins)] = live[-1 - len(ins)], live[at]
                    dels.append((live.pop(-1 - len(ins)),))
            with conn.transaction(), conn.cursor() as cur:
                for stmt, params in ((insert, ins), (update, upd), (delete, dels)):
                    if params:  # one round trip per statement kind (pipelined)
                        cur.executemany(stmt, params)
                        assert cur.rowcount == len(params), (cur.rowcount, len(params))
            total += tx_rows
            commits[count.value], totals[count.value] = time.time(), total
            count.value += 1
            due = max(due + tx_rows / args["rate"], time.monotonic() - 1.0)
            time.sleep(max(0.0, due - time.monotonic()))


class Writer:
    """``write_changes`` in its own process (the application: it does not share our GIL)."""

    def __init__(self, pg: PostgresEngine, table: str, spec: CollectionSpec, args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        cap = int(args.seconds * args.rate / args.tx_rows * 1.5) + 100
        self.log = (
            ctx.Array("d", cap, lock=False),
            ctx.Array("q", cap, lock=False),
            ctx.Value("q", 0),
        )
        params = {k: getattr(args, k) for k in ("rows", "tx_rows", "rate", "seconds")}
        self.process = ctx.Process(
            target=write_changes,
            args=(pg.connect_kwargs(), table, spec.vector().dim, params, self.log),
            daemon=True,
        )

    def start(self) -> None:
        self.process.start()

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def join(self) -> None:
        self.process.join(120)
        if self.process.exitcode != 0:
            raise RuntimeError(f"the writer failed (exit code {self.process.exitcode})")

    @property
    def written(self) -> int:
        n = self.log[2].value
        return int(self.log[1][n - 1]) if n else 0

    def oldest_unapplied(self, applied: int) -> float | None:
        """Commit time of the first transaction holding a change beyond ``applied``."""
        n = self.log[2].value
        at = bisect.bisect_right(self.log[1][:n], applied)
        return float(self.log[0][at]) if at < n else None


def stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50_s": None, "p95_s": None, "p99_s": None, "max_s": None, "samples": 0}
    arr = np.asarray(values)
    return {
        "p50_s": round(float(np.percentile(arr, 50)), 3),
        "p95_s": round(float(np.percentile(arr, 95)), 3),
        "p99_s": round(float(np.percentile(arr, 99)), 3),
        "max_s": round(float(arr.max()), 3),
        "samples": len(values),
    }


def target_database(pg: PostgresEngine) -> str:
    """A second database on the server, with pgvector, for the target tables."""
    name = f"{pg.database}_target"
    with psycopg.connect(**pg.connect_kwargs(admin=True), autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(pg.user)
            )
        )
    with psycopg.connect(**pg.connect_kwargs(admin=True, database=name), autocommit=True) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return name


def run_one(pg: PostgresEngine, cdc: str, spec: CollectionSpec, args: Any) -> dict[str, Any]:
    source, target = pg.uri(f"src_{cdc}"), pg.uri(f"dst_{cdc}")
    if args.target_db != pg.database:
        target = target.replace(f"/{pg.database}?", f"/{args.target_db}?")
    with connect(source) as conn:
        conn.create(spec, IfExists.REPLACE)
        for start in range(0, args.rows, 5_000):
            conn.upsert(make_batch(spec, start, min(5_000, args.rows - start)))
    state = Path(tempfile.mkdtemp(prefix="vecmigrate-sync-lag-"))
    options = SyncOptions(cdc=cdc, state_dir=state)
    t0 = time.perf_counter()
    first = SyncJob(source, target, SyncOptions(cdc=cdc, state_dir=state, once=True)).run()
    snapshot_s = time.perf_counter() - t0

    reports: list[dict[str, Any]] = []
    job = SyncJob(source, target, options)
    follower = threading.Thread(target=lambda: reports.append({"result": job.run(reports.append)}))
    writer = Writer(pg, f"src_{cdc}", spec, args)
    follower.start()
    writer.start()
    samples: list[dict[str, float]] = []
    while writer.is_alive():
        time.sleep(0.1)
        progress = [r for r in reports if "changes" in r]
        applied = progress[-1]["changes"] if progress else 0
        written = writer.written
        oldest = writer.oldest_unapplied(applied)
        now = time.time()
        samples.append(
            {"lag_s": now - oldest if oldest else 0.0, "pending": max(0, written - applied)}
        )
    writer.join()
    written = writer.written
    stopped_at = time.perf_counter()
    while time.perf_counter() - stopped_at < 60:
        progress = [r for r in reports if "changes" in r]
        if progress and progress[-1]["changes"] >= written:
            break
        time.sleep(0.05)
    catch_up_s = time.perf_counter() - stopped_at
    job.stop()
    follower.join(120)
    progress = [r for r in reports if "changes" in r]
    applied = progress[-1]["changes"] if progress else 0
    check = validate(source, target, ValidateOptions(queries=10))
    comp = check.checks["completeness"]
    SyncJob(source, target, options).cleanup()
    reported = [r["lag_s"] for r in progress]
    sampled = [s["lag_s"] for s in samples]
    pending = [s["pending"] for s in samples]
    # the first second is the follower starting up (connections, describe), not steady state
    steady = samples[10:]
    return {
        "snapshot_rows": first.snapshot["rows"] if first.snapshot else None,
        "snapshot_s": round(snapshot_s, 2),
        "changes_written": written,
        "changes_applied": applied,
        "write_rate_per_s": round(written / args.seconds, 1),
        "change_sets": len(progress),
        "rows_per_change_set_mean": round(applied / max(1, len(progress)), 1),
        "lag_reported_per_change_set": stats(reported),
        "lag_sampled": stats(sampled),
        "lag_sampled_after_first_second": stats([s["lag_s"] for s in steady]),
        "pending_changes": {
            "p50": int(np.percentile(pending, 50)) if pending else None,
            "p95": int(np.percentile(pending, 95)) if pending else None,
            "max": max(pending) if pending else None,
        },
        "catch_up_after_writer_stopped_s": round(catch_up_s, 2),
        "target_equals_source": bool(comp["passed"] and check.checks["metadata"]["passed"]),
        "goal_p95_met": bool(sampled) and float(np.percentile(sampled, 95)) < GOAL_S,
        "goal_max_met": bool(sampled) and max(sampled) < GOAL_S,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--rate", type=float, default=1_000.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--tx-rows", type=int, default=10, help="changes per transaction")
    parser.add_argument("--cdc", default="logical,trigger")
    parser.add_argument("--fsync", choices=["on", "off"], default="on")
    parser.add_argument(
        "--target-in",
        choices=["other-database", "same-database"],
        default="other-database",
        help="where the target table lives (in the source's database, logical decoding also "
        "decodes the sync's own writes)",
    )
    parser.add_argument(
        "--snapshot-grant", choices=["on", "off"], default="on",
        help="GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() to the sync's role",
    )  # fmt: skip
    args = parser.parse_args()
    spec = make_spec(dim=args.dim, metric=Metric.COSINE)
    load_start = [round(x, 2) for x in os.getloadavg()]
    runs: dict[str, Any] = {}
    with start_postgres(durable=args.fsync == "on") as pg:
        os.environ["PGPASSWORD"] = pg.password
        if args.snapshot_grant == "on":
            with psycopg.connect(**pg.connect_kwargs(admin=True), autocommit=True) as admin:
                admin.execute(
                    sql.SQL("GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() TO {}").format(
                        sql.Identifier(pg.user)
                    )
                )
        args.target_db = target_database(pg) if args.target_in == "other-database" else pg.database
        for cdc in args.cdc.split(","):
            print(f"--cdc {cdc}", flush=True)
            runs[cdc] = run_one(pg, cdc, spec, args)
            print(runs[cdc], flush=True)
    report = {
        "unit": "seconds behind the source",
        "goal": f"lag < {GOAL_S} s at {args.rate:.0f} changes/s (sampled p95; max also shown)",
        "pair": f"pgvector -> pgvector (one server, target in the {args.target_in})",
        "rows": args.rows,
        "dim": args.dim,
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "tx_rows": args.tx_rows,
        "fsync": args.fsync,
        "pg_log_standby_snapshot_granted": args.snapshot_grant == "on",
        "poll_interval_s": SyncOptions().poll_interval_s,
        "runs": runs,
        "goal_met": all(r["goal_p95_met"] for r in runs.values()),
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
    }
    print(write_result("sync_lag", report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
