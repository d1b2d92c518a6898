"""vecmigrate copy vs vdf-io (export_vdf + import_vdf) on the same pairs, in the same run.

    python benchmarks/vdfio.py [--rows 100000] [--dim 768] [--pairs lancedb-lancedb,chroma-chroma]
        [--venv DIR] [--workers 2] [--batch-size 5000] [--name vdfio]

For each SOURCE-TARGET pair that vdf-io supports (systems here: lancedb, chroma): build the
suite's collection (suite.spec_for / suite.batches) in the source; time vdf-io's export to its
VDF folder and its import from it (each a separate process: wall time, peak RSS); time
``vecmigrate copy`` of the same source; then check what each tool delivered against the
source, row by row (ids, float32 vectors bit for bit, document and metadata), and whether the
target answers a vector query. Ratio = vecmigrate rows/s / vdf-io rows/s, both end to end
(rows of the source over the wall time of all the tool's processes). Goal: >= 10x. Also
without startup: the copy's own summary rate against the time vdf-io's main() ran (each vdf-io
command first spends seconds importing every client library it supports).

vdf-io 0.1.248 lives in its own virtualenv (default: a cache folder outside the repository,
reused while its pins match): ``pip install --no-deps vdf-io`` plus the pinned clients its
console scripts import at start (they load every exporter/importer module); its re-embedding
extras (torch, sentence-transformers, mlx, litellm, txtai, datasets) are left out as the
export/import commands never import them. LanceDB, pyarrow, numpy and chromadb are pinned to
the versions in this interpreter, so both tools drive the same engines. If the virtualenv
cannot be built the result is written with ``"skipped_all": reason``.

vdf-io runs as its console scripts' ``main()`` with two changes: telemetry off
(DISABLE_TELEMETRY_VECTORIO=1, its own switch) and its PyPI "update available" request at the
end replaced by a no-op (a network round trip, no part of the move); stdin is empty so that a
prompt fails instead of waiting.

Writes benchmarks/results/<name>.json. suite.py --vdf-io calls compare() for its pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).parent))

from _common import measured, write_result
from suite import CHUNK, Skip, batches, cli, run_cli, spec_for

from vecmigrate.records import vectors_numpy
from vecmigrate.spec import CollectionSpec

VDF_IO = "vdf-io==0.1.248"
GOAL = 10.0  # vecmigrate end to end >= 10 x vdf-io end to end
SYSTEMS = ("lancedb", "chroma")
UNSUPPORTED = {
    "pgvector": "vdf-io 0.1.248 has no pgvector exporter or importer",
    "qdrant_edge": "vdf-io reads and writes Qdrant through a server URL (qdrant-client); "
    "an embedded Qdrant Edge shard is not one",
}
CHROMA_IMPORT_BATCH = 5_000
SAME_AS_HERE = ("lancedb", "pyarrow", "numpy", "chromadb")
# What vdf-io's export_vdf / import_vdf import at start, at versions that install together here
# (setuptools < 81: vdf-io imports pkg_resources; astrapy < 2: it imports astrapy.db).
CLIENT_PINS = (
    "pandas==2.3.3",
    "pylance==14.0.2",
    "tqdm==4.70.1",
    "python-dotenv==1.2.4",
    "pydantic==2.14.4",
    "halo==0.0.31",
    "pillow==13.0.0",
    "requests==2.34.2",
    "setuptools<81",
    "packaging==26.3",
    "rich==15.0.0",
    "httpx==0.28.1",
    "huggingface-hub==2.4.0",
    "sentry-sdk[opentelemetry]==2.75.0",
    "opentelemetry-sdk==1.45.2",
    "protobuf==4.25.9",
    "grpcio==1.78.2",
    "qdrant-client==1.20.0",
    "pinecone-client[grpc]==4.1.2",
    "pymilvus==2.5.18",
    "weaviate-client==4.24.1",
    "kdbai-client==2.1.0",
    "turbopuffer[fast]==3.1.0",
    "astrapy==1.5.2",
    "cassandra-driver==3.30.1",
    "google-cloud-aiplatform==2.7.0",
    "google-api-python-client==2.202.0",
    "google-auth-httplib2==0.4.4",
    "google-auth-oauthlib==1.5.0",
    "ratelimit==2.2.1",
    "backoff==2.2.1",
    "tenacity==9.1.4",
)

# Runs in vdf-io's interpreter: argv = [mode (export|import), cwd, *cli args]. At exit it
# prints how long importing the CLI module took and how long its main() ran.
DRIVER = """
import atexit, io, json, os, sys, time
t0 = time.perf_counter()
marks = {}
def times():
    end = time.perf_counter()
    ready = marks.get("ready", end)
    split = {"startup_s": ready - t0, "work_s": end - ready}
    sys.stderr.write("\\nVDFIO_TIMES " + json.dumps(split) + "\\n")
