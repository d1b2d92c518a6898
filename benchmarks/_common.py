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

_PROBE = (
    "import json,resource,subprocess,sys,time;"
    "t=time.perf_counter();p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
    "e=time.perf_counter()-t;"
    "print(json.dumps({'elapsed_s':e,'returncode':p.returncode,"
    "'peak_rss_mb':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,"
    "'stdout':p.stdout,'stderr':p.stderr[-3000:]}))"
)


def measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``; wall time, exit code, stdout and the peak RSS (MB) of that process alone.

    A fresh interpreter runs it, so RUSAGE_CHILDREN covers exactly this one command.
    """
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, *cmd], capture_output=True, text=True, check=True
    )
    data: dict[str, Any] = json.loads(res.stdout)
    data["elapsed_s"] = round(data["elapsed_s"], 3)
    data["peak_rss_mb"] = round(data["peak_rss_mb"], 1)
    return data


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
