"""The Router between real engines: old = pgvector, new = Qdrant Edge or Milvus Lite.

Faults are injected by wrapping the real new connector (``Faulty``): a share of writes fail
(half of them after the write landed, as a lost answer would), an outage where every call
fails, slow answers or wrong answers. A writer thread makes ~200 mixed inserts, updates and
deletes per second through the router; afterwards ``validate`` finds old and new equal, and old
holds exactly what the writer wrote (nothing lost, nothing stale).
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import Connector, QueryResult, WriteToken
from vecmigrate.errors import TransientError
from vecmigrate.records import vectors_numpy
from vecmigrate.routing import Phase, Router, RouterConfig, TriggerConfig
from vecmigrate.spec import ID, CollectionSpec, Metric
from vecmigrate.validate.run import ValidateOptions, validate_connectors

pytest.importorskip("psycopg")

SPEC = make_spec(dim=16, metric=Metric.COSINE)
START_ROWS = 2_000
RATE = 200.0  # writer operations per second
WINDOW_S = 5.0  # the triggers' sliding window

NEW_SIDES: dict[str, tuple[str, Callable[[Path], str]]] = {
    "qdrant+edge": ("qdrant_edge", lambda tmp: f"qdrant+edge://{tmp}/edge"),
    "milvus+lite": ("milvus_lite", lambda tmp: f"milvus+lite://{tmp}/milvus.db?collection=items"),
}


@dataclass
class Faults:
    """What the wrapped side does wrong right now (changed by the test while load runs)."""

    fail_share: float = 0.0  # of upserts/deletes, seeded
    down_until: float = 0.0  # time.monotonic() until which every call fails
    query_delay_s: float = 0.0
    wrong_results: bool = False
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(5))
    injected: int = 0  # writes failed on purpose (landed or not)
    refused_while_down: int = 0


class Faulty(Connector):
    """A real connector behind injected faults; everything else is passed through."""

    def __init__(self, inner: Connector, faults: Faults) -> None:
        super().__init__(inner.uri)
        self.inner, self.faults = inner, faults
        self._lock = threading.Lock()

    def _check_up(self) -> None:
        if time.monotonic() < self.faults.down_until:
            with self._lock:
                self.faults.refused_while_down += 1
            raise TransientError(f"{self.inner.uri.scheme}: injected outage")

    def _write(self, apply: Callable[[], None]) -> None:
        self._check_up()
        with self._lock:
            fail = self.faults.rng.random() < self.faults.fail_share
            landed = self.faults.rng.random() < 0.5
            self.faults.injected += fail
        if fail:
            if landed:
                apply()  # the write happened; only its answer is lost
            raise TransientError(f"{self.inner.uri.scheme}: injected write failure")
        apply()

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        self._write(lambda: self.inner.upsert(batch, token))

    def delete(self, ids: Sequence[Any]) -> None:
        wanted = list(ids)
        self._write(lambda: self.inner.delete(wanted))

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        self._check_up()
        if self.faults.query_delay_s:
            time.sleep(self.faults.query_delay_s)
        if self.faults.wrong_results:  # answers another question: the farthest neighbours
            return self.inner.query(-np.asarray(vectors), k, vector_field=vector_field)
        return self.inner.query(vectors, k, vector_field=vector_field)

    def count(self) -> int:
        self._check_up()
        return self.inner.count()

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        self._check_up()
        return self.inner.fetch(ids)

    def describe(self) -> CollectionSpec:
        return self.inner.describe()


class Writer(threading.Thread):
    """Mixed upserts (new ids and updates) and deletes through the router at about ``rate``/s.

    Keeps the expected final state: the last row written per id, or None once deleted. Row 0
    is left alone (smoke checks look for it).
    """

    def __init__(self, router: Router, rate: float = RATE, limit_s: float = 15.0) -> None:
        super().__init__(daemon=True)
        self.router, self.rate, self.limit_s = router, rate, limit_s
        self.halt = threading.Event()
        self.expected: dict[str, pa.RecordBatch | None] = {}
        self.ops = 0
        self.elapsed_s = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = np.random.default_rng(11)
        next_id = START_ROWS
        started = time.monotonic()
        due = started
        try:
            while not self.halt.is_set() and time.monotonic() - started < self.limit_s:
                roll = rng.random()
                if roll < 0.85:
                    new = roll < 0.5
                    row_id = next_id if new else int(rng.integers(1, next_id))
                    next_id += new
                    batch = make_batch(SPEC, row_id, 1, seed=int(rng.integers(1, 1 << 30)))
                    self.router.upsert(batch)
                    self.expected[batch.column(ID)[0].as_py()] = batch
                else:
                    victim = f"doc-{int(rng.integers(1, next_id)):07d}"
                    self.router.delete([victim])
                    self.expected[victim] = None
                self.ops += 1
                due = max(due + 1.0 / self.rate, time.monotonic() - 1.0)  # no catch-up burst
                time.sleep(max(0.0, due - time.monotonic()))
        except BaseException as exc:  # reported by the test
            self.error = exc
        self.elapsed_s = time.monotonic() - started

    def finish(self, min_share: float = 0.25) -> None:
        """Stop; no write failed, and at least ``min_share`` of the rate was reached."""
        self.halt.set()
        self.join(30)
        assert not self.is_alive(), "the writer did not stop"
        assert self.error is None, f"a write through the router failed: {self.error!r}"
        assert self.ops >= min_share * self.rate * min(self.elapsed_s, self.limit_s), (
            f"only {self.ops} writes in {self.elapsed_s:.1f} s"
        )


@dataclass
class Sides:
    old: Connector
    new: Connector  # the real new connector (unwrapped)

    def close(self) -> None:
        self.old.close()
        self.new.close()


@pytest.fixture(params=list(NEW_SIDES))
def sides(request: Any, postgres_engine: Any, tmp_path: Path) -> Iterator[Sides]:
    """Old (pgvector) and new, both holding the same START_ROWS rows, as after the copy."""
    kind: str = request.param
    module, make_uri = NEW_SIDES[kind]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{kind}: {module} is not installed")
    table = "router_" + hashlib.sha256(request.node.name.encode()).hexdigest()[:12]
    pair = Sides(old=connect(postgres_engine.uri(table)), new=connect(make_uri(tmp_path)))
    for conn in (pair.old, pair.new):
        conn.create(SPEC, IfExists.REPLACE)
        for start in range(0, START_ROWS, 1_000):
            conn.upsert(make_batch(SPEC, start, 1_000))
    try:
        yield pair
    finally:
        pair.close()


def _config(tmp_path: Path, triggers: TriggerConfig | None = None) -> RouterConfig:
    return RouterConfig(
        state_path=tmp_path / "router.sqlite",
        triggers=triggers or TriggerConfig(max_count_drift=None),
        retry_backoff_s=0.1,
    )


def _assert_equal_and_complete(pair: Sides, writer: Writer) -> None:
    """New equals old (validate), and old holds every write of the writer, nothing stale."""
    check = validate_connectors(pair.old, pair.new, ValidateOptions(queries=20))
    comp, meta = check.checks["completeness"], check.checks["metadata"]
    assert comp["passed"], comp
    assert comp["missing_in_target"]["count"] == 0 and comp["extra_in_target"]["count"] == 0
    assert meta["passed"], meta
    live = [i for i, b in writer.expected.items() if b is not None]
    gone = [i for i, b in writer.expected.items() if b is None]
    gone_from_start = sum(1 for i in gone if int(i[4:]) < START_ROWS)
    live_new = sum(1 for i in live if int(i[4:]) >= START_ROWS)
    assert pair.old.count() == START_ROWS - gone_from_start + live_new
    assert pair.old.fetch(gone).num_rows == 0
    got = pa.Table.from_batches([pair.old.fetch(live)]).sort_by(ID)
    want = pa.Table.from_batches([b for b in writer.expected.values() if b is not None])
    want = want.sort_by(ID)
    assert got.column(ID).to_pylist() == want.column(ID).to_pylist()
    np.testing.assert_array_equal(
        vectors_numpy(got.column("vector")),
        vectors_numpy(want.column("vector")),
    )
    for name in ("document", "category", "rank", "score", "active"):
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


def test_dual_write_with_failing_and_down_new_side_ends_equal(sides: Sides, tmp_path: Path) -> None:
    """10% of the new side's writes fail and it is down for 5 s under ~200 writes/s."""
    faults = Faults(fail_share=0.10)
    router = Router(sides.old, Faulty(sides.new, faults), _config(tmp_path))
    writer = Writer(router, limit_s=15.0)
    try:
        router.set_phase(Phase.DUAL_WRITE)
        writer.start()
        time.sleep(4.0)
        faults.down_until = time.monotonic() + 5.0
        most_pending = 0
        while time.monotonic() < faults.down_until:
            most_pending = max(most_pending, router.state.depth("new")[0])
            time.sleep(0.1)
        writer.join()
        writer.finish()
        assert most_pending > 100  # the outage left writes waiting (in the outbox, on disk)
        drain_started = time.monotonic()
        assert router.flush(timeout=30), router.metrics()  # still failing 10% meanwhile
        drain_s = time.monotonic() - drain_started
        assert faults.injected > 0 and faults.refused_while_down > 0
        assert router.metrics()["totals"]["new_errors"] > 0
        print(f"{writer.ops} writes in {writer.elapsed_s:.1f} s; {faults.injected} failed, "
              f"{most_pending} waiting at most, drained in {drain_s:.1f} s after")  # fmt: skip
    finally:
        writer.halt.set()
        router.close()
    _assert_equal_and_complete(sides, writer)


