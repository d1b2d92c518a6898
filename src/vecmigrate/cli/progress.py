"""Progress of long runs: a rich bar on a terminal, structured log lines otherwise."""

from __future__ import annotations

import sys
import threading
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RowsPerSecond(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[no-untyped-def, override]
        speed = task.finished_speed or task.speed
        return f"{speed:,.0f} rows/s" if speed else "- rows/s"


class TerminalProgress:
    """A rich progress bar on stderr: rows, rows/s, ETA."""

    def __init__(self, label: str) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RowsPerSecond(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._label = label
        self._task: TaskID | None = None
        self._lock = threading.Lock()

    def start(self, total: int | None, done: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task(self._label, total=total, completed=done)

    def advance(self, rows: int) -> None:
        with self._lock:
            if self._task is not None:
                self._progress.advance(self._task, rows)

    def finish(self) -> None:
        self._progress.stop()


class LogProgress:
    """One line to stderr every few seconds: rows, total, rows/s, ETA."""

    def __init__(self, label: str, every_s: float = 5.0) -> None:
        self._label = label
        self._every = every_s
        self._lock = threading.Lock()
        self._total: int | None = None
        self._done = 0
        self._run_rows = 0
        self._t0 = time.monotonic()
        self._last = 0.0

    def start(self, total: int | None, done: int) -> None:
        self._total, self._done, self._t0 = total, done, time.monotonic()
        self._emit(force=True)

    def advance(self, rows: int) -> None:
        with self._lock:
            self._done += rows
            self._run_rows += rows
            self._emit()

    def finish(self) -> None:
        self._emit(force=True)

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self._every:
            return
        self._last = now
        elapsed = max(now - self._t0, 1e-9)
        rate = self._run_rows / elapsed
        total = "?" if self._total is None else str(self._total)
        eta = "?"
        if self._total is not None and rate > 0:
            eta = f"{max(self._total - self._done, 0) / rate:.0f}s"
        print(
            f"{self._label}: rows={self._done} total={total} rate={rate:.0f}/s eta={eta}",
            file=sys.stderr,
            flush=True,
        )


def progress_for(label: str, *, quiet: bool) -> TerminalProgress | LogProgress | None:
    if quiet:
        return None
    return TerminalProgress(label) if sys.stderr.isatty() else LogProgress(label)
