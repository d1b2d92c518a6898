"""Helpers for benchmark scripts: peak RSS of a command, machine facts, JSON results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

_PROBE = """
import json, resource, subprocess, sys, threading, time
peaks = {"RssAnon": 0, "RssFile": 0}
t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
def sample():
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    key = line.split(":")[0]
                    if key in peaks:
                        peaks[key] = max(peaks[key], int(line.split()[1]))
        except OSError:
            return
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
out, err = p.communicate()
e = time.perf_counter() - t
print(json.dumps({"elapsed_s": e, "returncode": p.returncode,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "peak_anon_mb": peaks["RssAnon"] / 1024, "peak_file_mb": peaks["RssFile"] / 1024,
    "stdout": out, "stderr": err[-3000:]}))
"""


def measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``; wall time, exit code, stdout and the peak RSS (MB) of that process alone.

    A fresh interpreter runs it, so RUSAGE_CHILDREN covers exactly this one command. Besides
    the peak RSS (the kernel's, exact), the peaks of its anonymous part (the process's own
    memory) and of its file-backed part (mapped files: an embedded engine's storage, which the
    kernel may drop and re-read) are sampled every 50 ms.
    """
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, *cmd], capture_output=True, text=True, check=True
    )
    data: dict[str, Any] = json.loads(res.stdout)
    for key in ("elapsed_s", "peak_rss_mb", "peak_anon_mb", "peak_file_mb"):
        data[key] = round(data[key], 3 if key == "elapsed_s" else 1)
    return data


def settle() -> None:
    """Flush dirty pages first: the previous run's writeback must not land in the next one."""
    os.sync()
    time.sleep(0.5)


def copy_rate(summary: dict[str, Any]) -> float:
    """Rows/s of a ``vecmigrate copy --json`` summary, not counting its ``connect`` phase.

    ``connect`` imports the client libraries (1.2-2.3 s for LanceDB), which the raw floors,
    timed in a warm interpreter, do not pay; everything after it counts (on Ray, starting the
    cluster's actors too).
    """
    phases = summary.get("phases_s") or {}
    return float(summary["rows"]) / (float(summary["elapsed_s"]) - phases.get("connect", 0.0))


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    meta = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    path.write_text(json.dumps({**meta, **payload}, indent=2) + "\n")
    return path
