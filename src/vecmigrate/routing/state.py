"""Persisted router state: phase, canary settings, the audit log and the outbox of writes.

An outbox payload is one Arrow IPC record batch message; its schema is stored once in
``schemas`` (``schema_id``). Rows without a schema id hold a whole IPC stream (older files).
``seq`` is a plain rowid (AUTOINCREMENT costs a second write per insert): always above every
queued row, which is all the drain order needs.
"""

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
    seq INTEGER PRIMARY KEY, side TEXT NOT NULL, op TEXT NOT NULL,
    payload BLOB NOT NULL, rows INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, created REAL NOT NULL, schema_id INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_side ON outbox (side, seq);
CREATE TABLE IF NOT EXISTS schemas (id INTEGER PRIMARY KEY AUTOINCREMENT, schema BLOB NOT NULL);
"""


@dataclass(frozen=True)
class PendingWrite:
    seq: int
    side: str
    op: str  # "upsert" or "delete"
    payload: bytes
    rows: int
    attempts: int
    schema_id: int | None = None


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
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
        if "schema_id" not in columns:
            self._db.execute("ALTER TABLE outbox ADD COLUMN schema_id INTEGER")
        # stored schemas by id; replaced, never changed in place, so the write path can look
        # one up without the lock
        self._schemas: dict[int, pa.Schema] = {}
        self._phase: tuple[int, Phase] | None = None  # (data_version read at, phase)

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
            if key == "phase":
                self._phase = None

    @property
    def phase(self) -> Phase:
        """The phase, read again only when the file changed (other processes share it)."""
        with self._lock:
            version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            if self._phase is not None and self._phase[0] == version:
                return self._phase[1]
            phase = self._stored_phase()
            self._phase = (version, phase)
            return phase

    def _stored_phase(self) -> Phase:
        """The phase in the file (under ``_lock``)."""
        row = self._db.execute("SELECT value FROM state WHERE key = 'phase'").fetchone()
        return Phase(json.loads(row[0]) if row else Phase.OLD_ONLY.value)

    def swap_phase(
        self, expected: Phase, phase: Phase, actor: str, event: str, evidence: dict[str, Any]
    ) -> bool:
        """Set ``phase`` and log ``event`` in one transaction, only if the phase is still
        ``expected``: routers in other threads or processes on this file change it once."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._stored_phase() is not expected:
                    self._db.execute("ROLLBACK")
                    return False
                self._db.execute(
                    "INSERT OR REPLACE INTO state VALUES ('phase', ?)", (json.dumps(phase.value),)
                )
                self._audit(actor, event, evidence)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._phase = None
            return True

    # -- audit --------------------------------------------------------------------------
    def log(self, actor: str, event: str, evidence: dict[str, Any]) -> None:
        with self._lock:
            self._audit(actor, event, evidence)

    def _audit(self, actor: str, event: str, evidence: dict[str, Any]) -> None:
        """One audit entry (under ``_lock``)."""
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
    def _known(self, schema: pa.Schema) -> int | None:
        """The id of ``schema`` if it was stored already."""
        return next(
            (k for k, known in self._schemas.items() if known.equals(schema, check_metadata=True)),
            None,
        )

    def _schema_id(self, schema: pa.Schema) -> int:
        """The id of ``schema`` in ``schemas`` (stored on first use); under ``_lock``."""
        sid = self._known(schema)
        if sid is None:
            data = schema.serialize().to_pybytes()
            row = self._db.execute("SELECT id FROM schemas WHERE schema = ?", (data,)).fetchone()
            if row is None:
                row = (
                    self._db.execute("INSERT INTO schemas (schema) VALUES (?)", (data,)).lastrowid,
                )
            sid = int(row[0])
            self._schemas = {**self._schemas, sid: schema}
        return sid

    def enqueue(self, side: str, op: str, batch: pa.RecordBatch) -> None:
        """Queue ``batch`` (rows to upsert, or an ``id`` column to delete) for ``side``."""
        schema = batch.schema
        sid = self._known(schema)  # a schema seen before: the usual case
        plain = sid is not None or not any(pa.types.is_dictionary(f.type) for f in schema)
        payload = batch.serialize() if plain else batch_to_bytes(batch)
        with self._lock:
            if plain and sid is None:
                sid = self._schema_id(schema)
            self._db.execute(
                "INSERT INTO outbox (side, op, payload, rows, created, schema_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (side, op, memoryview(payload), batch.num_rows, time.time(), sid),
            )

    def batch(self, item: PendingWrite) -> pa.RecordBatch:
        """The queued write's batch."""
        if item.schema_id is None:
            return batch_from_bytes(item.payload)
        schema = self._schemas.get(item.schema_id)
        if schema is None:
            with self._lock:
                row = self._db.execute(
                    "SELECT schema FROM schemas WHERE id = ?", (item.schema_id,)
                ).fetchone()
                schema = pa.ipc.read_schema(pa.py_buffer(row[0]))
                self._schemas = {**self._schemas, item.schema_id: schema}
        return pa.ipc.read_record_batch(pa.py_buffer(item.payload), schema)

    def pending(self, side: str, limit: int = 64) -> list[PendingWrite]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, side, op, payload, rows, attempts, schema_id FROM outbox "
                "WHERE side = ? ORDER BY seq LIMIT ?",
                (side, limit),
            ).fetchall()
        return [PendingWrite(*r) for r in rows]

    def done(self, seqs: list[int]) -> None:
        with self._lock:
            for start in range(0, len(seqs), 500):  # one statement per 500 (SQLite's limits)
                chunk = seqs[start : start + 500]
                marks = ",".join("?" * len(chunk))
                self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk)

    def failed(self, seqs: list[int], error: str) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                [(error[:500], s) for s in seqs],
            )

    def depth(self, side: str) -> tuple[int, int]:
        """(pending operations, pending rows) for one side."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(rows), 0) FROM outbox WHERE side = ?", (side,)
            ).fetchone()
        return int(row[0]), int(row[1])
