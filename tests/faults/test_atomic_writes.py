"""Manifests, shards and checkpoint ledgers are replaced atomically: a crash shows old or new.

A crash is simulated two ways: an exception raised inside the writer after the temporary
file was written (the writer must clean up), and SIGKILL of a process at that moment (nothing
can clean up: what is left must not be taken for a manifest or a shard).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import Partition, WriteToken
from vecmigrate.connectors.dataset import manifest as manifest_module
from vecmigrate.connectors.dataset import shards as shards_module
from vecmigrate.connectors.dataset.manifest import read_manifest
from vecmigrate.engine.ledger import Ledger


class Crash(Exception):
    pass


def _dataset(folder: Path) -> Path:
    spec = make_spec(dim=4)
    with connect(f"parquet://{folder}") as conn:
        conn.create(spec, IfExists.FAIL)
        conn.begin("run-1", resume=False)
        conn.upsert(make_batch(spec, 0, 10), WriteToken("run-1", 0, 0))
        conn.finalize(spec)
    return next((folder / "data").glob("part-*.parquet"))


def _replace_then_crash(monkeypatch: pytest.MonkeyPatch, module: object) -> list[Path]:
    """Make ``os.replace`` in ``module`` fail after the temporary file is written."""
    written: list[Path] = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        written.append(Path(src))
        assert Path(src).stat().st_size > 0  # the temporary file was written in full
        raise Crash

    monkeypatch.setattr(module.os, "replace", replace)  # type: ignore[attr-defined]
    return written


def test_manifest_write_interrupted_leaves_the_old_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ds"
    _dataset(folder)
    before = (folder / "manifest.json").read_bytes()
    written = _replace_then_crash(monkeypatch, manifest_module)
    old = read_manifest(folder)
    assert old is not None
    with pytest.raises(Crash):
        manifest_module.write_manifest(folder, old.model_copy(update={"complete": False}))
    assert written and not written[0].exists(), "the temporary manifest was left behind"
    assert (folder / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["data", "manifest.json"]


def test_shard_write_interrupted_leaves_no_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ds"
    spec = make_spec(dim=4)
    conn = connect(f"parquet://{folder}")
    conn.create(spec, IfExists.FAIL)
    conn.begin("run-1", resume=False)
    written = _replace_then_crash(monkeypatch, shards_module)
    with pytest.raises(Exception) as info:
        conn.upsert(make_batch(spec, 0, 10), WriteToken("run-1", 0, 0))
    assert isinstance(info.value, Crash) or isinstance(info.value.__cause__, Crash)
    assert written and not written[0].exists()
    assert list((folder / "data").iterdir()) == []
    monkeypatch.undo()
    conn.upsert(make_batch(spec, 0, 10), WriteToken("run-1", 0, 0))  # the resend works
    conn.finalize(spec)
    assert conn.count() == 10


_KILL_AT_REPLACE = """
import os, signal, sys
from pathlib import Path
from vecmigrate.connectors.dataset import manifest as m, shards as s
def die(src, dst):
    os.kill(os.getpid(), signal.SIGKILL)
m.os.replace = die
s.os.replace = die
folder = Path(sys.argv[1])
if sys.argv[2] == "manifest":
    old = m.read_manifest(folder)
    m.write_manifest(folder, old.model_copy(update={"complete": False, "shards": []}))
else:
    from tests.datagen import make_batch, make_spec
    from vecmigrate.connectors import connect
    from vecmigrate.connectors.base import WriteToken
    conn = connect(f"parquet://{folder}")
    spec = conn.describe()
    conn.upsert(make_batch(spec, 100, 10), WriteToken("run-1", 0, 100))
"""


@pytest.mark.parametrize("what", ["manifest", "shard"])
def test_sigkill_at_the_rename_leaves_the_dataset_readable(tmp_path: Path, what: str) -> None:
    folder = tmp_path / "ds"
    shard = _dataset(folder)
    manifest_before = (folder / "manifest.json").read_bytes()
    shards_before = sorted(p.name for p in (folder / "data").iterdir() if p.name[0] != ".")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILL_AT_REPLACE), str(folder), what],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert (folder / "manifest.json").read_bytes() == manifest_before
    visible = sorted(p.name for p in (folder / "data").iterdir() if p.name[0] != ".")
    assert visible == shards_before, "a half-written shard became visible"
    leftovers = [p.name for p in folder.rglob(".*tmp-*")]
    assert leftovers, "the killed writer should have left its hidden temporary file"
    with connect(f"parquet://{folder}") as conn:  # the old dataset still reads, checksums OK
        assert conn.count() == 10
        rows = sum(sb.batch.num_rows for p in conn.partitions(2) for sb in conn.scan(p, None, 4))
    assert rows == 10
    assert shard.exists()


_COMMIT_LOOP = """
import sys
from pathlib import Path
from vecmigrate.engine.ledger import Ledger
ledger = Ledger(Path(sys.argv[1]))
i = 0
while True:
    i += 1
    ledger.commit(0, cursor=str(i), rows=1, skipped=0, content_hash=i * 7919)
    if i == 200:
        print("ready", flush=True)
"""


def test_ledger_commits_are_atomic_under_sigkill(tmp_path: Path) -> None:
    """Cursor, row count and hash of a partition always move together."""
    path = tmp_path / "copy-test.sqlite"
    ledger = Ledger(path)
    ledger.write_plan(
        spec=make_spec(dim=4), partitions=[Partition(key="all")], info={"source": "memory://x"}
    )
    ledger.close()
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_COMMIT_LOOP), str(path)],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        reopened = Ledger(path)
        state = reopened.states()[0]
        reopened.close()
        assert state.cursor is not None
        # each process restarts its counter at 1: rows accumulate, cursor and hash are its last
        assert state.content_hash == int(state.cursor) * 7919
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT rows FROM partitions").fetchone()[0]
    assert rows >= 600


def test_the_manifest_is_fsynced_and_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order that makes a rename durable: write, fsync the file, rename, fsync the folder."""
    folder = tmp_path / "ds"
    _dataset(folder)
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(manifest_module.os, "fsync", fsync)
    monkeypatch.setattr(manifest_module.os, "replace", replace)
    old = read_manifest(folder)
    assert old is not None
    manifest_module.write_manifest(folder, old)
    assert calls == ["fsync-file", "rename", "fsync-dir"]
    assert json.loads((folder / "manifest.json").read_text())["complete"] is True
