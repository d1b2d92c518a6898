"""An on-disk embedding cache (stdlib sqlite3): no text is paid for twice.

Vectors are keyed by sha256(model identity + text). Each provider call is committed with its
vectors and a row in ``calls`` (job, items, tokens, cost, seconds) in one transaction, so after
a crash every text the cache holds was paid for exactly once, and the spend of a job survives
restarts (it is what ``--max-cost`` is checked against).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, dim INTEGER
);
CREATE TABLE IF NOT EXISTS vectors (
    key BLOB PRIMARY KEY, model INTEGER NOT NULL, vec BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY, job TEXT NOT NULL, model INTEGER NOT NULL, items INTEGER NOT NULL,
    tokens INTEGER, cost REAL NOT NULL, seconds REAL NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_job ON calls (job);
"""
_IN_CHUNK = 500


def text_key(model_id: str, text: str) -> bytes:
    """The cache key of ``text`` embedded by ``model_id``."""
    return hashlib.sha256(
        model_id.encode() + b"\x00" + text.encode("utf-8", "surrogatepass")
    ).digest()


@dataclass(frozen=True)
class Spend:
    """What a job has paid for so far (all runs)."""

    calls: int = 0
    items: int = 0
    tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0


class EmbeddingCache:
    """Vectors by (model, text) hash and a log of paid calls; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
        self._models: dict[str, int] = {}

    def _model(self, model_id: str) -> int:
        if model_id not in self._models:
            self._db.execute("INSERT OR IGNORE INTO models (name) VALUES (?)", (model_id,))
            row = self._db.execute("SELECT id FROM models WHERE name = ?", (model_id,)).fetchone()
            self._models[model_id] = int(row[0])
        return self._models[model_id]

    def dimension(self, model_id: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT dim FROM models WHERE name = ?", (model_id,)).fetchone()
        return int(row[0]) if row and row[0] else None

    def set_dimension(self, model_id: str, dim: int) -> None:
        with self._lock:
            self._model(model_id)
            self._db.execute("UPDATE models SET dim = ? WHERE name = ?", (dim, model_id))

    def get_many(self, keys: Sequence[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for ``keys`` (zeros where missing) and a found mask."""
        out = np.zeros((len(keys), dim), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        if not keys:
            return out, found
        where: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            where.setdefault(key, []).append(i)
        unique = list(where)
        with self._lock:
            for start in range(0, len(unique), _IN_CHUNK):
                chunk = unique[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, blob in rows:
                    vec = np.frombuffer(blob, dtype="<f4")
                    if vec.shape[0] != dim:
                        continue
                    for i in where[key]:
                        out[i] = vec
                        found[i] = True
        return out, found

    def put(
        self,
        model_id: str,
        keys: Sequence[bytes],
        vectors: np.ndarray,
        *,
        job: str,
        tokens: int | None,
        cost: float,
        seconds: float,
        items: int | None = None,
    ) -> None:
        """Store a call's vectors and record the call, atomically."""
        data = np.ascontiguousarray(vectors, dtype="<f4")
        with self._lock:
            model = self._model(model_id)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO vectors (key, model, vec) VALUES (?, ?, ?)",
                    [(k, model, data[i].tobytes()) for i, k in enumerate(keys)],
                )
                self._db.execute(
                    "INSERT INTO calls (job, model, items, tokens, cost, seconds, at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        job,
                        model,
                        len(keys) if items is None else items,
                        tokens,
                        cost,
                        seconds,
                        time.time(),
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def spent(self, job: str) -> Spend:
        """Calls, texts, tokens, cost and model seconds a job has paid for, over all runs."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(items), 0), COALESCE(SUM(tokens), 0), "
                "COALESCE(SUM(cost), 0), COALESCE(SUM(seconds), 0) FROM calls WHERE job = ?",
                (job,),
            ).fetchone()
        return Spend(int(row[0]), int(row[1]), int(row[2]), float(row[3]), float(row[4]))

    def cached(self, model_id: str) -> int:
        """How many vectors the cache holds for a model."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM vectors v JOIN models m ON m.id = v.model WHERE m.name = ?",
                (model_id,),
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
