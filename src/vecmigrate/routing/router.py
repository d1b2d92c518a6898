"""The Router: an application's reads and writes during a migration, by phase.

Writes go to the phase's primary side synchronously (its failure is the user's failure, as
before the migration) and to the other side through a persisted outbox drained in order by a
background thread: a slow, failing or absent secondary never fails or slows the user's write,
and nothing is lost across restarts. The drainer sends runs of queued writes as one write
(the last version of each id). Writes to the same id keep one order on both sides, and a side
that becomes primary first receives what is still queued for it. Reads follow the phase:
old, shadowed (served by old, mirrored to new and compared), canary (a percentage or named
segments served by new), or new.
Rollback triggers watch the new side; when one fires the router returns to dual-write, logs
the evidence, and the old side's outbox is replayed so it misses nothing written meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from vecmigrate.connectors.base import Connector, QueryResult
from vecmigrate.errors import ConfigError
from vecmigrate.routing.phase import Phase, check_transition
from vecmigrate.routing.state import PendingWrite, RouterState
from vecmigrate.routing.triggers import Evidence, Fired, TriggerConfig, evaluate

log = logging.getLogger("vecmigrate.router")
T = TypeVar("T")


@dataclass
class RouterConfig:
    state_path: Path
    triggers: TriggerConfig = field(default_factory=TriggerConfig)
    drain_interval_s: float = 0.05
    drain_rows: int = 1_000  # rows per write when the drainer joins queued writes
    retry_backoff_s: float = 0.2
    shadow_workers: int = 2
    shadow_queue: int = 64
    count_check_interval_s: float = 10.0
    # Python's GIL switch interval to set for the whole process (None: leave it). The outbox
    # drainer writes the other side in this process; a caller whose write returned waits for
    # the GIL up to this long (5 ms by default) while the drainer runs Python code.
    switch_interval_s: float | None = None


def _overlap(a: list[Any], b: list[Any]) -> float:
    return len(set(a) & set(b)) / len(a) if a else 1.0


_STRIPES = 64


def _runs(
    items: list[PendingWrite], decode: Callable[[PendingWrite], pa.RecordBatch], max_rows: int
) -> Iterator[tuple[list[int], str, Any]]:
    """Consecutive queued writes of one kind joined: (seqs, op, batch or ids) in queue order.

    A run of upserts becomes one batch holding the last version of each id; a run of deletes
    one list of ids. Applying the runs in order leaves a side as applying every write would.
    """
    seqs: list[int] = []
    batches: list[pa.RecordBatch] = []
    op = ""
    rows = 0

    def joined() -> tuple[list[int], str, Any]:
        if op == "delete":
            ids = [i for b in batches for i in b.column("id").to_pylist()]
            return seqs, op, list(dict.fromkeys(ids))
        if len(batches) == 1:
            return seqs, op, batches[0]
        table = pa.Table.from_batches(batches).combine_chunks()
        ids = table.column("id").to_pylist()
        last = {v: i for i, v in enumerate(ids)}
        if len(last) < len(ids):
            table = table.take(sorted(last.values()))
        return seqs, op, table.combine_chunks().to_batches()[0]

    for item in items:
        batch = decode(item)
        fits = rows + batch.num_rows <= max_rows or not seqs
        if seqs and (item.op != op or not fits or batch.schema != batches[0].schema):
            yield joined()
            seqs, batches, rows = [], [], 0
        seqs.append(item.seq)
        batches.append(batch)
        op = item.op
        rows += batch.num_rows
    if seqs:
        yield joined()


class Router:
    """Route ``upsert``/``delete``/``query`` between an old and a new collection."""

    def __init__(self, old: Connector, new: Connector, config: RouterConfig) -> None:
        self.sides = {"old": old, "new": new}
        self.config = config
        if config.switch_interval_s is not None:
            if config.switch_interval_s <= 0:
                raise ConfigError(f"switch_interval_s must be > 0, got {config.switch_interval_s}")
            self._switch_before: float | None = sys.getswitchinterval()
            sys.setswitchinterval(config.switch_interval_s)
        else:
            self._switch_before = None
        self.state = RouterState(config.state_path)
        self.evidence = Evidence(config.triggers.window_s)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._shadow = ThreadPoolExecutor(config.shadow_workers, thread_name_prefix="shadow")
        self._shadow_inflight = threading.Semaphore(config.shadow_queue)
        self._last_count_check = 0.0
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]  # per-id write order
        self._applying = {"old": threading.Lock(), "new": threading.Lock()}
        self._queued = {side: self.state.depth(side)[0] for side in ("old", "new")}
        self._queued_lock = threading.Lock()
        self._drainer = threading.Thread(target=self._drain_loop, name="outbox", daemon=True)
        self._drainer.start()

    # -- phase --------------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        return self.state.phase

    def set_phase(
        self,
        phase: Phase | str,
        *,
        percent: float | None = None,
        segments: Sequence[str] | None = None,
        actor: str = "operator",
        force: bool = False,
    ) -> None:
        """Move to a phase (one step forward, or back to any earlier one); persisted."""
        target = Phase.parse(phase) if isinstance(phase, str) else phase
        check_transition(self.phase, target, force=force)
        if percent is not None and not 0 <= percent <= 100:
            raise ConfigError(f"canary percent must be within 0..100, got {percent}")
        evidence: dict[str, Any] = {"from": self.phase.value, "to": target.value}
        if percent is not None:
            self.state.put("canary_percent", percent)
            evidence["percent"] = percent
        if segments is not None:
            self.state.put("canary_segments", list(segments))
            evidence["segments"] = list(segments)
        self.state.put("phase", target.value)
        self.state.log(actor, "phase", evidence)
        self.evidence.reset()
        log.info("phase %s -> %s", evidence["from"], target.value)

    # -- writes -------------------------------------------------------------------------
    def _sides_for_write(self) -> tuple[str, str | None]:
        phase = self.phase
        primary = phase.primary
        other = "new" if primary == "old" else "old"
        writes_other = phase.writes_new if other == "new" else phase.writes_old
        return primary, (other if writes_other else None)

    def _stripes_of(self, ids: Sequence[Any]) -> list[threading.Lock]:
        """The locks that order writes touching ``ids`` (taken in index order: no deadlock)."""
        if len(ids) == 1:
            return [self._stripes[hash(ids[0]) % _STRIPES]]
        return [self._stripes[i] for i in sorted({hash(x) % _STRIPES for x in ids})]

    def _write(self, ids: Sequence[Any], op: str, payload: Any) -> None:
        """Write the primary on the caller's path, queue the secondary; writes touching the
        same ids reach the primary and the outbox in one order. (The caller's hot path: kept
        to plain statements, each layer of calls costs a few microseconds.)"""
        locks = self._stripes_of(ids)
        for lock in locks:
            lock.acquire()
        try:
            primary, secondary = self._sides_for_write()
            if self._queued[primary]:  # it just became primary: what is queued goes first
                error = self._drain_side(primary)
                if error is not None:
                    raise error
            side = self.sides[primary]
            t0 = time.perf_counter()
            try:
                if op == "upsert":
                    side.upsert(payload)
                else:
                    side.delete(payload)
            except Exception:
                self.evidence.op(primary, time.perf_counter() - t0, ok=False, kind="write")
                self._check_triggers()
                raise
            self.evidence.op(primary, time.perf_counter() - t0, ok=True, kind="write")
            if secondary is not None:
                batch = payload if op == "upsert" else pa.record_batch({"id": pa.array(payload)})
                self.state.enqueue(secondary, op, batch)
                with self._queued_lock:
                    self._queued[secondary] += 1
        finally:
            for lock in reversed(locks):
                lock.release()

    def upsert(self, batch: pa.RecordBatch) -> None:
        ids = batch.column("id").to_pylist() if batch.num_rows else []
        self._write(ids, "upsert", batch)

    def delete(self, ids: Sequence[Any]) -> None:
        ids = list(ids)
        self._write(ids, "delete", ids)

    def _timed(self, side: str, fn: Callable[[], T], *, kind: str = "read") -> T:
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception:
            self.evidence.op(side, time.perf_counter() - t0, ok=False, kind=kind)
            self._check_triggers()
            raise
        self.evidence.op(side, time.perf_counter() - t0, ok=True, kind=kind)
        return result

    # -- outbox -------------------------------------------------------------------------
    def _drain_loop(self) -> None:
        backoff = {"old": 0.0, "new": 0.0}
        while not self._stop.is_set():
            self._wake.wait(self.config.drain_interval_s)
            self._wake.clear()
            now = time.monotonic()
            for side in ("old", "new"):
                if now < backoff[side]:
                    continue
                if self._drain_side(side) is not None:
                    backoff[side] = now + self.config.retry_backoff_s
            self._check_triggers()

    def _drain_side(self, side: str) -> Exception | None:
        """Apply queued writes of one side in order, runs joined; the first failure or None."""
        with self._applying[side]:
            while not self._stop.is_set():
                pending = self.state.pending(side, limit=256)
                if not pending:
                    return None
                for seqs, op, payload in _runs(pending, self.state.batch, self.config.drain_rows):
                    t0 = time.perf_counter()
                    try:
                        if op == "upsert":
                            self.sides[side].upsert(payload)
                        else:
                            self.sides[side].delete(payload)
                    except Exception as exc:
                        self.evidence.op(side, time.perf_counter() - t0, ok=False, kind="drain")
                        self.state.failed(seqs, str(exc))
                        return exc
                    self.evidence.op(side, time.perf_counter() - t0, ok=True, kind="drain")
                    self.state.done(seqs)
                    with self._queued_lock:
                        self._queued[side] -= len(seqs)
            return None

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until both outboxes are empty (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state.depth("old")[0] == 0 and self.state.depth("new")[0] == 0:
                return True
            self._wake.set()
            time.sleep(0.02)
        return False

    # -- reads --------------------------------------------------------------------------
    def _reads_new(self, segment: str | None, request_key: str | None) -> bool:
        phase = self.phase
        if phase in (Phase.NEW_ONLY, Phase.OLD_RETIRED):
            return True
        if phase is not Phase.CANARY:
            return False
        segments = self.state.get("canary_segments", [])
        if segment is not None and segment in segments:
            return True
        percent = float(self.state.get("canary_percent", 0.0))
        if percent <= 0:
            return False
        key = request_key if request_key is not None else f"{time.perf_counter_ns()}"
        bucket = int(hashlib.blake2b(key.encode(), digest_size=4).hexdigest(), 16) % 10_000
        return bucket < percent * 100

    def query(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        segment: str | None = None,
        request_key: str | None = None,
        vector_field: str | None = None,
    ) -> QueryResult:
        """kNN from the side this phase (and segment/percentage) routes to."""
        side = "new" if self._reads_new(segment, request_key) else "old"
        result: QueryResult = self._timed(
            side, lambda: self.sides[side].query(vectors, k, vector_field=vector_field)
        )
        if self.phase in (Phase.SHADOW, Phase.CANARY) and side == "old":
            self._mirror(vectors, k, vector_field, result)
        self._check_triggers()
        return result

    def _mirror(
        self, vectors: np.ndarray, k: int, vector_field: str | None, served: QueryResult
    ) -> None:
        if not self._shadow_inflight.acquire(blocking=False):
            return  # shadow traffic is best effort: never queue without bound

        def run() -> None:
            try:
                got: QueryResult = self._timed(
                    "new", lambda: self.sides["new"].query(vectors, k, vector_field=vector_field)
                )
                for want, have in zip(served.ids, got.ids, strict=False):
                    self.evidence.compared(_overlap([str(x) for x in want], [str(x) for x in have]))
            except Exception as exc:
                log.debug("shadow query failed: %s", exc)
            finally:
                self._shadow_inflight.release()

        self._shadow.submit(run)

    # -- triggers -----------------------------------------------------------------------
    def _count_drift(self) -> float | None:
        now = time.monotonic()
        if now - self._last_count_check < self.config.count_check_interval_s:
            return None
        self._last_count_check = now
        try:
            old, new = self.sides["old"].count(), self.sides["new"].count()
        except Exception:
            return None
        pending = self.state.depth("new")[1] - self.state.depth("old")[1]
        return abs(new + pending - old) / max(old, 1)

    def _check_triggers(self) -> None:
        rollback_to = self.phase.rollback_target
        if rollback_to is None:
            return
        fired = evaluate(self.config.triggers, self.evidence, self._count_drift())
        if fired is not None:
            self.rollback(fired)

    def rollback(self, fired: Fired | None = None, *, actor: str = "trigger") -> None:
        """Route reads and writes back to old; replay what old has not received yet.

        Routers that see a trigger fire at once (a query and the drainer, or two processes on
        one state file) roll back once: the phase is swapped only if it is still ``current``.
        """
        current = self.phase
        target = current.rollback_target or Phase.DUAL_WRITE
        if current is target:
            return
        evidence = {"from": current.value, "to": target.value}
        if fired is not None:
            evidence.update({"trigger": fired.trigger, **fired.evidence})
        if not self.state.swap_phase(current, target, actor, "rollback", evidence):
            return
        self.evidence.reset()
        log.warning("rolled back %s -> %s: %s", current.value, target.value, evidence)
        self._wake.set()

    def metrics(self) -> dict[str, Any]:
        new_ops, new_rows = self.state.depth("new")
        old_ops, old_rows = self.state.depth("old")
        lat = {s: self.evidence.latency[s].values() for s in ("old", "new")}
        wlat = {s: self.evidence.write_latency[s].values() for s in ("old", "new")}
        parity = self.evidence.parity.values()
        return {
            "phase": self.phase.value,
            "canary_percent": self.state.get("canary_percent", 0.0),
            "canary_segments": self.state.get("canary_segments", []),
            "pending": {
                "new": {"ops": new_ops, "rows": new_rows},
                "old": {"ops": old_ops, "rows": old_rows},
            },
            "latency_p95_ms": {
                s: (float(np.percentile(v, 95)) * 1e3 if v else None) for s, v in lat.items()
            },
            "write_latency_p95_ms": {
                s: (float(np.percentile(v, 95)) * 1e3 if v else None) for s, v in wlat.items()
            },
            "parity_mean_overlap": float(np.mean(parity)) if parity else None,
            "totals": dict(self.evidence.totals),
        }

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._drainer.join(timeout=10)
        self._shadow.shutdown(wait=True, cancel_futures=True)
        self.state.close()
        if self._switch_before is not None:
            sys.setswitchinterval(self._switch_before)  # what it was before this router
