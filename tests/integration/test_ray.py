"""The Ray executor on a local cluster: same result as local, resumable across executors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from tests.integration.test_kill_resume import _copy_cmd, _kill_at
from vecmigrate.connectors import IfExists, connect
from vecmigrate.engine.copy import CopyJob, CopyOptions, copy
from vecmigrate.spec import ID

ray = pytest.importorskip("ray")
pytest.importorskip("lancedb")

N = 30_000


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
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
