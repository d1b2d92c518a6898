"""SIGKILL the copy process at several points of a 200k copy; resume; nothing lost or doubled."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.spec import ID

pytest.importorskip("lancedb")

N = 200_000
DIM = 32


def _ledger_rows(state: Path) -> int:
    files = list(state.glob("copy-*.sqlite"))
    if not files:
        return 0
    try:
        with sqlite3.connect(f"file:{files[0]}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("SELECT COALESCE(SUM(rows), 0) FROM partitions").fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0


def _copy_cmd(source: str, target: str, state: Path, workers: int, batch: int = 2000) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vecmigrate",
        "copy",
        source,
        target,
        "--batch-size",
        str(batch),
        "--workers",
        str(workers),
        "--state-dir",
        str(state),
        "--quiet",
        "--json",
    ]


def _kill_at(cmd: list[str], rows: int, timeout: float = 300) -> bool:
    """Start the copy, SIGKILL it once the ledger shows ``rows``; False if it finished first."""
    state = Path(cmd[cmd.index("--state-dir") + 1])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if _ledger_rows(state) >= rows:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                return True
            time.sleep(0.01)
        raise AssertionError("copy did not progress in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def lance_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pa.Table]:
    root = tmp_path_factory.mktemp("lance-src")
    uri = f"lancedb://{root}?table=items"
    spec = make_spec(dim=DIM)
    batches = [make_batch(spec, s, 20_000) for s in range(0, N, 20_000)]
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        for b in batches:
            conn.upsert(b)
        conn.finalize(spec)
    return uri, pa.Table.from_batches(batches)


@pytest.mark.parametrize("target_kind", ["lancedb", "parquet"])
def test_sigkill_and_resume_with_other_worker_counts(
    tmp_path: Path, lance_source: tuple[str, pa.Table], target_kind: str
) -> None:
    source, table = lance_source
    target = (
        f"lancedb://{tmp_path / 'dst'}?table=items"
        if target_kind == "lancedb"
        else f"parquet://{tmp_path / 'export'}"
    )
    state = tmp_path / "state"
    kills = 0
    for workers, at in ((1, 30_000), (3, 90_000), (2, 150_000)):
        if _kill_at(_copy_cmd(source, target, state, workers), at):
            kills += 1
    assert kills >= 2, "the copy finished before it could be killed"
    done = subprocess.run(
        _copy_cmd(source, target, state, 4),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with connect(target) as conn:
        assert conn.count() == N
        got = pa.Table.from_batches(
            [sb.batch for p in conn.partitions(4) for sb in conn.scan(p, None, 10_000)]
        )
    assert got.num_rows == N
    assert len(set(got.column(ID).to_pylist())) == N
    assert got.sort_by(ID).equals(table.sort_by(ID))
