"""The checkpoint ledger: one SQLite file per copy, the source of truth for resuming.

The partition plan is written before any row moves and never re-sampled, so a resumed run
(with any number of workers) continues exactly where each partition stopped. Each committed
batch advances its partition's cursor, row count and content hash in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecmigrate.connectors.base import Partition
from vecmigrate.errors import ConfigError
from vecmigrate.hashing import combine
from vecmigrate.spec import CollectionSpec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS partitions (
    idx INTEGER PRIMARY KEY,
    partition TEXT NOT NULL,
    cursor TEXT,
    rows INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    content_hash TEXT NOT NULL DEFAULT '0',
    done INTEGER NOT NULL DEFAULT 0,
    updated_at REAL
);
"""


@dataclass(frozen=True)
class PartitionState:
    index: int
    partition: Partition
    cursor: str | None
    rows: int
    skipped: int
    content_hash: int
    done: bool


class Ledger:
    """Checkpoints of one copy run. Safe to share between the engine's threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- plan ---------------------------------------------------------------------------
    def has_plan(self) -> bool:
        return self.get("run_id") is not None

    def write_plan(
        self, *, spec: CollectionSpec, partitions: list[Partition], info: dict[str, Any]
    ) -> str:
        """Persist the plan before any write; returns the new run id."""
        run_id = uuid.uuid4().hex[:12]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM partitions")
                self._db.execute("DELETE FROM meta")
                rows = [(i, p.to_json()) for i, p in enumerate(partitions)]
                self._db.executemany("INSERT INTO partitions (idx, partition) VALUES (?, ?)", rows)
                meta = {
                    "run_id": run_id,
                    "spec": spec.to_json(),
                    "created_at": str(time.time()),
                    "status": "running",
                    **{k: json.dumps(v) for k, v in info.items()},
                }
                self._db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return run_id

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def info(self, key: str) -> Any:
        raw = self.get(key)
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def spec(self) -> CollectionSpec:
        raw = self.get("spec")
        if raw is None:
            raise ConfigError(f"checkpoint {self.path.name} has no plan")
        return CollectionSpec.from_json(raw)

    # -- progress -----------------------------------------------------------------------
    def states(self) -> list[PartitionState]:
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, partition, cursor, rows, skipped, content_hash, done "
                "FROM partitions ORDER BY idx"
            ).fetchall()
        return [
            PartitionState(
                index=r[0],
                partition=Partition.from_json(r[1]),
                cursor=r[2],
                rows=r[3],
                skipped=r[4],
                content_hash=int(r[5]),
                done=bool(r[6]),
            )
            for r in rows
        ]

    def commit(
        self,
        index: int,
        *,
        cursor: str,
        rows: int,
        skipped: int,
        content_hash: int,
        done: bool = False,
    ) -> None:
        """Advance a partition: the rows and hash added since the last commit."""
        with self._lock:
            self._db.execute(
                "UPDATE partitions SET cursor = ?, rows = rows + ?, skipped = skipped + ?, "
                "content_hash = ?, done = ?, updated_at = ? WHERE idx = ?",
                (cursor, rows, skipped, str(content_hash), int(done), time.time(), index),
            )

    def mark_done(self, index: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE partitions SET done = 1, updated_at = ? WHERE idx = ?", (time.time(), index)
            )

    def totals(self) -> tuple[int, int, int]:
        """(rows, skipped, content hash) over every partition."""
        total_hash = 0
        rows = skipped = 0
        for s in self.states():
            rows += s.rows
            skipped += s.skipped
            total_hash = combine(total_hash, s.content_hash)
        return rows, skipped, total_hash
