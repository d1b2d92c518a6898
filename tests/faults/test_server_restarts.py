"""The target server dies (SIGKILL) and comes back mid-copy and mid-sync: nothing lost.

PostgreSQL and a Chroma server are killed with their whole process group while a copy writes
into them and started again on the same port and data folder about a second later; the copy
retries the transient failures and finishes with the target equal to the source. Milvus Lite
runs inside the copying process, so its "restart" is a new process resuming after the old one
was killed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_spec, make_table
from tests.faults.servers import ledger_rows, restart_chroma, restart_postgres, wait_for
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import WriteToken
from vecmigrate.engine.copy import CopyJob, CopyOptions, CopyResult
from vecmigrate.hashing import set_hash
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import ID, Metric

PASSWORD_VAR = "VECMIGRATE_FAULTS_PG_PASSWORD"


def _dataset(folder: Path, n: int, dim: int, batch: int = 10_000) -> tuple[str, pa.Table]:
    spec = make_spec(dim=dim, metric=Metric.COSINE)
    table = make_table(spec, n, batch=batch)
    uri = f"parquet://{folder}"
    with connect(uri) as conn:
        conn.create(spec, IfExists.FAIL)
        conn.begin("src", resume=False)
        for i, b in enumerate(table.to_batches()):
            conn.upsert(b, WriteToken("src", 0, i * batch))
        conn.finalize(spec)
    return uri, table


def _read_all(uri: str) -> pa.Table:
    with connect(uri) as conn:
        spec = conn.describe()
        batches = [sb.batch for p in conn.partitions(4) for sb in conn.scan(p, None, 20_000)]
    return pa.Table.from_batches(batches, spec.arrow_schema())


def _assert_equal(got: pa.Table, want: pa.Table, *, exact: bool) -> None:
    ids = got.column(ID).to_pylist()
    assert len(ids) == len(set(ids)) == want.num_rows
    got, want = got.sort_by(ID), want.sort_by(ID)
    assert got.column(ID).equals(want.column(ID))
    g = vectors_numpy(got.column("vector").combine_chunks())
    w = vectors_numpy(want.column("vector").combine_chunks())
    if exact:
        assert np.array_equal(g.view(np.uint32), w.view(np.uint32))
    else:
        assert np.allclose(g, w, rtol=1e-6, atol=1e-6)


class CopyThread(threading.Thread):
    """A copy running in the background; keeps its result or its error."""

    def __init__(self, job: CopyJob) -> None:
        super().__init__(daemon=True)
        self.job = job
        self.result: CopyResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.job.run()
        except BaseException as exc:
            self.error = exc


def _crash_mid_copy(
    source: str, target: str, state: Path, at_rows: int, restart: Any, **options: Any
) -> tuple[CopyResult, int]:
    """Run the copy, crash and restart the target once ``at_rows`` are committed."""
    job = CopyJob(
        source,
        target,
        CopyOptions(state_dir=state, max_attempts=12, retry_wait=0.2, **options),
    )
    copy = CopyThread(job)
    copy.start()
    wait_for(lambda: ledger_rows(state) >= at_rows or not copy.is_alive(), 180, "the copy")
    assert copy.is_alive(), f"the copy ended before the crash: {copy.error or copy.result}"
    restart()
    crashed_at = ledger_rows(state)
    copy.join(300)
    assert not copy.is_alive(), "the copy did not finish after the restart"
    assert copy.error is None, f"the copy failed after the restart: {copy.error!r}"
    assert copy.result is not None
    return copy.result, crashed_at


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
def crashable_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A PostgreSQL of this test's own (the session server is not to be killed)."""
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg is not installed")
    try:
        from scripts.engines.postgres import EngineUnavailable, start_postgres
    except ImportError as exc:
        pytest.skip(f"postgres: cannot import scripts/engines/postgres.py ({exc})")
    try:
        # commits must be durable: with synchronous_commit=off a server crash loses the last
        # ~200 ms of commits, which the copy's checkpoint already counts (seen: 8,000 rows)
        pg = start_postgres(timeout=60, settings={"synchronous_commit": "on"})
    except (EngineUnavailable, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"postgres: the engine cannot start here: {exc}")
    monkeypatch.setenv(PASSWORD_VAR, pg.password)
    try:
        yield pg
    finally:
        pg.stop()


