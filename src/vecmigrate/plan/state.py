"""A plan's persisted state: step records, an audit log, monitor rounds, and a run lock.

One SQLite file per plan. Every transition (a step starting, passing, failing, a switch, a
rollback) is one transaction that also appends to the audit log: who, when, what, evidence.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from vecmigrate.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    name TEXT PRIMARY KEY, status TEXT NOT NULL, started REAL, finished REAL,
    hold_until REAL, attempts INTEGER NOT NULL DEFAULT 0, evidence TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL,
    event TEXT NOT NULL, step TEXT, evidence TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS monitor (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, passed INTEGER NOT NULL,
    parity REAL, drift REAL, old_count INTEGER, new_count INTEGER, evidence TEXT NOT NULL
);
"""

PENDING, RUNNING, HOLDING, PASSED, FAILED = "pending", "running", "holding", "passed", "failed"


@dataclass(frozen=True)
class StepRecord:
    name: str
    status: str
    started: float | None
    finished: float | None
    hold_until: float | None
    attempts: int
    evidence: dict[str, Any]
    error: str | None


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


class PlanState:
    """The state file of one plan (``STATE_DIR/plan.sqlite``)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.dir = state_dir
        self.path = state_dir / "plan.sqlite"
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock_fd: int | None = None

    def close(self) -> None:
        self.unlock()
        self._db.close()

    def __enter__(self) -> PlanState:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the run lock -------------------------------------------------------------------
    def lock(self, command: str) -> None:
        """One command at a time works on a plan; the OS drops the lock if the process dies."""
        fd = os.open(self.dir / "plan.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"another vecmigrate command is working on this plan ({holder}); wait for it "
                "or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {command}".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- meta ---------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, key: str, value: Any, *, actor: str | None = None, event: str = "") -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _dumps(value)))
            if actor is not None:
                self._audit(actor, event or key, None, value if isinstance(value, dict) else {})

    def check_fingerprint(self, fingerprint: dict[str, str], actor: str) -> None:
        """The first command records the plan's identity; later ones must match it."""
        have = self.get("fingerprint")
        if have is None:
            self.put("fingerprint", fingerprint, actor=actor, event="plan-started")
            return
        changed = [k for k in fingerprint if have.get(k) != fingerprint[k]]
        if changed:
            what = ", ".join(f"{k} {have.get(k)!r} -> {fingerprint[k]!r}" for k in changed)
            raise ConfigError(
                f"this plan's state ({self.path}) belongs to a migration with a different "
                f"{'/'.join(changed)} ({what}); give the new plan its own state_dir"
            )

    # -- audit --------------------------------------------------------------------------
    def _audit(self, actor: str, event: str, step: str | None, evidence: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO audit (at, actor, event, step, evidence) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, event, step, _dumps(evidence)),
        )

    def log(
        self, actor: str, event: str, evidence: dict[str, Any], step: str | None = None
    ) -> None:
        with self._db:
            self._audit(actor, event, step, evidence)

    def audit(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT seq, at, actor, event, step, evidence FROM audit ORDER BY seq"
        ).fetchall()
        return [
            {
                "seq": r[0],
                "at": r[1],
                "actor": r[2],
                "event": r[3],
                "step": r[4],
                "evidence": json.loads(r[5]),
            }
            for r in rows
        ]

    # -- steps --------------------------------------------------------------------------
    def step(self, name: str) -> StepRecord:
        row = self._db.execute(
            "SELECT name, status, started, finished, hold_until, attempts, evidence, error "
            "FROM steps WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            return StepRecord(name, PENDING, None, None, None, 0, {}, None)
        return StepRecord(
            row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6] or "{}"), row[7]
        )

    def steps(self) -> dict[str, StepRecord]:
        names = [r[0] for r in self._db.execute("SELECT name FROM steps").fetchall()]
        return {n: self.step(n) for n in names}

    def _set_step(self, name: str, **values: Any) -> None:
        current = self.step(name)
        merged = {
            "status": current.status,
            "started": current.started,
            "finished": current.finished,
            "hold_until": current.hold_until,
            "attempts": current.attempts,
            "evidence": current.evidence,
            "error": current.error,
        }
        merged.update(values)
        self._db.execute(
            "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                merged["status"],
                merged["started"],
                merged["finished"],
                merged["hold_until"],
                merged["attempts"],
                _dumps(merged["evidence"]),
                merged["error"],
            ),
        )

    def begin(self, name: str, actor: str) -> None:
        current = self.step(name)
        event = "step-resumed" if current.status == RUNNING else "step-started"
        with self._db:
            self._set_step(
                name,
                status=RUNNING,
                started=time.time(),
                finished=None,
                attempts=current.attempts + 1,
                error=None,
            )
            self._audit(actor, event, name, {"attempt": current.attempts + 1})

    def passed(self, name: str, actor: str, evidence: dict[str, Any]) -> None:
        with self._db:
            self._set_step(
                name, status=PASSED, finished=time.time(), hold_until=None, evidence=evidence
            )
            self._audit(actor, "step-passed", name, evidence)

    def holding(self, name: str, actor: str, until: float, evidence: dict[str, Any]) -> None:
        with self._db:
            self._set_step(name, status=HOLDING, hold_until=until, evidence=evidence)
            self._audit(actor, "step-holding", name, {"until": until, **evidence})

    def failed(self, name: str, actor: str, error: str, evidence: dict[str, Any]) -> None:
        with self._db:
            self._set_step(
                name, status=FAILED, finished=time.time(), error=error, evidence=evidence
            )
            self._audit(actor, "step-failed", name, {"error": error, **evidence})

    def reset(self, names: list[str], actor: str, reason: str) -> None:
        """Mark steps pending again (after a rollback), keeping their last evidence."""
        with self._db:
            for name in names:
                if self.step(name).status != PENDING:
                    self._set_step(name, status=PENDING, hold_until=None)
            self._audit(actor, "steps-reset", None, {"steps": names, "reason": reason})

    # -- monitor ------------------------------------------------------------------------
    def add_monitor_round(self, round_: dict[str, Any]) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO monitor (at, passed, parity, drift, old_count, new_count, evidence)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    round_["at"],
                    int(round_["passed"]),
                    round_.get("parity"),
                    round_.get("drift"),
                    round_.get("old_count"),
                    round_.get("new_count"),
                    _dumps(round_),
                ),
            )

    def monitor_rounds(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT evidence FROM monitor ORDER BY seq").fetchall()
        return [json.loads(r[0]) for r in rows]