atexit.register(times)
os.environ["DISABLE_TELEMETRY_VECTORIO"] = "1"
os.environ.setdefault("LANCEDB_API_KEY", "")
mode, cwd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
os.chdir(cwd)
sys.stdin = io.StringIO()
import vdf_io.scripts.check_for_updates as updates
updates.check_for_updates = lambda: None
name = "export_vdf" if mode == "export" else "import_vdf"
cli = __import__("vdf_io." + name + "_cli", fromlist=["main"])
sys.argv = [name, *args]
marks["ready"] = time.perf_counter()
sys.exit(cli.main())
"""


def pins() -> list[str]:
    here = [f"{name}=={importlib.metadata.version(name)}" for name in SAME_AS_HERE]
    return [*here, *CLIENT_PINS]


def default_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "vecmigrate-bench" / f"vdfio-{VDF_IO.split('==')[1]}"


def vdfio_python(venv: Path) -> Path:
    """vdf-io's interpreter, building the virtualenv if needed; Skip with the reason if not."""
    python = venv / "bin" / "python"
    wanted = json.dumps([VDF_IO, *pins()])
    marker = venv / "vecmigrate-pins.json"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"[vdfio] building vdf-io's virtualenv in {venv} ...", file=sys.stderr, flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{venv.name}-install.log"
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--progress-bar", "off", "--no-deps", VDF_IO],
        [str(python), "-m", "pip", "install", "-q", "--progress-bar", "off", *pins()],
        [str(python), "-c", "import os; os.environ['DISABLE_TELEMETRY_VECTORIO'] = '1'; "
         "import vdf_io.export_vdf_cli, vdf_io.import_vdf_cli"],
    ]  # fmt: skip
    with log.open("w") as out:
        for step in steps:
            out.write(f"$ {' '.join(step)}\n")
            out.flush()
            try:
                res = subprocess.run(
                    step, check=False, stdout=out, stderr=subprocess.STDOUT, timeout=3600
                )
            except subprocess.TimeoutExpired:
                raise Skip(f"vdf-io install timed out at: {' '.join(step[2:5])}") from None
            if res.returncode != 0:
                tail = [ln for ln in log.read_text().splitlines() if ln.strip()][-1:]
                raise Skip(
                    f"vdf-io cannot be installed here ({' '.join(step[2:5])}: "
                    f"{tail[0][:300] if tail else 'exit ' + str(res.returncode)}); see {log}"
                )
    marker.write_text(wanted)
    return python


# -- the collections --------------------------------------------------------------------
@dataclass(frozen=True)
class Place:
    """One collection: a LanceDB table or a Chroma collection in a local folder."""

    system: str
    path: Path
    name: str = "items"

    @property
    def uri(self) -> str:
        if self.system == "lancedb":
            return f"lancedb://{self.path}?table={self.name}"
        return f"chroma://{self.path}?collection={self.name}"


