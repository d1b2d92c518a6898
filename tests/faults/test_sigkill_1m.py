"""SIGKILL a 1M-vector copy at 20 random points, resuming each time with other worker counts.

The kill points come from a seeded generator; the seed is printed (and recorded as a test
property) so a failing run can be repeated with ``VECMIGRATE_FAULT_SEED=<seed>``. At the end
the target holds every row once, equal to the source, and the content hash in the checkpoint
ledger equals a hash computed over the rows read back from the target.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from tests.faults.servers import ledger_rows
from vecmigrate.connectors import IfExists, connect
from vecmigrate.hashing import combine, set_hash
from vecmigrate.spec import ID

pytest.importorskip("lancedb")

N = 1_000_000
DIM = 32
KILLS = 20
WORKERS = (1, 3, 2, 4)


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pa.Table]:
    root = tmp_path_factory.mktemp("lance-1m")
    uri = f"lancedb://{root}?table=items"
    spec = make_spec(dim=DIM)
    batches = [make_batch(spec, s, 50_000) for s in range(0, N, 50_000)]
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        for b in batches:
            conn.upsert(b)
        conn.finalize(spec)
    return uri, pa.Table.from_batches(batches)


def _cmd(source: str, target: str, state: Path, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "vecmigrate", "copy", source, target),
        *("--batch-size", "5000", "--workers", str(workers), "--state-dir", str(state)),
        *("--quiet", "--json"),
    ]


def _kill_when(cmd: list[str], reached: Callable[[], bool], timeout: float = 300) -> bool:
    """Run ``cmd``, SIGKILL it once ``reached()``; False when it finished first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if reached():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                return True
            time.sleep(0.005)
        raise AssertionError("the copy made no progress in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("target_kind", ["parquet", "lancedb"])
def test_twenty_kills_of_a_million_vector_copy(
    million: tuple[str, pa.Table],
    tmp_path: Path,
    target_kind: str,
    record_property: Callable[[str, object], None],
) -> None:
    source, table = million
    seed = int(os.environ.get("VECMIGRATE_FAULT_SEED", str(time.time_ns() % 2**32)))
    record_property("seed", seed)
    print(f"kill points seed: {seed} (repeat with VECMIGRATE_FAULT_SEED={seed})", file=sys.stderr)
    points = sorted(random.Random(seed).sample(range(10_000, N - 10_000), KILLS))
    target = (
        f"parquet://{tmp_path / 'export'}"
        if target_kind == "parquet"
        else f"lancedb://{tmp_path / 'dst'}?table=items"
    )
    state = tmp_path / "state"
    kills = 0
    for i, at in enumerate(points):
        workers = WORKERS[i % len(WORKERS)]
        if _kill_when(_cmd(source, target, state, workers), lambda at=at: ledger_rows(state) >= at):
            kills += 1
    assert kills >= KILLS - 2, f"seed {seed}: only {kills} kills landed before the copy finished"

    done = subprocess.run(
        _cmd(source, target, state, 2), capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, f"seed {seed}: {done.stderr}"
    summary = json.loads(done.stdout)
    assert summary["rows"] == N and summary["target_count"] == N, f"seed {seed}"

    target_hash = 0
    batches = []
    with connect(target) as conn:
        for p in conn.partitions(8):
            for sb in conn.scan(p, None, 50_000):
                target_hash = combine(target_hash, set_hash(sb.batch))
                batches.append(sb.batch)
    got = pa.Table.from_batches(batches)
    assert got.num_rows == N, f"seed {seed}"
    assert len(set(got.column(ID).to_pylist())) == N, f"seed {seed}: duplicate ids"
    assert f"{target_hash:016x}" == summary["content_hash"], f"seed {seed}: content hash"
    assert got.sort_by(ID).equals(table.sort_by(ID)), f"seed {seed}: rows differ"
