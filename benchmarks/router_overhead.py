"""Write latency of the Router in dual-write against writing each side directly, same run.

    python benchmarks/router_overhead.py [--new qdrant_edge,milvus_lite] [--ops 600]
        [--block 20] [--rate 200] [--fsync on,off] [--workloads update_1,update_10,insert_1]
        [--drain-interval 0.05]

Old is pgvector (a throwaway PostgreSQL), new is Qdrant Edge or Milvus Lite (in this process /
a local engine process). For each workload (upsert of 1 existing id, of 10 existing ids, of 1
new id) it times ``upsert`` directly on old, directly on new, and through ``Router.upsert`` in
dual-write (old written on the caller's path, new through the outbox, whose drainer runs
meanwhile). Calls are paced at ``--rate`` per second in blocks of ``--block`` calls; the three
take turns block by block (each going first in turn), so a busy moment of the shared machine
hits all of them. After each router block the outbox is drained (the time is kept, and the
process CPU it used counts for the router). Also reported: the median over blocks of the
block's router p50 over the slower side's (steadier when the machine's load drifts), and the
process CPU per call; and the router's own cost per call between two sides that take writes
at once (phase read, per-id ordering, the outbox row: Arrow IPC message and SQLite commit).

Goal (issue: zero-downtime): router p50 <= 1.10 x max(old p50, new p50). The router's p50 over
old's p50 alone (what the caller pays over writing old only) is reported too.
Writes benchmarks/results/router_overhead.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from _common import write_result  # noqa: E402
from scripts.engines.postgres import start_postgres  # noqa: E402
from tests.datagen import make_batch, make_spec  # noqa: E402

from vecmigrate.connectors import IfExists, connect  # noqa: E402
from vecmigrate.connectors.base import Connector  # noqa: E402
from vecmigrate.connectors.registry import connect_writer  # noqa: E402
from vecmigrate.routing import Phase, Router, RouterConfig, TriggerConfig  # noqa: E402
from vecmigrate.spec import Metric  # noqa: E402
from vecmigrate.uri import ConnectorURI  # noqa: E402

GOAL = 0.10  # dual-write adds < 10% to p50 over the slower side
SPEC = make_spec(dim=16, metric=Metric.COSINE)
START_ROWS = 5_000
NEW_SIDES = {
    "qdrant_edge": ("qdrant_edge", lambda tmp: f"qdrant+edge://{tmp}/edge"),
    "milvus_lite": ("milvus_lite", lambda tmp: f"milvus+lite://{tmp}/milvus.db?collection=items"),
}
WORKLOADS = {"update_1": 1, "update_10": 10, "insert_1": 1}


class Batches:
    """Batches for a workload: existing ids with fresh values, or ids never used before."""

    def __init__(self, workload: str, seed: int) -> None:
        self.rows = WORKLOADS[workload]
        self.insert = workload.startswith("insert")
        self.rng = np.random.default_rng(seed)
        self.next_new = 1_000_000 + seed * 100_000

    def __call__(self) -> pa.RecordBatch:
        if self.insert:
            self.next_new += self.rows
            return make_batch(SPEC, self.next_new - self.rows, self.rows)
        start = int(self.rng.integers(0, START_ROWS - self.rows))
        return make_batch(SPEC, start, self.rows, seed=int(self.rng.integers(1, 1 << 30)))


def paced(
    write: Callable[[pa.RecordBatch], None], batches: list[pa.RecordBatch], rate: float
) -> list[float]:
    """Latency of writing each batch, one call every 1/``rate`` seconds."""
    out: list[float] = []
    due = time.monotonic()
    for batch in batches:
        t0 = time.perf_counter()
        write(batch)
        out.append(time.perf_counter() - t0)
        due = max(due + 1.0 / rate, time.monotonic() - 0.5)
        time.sleep(max(0.0, due - time.monotonic()))
    return out


def summary(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "calls": len(latencies),
    }


class Null(Connector):
    """A side that takes every write at once: what remains is the router's own cost."""

    def upsert(self, batch: pa.RecordBatch, token: Any = None) -> None:
        pass

    def delete(self, ids: Any) -> None:
        pass


def hot_path(state: Path, calls: int = 3_000) -> dict[str, float]:
    """Router.upsert of one row between two Null sides, in dual-write: phase read, per-id
    ordering, the outbox row (Arrow IPC message, SQLite commit); the drainer runs meanwhile."""
    null = Null(ConnectorURI.parse("memory://null"))
    router = Router(null, null, RouterConfig(state_path=state, triggers=TriggerConfig()))
    router.set_phase(Phase.DUAL_WRITE)
    make = Batches("update_1", 99)
    batches = [make() for _ in range(calls)]
    try:
        lat = paced(router.upsert, batches, rate=1_000.0)
    finally:
        router.close()
    us = np.asarray(lat) * 1e6
    return {
        "p50_us": round(float(np.percentile(us, 50)), 1),
        "p95_us": round(float(np.percentile(us, 95)), 1),
        "calls": calls,
    }


def fill(conn: Connector) -> None:
    conn.create(SPEC, IfExists.REPLACE)
    for start in range(0, START_ROWS, 1_000):
        conn.upsert(make_batch(SPEC, start, 1_000))


