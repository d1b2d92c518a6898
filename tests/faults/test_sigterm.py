"""SIGTERM stops a copy cleanly: one "interrupted" line, exit 130, and the next run resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.datagen import make_batch, make_spec
from tests.integration.test_kill_resume import _ledger_rows
from vecmigrate.connectors import connect

N = 60_000


def test_sigterm_interrupts_cleanly_and_the_copy_resumes(tmp_path: Path) -> None:
    spec = make_spec(dim=32)
    source = f"parquet://{tmp_path / 'source'}"
    with connect(source) as conn:
        conn.create(spec)
        for start in range(0, N, 10_000):
            conn.upsert(make_batch(spec, start, 10_000))
        conn.finalize(spec)
    state = tmp_path / "state"
    cmd = [
        sys.executable, "-m", "vecmigrate", "copy", source, f"jsonl://{tmp_path / 'target'}",
        "--batch-size", "500", "--workers", "2", "--state-dir", str(state), "--quiet", "--json",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _ledger_rows(state) < 2_000 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the copy finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["error"] == "Interrupted" and report["exit_code"] == 130
    assert "run the same command again to resume" in report["message"]
    stopped_at = _ledger_rows(state)
    assert 0 < stopped_at < N

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows"] == N and summary["resumed"] is True