def test_postgres_target_killed_mid_copy(crashable_postgres: Any, tmp_path: Path) -> None:
    n = 120_000
    source, table = _dataset(tmp_path / "src", n, 32)
    target = crashable_postgres.uri("items", password_env=PASSWORD_VAR)
    result, crashed_at = _crash_mid_copy(
        source,
        target,
        tmp_path / "state",
        25_000,
        lambda: restart_postgres(crashable_postgres),
        batch_size=4_000,
        workers=2,
    )
    assert crashed_at < n
    assert result.rows == n and result.target_count == n
    got = _read_all(target)
    _assert_equal(got, table, exact=True)
    assert f"{set_hash(got.combine_chunks().to_batches()[0]):016x}" == result.content_hash


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is None, reason="psycopg missing")
def test_postgres_target_killed_mid_sync(
    postgres_engine: Any, crashable_postgres: Any, tmp_path: Path
) -> None:
    from tests.integration.test_sync import Writer, _fill
    from vecmigrate.cdc.sync import SyncJob, SyncOptions
    from vecmigrate.validate.run import ValidateOptions, validate

    source = postgres_engine.uri("faults_sync_source")
    target = crashable_postgres.uri("items", password_env=PASSWORD_VAR)
    _fill(source)
    state = tmp_path / "state"
    options = SyncOptions(cdc="logical", state_dir=state, max_changes=100, poll_interval_s=0.1)
    job = SyncJob(source, target, options)
    applied: list[int] = []
    outcome: dict[str, Any] = {}

    def follow() -> None:
        try:
            outcome["result"] = job.run(lambda info: applied.append(info["changes"]))
        except BaseException as exc:
            outcome["error"] = exc

    writer = Writer(postgres_engine, "faults_sync_source", rate=150, limit_s=60)
    follower = threading.Thread(target=follow, daemon=True)
    try:
        writer.start()
        follower.start()
        wait_for(lambda: bool(applied) or not follower.is_alive(), 120, "the sync to stream")
        restart_postgres(crashable_postgres, down_s=1.5)  # the target dies while streaming
        before = applied[-1] if applied else 0
        wait_for(
            lambda: (applied and applied[-1] > before + 100) or not follower.is_alive(),
            60,
            "changes applied after the restart",
        )
        writer.halt.set()
        writer.join(30)
        time.sleep(1.5)
        job.stop()
        follower.join(120)
        assert "error" not in outcome, f"the sync failed: {outcome.get('error')!r}"
        SyncJob(source, target, SyncOptions(cdc="logical", state_dir=state, once=True)).run()
        check = validate(source, target, ValidateOptions(queries=10))
        assert check.checks["completeness"]["passed"], check.checks["completeness"]
        assert check.checks["metadata"]["passed"], check.checks["metadata"]
    finally:
        writer.halt.set()
        job.stop()
        follower.join(60)
        SyncJob(source, target, SyncOptions(cdc="logical", state_dir=state)).cleanup()


# -- Chroma server -----------------------------------------------------------------------------


@pytest.fixture
def crashable_chroma() -> Iterator[Any]:
    if importlib.util.find_spec("chromadb") is None:
        pytest.skip("chromadb is not installed")
    binary = Path(sys.executable).with_name("chroma")
    if not binary.exists():
        pytest.skip(f"the chroma command is not next to {sys.executable}")
    from tests.engines import start_chroma

    server = start_chroma(binary)
    try:
        yield server
    finally:
        server.stop()


def test_chroma_server_killed_mid_copy(crashable_chroma: Any, tmp_path: Path) -> None:
    n = 12_000
    source, table = _dataset(tmp_path / "src", n, 16, batch=2_000)
    target = crashable_chroma.uri("items")
    result, crashed_at = _crash_mid_copy(
        source,
        target,
        tmp_path / "state",
        3_000,
        lambda: restart_chroma(crashable_chroma),
        batch_size=500,
        workers=2,
    )
    assert crashed_at < n
    assert result.rows == n and result.target_count == n
    _assert_equal(_read_all(target), table, exact=False)  # Chroma: 1 ulp off at times


# -- Milvus Lite: the server lives in the copying process --------------------------------------


def _copy_cmd(source: str, target: str, state: Path, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "vecmigrate", "copy", source, target),
        *("--batch-size", "1000", "--workers", str(workers), "--state-dir", str(state)),
        *("--quiet", "--json"),
    ]


@pytest.mark.skipif(importlib.util.find_spec("milvus_lite") is None, reason="milvus-lite missing")
def test_milvus_lite_resumes_in_a_new_process_after_a_kill(tmp_path: Path) -> None:
    n = 30_000
    source, table = _dataset(tmp_path / "src", n, 16)
    target = f"milvus+lite://{tmp_path}/milvus.db?collection=items"
    state = tmp_path / "state"
    proc = subprocess.Popen(
        _copy_cmd(source, target, state, 2),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(lambda: ledger_rows(state) >= 8_000 or proc.poll() is not None, 180, "the copy")
        assert proc.poll() is None, "the copy ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # the copy only: what it started is left running
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    crashed_at = ledger_rows(state)
    done = subprocess.run(
        _copy_cmd(source, target, state, 3),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # the killed copy's own milvus-lite server may outlive it: end the group it started in
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    assert done.returncode == 0, done.stderr
    assert 0 < crashed_at < n
    got = _read_all(target)
    _assert_equal(got, table, exact=True)
