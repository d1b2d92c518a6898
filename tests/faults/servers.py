"""Servers a fault test can crash (SIGKILL of the whole process group) and start again.

A restarted server keeps its port and its data folder, as a server restarted by its
operator (or its supervisor) would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def crash(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a server and every process it started (it runs in its own session)."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def respawn(
    old: subprocess.Popen[bytes], log: Path, cwd: Path | None = None, **run_as: Any
) -> subprocess.Popen[bytes]:
    """Start the same command line again (same port, same data folder)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            old.args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            **run_as,
        )


def restart_postgres(engine: Any, *, down_s: float = 1.0) -> None:
    """Crash ``engine`` (scripts/engines/postgres.py), wait, and start it on the same data."""
    from scripts.engines.postgres import _os_user, _wait_ready, bin_dir

    old = engine.process
    crash(old)
    time.sleep(down_s)
    account = _os_user()
    run_as: dict[str, Any] = {}
    if account is not None:
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    engine.process = respawn(old, engine.log_path, cwd=engine.root, **run_as)
    if not _wait_ready(engine, bin_dir(), 60):
        raise RuntimeError(f"PostgreSQL did not come back:\n{engine.log_path.read_text()[-2000:]}")


def restart_chroma(server: Any, *, down_s: float = 1.0) -> None:
    """Crash a ``chroma run`` server (tests/engines.py), wait, and start it on the same data."""
    from tests.engines import _chroma_heartbeat

    old = server.process
    crash(old)
    time.sleep(down_s)
    server.process = respawn(old, server.root / "chroma.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _chroma_heartbeat(server.port):
            return
        time.sleep(0.1)
    raise RuntimeError("chroma did not come back within 60 s")


def ledger_rows(state: Path) -> int:
    """Rows committed so far by the copies whose checkpoints are in ``state`` (0 when none)."""
    total = 0
    for path in state.glob("copy-*.sqlite"):
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
                row = db.execute("SELECT COALESCE(SUM(rows), 0) FROM partitions").fetchone()
                total += int(row[0])
        except sqlite3.Error:
            pass
    return total


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