def _queries(router: Router, until: Callable[[], bool], limit_s: float) -> int:
    """Queries through the router (fresh request keys) until ``until()`` or ``limit_s``."""
    rng = np.random.default_rng(3)
    end = time.monotonic() + limit_s
    n = 0
    while not until() and time.monotonic() < end:
        q = rng.standard_normal((1, SPEC.vector().dim)).astype(np.float32)
        router.query(q, 10, request_key=f"q-{n}")
        n += 1
        time.sleep(0.002)
    return n


@pytest.mark.parametrize("broken", ["slow", "wrong"])
def test_canary_with_broken_new_side_rolls_back_in_window_and_loses_nothing(
    sides: Sides, tmp_path: Path, broken: str
) -> None:
    """A healthy canary raises no alarm; then the new side answers x5 slower (than the slower
    side's healthy p95) or wrong: a trigger fires within the window, reads go back to old,
    and every write is kept on both sides."""
    faults = Faults()
    triggers = TriggerConfig(
        max_error_rate=0.05, max_latency_ratio=None, min_parity=0.9, max_count_drift=None,
        window_s=WINDOW_S, min_samples=10,
    )  # fmt: skip
    router = Router(sides.old, Faulty(sides.new, faults), _config(tmp_path, triggers))
    writer = Writer(router, limit_s=25.0)
    try:
        for phase in (Phase.DUAL_WRITE, Phase.SHADOW):
            router.set_phase(phase)
        router.set_phase(Phase.CANARY, percent=50)
        writer.start()
        canary = lambda: router.phase is not Phase.CANARY  # noqa: E731
        _queries(router, canary, limit_s=3.0)
        p95 = router.metrics()["latency_p95_ms"]
        healthy_ratio = p95["new"] / p95["old"]
        # the operator's bound: the ratio seen while healthy leaves room (on a busy machine
        # Milvus Lite answers ~3x slower than PostgreSQL under this write load)
        triggers.max_latency_ratio = max(3.0, 2 * healthy_ratio)
        _queries(router, canary, limit_s=1.5)
        assert router.phase is Phase.CANARY, router.state.audit()[-1]  # healthy: no rollback
        if broken == "slow":
            faults.query_delay_s = 5 * max(p95["old"], p95["new"]) / 1e3
        else:
            faults.wrong_results = True
        broke_at = time.time()
        _queries(router, canary, limit_s=WINDOW_S * 2)
        assert router.phase is Phase.DUAL_WRITE
        rollback = [e for e in router.state.audit() if e["event"] == "rollback"]
        assert len(rollback) == 1
        evidence = rollback[0]["evidence"]
        assert rollback[0]["actor"] == "trigger"
        assert evidence["from"] == "canary" and evidence["to"] == "dual-write"
        if broken == "slow":
            assert evidence["trigger"] == "latency_ratio", evidence
            assert evidence["ratio"] > evidence["bound"] == triggers.max_latency_ratio
        else:
            assert evidence["trigger"] == "parity", evidence
            assert evidence["mean_overlap"] < evidence["bound"] == 0.9
        fired_after = rollback[0]["at"] - broke_at
        assert fired_after < WINDOW_S, f"rolled back {fired_after:.1f} s after the fault"
        time.sleep(1.0)  # writes keep coming in dual-write after the rollback
        writer.finish()
        assert router.flush(timeout=30), router.metrics()
        print(f"{broken}: healthy ratio {healthy_ratio:.2f}, rolled back after "
              f"{fired_after:.2f} s; {writer.ops} writes in {writer.elapsed_s:.1f} s")  # fmt: skip
    finally:
        writer.halt.set()
        router.close()
    _assert_equal_and_complete(sides, writer)