def run_pair(pg_uri: str, new_uri: str, state: Path, args: argparse.Namespace) -> dict[str, Any]:
    old, new = connect(pg_uri), connect_writer(new_uri)  # as the gateway opens them
    fill(old)
    fill(new)
    config = RouterConfig(
        state_path=state,
        triggers=TriggerConfig(max_count_drift=None),
        drain_interval_s=args.drain_interval,
        switch_interval_s=args.switch_interval,
    )
    router = Router(old, new, config)
    router.set_phase(Phase.DUAL_WRITE)
    targets: dict[str, Callable[[pa.RecordBatch], None]] = {
        "old": old.upsert, "new": new.upsert, "router": router.upsert,
    }  # fmt: skip
    results: dict[str, Any] = {}
    try:
        for workload in args.workloads.split(","):
            rows = WORKLOADS[workload]
            lat: dict[str, list[float]] = {name: [] for name in targets}
            cpu: dict[str, float] = dict.fromkeys(targets, 0.0)
            block_ratios: list[float] = []
            drain_s: list[float] = []
            makers = {name: Batches(workload, i + 1) for i, name in enumerate(targets)}
            for b in range(args.ops // args.block):
                names = list(targets)
                names = names[b % 3 :] + names[: b % 3]  # each goes first in turn
                block: dict[str, float] = {}
                for name in names:
                    batches = [makers[name]() for _ in range(args.block)]
                    c0 = time.process_time()
                    got = paced(targets[name], batches, args.rate)
                    if name == "router":  # its drain is part of its cost, not of the next's
                        t0 = time.perf_counter()
                        assert router.flush(60), "the outbox did not drain"
                        drain_s.append(time.perf_counter() - t0)
                    cpu[name] += time.process_time() - c0
                    lat[name] += got
                    block[name] = statistics.median(got)
                block_ratios.append(block["router"] / max(block["old"], block["new"]))
            sides = {k: summary(v) for k, v in lat.items()}
            for name, seconds in cpu.items():
                sides[name]["process_cpu_us_per_call"] = round(seconds / len(lat[name]) * 1e6, 1)
            slower = max(sides["old"]["p50_ms"], sides["new"]["p50_ms"])
            overhead = sides["router"]["p50_ms"] / slower - 1
            results[workload] = {
                "rows_per_call": rows,
                **sides,
                "overhead_vs_slower_side_p50": round(overhead, 4),
                "overhead_median_of_blocks": round(statistics.median(block_ratios) - 1, 4),
                "router_p50_over_old_p50": round(
                    sides["router"]["p50_ms"] / sides["old"]["p50_ms"] - 1, 4
                ),
                "outbox_drain_after_block_s": round(statistics.median(drain_s), 3),
                "goal_met": overhead < GOAL,
            }
            print(workload, results[workload], flush=True)
    finally:
        router.close()
        old.close()
        new.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", default="qdrant_edge,milvus_lite")
    parser.add_argument("--ops", type=int, default=600, help="calls per workload and target")
    parser.add_argument("--block", type=int, default=20, help="calls in a row to one target")
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second")
    parser.add_argument("--fsync", default="on,off", help="PostgreSQL fsync settings to run")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument(
        "--drain-interval", type=float, default=RouterConfig.drain_interval_s,
        help="seconds between the outbox drainer's rounds",
    )  # fmt: skip
    parser.add_argument(
        "--switch-intervals", default="0.0005,none",
        help="RouterConfig.switch_interval_s values to run (none: Python's 5 ms, the default)",
    )  # fmt: skip
    args = parser.parse_args()
    load_start = [round(x, 2) for x in os.getloadavg()]
    report: dict[str, Any] = {
        "unit": "milliseconds per upsert call",
        "goal": f"router p50 < {1 + GOAL:.2f} x max(old p50, new p50)",
        "old": "pgvector",
        "dim": SPEC.vector().dim,
        "start_rows": START_ROWS,
        "calls_per_target": args.ops,
        "block": args.block,
        "rate_per_s": args.rate,
        "drain_interval_s": args.drain_interval,
        "runs": {},
        "skipped": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["router_own_cost_null_sides"] = hot_path(Path(tmp) / "router.sqlite")
        print("router's own cost", report["router_own_cost_null_sides"], flush=True)
    default_interval = sys.getswitchinterval()
    for fsync in args.fsync.split(","):
        with start_postgres(durable=fsync == "on") as pg, tempfile.TemporaryDirectory() as tmp:
            os.environ["PGPASSWORD"] = pg.password
            for name in args.new.split(","):
                module, make_uri = NEW_SIDES[name]
                if importlib.util.find_spec(module) is None:
                    report["skipped"][name] = f"{module} is not installed"
                    continue
                for interval in args.switch_intervals.split(","):
                    args.switch_interval = None if interval == "none" else float(interval)
                    sys.setswitchinterval(default_interval)  # the Router sets its own
                    where = Path(tmp) / f"{name}-{interval}"
                    where.mkdir()
                    key = f"pgvector(fsync {fsync}) -> {name}, switch interval {interval}"
                    print(key, flush=True)
                    report["runs"][key] = run_pair(
                        pg.uri(f"items_{name}"), make_uri(where), where / "router.sqlite", args
                    )
    report["goal_met"] = all(w["goal_met"] for run in report["runs"].values() for w in run.values())
    report["goal_met_default_interval"] = all(
        w["goal_met"] for k, run in report["runs"].items() if k.endswith(" none")
        for w in run.values()
    )  # fmt: skip
    report["load_average"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    path = write_result("router_overhead", report)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
