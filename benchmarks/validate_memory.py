"""Peak RSS of ``vecmigrate validate`` at 100k and 1M ids on each side (Parquet, LanceDB).

    python benchmarks/validate_memory.py [--rows 100000,1000000] [--dims 768,128]
        [--engines parquet,lancedb] [--modes full,completeness] [--queries 5]
        [--label after] [--work-dir DIR] [--clean]

Each collection pair is built once with the connectors and cached in the work dir (default: a
folder under the system temp dir): a source of ROWS ids with a DIM-d float32 vector, a
document and three metadata fields (category string, rank int64, score float64), written
10,000 rows per write as ``vecmigrate export`` writes them, and a target holding the same rows
with known damage (5 ids deleted, 5 extra, 5 vectors perturbed by 1e-3 in one component, 5
category values changed). ``vecmigrate validate SOURCE TARGET --json`` then runs in its own
process, ``full`` (with query parity on ``--queries`` sampled vectors) and ``completeness``
(``--queries 0``: completeness and metadata only). Recorded: its peak RSS (the kernel's
ru_maxrss of that process), an RSS timeline sampled from /proc, wall time, rows/s (both
sides' rows over the wall time), and whether the report names exactly the damaged ids. Two
probes give the connectors' own share: ``scan_only`` (both sides read, nothing else) and
``one_query_per_side`` (one kNN query through each connector).

Results are merged into benchmarks/results/validate_memory.json under ``--label`` (e.g.
``before`` and ``after`` a change). Goal (validation issue): peak RSS < 512 MB at 1M ids on
each side. RSS does not depend on machine load; wall times and rates do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, measured, write_result

from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import WriteToken
from vecmigrate.records import fixed_size_vectors
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType, Metric, VectorField

GOAL_MB = 512.0
MODES = ("full", "completeness")  # full: with query parity; completeness: --queries 0
CHUNK = 10_000  # rows per write, as `vecmigrate export` writes them (one shard each)
DAMAGE = 5
CATEGORIES = np.array(["news", "sport", "science", "art", "travel", "food"])


def spec_of(dim: int) -> CollectionSpec:
    return CollectionSpec(
        name="items",
        id_type="string",
        vectors=[VectorField(name="vector", dim=dim, metric=Metric.L2)],
        metadata=[
            MetadataField(name="category", type=MetadataType.STRING),
            MetadataField(name="rank", type=MetadataType.INT64),
            MetadataField(name="score", type=MetadataType.FLOAT64),
        ],
        has_document=True,
    )


def damage_plan(rows: int) -> dict[str, list[int]]:
    """Row numbers damaged in the target (spread over the collection)."""
    picks = np.linspace(rows // 20, rows - rows // 20, 3 * DAMAGE, dtype=np.int64).tolist()
    return {
        "deleted": picks[0::3],
        "perturbed": picks[1::3],
        "changed": picks[2::3],
    }


def row_id(i: int) -> str:
    return f"doc-{i:09d}"


def chunk(
    spec: CollectionSpec, start: int, n: int, damage: dict[str, list[int]] | None
) -> pa.RecordBatch:
    """Rows start..start+n of the collection (with the target's damage when given)."""
    dim = spec.vector().dim
    rng = np.random.default_rng([7, start])
    idx = np.arange(start, start + n)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    category = CATEGORIES[idx % len(CATEGORIES)].astype(object)
    keep = np.ones(n, dtype=bool)
    if damage is not None:
        for i in damage["perturbed"]:
            if start <= i < start + n:
                vectors[i - start, 3] += np.float32(1e-3)
        for i in damage["changed"]:
            if start <= i < start + n:
                category[i - start] = "tampered"
        for i in damage["deleted"]:
            if start <= i < start + n:
                keep[i - start] = False
    batch = pa.RecordBatch.from_pydict(
        {
            "id": pa.array([row_id(i) for i in idx.tolist()], pa.string()),
            "vector": fixed_size_vectors(vectors),
            "document": pa.array([f"document {i}" for i in idx]),
            "category": pa.array(category.tolist(), pa.string()),
            "rank": pa.array((idx * 7919) % 100_003, pa.int64()),
            "score": pa.array(rng.standard_normal(n) * 1e3, pa.float64()),
        }
    ).cast(spec.arrow_schema())
    return batch.filter(pa.array(keep)) if not keep.all() else batch


def extra_rows(spec: CollectionSpec, rows: int) -> pa.RecordBatch:
    batch = chunk(spec, rows, DAMAGE, None)
    return batch.set_column(0, "id", pa.array([f"extra-{i}" for i in range(DAMAGE)]))


def uri_of(engine: str, folder: Path) -> str:
    return f"lancedb://{folder}?table=items" if engine == "lancedb" else f"parquet://{folder}"


def build(engine: str, folder: Path, rows: int, dim: int, damaged: bool) -> str:
    """Write one side with the connector (cached: a finished side has a ``.built`` marker)."""
    uri = uri_of(engine, folder)
    marker = folder.parent / f"{folder.name}.built"
    if marker.exists():
        return uri
    shutil.rmtree(folder, ignore_errors=True)
    spec = spec_of(dim)
    damage = damage_plan(rows) if damaged else None
    t0 = time.perf_counter()
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        for start in range(0, rows, CHUNK):
            batch = chunk(spec, start, min(CHUNK, rows - start), damage)
            conn.upsert(batch, WriteToken("bench", 0, start))
        if damaged:
            conn.upsert(extra_rows(spec, rows), WriteToken("bench", 0, rows))
        conn.finalize(spec)
    marker.write_text(f"{time.perf_counter() - t0:.1f}\n")
    print(f"[bench] built {uri} in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    return uri


def run_sampled(cmd: list[str], every: float = 0.25) -> dict[str, Any]:
    """Run ``cmd``; peak RSS from the kernel (wait4) and an RSS timeline sampled from /proc."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timeline: list[tuple[float, float]] = []
    status = Path(f"/proc/{proc.pid}/status")
    # drain the pipes in the background so a large report cannot block the child
    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def drain(stream: Any, key: str) -> None:
        chunks[key].append(stream.read())

    threads = [
        threading.Thread(target=drain, args=(proc.stdout, "out"), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr, "err"), daemon=True),
    ]
    for t in threads:
        t.start()
    rusage = None
    while True:
        pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            rusage = usage
            break
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                    timeline.append((round(time.perf_counter() - t0, 2), round(rss, 1)))
        except OSError:
            pass
        time.sleep(every)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(code)
    for t in threads:
        t.join()
    return {
        "returncode": proc.returncode,
        "elapsed_s": round(elapsed, 2),
        "peak_rss_mb": round(rusage.ru_maxrss / 1024, 1),
        "timeline": timeline,
        "stdout": "".join(chunks["out"]),
        "stderr": "".join(chunks["err"]),
    }


def thin(timeline: list[tuple[float, float]], points: int = 40) -> list[tuple[float, float]]:
    """At most ``points`` samples, keeping the maximum of each stretch."""
    if len(timeline) <= points:
        return timeline
    step = len(timeline) / points
    out = []
    for k in range(points):
        part = timeline[int(k * step) : int((k + 1) * step)] or [timeline[-1]]
        out.append(max(part, key=lambda s: s[1]))
    return out


_SCAN_ONLY = """
import sys
from vecmigrate.connectors import connect
for uri in sys.argv[1:]:
    with connect(uri) as c:
        for p in c.partitions(1):
            for sb in c.scan(p, None, 10_000):
                pass
"""

_QUERY_ONLY = """
import sys
import numpy as np
from vecmigrate.connectors import connect
for uri in sys.argv[1:]:
    with connect(uri) as c:
        dim = c.describe().vector().dim
        c.query(np.random.default_rng(0).standard_normal((1, dim), dtype=np.float32), 10)
"""

_RAW_LANCEDB_QUERY = """
import sys
import lancedb
import numpy as np
table = lancedb.connect(sys.argv[1]).open_table("items")
dim = table.schema.field("vector").type.list_size
query = np.random.default_rng(0).standard_normal(dim, dtype=np.float32)
table.search(query).limit(10).select(["id"]).to_arrow()
"""


def check_report(report: dict[str, Any], rows: int) -> dict[str, bool]:
    plan = damage_plan(rows)
    comp = report.get("checks", {}).get("completeness", {})
    meta = report.get("checks", {}).get("metadata", {})
    want = {k: sorted(row_id(i) for i in v) for k, v in plan.items()}
    return {
        "missing_named": sorted(comp.get("missing_in_target", {}).get("ids", []))
        == want["deleted"],
        "extra_named": sorted(comp.get("extra_in_target", {}).get("ids", []))
        == [f"extra-{i}" for i in range(DAMAGE)],
        "vectors_named": sorted(comp.get("vectors_differ", {}).get("vector", {}).get("ids", []))
        == want["perturbed"],
        "metadata_named": set(meta.get("differ", {})) == {"category"}
        and sorted(meta["differ"]["category"]["ids"]) == want["changed"],
    }


def run_validate(source: str, target: str, rows: int, queries: int) -> dict[str, Any]:
    """One ``vecmigrate validate --json`` in its own process (``queries=0``: no parity)."""
    cmd = [sys.executable, "-m", "vecmigrate", "validate", source, target, "--json",
           "--queries", str(queries)]  # fmt: skip
    load = os.getloadavg()[0]
    run = run_sampled(cmd)
    try:
        report = json.loads(run["stdout"])
    except json.JSONDecodeError:
        report = {}
    checks = check_report(report, rows) if report else {}
    out: dict[str, Any] = {
        "queries": queries,
        "returncode": run["returncode"],
        "elapsed_s": run["elapsed_s"],
        "rows_per_s": round(2 * rows / run["elapsed_s"], 1),
        "peak_rss_mb": run["peak_rss_mb"],
        "damage_named_exactly": bool(checks) and all(checks.values()),
        "damage_checks": checks,
        "verdict": report.get("verdict"),
        "failed_checks": report.get("failed_checks"),
        "load_avg_1min_at_start": round(load, 2),
        "rss_timeline_s_mb": thin(run["timeline"]),
    }
    if not report:
        out["stderr"] = run["stderr"][-2000:]
    return out


def run_case(
    engine: str, rows: int, dim: int, work: Path, queries: int, modes: list[str]
) -> dict[str, Any]:
    base = work / f"{engine}-{rows}x{dim}"
    base.mkdir(parents=True, exist_ok=True)
    source = build(engine, base / "source", rows, dim, damaged=False)
    target = build(engine, base / "target", rows, dim, damaged=True)
    env_tmp = base / "tmp"
    env_tmp.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(env_tmp)  # the validation's spill goes next to the data
    out: dict[str, Any] = {"engine": engine, "rows_per_side": rows, "dim": dim}
    for mode in modes:
        print(f"[bench] validate {engine} {rows}x{dim} {mode} ...", file=sys.stderr, flush=True)
        run = run_validate(source, target, rows, queries if mode == "full" else 0)
        out[mode] = run
        print(
            f"[bench] {engine} {rows}x{dim} {mode}: {run['peak_rss_mb']} MB peak, "
            f"{run['elapsed_s']}s, named exactly: {run['damage_named_exactly']}",
            file=sys.stderr,
            flush=True,
        )
    scan = measured([sys.executable, "-c", _SCAN_ONLY, source, target])
    query = measured([sys.executable, "-c", _QUERY_ONLY, source, target])
    out["scan_only"] = {k: scan[k] for k in ("peak_rss_mb", "elapsed_s", "returncode")}
    out["one_query_per_side"] = {k: query[k] for k in ("peak_rss_mb", "elapsed_s", "returncode")}
    if engine == "lancedb":  # LanceDB's own flat kNN search, without the connector
        raw = measured([sys.executable, "-c", _RAW_LANCEDB_QUERY, str(base / "source")])
        out["lancedb_own_query_one_side"] = {
            k: raw[k] for k in ("peak_rss_mb", "elapsed_s", "returncode")
        }
    print(
        f"[bench] {engine} {rows}x{dim}: scan-only {scan['peak_rss_mb']} MB, "
        f"one query per side {query['peak_rss_mb']} MB",
        file=sys.stderr,
        flush=True,
    )
    return out


def goals(cases: dict[str, Any]) -> dict[str, bool | None]:
    """Per mode: every 1M case under the goal (None: no 1M run of that mode)."""
    out: dict[str, bool | None] = {}
    for mode in MODES:
        peaks = [
            c[mode]["peak_rss_mb"]
            for c in cases.values()
            if mode in c and c["rows_per_side"] >= 1_000_000
        ]
        out[f"{mode}: peak_rss<512MB_at_1M"] = all(p < GOAL_MB for p in peaks) if peaks else None
    out["damage_named_exactly"] = all(
        c[m]["damage_named_exactly"] for c in cases.values() for m in MODES if m in c
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="100000,1000000")
    parser.add_argument("--dims", default="768")
    parser.add_argument("--engines", default="parquet,lancedb")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--modes", default=",".join(MODES), help="full, completeness")
    parser.add_argument("--label", default="after")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--clean", action="store_true", help="remove the cached collections")
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.gettempdir()) / "vecmigrate-validate-bench"
    work.mkdir(parents=True, exist_ok=True)
    previous = RESULTS / "validate_memory.json"
    runs: dict[str, Any] = {}
    if previous.exists():
        runs = json.loads(previous.read_text()).get("runs", {})
    load_start = os.getloadavg()
    modes = [m for m in args.modes.split(",") if m in MODES]
    try:
        for dim in [int(x) for x in args.dims.split(",") if x]:
            for rows in [int(x) for x in args.rows.split(",") if x]:
                for engine in [e for e in args.engines.split(",") if e]:
                    case = run_case(engine, rows, dim, work, args.queries, modes)
                    key = f"{engine}-{rows}x{dim}"
                    runs.setdefault(args.label, {}).setdefault(key, {}).update(case)
    finally:
        if args.clean:
            shutil.rmtree(work, ignore_errors=True)
    payload = {
        "goal": f"peak RSS < {GOAL_MB:.0f} MB validating 1M ids on each side",
        "note": "peak RSS does not depend on machine load; elapsed_s and rows_per_s do "
        "(2 shared cores); rows_per_s counts both sides' rows",
        "load_avg_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "goals": {label: goals(cases) for label, cases in runs.items()},
        "peak_rss_mb": {
            case: {
                f"{label} {mode}": runs[label][case][mode]["peak_rss_mb"]
                for label in runs
                for mode in MODES
                if mode in runs[label].get(case, {})
            }
            for case in sorted({c for cases in runs.values() for c in cases})
        },
        "runs": runs,
    }
    path = write_result("validate_memory", payload)
    print(json.dumps(payload["goals"], indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
