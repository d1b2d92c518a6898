"""Persisted router state: phase, canary settings, the audit log and the outbox of writes."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from vecmigrate.routing.phase import Phase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL,
    event TEXT NOT NULL, evidence TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, side TEXT NOT NULL, op TEXT NOT NULL,
    payload BLOB NOT NULL, rows INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_side ON outbox (side, seq);
"""


@dataclass(frozen=True)
class PendingWrite:
    seq: int
    side: str
    op: str  # "upsert" or "delete"
    payload: bytes
    rows: int
    attempts: int


def batch_to_bytes(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def batch_from_bytes(data: bytes) -> pa.RecordBatch:
    reader = pa.ipc.open_stream(pa.py_buffer(data))
    return pa.Table.from_batches(list(reader), reader.schema).combine_chunks().to_batches()[0]


class RouterState:
    """One SQLite file; survives restarts of the router or the gateway."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- settings -----------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, json.dumps(value)))

    @property
    def phase(self) -> Phase:
        return Phase(self.get("phase", Phase.OLD_ONLY.value))

    # -- audit --------------------------------------------------------------------------
    def log(self, actor: str, event: str, evidence: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO audit (at, actor, event, evidence) VALUES (?, ?, ?, ?)",
                (time.time(), actor, event, json.dumps(evidence, default=str)),
            )

    def audit(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT at, actor, event, evidence FROM audit ORDER BY seq"
            ).fetchall()
        return [
            {"at": r[0], "actor": r[1], "event": r[2], "evidence": json.loads(r[3])} for r in rows
        ]

    # -- outbox -------------------------------------------------------------------------
    def enqueue(self, side: str, op: str, payload: bytes, rows: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO outbox (side, op, payload, rows, created) VALUES (?, ?, ?, ?, ?)",
                (side, op, payload, rows, time.time()),
            )

    def pending(self, side: str, limit: int = 64) -> list[PendingWrite]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, side, op, payload, rows, attempts FROM outbox WHERE side = ? "
                "ORDER BY seq LIMIT ?",
                (side, limit),
            ).fetchall()
        return [PendingWrite(*r) for r in rows]

    def done(self, seqs: list[int]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def failed(self, seq: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                (error[:500], seq),
            )

    def depth(self, side: str) -> tuple[int, int]:
        """(pending operations, pending rows) for one side."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(rows), 0) FROM outbox WHERE side = ?", (side,)
            ).fetchone()
        return int(row[0]), int(row[1])
