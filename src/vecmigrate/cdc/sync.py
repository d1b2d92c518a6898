"""``vecmigrate sync``: capture first, snapshot, then apply changes until caught up or told to stop.

The change position is checkpointed after every applied change set, so a crashed sync resumes
without loss; applying is idempotent (each touched id is re-read from the source).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from vecmigrate.cdc.base import ChangeSet, ChangeSource
from vecmigrate.cdc.polling import live_rows
from vecmigrate.connectors.base import Connector
from vecmigrate.connectors.registry import connect
from vecmigrate.engine.copy import CopyJob, CopyOptions, CopyResult
from vecmigrate.engine.mapping import map_spec
from vecmigrate.engine.transforms import to_target
from vecmigrate.errors import ConfigError, TransientError
from vecmigrate.records import conform
from vecmigrate.spec import ID, CollectionSpec
from vecmigrate.uri import ConnectorURI

log = logging.getLogger("vecmigrate.sync")
CDC_KINDS = ("logical", "trigger", "lance", "poll")
# scheme -> --cdc kinds, the first the default; "poll" works for any source that can scan and
# fetch, and is listed for the systems the test suite polls
CHANGE_FEEDS: dict[str, tuple[str, ...]] = {
    "pgvector": ("logical", "trigger", "poll"),
    "lancedb": ("lance", "poll"),
    "sqlitevec": ("poll",),
    "parquet": ("poll",),
    "jsonl": ("poll",),
    "csv": ("poll",),
}


def change_source(
    kind: str,
    uri: ConnectorURI,
    options: SyncOptions | None = None,
    target: ConnectorURI | None = None,
) -> ChangeSource:
    """The ``--cdc`` change source for ``uri`` (``target`` is what the id diff compares with)."""
    kinds = CHANGE_FEEDS.get(uri.scheme)
    if kinds is None:
        raise ConfigError(
            f"{uri.scheme}:// has no change feed yet: sync supports "
            + ", ".join(f"{s}:// ({', '.join(k)})" for s, k in CHANGE_FEEDS.items())
        )
    if kind not in kinds:
        raise ConfigError(f"{uri.scheme}:// has no --cdc {kind!r}: use one of {', '.join(kinds)}")
    opts = options or SyncOptions(cdc=kind)
    if kind != "poll" and (
        opts.poll_field or opts.tombstone_field or opts.id_diff_every is not None
    ):
        raise ConfigError("--poll-field, --tombstone-field and --id-diff-every need --cdc poll")
    if kind == "logical":
        from vecmigrate.cdc.postgres import LogicalDecodingSource

        return LogicalDecodingSource(uri)
    if kind == "trigger":
        from vecmigrate.cdc.postgres import ChangeLogSource

        return ChangeLogSource(uri)
    if kind == "lance":
        from vecmigrate.cdc.lance import LanceVersionSource

        return LanceVersionSource(uri)
    from vecmigrate.cdc.polling import PollingSource

    if not opts.poll_field:
        raise ConfigError(
            "--cdc poll needs --poll-field NAME: a metadata field every write sets to a value "
            "not below any earlier one (an updated-at timestamp or a version number)"
        )
    return PollingSource(
        uri, opts.poll_field, tombstone=opts.tombstone_field,
        id_diff_every=opts.id_diff_every, target=target,
    )  # fmt: skip


@dataclass
class SyncOptions:
    cdc: str = "logical"
    once: bool = False
    batch_size: int = 5_000
    workers: int = 2
    max_changes: int = 5_000
    poll_interval_s: float = 0.2
    state_dir: Path = field(default_factory=lambda: Path(".vecmigrate"))
    restart: bool = False
    max_attempts: int = 8
    retry_wait: float = 0.5
    poll_field: str | None = None  # --cdc poll: the updated-at / version field
    tombstone_field: str | None = None  # --cdc poll: a true value means deleted
    id_diff_every: float | None = None  # --cdc poll: seconds between id-set diffs


@dataclass
class SyncResult:
    source: str
    target: str
    snapshot: dict[str, Any] | None
    changes_applied: int
    ids_applied: int
    position: str
    lag_s: float
    backlog: dict[str, Any]
    stopped: str

    def as_dict(self) -> dict[str, Any]:
        return {"ok": True, **self.__dict__}


class _SyncState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT)")

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, **values: str) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", list(values.items()))

    def close(self) -> None:
        self.db.close()


class SyncJob:
    def __init__(self, source: str, target: str, options: SyncOptions | None = None) -> None:
        self.options = options or SyncOptions()
        self.source_uri = ConnectorURI.parse(source)
        self.target_uri = ConnectorURI.parse(target)
        key = hashlib.sha256(f"{self.source_uri.redacted()}\n{self.target_uri.redacted()}".encode())
        self.state_path = self.options.state_dir / f"sync-{key.hexdigest()[:16]}.sqlite"
        self.stop_event = threading.Event()

    def stop(self) -> None:
        """Finish the change set in hand, checkpoint, and return."""
        self.stop_event.set()

    def cleanup(self) -> dict[str, Any]:
        """Drop the slot or trigger and the sync state; the target is left as it is."""
        cdc = change_source(self.options.cdc, self.source_uri, self.options, self.target_uri)
        try:
            cdc.cleanup()
        finally:
            cdc.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.state_path}{suffix}").unlink(missing_ok=True)
        return {"ok": True, "cleaned": self.source_uri.redacted(), "cdc": self.options.cdc}

    def run(self, on_progress: Callable[[dict[str, Any]], None] = lambda d: None) -> SyncResult:
        if self.options.restart:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.state_path}{suffix}").unlink(missing_ok=True)
        state = _SyncState(self.state_path)
        cdc = change_source(self.options.cdc, self.source_uri, self.options, self.target_uri)
        try:
            return self._run(state, cdc, on_progress)
        finally:
            cdc.close()
            state.close()

    def _run(
        self, state: _SyncState, cdc: ChangeSource, on_progress: Callable[[dict[str, Any]], None]
    ) -> SyncResult:
        position = state.get("position")
        if position is None:
            position = cdc.start()  # capture begins before the snapshot: no change is missed
            state.put(position=position, stage="snapshot", cdc=cdc.name)
        elif state.get("cdc") != cdc.name:
            raise ConfigError(
                f"this sync uses --cdc {state.get('cdc')}; use --restart to change it"
            )
        snapshot: CopyResult | None = None
        if state.get("stage") == "snapshot":
            copy_opts = CopyOptions(
                batch_size=self.options.batch_size,
                workers=self.options.workers,
                state_dir=self.options.state_dir,
            )
            snapshot = CopyJob(self.source_uri, self.target_uri, copy_opts).run()
            state.put(stage="stream")
        changes = ids = 0
        lag = 0.0
        stopped = "caught-up"
        with connect(self.source_uri) as source, connect(self.target_uri) as target:
            spec = source.describe()
            target_spec, _ = map_spec(spec, target.capabilities, target=self.target_uri.scheme)
            while True:
                for cs in cdc.changes(position, self.options.max_changes):
                    # idempotent (touched ids are re-read), so a transient failure re-applies
                    self._retry(partial(self._apply, cs, source, target, spec, target_spec))
                    position = cs.position
                    state.put(position=position)
                    cdc.acknowledge(position)
                    changes += cs.changes
                    ids += len(cs.ids)
                    lag = time.time() - cs.oldest_commit if cs.oldest_commit else 0.0
                    on_progress({"changes": changes, "lag_s": round(lag, 3), "position": position})
                    if self.stop_event.is_set():
                        break
                if self.options.once:
                    break
                if self.stop_event.is_set():
                    stopped = "stopped"
                    break
                lag = 0.0
                self.stop_event.wait(self.options.poll_interval_s)
        return SyncResult(
            source=self.source_uri.redacted(),
            target=self.target_uri.redacted(),
            snapshot=None
            if snapshot is None
            else {"rows": snapshot.rows, "elapsed_s": round(snapshot.elapsed_s, 3)},
            changes_applied=changes,
            ids_applied=ids,
            position=position,
            lag_s=round(max(lag, 0.0), 3),
            backlog=cdc.backlog(position),
            stopped=stopped,
        )

    def _retry(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` again on TransientError (a restarted server), as the copy does."""

        def note(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("apply failed (attempt %d), retrying: %s", state.attempt_number, exc)

        Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.options.max_attempts),
            wait=wait_exponential(multiplier=self.options.retry_wait, max=30),
            before_sleep=note,
            reraise=True,
        )(fn)

    def _apply(
        self, cs: ChangeSet, source: Connector, target: Connector,
        spec: CollectionSpec, target_spec: CollectionSpec,
    ) -> None:  # fmt: skip
        """Upsert each touched id's current row; delete those the source no longer has."""
        touched: list[Any] = list(dict.fromkeys(cs.ids))
        if spec.id_type == "int64":
            touched = [int(i) for i in touched]
        for start in range(0, len(touched), 1_000):
            chunk = touched[start : start + 1_000]
            current = source.fetch(chunk)
            if self.options.tombstone_field and current.num_rows:
                current = live_rows(current, self.options.tombstone_field)  # tombstoned: gone
            if current.num_rows:
                batch = conform(current, spec)
                target.upsert(to_target(batch, spec, target_spec))
            present = set(current.column(ID).to_pylist()) if current.num_rows else set()
            gone = [i for i in chunk if i not in present]
            if gone:
                target.delete(gone)
