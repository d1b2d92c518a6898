"""Disk full while exporting: a clear error, no shard that looks complete but is not, resume.

The dataset is exported into a small tmpfs (mounting needs root; skipped otherwise). The
export stops with ENOSPC; every shard file left behind must be whole (shards are written to a
temporary file and renamed), the manifest must say the dataset is incomplete, and after a
larger file system is mounted at the same path (with the partial folder copied back) the same
command resumes and completes with checksums that verify.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.datagen import make_spec, make_table
from vecmigrate.cli.app import app
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import WriteToken
from vecmigrate.connectors.dataset.shards import file_sha256, read_sum
from vecmigrate.spec import ID

N = 60_000
DIM = 48  # about 11.5 MB of float32 vectors: more than the 8 MB file system holds


def _mount(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {done.stderr.strip() or 'refused'}")


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    where = tmp_path / "small"
    _mount(where, "8m")
    try:
        yield where
    finally:
        _umount(where)


def _source(folder: Path) -> tuple[str, pa.Table]:
    spec = make_spec(dim=DIM)
    table = make_table(spec, N, batch=10_000)
    uri = f"parquet://{folder}"
    with connect(uri) as conn:
        conn.create(spec, IfExists.FAIL)
        conn.begin("src", resume=False)
        for i, b in enumerate(table.to_batches()):
            conn.upsert(b, WriteToken("src", 0, i * 10_000))
        conn.finalize(spec)
    return uri, table


def test_export_into_a_full_disk_fails_cleanly_and_resumes(small_fs: Path, tmp_path: Path) -> None:
    source, table = _source(tmp_path / "source")
    out = small_fs / "export"
    args = ["export", source, str(out), "--batch-size", "4000", "--workers", "2"]
    args += ["--state-dir", str(tmp_path / "state"), "--quiet", "--format", "parquet"]

    failed = CliRunner().invoke(app, args)
    assert failed.exit_code != 0
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, failed.stderr
    assert "no space left" in lines[0]
    assert "/data/part-" in lines[0] or "manifest" in lines[0], lines[0]

    # nothing that looks complete is incomplete
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    data = out / "data"
    shards = sorted(p for p in data.iterdir() if p.name.startswith("part-"))
    leftovers = [p.name for p in data.iterdir() if ".tmp-" in p.name]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    for shard in shards:
        pq.read_table(shard)  # whole: a cut file has no footer
        summary = read_sum(shard)
        if summary is not None:
            assert file_sha256(shard) == (summary.sha256, summary.bytes)
    refused = CliRunner().invoke(app, ["import", str(out), f"parquet://{tmp_path / 'again'}"])
    assert refused.exit_code != 0 and "incomplete" in refused.stderr

    # free space: a bigger file system at the same path, with the partial export copied back
    keep = tmp_path / "partial"
    shutil.copytree(out, keep, symlinks=True)
    _umount(small_fs)
    _mount(small_fs, "64m")
    shutil.copytree(keep, out, symlinks=True)

    resumed = CliRunner().invoke(app, [*args, "--json"])
    assert resumed.exit_code == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed"] is True and summary["rows"] == N
    assert 0 < summary["rows_this_run"] < N

    with connect(f"parquet://{out}") as conn:  # checksums are verified while reading
        assert conn.count() == N
        got = pa.Table.from_batches(
            [sb.batch for p in conn.partitions(4) for sb in conn.scan(p, None, 20_000)]
        )
    assert got.num_rows == N and len(set(got.column(ID).to_pylist())) == N
    assert got.sort_by(ID).equals(table.sort_by(ID))
