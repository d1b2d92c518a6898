"""The Router's outbox: joined drains, write order across primary switches and threads, and
outbox files written before payloads were stored without their schema."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors.base import WriteToken
from vecmigrate.connectors.memory.connector import MemoryConnector, MemoryStore
from vecmigrate.errors import TransientError
from vecmigrate.routing import Phase, Router, RouterConfig, TriggerConfig
from vecmigrate.routing.state import RouterState, batch_to_bytes
from vecmigrate.spec import ID
from vecmigrate.uri import ConnectorURI

SPEC = make_spec(dim=4)


class Side(MemoryConnector):
    """A memory collection that can be down, and slow to write (to widen races)."""

    def __init__(self, name: str) -> None:
        super().__init__(ConnectorURI.parse(f"memory://{name}"))
        self.down = False
        self.write_delay = 0.0
        self.calls = 0

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        if self.down:
            raise TransientError("down")
        self.calls += 1
        super().upsert(batch, token)
        if self.write_delay:  # the answer comes back a while after the write landed
            time.sleep(float(np.random.default_rng().random()) * self.write_delay)

    def delete(self, ids: Any) -> None:
        if self.down:
            raise TransientError("down")
        self.calls += 1
        super().delete(ids)


@pytest.fixture
def sides() -> tuple[Side, Side]:
    for name in ("old", "new"):
        MemoryStore.put(name, SPEC, pa.Table.from_batches([make_batch(SPEC, 0, 20)]))
    return Side("old"), Side("new")


def _router(tmp_path: Path, old: Side, new: Side, backoff: float = 0.02) -> Router:
    cfg = RouterConfig(
        state_path=tmp_path / "router.sqlite",
        triggers=TriggerConfig(max_count_drift=None),
        retry_backoff_s=backoff,
    )
    return Router(old, new, cfg)


def _equal() -> None:
    old = MemoryStore.collections["old"].table.sort_by(ID)
    new = MemoryStore.collections["new"].table.sort_by(ID)
    assert old.equals(new)


def test_queued_writes_are_joined_and_keep_their_order(
    tmp_path: Path, sides: tuple[Side, Side]
) -> None:
    old, new = sides
    router = _router(tmp_path, old, new)
    router.set_phase(Phase.DUAL_WRITE)
    new.down = True
    for seed in range(1, 6):  # the same ids again and again: the last version must win
        router.upsert(make_batch(SPEC, 0, 10, seed=seed))
    router.delete(["doc-0000003"])
    router.upsert(make_batch(SPEC, 3, 1, seed=9))  # back after its delete
    router.delete(["doc-0000004", "doc-0000004"])
    router.upsert(make_batch(SPEC, 100, 5))
    assert router.state.depth("new")[0] == 9
    new.down, new.calls = False, 0
    assert router.flush(10)
    assert new.calls == 5  # upserts 1-5 joined, delete, upsert, delete, upsert
    _equal()
    router.close()


def test_a_side_that_becomes_primary_first_gets_what_was_queued_for_it(
    tmp_path: Path, sides: tuple[Side, Side]
) -> None:
    old, new = sides
    router = _router(tmp_path, old, new, backoff=60)  # the drainer leaves old alone
    for phase in (Phase.DUAL_WRITE, Phase.SHADOW, Phase.CANARY, Phase.NEW_ONLY):
        router.set_phase(phase)
    old.down = True  # old misses these: written to new, queued for old
    router.upsert(make_batch(SPEC, 0, 5, seed=1))
    router.delete(["doc-0000001"])
    assert router.state.depth("old")[0] == 2
    router.rollback(actor="operator")
    old.down = False
    router.upsert(make_batch(SPEC, 0, 1, seed=2))  # old is primary now, and it is behind
    router.upsert(make_batch(SPEC, 1, 1, seed=3))  # re-creates the id deleted above
    assert router.state.depth("old")[0] == 0  # replayed before the write, not after
    assert router.flush(10)
    _equal()
    got = MemoryStore.collections["old"].table.sort_by(ID).slice(0, 2)
    want = pa.Table.from_batches([make_batch(SPEC, 0, 1, seed=2), make_batch(SPEC, 1, 1, seed=3)])
    assert got.column("vector").to_pylist() == want.column("vector").to_pylist()
    router.close()


def test_a_primary_that_cannot_take_what_it_missed_fails_the_write(
    tmp_path: Path, sides: tuple[Side, Side]
) -> None:
    old, new = sides
    router = _router(tmp_path, old, new, backoff=60)
    for phase in (Phase.DUAL_WRITE, Phase.SHADOW, Phase.CANARY, Phase.NEW_ONLY):
        router.set_phase(phase)
    old.down = True
    router.upsert(make_batch(SPEC, 0, 2, seed=1))
    router.rollback(actor="operator")
    with pytest.raises(TransientError):
        router.upsert(make_batch(SPEC, 0, 1, seed=2))
    assert router.state.depth("old")[0] == 1  # still queued; the failed write left no trace
    old.down = False
    router.upsert(make_batch(SPEC, 0, 1, seed=3))
    assert router.flush(10)
    _equal()
    router.close()


def test_concurrent_writers_of_the_same_ids_leave_both_sides_equal(
    tmp_path: Path, sides: tuple[Side, Side]
) -> None:
    old, new = sides
    old.write_delay = 0.004  # answers come back in another order than the writes landed
    router = _router(tmp_path, old, new)
    router.set_phase(Phase.DUAL_WRITE)
    rounds = threading.Barrier(4)

    def write(worker: int) -> None:
        for r in range(15):  # each round, all four write the same ids at once
            rounds.wait()
            router.upsert(make_batch(SPEC, r % 3, 2, seed=worker * 100 + r + 1))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert router.flush(10)
    _equal()
    router.close()


def test_outbox_rows_holding_a_whole_ipc_stream_still_drain(
    tmp_path: Path, sides: tuple[Side, Side]
) -> None:
    old, new = sides
    router = _router(tmp_path, old, new)
    router.close()
    db = sqlite3.connect(tmp_path / "router.sqlite", isolation_level=None)
    batch = make_batch(SPEC, 200, 3)
    db.execute(
        "INSERT INTO outbox (side, op, payload, rows, created) VALUES ('new', 'upsert', ?, 3, 0)",
        (batch_to_bytes(batch),),
    )
    db.close()
    MemoryStore.collections["old"].table = pa.concat_tables(
        [MemoryStore.collections["old"].table, pa.Table.from_batches([batch])]
    )
    again = _router(tmp_path, old, new)
    assert again.flush(10)
    _equal()
    again.close()


def test_queued_batches_come_back_equal_whatever_their_schema(tmp_path: Path) -> None:
    """The outbox keeps each plain schema once (also across a reopen of the file), and a
    batch with a dictionary column whole; every queued batch reads back equal."""
    path = tmp_path / "state.sqlite"
    plain = [make_batch(SPEC, start, 2) for start in (0, 2)]  # equal schemas, two objects
    coded = pa.record_batch(
        {ID: pa.array(["a", "b"]), "tag": pa.array(["x", "x"]).dictionary_encode()}
    )
    state = RouterState(path)
    for batch in (*plain, coded):
        state.enqueue("new", "upsert", batch)
    state.close()
    again = RouterState(path)
    again.enqueue("new", "upsert", make_batch(SPEC, 4, 2))  # the stored schema, found again
    queued = again.pending("new")
    assert [again.batch(item) for item in queued] == [*plain, coded, make_batch(SPEC, 4, 2)]
    ids = {item.schema_id for item in queued}
    assert None in ids  # the dictionary batch travels as a whole IPC stream
    assert len(ids - {None}) == 1  # one stored schema for every plain batch
    again.close()
