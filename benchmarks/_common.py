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
import json, os, resource, subprocess, sys, threading, time
peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
def tree(pid):
    pids = [pid]
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            for child in f.read().split():
                pids += tree(int(child))
    return pids
def sample():
    while p.poll() is None:
        total = dict.fromkeys(peaks, 0)
        try:
            for pid in tree(p.pid):
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        key = line.split(":")[0]
                        if key in total:
                            total[key] += int(line.split()[1])
        except (OSError, ValueError):
            pass  # a process ended while it was read: this sample is partial
        for key in peaks:
            peaks[key] = max(peaks[key], total[key])
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
out, err = p.communicate()
e = time.perf_counter() - t
rss = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, peaks["VmRSS"])
print(json.dumps({"elapsed_s": e, "returncode": p.returncode,
    "peak_rss_mb": rss / 1024,
    "peak_anon_mb": peaks["RssAnon"] / 1024, "peak_file_mb": peaks["RssFile"] / 1024,
    "stdout": out, "stderr": err[-3000:]}))
"""


def measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``; wall time, exit code, stdout and the peak RSS (MB) of that command.

    A fresh interpreter runs it, so RUSAGE_CHILDREN covers exactly this one command. The peak
    RSS is the kernel's (exact) for one process, or the sampled peak of the sum over the
    command's process tree (every 50 ms) when that is higher: a copy may write its target
    from a child process. The peaks of the anonymous part (the processes' own memory) and of
    the file-backed part (mapped files: an embedded engine's storage, which the kernel may drop
    and re-read) are sampled sums too.
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
