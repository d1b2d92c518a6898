"""Change data capture under live write load: pgvector -> Qdrant (edge) and -> Milvus (Lite).

A writer thread makes ~200 mixed inserts/updates/deletes per second through plain SQL during
the snapshot, the catch-up and the switch; afterwards validation finds the target equal to the
source: nothing lost, nothing stale.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.cdc.sync import SyncJob, SyncOptions
from vecmigrate.connectors import IfExists, connect
from vecmigrate.spec import Metric
from vecmigrate.validate.run import ValidateOptions, validate

psycopg = pytest.importorskip("psycopg")

N = 5_000
DIM = 16

TARGETS = {
    "qdrant+edge": ("qdrant_edge", lambda tmp: f"qdrant+edge://{tmp}/edge"),
    "milvus+lite": ("pymilvus", lambda tmp: f"milvus+lite://{tmp}/milvus.db?collection=items"),
}


def _fill(uri: str) -> None:
    spec = make_spec(dim=DIM, metric=Metric.COSINE)
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        for start in range(0, N, 2_500):
            conn.upsert(make_batch(spec, start, 2_500))
        conn.finalize(spec)


class Writer(threading.Thread):
    """Mixed SQL writes at about ``rate`` per second until stopped (bounded in time)."""

    def __init__(self, pg: Any, table: str, rate: float = 200.0, limit_s: float = 120.0) -> None:
        super().__init__(daemon=True)
        self.pg, self.table, self.rate, self.limit_s = pg, table, rate, limit_s
        self.halt = threading.Event()
        self.ops = 0

    def run(self) -> None:
        rng = np.random.default_rng(11)
        conn = psycopg.connect(
            host=self.pg.host, port=self.pg.port, user=self.pg.user, dbname=self.pg.database,
            password=self.pg.password, autocommit=True,
        )  # fmt: skip
        ident = psycopg.sql.Identifier(self.table)
        next_id = N
        end = time.monotonic() + self.limit_s
        with conn:
            while not self.halt.is_set() and time.monotonic() < end:
                vec = "[" + ",".join(f"{x:.6f}" for x in rng.standard_normal(DIM)) + "]"
                roll = rng.random()
                if roll < 0.5:
                    conn.execute(
                        psycopg.sql.SQL(
                            "INSERT INTO {} (id, vector, document, category, rank, score, active) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s)"
                        ).format(ident),
                        (f"doc-{next_id:07d}", vec, f"new {next_id}", "live", next_id, 0.5, True),
                    )
                    next_id += 1
                elif roll < 0.85:
                    update = psycopg.sql.SQL(
                        "UPDATE {} SET vector = %s, category = %s WHERE id = %s"
                    ).format(ident)
                    victim = f"doc-{int(rng.integers(0, next_id)):07d}"
                    conn.execute(update, (vec, "updated", victim))
                else:
                    conn.execute(
                        psycopg.sql.SQL("DELETE FROM {} WHERE id = %s").format(ident),
                        (f"doc-{int(rng.integers(0, next_id)):07d}",),
                    )
                self.ops += 1
                time.sleep(1.0 / self.rate)


@pytest.mark.parametrize("cdc", ["logical", "trigger"])
@pytest.mark.parametrize("target_kind", list(TARGETS))
def test_sync_under_live_writes_ends_equal(
    postgres_engine: Any, tmp_path: Path, target_kind: str, cdc: str
) -> None:
    module, make_target = TARGETS[target_kind]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{target_kind}: client not installed")
    table = f"sync_{cdc}_{target_kind.replace('+', '_')}"
    source = postgres_engine.uri(table)
    target = make_target(tmp_path)
    _fill(source)
    writer = Writer(postgres_engine, table)
    job = SyncJob(
        source, target, SyncOptions(cdc=cdc, state_dir=tmp_path / "state", max_changes=500)
    )
    writer.start()
    result: dict[str, Any] = {}
    follower = threading.Thread(target=lambda: result.setdefault("r", job.run()), daemon=True)
    follower.start()  # snapshot, then follow while the writer keeps writing
    time.sleep(6)
    writer.halt.set()
    writer.join(30)
    assert writer.ops > 500
    time.sleep(1.5)  # let the follower catch up with the last writes, then switch
    job.stop()
    follower.join(120)
    assert "r" in result and result["r"].changes_applied > 0
    once = SyncJob(
        source, target, SyncOptions(cdc=cdc, state_dir=tmp_path / "state", once=True)
    ).run()
    assert once.snapshot is None  # the second run only streams what changed since
    check = validate(source, target, ValidateOptions(queries=20))
    comp = check.checks["completeness"]
    assert comp["passed"], comp
    assert check.checks["metadata"]["passed"], check.checks["metadata"]
    SyncJob(source, target, SyncOptions(cdc=cdc, state_dir=tmp_path / "state")).cleanup()