def build_source(place: Place, spec: CollectionSpec, rows: int) -> None:
    """The suite's collection: LanceDB through its own add, Chroma through our connector."""
    if place.system == "lancedb":
        import lancedb

        table = lancedb.connect(str(place.path)).create_table(
            place.name, schema=spec.arrow_schema()
        )
        for batch in batches(spec, rows):
            table.add(pa.Table.from_batches([batch]))
        return
    from vecmigrate.connectors import IfExists, connect

    with connect(place.uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        for batch in batches(spec, rows):
            conn.upsert(batch)
        conn.finalize(spec)


@dataclass
class Rows:
    """One page of a collection, as the check needs it."""

    ids: list[Any]
    vectors: np.ndarray  # float32 (n, dim); zeros where ``bad``
    bad: np.ndarray  # rows whose vector is null or not dim long
    documents: list[Any]
    categories: list[Any]
    ranks: list[Any]


def _matrix(column: pa.Array | pa.ChunkedArray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (n, dim) of a vector column of any list type, and a mask of unusable rows."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    fixed = pa.types.is_fixed_size_list(column.type) and column.type.list_size == dim
    if fixed and column.null_count == 0:
        return vectors_numpy(column), np.zeros(n, dtype=bool)
    lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy(zero_copy_only=False)
    bad = lengths != dim
    good = column.filter(pa.array(~bad))
    flat = pc.list_flatten(good).to_numpy(zero_copy_only=False).astype(np.float32)
    out = np.zeros((n, dim), dtype=np.float32)
    out[~bad] = flat.reshape(-1, dim)
    return out, bad


def read_rows(place: Place, dim: int) -> Iterator[Rows]:
    if place.system == "lancedb":
        import lancedb

        table = lancedb.connect(str(place.path)).open_table(place.name)
        names = set(table.schema.names)
        for batch in table.search().limit(None).to_batches(CHUNK):
            vectors, bad = _matrix(batch.column("vector"), dim)
            n = batch.num_rows

            def col(name: str, n: int = n, batch: pa.RecordBatch = batch) -> list[Any]:
                return batch.column(name).to_pylist() if name in names else [None] * n

            yield Rows(col("id"), vectors, bad, col("document"), col("category"), col("rank"))
        return
    import chromadb

    coll = chromadb.PersistentClient(path=str(place.path)).get_collection(place.name)
    total = coll.count()
    for offset in range(0, total, CHUNK):
        page = coll.get(
            offset=offset, limit=CHUNK, include=["embeddings", "metadatas", "documents"]
        )
        metas = [m or {} for m in (page["metadatas"] or [{}] * len(page["ids"]))]
        emb = page["embeddings"]
        vectors, bad = _matrix(pa.array([list(map(float, e)) for e in emb]), dim)
        yield Rows(
            list(page["ids"]),
            vectors,
            bad,
            list(page["documents"] or [None] * len(page["ids"])),
            [m.get("category") for m in metas],
            [m.get("rank") for m in metas],
        )


@dataclass
class Truth:
    """The source, held for the check: row index by id, float32 vectors, (document, metadata)."""

    index: dict[str, int]
    vectors: np.ndarray
    meta: list[tuple[Any, ...]]


def read_truth(place: Place, dim: int) -> Truth:
    index: dict[str, int] = {}
    mats: list[np.ndarray] = []
    meta: list[tuple[Any, ...]] = []
    for page in read_rows(place, dim):
        for rid in page.ids:
            index[str(rid)] = len(index)
        mats.append(page.vectors)
        meta += zip(page.documents, page.categories, page.ranks, strict=True)
    matrix = np.concatenate(mats) if mats else np.zeros((0, dim), np.float32)
    return Truth(index, matrix, meta)


def describe(place: Place) -> dict[str, Any]:
    """How the target stores the collection: LanceDB column types, or Chroma's metric and keys."""
    if place.system == "lancedb":
        import lancedb

        schema = lancedb.connect(str(place.path)).open_table(place.name).schema
        return {"columns": {f.name: str(f.type) for f in schema}}
    import chromadb

    coll = chromadb.PersistentClient(path=str(place.path)).get_collection(place.name)
    space = None
    with contextlib.suppress(Exception):
        space = (coll.configuration or {}).get("hnsw", {}).get("space")
    space = space or (coll.metadata or {}).get("hnsw:space")
    sample = coll.get(limit=1, include=["metadatas"])["metadatas"] or [{}]
    keys = sorted(k for k in (sample[0] or {}) if not k.startswith("vecmigrate:"))
    return {"metric": str(space) if space else None, "metadata_keys": keys}


def query_check(place: Place, rid: str, vector: np.ndarray) -> dict[str, Any]:
    """Does a vector query of the target run, and does it find the row the vector came from."""
    try:
        if place.system == "lancedb":
            import lancedb

            table = lancedb.connect(str(place.path)).open_table(place.name)
            hits = table.search(vector.tolist(), vector_column_name="vector").limit(5).to_list()
            top = [str(h["id"]) for h in hits]
        else:
            import chromadb

            coll = chromadb.PersistentClient(path=str(place.path)).get_collection(place.name)
            top = [
                str(x)
                for x in coll.query(query_embeddings=[vector.tolist()], n_results=5)["ids"][0]
            ]
        return {"query_runs": True, "finds_own_row": bool(top) and top[0] == rid}
    except Exception as exc:
        return {"query_runs": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def delivered(truth: Truth, target: Place, dim: int, probe: tuple) -> dict[str, Any]:
    """What the target holds against the source: rows, ids, vectors, document and metadata.

    Vectors are compared bit for bit as float32 and within 1e-6 (relative and absolute).
    """
    rows = bad = dups = extra = bitwise = beyond = docs = metas = 0
    max_diff = 0.0
    seen: set[str] = set()
    example: dict[str, Any] | None = None
    try:
        for page in read_rows(target, dim):
            keys = [str(rid) for rid in page.ids]
            rows += len(keys)
            bad += int(page.bad.sum())
            dups += sum(k in seen for k in keys)
            seen.update(keys)
            idx = np.array([truth.index.get(k, -1) for k in keys], dtype=np.int64)
            known = idx >= 0
            extra += int((~known).sum())
            usable = known & ~page.bad
            src, got = truth.vectors[idx[usable]], page.vectors[usable]
            if len(src):
                bitwise += int((src != got).any(axis=1).sum())
                max_diff = max(max_diff, float(np.abs(src - got).max()))
                close = np.isclose(got, src, rtol=1e-6, atol=1e-6).all(axis=1)
                beyond += int((~close).sum())
            bitwise += int((known & page.bad).sum())
            beyond += int((known & page.bad).sum())
            for i in np.flatnonzero(known):
                want = truth.meta[idx[i]]
                have = (page.documents[i], page.categories[i], page.ranks[i])
                docs += have[0] != want[0]
                metas += have[1:] != want[1:]
                if example is None and have != want:
                    example = {"id": keys[i], "source": list(want), "target": list(have)}
    except Exception as exc:
        return {"readable": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    missing = sum(k not in seen for k in truth.index)
    out: dict[str, Any] = {
        "readable": True,
        "source_rows": len(truth.index),
        "rows": rows,
        "duplicate_ids": dups,
        "missing_ids": missing,
        "extra_ids": extra,
        "unusable_vectors": bad,
        "vectors_not_bitwise_equal": bitwise,
        "vectors_beyond_1e-6": beyond,
        "max_abs_vector_difference": max_diff,
        "documents_differ": int(docs),
        "metadata_differ": int(metas),
        "first_difference": example,
        "stored_as": describe(target),
        **query_check(target, *probe),
    }
    out["complete"] = rows == len(truth.index) and not (missing or extra or dups)
    out["exact"] = out["complete"] and bitwise == docs == metas == 0
    return out


# -- the runs ---------------------------------------------------------------------------
def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def vdfio_step(python: Path, mode: str, cwd: Path, args: list[str]) -> dict[str, Any]:
    cwd.mkdir(parents=True, exist_ok=True)
    la = load()
    run = measured([str(python), "-c", DRIVER, mode, str(cwd), *args])
    text = run["stdout"] + run["stderr"]
    errors = [ln.strip() for ln in run["stdout"].splitlines() if ln.startswith("Error:")]
    marks = [ln for ln in run["stderr"].splitlines() if ln.startswith("VDFIO_TIMES ")]
    split = json.loads(marks[-1].split(" ", 1)[1]) if marks else {}
    return {
        "returncode": run["returncode"],
        "elapsed_s": run["elapsed_s"],
        "startup_s": round(split["startup_s"], 3) if split else None,
        "work_s": round(split["work_s"], 3) if split else None,
        "peak_rss_mb": run["peak_rss_mb"],
        "load_average_before": la,
        "reported_error": errors[-1][:400] if errors else None,
        "traceback": "Traceback (most recent call last)" in text,
        "output_tail": run["stderr"][-600:] if run["returncode"] or errors else None,
    }


def vdfio_args(place: Place, mode: str, vdf_dir: Path | None = None) -> list[str]:
    if mode == "export":
        if place.system == "lancedb":
            return ["lancedb", "--endpoint", str(place.path), "--tables", place.name]
        return ["chroma", "--persistent_path", str(place.path), "--collections", place.name]
    assert vdf_dir is not None
    if place.system == "lancedb":
        return ["--dir", str(vdf_dir), "lancedb", "--endpoint", str(place.path)]
    # vdf-io's default import batch (10,000) is over Chroma's limit (5,461) and fails outright
    batch = ["--batch_size", str(CHROMA_IMPORT_BATCH)]
    return ["--dir", str(vdf_dir), *batch, "chroma", "--persistent_path", str(place.path)]


def vdf_meta(vdf_dir: Path) -> dict[str, Any]:
    meta = json.loads((vdf_dir / "VDF_META.json").read_text())
    files = list(vdf_dir.rglob("*.parquet"))
    out: dict[str, Any] = {
        "parquet_files": len(files),
        "folder_mb": round(
            sum(p.stat().st_size for p in vdf_dir.rglob("*") if p.is_file()) / 2**20, 1
        ),
    }
    for name, namespaces in meta.get("indexes", {}).items():
        ns = namespaces[0] if namespaces else {}
        out[name] = {
            k: ns.get(k)
            for k in ("exported_vector_count", "total_vector_count", "dimensions", "metric")
        }
    if files:
        import pyarrow.parquet as pq

        out["vector_type_in_parquet"] = str(pq.read_schema(files[0]).field("vector").type)
    return out


def compare_pair(
    pair: str, work: Path, python: Path, spec: CollectionSpec, rows: int, args: Any
) -> dict[str, Any]:
    src_sys, _, dst_sys = pair.partition("-")
    for system in (src_sys, dst_sys):
        if system in UNSUPPORTED:
            raise Skip(UNSUPPORTED[system])
        if system not in SYSTEMS:
            raise Skip(f"unknown system {system!r} (here: {', '.join(SYSTEMS)})")
    dim = spec.vectors[0].dim
    tag = pair.replace("-", "_")
    source = Place(src_sys, work / f"src_{tag}")
    print(
        f"[vdfio] {pair}: building the source ({rows:,} x {dim}) ...", file=sys.stderr, flush=True
    )
    build_source(source, spec, rows)

    print(f"[vdfio] {pair}: vdf-io export + import ...", file=sys.stderr, flush=True)
    export_cwd = work / f"vdf_{tag}"
    export = vdfio_step(python, "export", export_cwd, vdfio_args(source, "export"))
    folders = sorted(export_cwd.glob("vdf_*"))
    vdf_target = Place(dst_sys, work / f"vdfio_dst_{tag}")
    result: dict[str, Any] = {"pair": pair, "rows": rows, "dim": dim}
    vdf: dict[str, Any] = {"export": export}
    if folders and (folders[-1] / "VDF_META.json").exists():
        vdf["vdf_folder"] = vdf_meta(folders[-1])
        vdf["import"] = vdfio_step(
            python,
            "import",
            work / f"vdf_import_{tag}",
            vdfio_args(vdf_target, "import", folders[-1]),
        )
    else:
        vdf["import"] = None
        vdf["note"] = "export wrote no VDF folder; nothing to import"
    wall = export["elapsed_s"] + (vdf["import"] or {}).get("elapsed_s", 0.0)
    vdf["elapsed_s"] = round(wall, 3)
    vdf["end_to_end_rows_per_s"] = round(rows / wall, 1)
    vdf["peak_rss_mb"] = max(export["peak_rss_mb"], (vdf["import"] or {}).get("peak_rss_mb", 0.0))
    vdf["exit_codes"] = [export["returncode"], (vdf["import"] or {}).get("returncode")]
    steps = [export, vdf["import"] or {}]
    if all(st.get("work_s") is not None for st in steps):
        vdf["startup_s"] = round(sum(st["startup_s"] for st in steps), 3)
        vdf["work_s"] = round(sum(st["work_s"] for st in steps), 3)
        vdf["work_rows_per_s"] = round(rows / vdf["work_s"], 1)
        # the rest of the wall time: interpreter start and shutdown (after main() returned)
        vdf["rest_s"] = round(wall - vdf["startup_s"] - vdf["work_s"], 3)

    print(f"[vdfio] {pair}: vecmigrate copy ...", file=sys.stderr, flush=True)
    target = Place(dst_sys, work / f"vm_dst_{tag}")
    la = load()
    ours = run_cli(
        cli("copy", source.uri, target.uri, "--json", "--quiet", "--state-dir",
            str(work / f"state_{tag}"), "--workers", str(args.workers),
            "--batch-size", str(args.batch_size)),
        rows,
    )  # fmt: skip
    ours["load_average_before"] = la

    print(f"[vdfio] {pair}: checking what each delivered ...", file=sys.stderr, flush=True)
    truth = read_truth(source, dim)
    probe = (next(iter(truth.index)), truth.vectors[0])
    vdf["delivered"] = (
        delivered(truth, vdf_target, dim, probe)
        if vdf_target.path.exists()
        else {"readable": False, "error": "no target collection was created"}
    )
    ours["delivered"] = delivered(truth, target, dim, probe)

    ratio = ours["end_to_end_rows_per_s"] / vdf["end_to_end_rows_per_s"]
    result.update(
        {
            "vdf_io": vdf,
            "vecmigrate": ours,
            "ratio_end_to_end": round(ratio, 2),
            "goals": {">=10x_vdf_io_end_to_end": ratio >= GOAL},
        }
    )
    if ours.get("rows_per_s") and vdf.get("work_rows_per_s"):
        # both without interpreter start and imports: our summary rate, vdf-io's main() time
        bare = ours["rows_per_s"] / vdf["work_rows_per_s"]
        result["ratio_excluding_startup"] = round(bare, 2)
        result["goals"][">=10x_vdf_io_excluding_startup"] = bare >= GOAL
    return result


def compare(
    pairs: list[str],
    rows: int,
    dim: int,
    work: Path,
    *,
    workers: int = 2,
    batch_size: int = 5_000,
    venv: Path | None = None,
) -> dict[str, Any]:
    """The comparison for ``pairs`` (suite.py --vdf-io and main() call this)."""
    out: dict[str, Any] = {
        "vdf_io": VDF_IO,
        "rows": rows,
        "dim": dim,
        "load_average": {"start": load()},
        "pairs": [],
        "skipped": {},
        "errors": {},
    }
    venv = venv or default_venv()
    try:
        python = vdfio_python(venv)
    except Skip as exc:
        print(f"[vdfio] skipped: {exc}", file=sys.stderr, flush=True)
        out["skipped_all"] = str(exc)
        out["load_average"]["end"] = load()
        return out
    out["venv_pins"] = pins()
    work.mkdir(parents=True, exist_ok=True)
    spec = spec_for(dim)
    opts = argparse.Namespace(workers=workers, batch_size=batch_size)
    for pair in pairs:
        try:
            out["pairs"].append(compare_pair(pair, work, python, spec, rows, opts))
        except Skip as exc:
            out["skipped"][pair] = str(exc)
        except Exception as exc:
            out["errors"][pair] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    out["load_average"]["end"] = load()
    done = out["pairs"]
    out["goal"] = all(p["goals"][">=10x_vdf_io_end_to_end"] for p in done) if done else None
    bare = [p["goals"].get(">=10x_vdf_io_excluding_startup") for p in done]
    out["goal_excluding_startup"] = all(bare) if done and None not in bare else None
    return out


def markdown_lines(res: dict[str, Any]) -> list[str]:
    """The Markdown section suite.md shows (and main() prints)."""
    lines = [f"## vs vdf-io ({res['vdf_io']})", ""]
    if "skipped_all" in res:
        return [*lines, f"skipped: {res['skipped_all']}"]
    la = res["load_average"]
    lines += [
        "End to end: source rows over the wall time of the tool's processes (vdf-io: export + "
        "import). Without startup: vdf-io's main() time (each command first imports every "
        "client library) against the copy's own summary rate. Load average "
        f"{la['start']} at start, {la.get('end')} at end.",
        "",
        "| pair | vdf-io export s | import s | of which startup s | vdf-io rows/s | "
        "vecmigrate rows/s | ratio | ratio without startup | vdf-io delivered | "
        "vecmigrate delivered | peak RSS MB vdf-io / ours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]

    def said(d: dict[str, Any]) -> str:
        if not d.get("readable"):
            return f"unreadable: {d.get('error', '?')[:80]}"
        if d.get("exact") and d.get("query_runs") and d.get("finds_own_row"):
            return f"{d['rows']:,} rows, exact, searchable"
        bits = [f"{d['rows']:,} rows"]
        for key in ("missing_ids", "duplicate_ids", "vectors_beyond_1e-6"):
            if d.get(key):
                bits.append(f"{key.replace('_', ' ')}: {d[key]:,}")
        if d.get("vectors_not_bitwise_equal") and not d.get("vectors_beyond_1e-6"):
            bits.append(f"{d['vectors_not_bitwise_equal']:,} vectors within 1e-6, not bit-exact")
        for key in ("documents_differ", "metadata_differ"):
            if d.get(key):
                bits.append(f"{key.replace('_', ' ')}: {d[key]:,}")
        if not d["rows"]:
            return f"empty: 0 of {d['source_rows']:,} rows"
        if not d.get("query_runs"):
            bits.append("vector query fails")
        else:
            bits.append("searchable" if d.get("finds_own_row") else "query misses its own row")
        return ", ".join(bits)

    for p in res["pairs"]:
        v, o = p["vdf_io"], p["vecmigrate"]
        imp = (v.get("import") or {}).get("elapsed_s", "-")
        bare = p.get("ratio_excluding_startup")
        lines.append(
            f"| {p['pair']} | {v['export']['elapsed_s']} | {imp} | {v.get('startup_s', '?')} | "
            f"{v['end_to_end_rows_per_s']:,.0f} | {o['end_to_end_rows_per_s']:,.0f} | "
            f"{p['ratio_end_to_end']:.1f}x | {f'{bare:.1f}x' if bare else '-'} | "
            f"{said(v['delivered'])} | {said(o['delivered'])} | "
            f"{v['peak_rss_mb']:.0f} / {o['peak_rss_mb']:.0f} |"
        )
    for name, reason in {**res["skipped"], **res["errors"]}.items():
        lines.append(f"| {name} | {reason[:160]} |" + " |" * 9)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--pairs", default="lancedb-lancedb")
    parser.add_argument("--venv", type=Path, default=None, help="vdf-io's virtualenv")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--name", default="vdfio", help="results/<name>.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vm-vdfio-"))
    try:
        res = compare(
            [p.strip() for p in args.pairs.split(",") if p.strip()],
            args.rows,
            args.dim,
            work,
            workers=args.workers,
            batch_size=args.batch_size,
            venv=args.venv,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = write_result(args.name, res)
    print("\n".join(markdown_lines(res)))
    print(f"written to {path}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
