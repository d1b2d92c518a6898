"""The Router under live write load with a faulty new side (in-memory engines)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import connect
from vecmigrate.connectors.base import QueryResult, WriteToken
from vecmigrate.connectors.memory.connector import MemoryConnector, MemoryStore
from vecmigrate.errors import ConfigError, TransientError
from vecmigrate.routing import Phase, Router, RouterConfig, TriggerConfig
from vecmigrate.spec import ID
from vecmigrate.uri import ConnectorURI

SPEC = make_spec(dim=8)


class FaultyNew(MemoryConnector):
    """A new side that fails a share of writes, can go down, and can be slow or wrong."""

    fail_share = 0.0
    down_until = 0.0
    query_delay = 0.0
    wrong_results = False
    rng = np.random.default_rng(1)

    def _maybe_fail(self) -> None:
        if time.monotonic() < FaultyNew.down_until:
            raise TransientError("new side is down")
        if FaultyNew.rng.random() < FaultyNew.fail_share:
            raise TransientError("injected write failure")

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        self._maybe_fail()
        super().upsert(batch, token)

    def delete(self, ids: Any) -> None:
        self._maybe_fail()
        super().delete(ids)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        time.sleep(FaultyNew.query_delay)
        if FaultyNew.wrong_results:  # answers a different question
            return super().query(-vectors, k, vector_field=vector_field)
        return super().query(vectors, k, vector_field=vector_field)


@pytest.fixture(autouse=True)
def _reset_faults() -> None:
    FaultyNew.fail_share, FaultyNew.down_until = 0.0, 0.0
    FaultyNew.query_delay, FaultyNew.wrong_results = 0.0, False


def _router(tmp_path: Path, triggers: TriggerConfig | None = None) -> Router:
    MemoryStore.put("old", SPEC, pa.Table.from_batches([make_batch(SPEC, 0, 500)]))
    MemoryStore.put("new", SPEC, pa.Table.from_batches([make_batch(SPEC, 0, 500)]))
    cfg = RouterConfig(
        state_path=tmp_path / "router.sqlite",
        triggers=triggers or TriggerConfig(max_count_drift=None),
        retry_backoff_s=0.05,
    )
    return Router(connect("memory://old"), FaultyNew(ConnectorURI.parse("memory://new")), cfg)


def _writer(router: Router, seconds: float, rate: float = 200.0) -> list[str]:
    """Mixed inserts/updates/deletes at about ``rate`` ops/s; returns ids deleted."""
    rng = np.random.default_rng(7)
    deleted: list[str] = []
    next_id = 1_000
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        roll = rng.random()
        if roll < 0.5:
            router.upsert(make_batch(SPEC, next_id, 1))
            next_id += 1
        elif roll < 0.85:
            router.upsert(
                make_batch(SPEC, int(rng.integers(0, next_id)), 1, seed=int(rng.integers(1, 99)))
            )
        else:
            victim = f"doc-{int(rng.integers(0, next_id)):07d}"
            router.delete([victim])
            deleted.append(victim)
        time.sleep(1.0 / rate)
    return deleted


def _tables_equal() -> None:
    old = MemoryStore.collections["old"].table.sort_by(ID)
    new = MemoryStore.collections["new"].table.sort_by(ID)
    assert old.num_rows == new.num_rows
    assert old.equals(new)


def test_dual_write_survives_failures_and_an_outage(tmp_path: Path) -> None:
    router = _router(tmp_path)
    router.set_phase(Phase.DUAL_WRITE)
    FaultyNew.fail_share = 0.10
    t = threading.Thread(target=_writer, args=(router, 4.0))
    t.start()
    time.sleep(1.0)
    FaultyNew.down_until = time.monotonic() + 5.0  # new side down for 5 s mid-load
    t.join()
    assert router.state.depth("new")[0] > 0  # the outage left writes waiting
    FaultyNew.fail_share = 0.0
    assert router.flush(timeout=30)
    _tables_equal()
    router.close()


def test_canary_with_slow_new_side_rolls_back_and_loses_nothing(tmp_path: Path) -> None:
    router = _router(tmp_path, TriggerConfig(max_latency_ratio=3.0, min_samples=10, window_s=10,
                                             max_count_drift=None, min_parity=None))  # fmt: skip
    for phase in (Phase.DUAL_WRITE, Phase.SHADOW):
        router.set_phase(phase)
    router.set_phase(Phase.CANARY, percent=50)
    FaultyNew.query_delay = 0.02  # about x5 or worse against the in-memory old side
    writer = threading.Thread(target=_writer, args=(router, 2.0))
    writer.start()
    q = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    deadline = time.monotonic() + 10
    while router.phase is Phase.CANARY and time.monotonic() < deadline:
        router.query(q, 5, request_key=str(time.perf_counter_ns()))
    writer.join()
    assert router.phase is Phase.DUAL_WRITE
    events = [e for e in router.state.audit() if e["event"] == "rollback"]
    assert events and events[0]["evidence"]["trigger"] == "latency_ratio"
    assert router.flush(timeout=30)
    _tables_equal()
    router.close()


def test_shadow_with_wrong_results_fires_parity_trigger(tmp_path: Path) -> None:
    router = _router(tmp_path, TriggerConfig(min_parity=0.9, min_samples=10, max_count_drift=None,
                                             max_latency_ratio=None))  # fmt: skip
    router.set_phase(Phase.DUAL_WRITE)
    router.set_phase(Phase.SHADOW)
    FaultyNew.wrong_results = True
    rng = np.random.default_rng(3)
    deadline = time.monotonic() + 10
    while router.phase is Phase.SHADOW and time.monotonic() < deadline:
        router.query(rng.standard_normal((1, 8)).astype(np.float32), 5)
        time.sleep(0.005)
    assert router.phase is Phase.DUAL_WRITE
    assert router.state.audit()[-1]["evidence"]["trigger"] == "parity"
    router.close()


def test_phase_survives_restart_and_order_is_enforced(tmp_path: Path) -> None:
    router = _router(tmp_path)
    with pytest.raises(ConfigError, match="next phase is dual-write"):
        router.set_phase(Phase.CANARY)
    router.set_phase(Phase.DUAL_WRITE)
    router.set_phase(Phase.SHADOW)
    router.set_phase(Phase.CANARY, percent=10, segments=["tenant-a"])
    router.close()
    again = Router(connect("memory://old"), connect("memory://new"),
                   RouterConfig(state_path=tmp_path / "router.sqlite"))  # fmt: skip
    assert again.phase is Phase.CANARY
    assert again.metrics()["canary_segments"] == ["tenant-a"]
    assert [e["evidence"]["to"] for e in again.state.audit()] == ["dual-write", "shadow", "canary"]
    again.close()


def test_new_only_writes_old_through_outbox_and_rollback_replays(tmp_path: Path) -> None:
    router = _router(tmp_path, TriggerConfig(max_count_drift=None))
    for phase in (Phase.DUAL_WRITE, Phase.SHADOW, Phase.CANARY, Phase.NEW_ONLY):
        router.set_phase(phase)
    MemoryStore.collections["old"].upserts = 0
    router.upsert(make_batch(SPEC, 5_000, 20))
    router.rollback(actor="operator")
    assert router.phase is Phase.DUAL_WRITE
    assert router.flush(timeout=10)
    _tables_equal()
    router.close()


def test_switch_interval_is_set_while_the_router_runs_and_restored(tmp_path: Path) -> None:
    import sys

    before = sys.getswitchinterval()
    MemoryStore.put("old", SPEC, pa.Table.from_batches([make_batch(SPEC, 0, 10)]))
    MemoryStore.put("new", SPEC, pa.Table.from_batches([make_batch(SPEC, 0, 10)]))
    cfg = RouterConfig(state_path=tmp_path / "r.sqlite", switch_interval_s=0.0005)
    router = Router(connect("memory://old"), connect("memory://new"), cfg)
    try:
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        router.close()
    assert sys.getswitchinterval() == before
    with pytest.raises(ConfigError, match="switch_interval_s"):
        Router(
            connect("memory://old"),
            connect("memory://new"),
            RouterConfig(state_path=tmp_path / "r2.sqlite", switch_interval_s=0),
        )


def test_threads_that_see_a_trigger_fire_at_once_roll_back_once(tmp_path: Path) -> None:
    """A query and the drainer can both find a trigger fired: one rollback, one audit entry."""
    from vecmigrate.routing.triggers import Fired

    router = _router(tmp_path, TriggerConfig(max_count_drift=None))
    for phase in (Phase.DUAL_WRITE, Phase.SHADOW):
        router.set_phase(phase)
    router.set_phase(Phase.CANARY, percent=50)
    start = threading.Barrier(8)

    def fire() -> None:
        start.wait()
        router.rollback(Fired("parity", {"mean_overlap": 0.5}))

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert router.phase is Phase.DUAL_WRITE
    assert len([e for e in router.state.audit() if e["event"] == "rollback"]) == 1
    router.close()