def test_new_only_rollback_replays_writes_old_missed(sides: Sides, tmp_path: Path) -> None:
    """In new-only, old gets writes through its outbox; while old is down they exist only on
    new. Old comes back far behind just as new starts answering wrong: an integration check
    fires, the router rolls back, and old gets every write it missed before the writes that
    follow (which now go to old first)."""
    old_faults, new_faults = Faults(), Faults()
    new = Faulty(sides.new, new_faults)
    known = make_batch(SPEC, 0, 1)
    known_vector = np.asarray(known.column("vector").values, dtype=np.float32)[None, :]

    def top_hit_is_known() -> bool:  # the application's own smoke check
        return bool(new.query(known_vector, 1).ids[0][0] == known.column(ID)[0].as_py())

    triggers = TriggerConfig(
        max_count_drift=None, window_s=WINDOW_S, min_samples=10,
        integration_checks=[top_hit_is_known],
    )  # fmt: skip
    old = Faulty(sides.old, old_faults)
    router = Router(old, new, _config(tmp_path, triggers))
    writer = Writer(router, limit_s=20.0)
    try:
        for phase in (Phase.DUAL_WRITE, Phase.SHADOW, Phase.CANARY, Phase.NEW_ONLY):
            router.set_phase(phase)
        writer.start()
        time.sleep(1.0)
        old_faults.down_until = time.monotonic() + 60.0
        time.sleep(2.5)
        missed = router.state.depth("old")[0]
        assert missed >= 20  # written to new only, so far
        old_faults.down_until = 0.0  # old is back, far behind, as new starts answering wrong
        new_faults.wrong_results = True
        _queries(router, lambda: router.phase is not Phase.NEW_ONLY, limit_s=WINDOW_S)
        assert router.phase is Phase.DUAL_WRITE
        rollback = [e for e in router.state.audit() if e["event"] == "rollback"]
        assert rollback and rollback[0]["evidence"]["trigger"] == "integration"
        time.sleep(2.0)  # writes now go to old first, after what it missed
        writer.finish(min_share=0.1)  # new (primary until the rollback) may be Milvus Lite
        assert router.flush(timeout=30), router.metrics()
    finally:
        writer.halt.set()
        router.close()
    _assert_equal_and_complete(sides, writer)
