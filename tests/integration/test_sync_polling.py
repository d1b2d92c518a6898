"""Sync without a change log: LanceDB table versions, and polling an updated-at/version field.

Under live writes (a writer thread making inserts, updates and deletes during the snapshot and
the catch-up) the target ends equal to the source; a sync crashed after a checkpoint resumes
without loss; a later ``--once`` applies exactly the changes made since.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.datagen import make_batch, make_spec, make_table
from tests.integration import test_sync as pg_sync
from vecmigrate.cdc.lance import LanceVersionSource
from vecmigrate.cdc.sync import SyncJob, SyncOptions, SyncResult
from vecmigrate.connectors import IfExists, connect
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType, Metric
from vecmigrate.uri import ConnectorURI
from vecmigrate.validate.run import ValidateOptions, validate

lancedb = pytest.importorskip("lancedb")

N = 3_000
DIM = pg_sync.DIM
UNTOUCHED = 1_000  # the Lance writer leaves ids below this alone; the checks change them
STABLE = {"new_table_enable_stable_row_ids": "true"}


def _assert_equal(source: str, target: str) -> None:
    check = validate(source, target, ValidateOptions(queries=10))
    assert check.checks["completeness"]["passed"], check.checks["completeness"]
    assert check.checks["metadata"]["passed"], check.checks["metadata"]


def _doc(i: int) -> str:
    return f"doc-{i:07d}"


# -- LanceDB sources -------------------------------------------------------------------------
def _lance_source(root: Path, table: str, spec: CollectionSpec, *, stable: bool) -> str:
    """A LanceDB table of N rows (with stable row ids: the row-history diff path)."""
    from vecmigrate.connectors.lancedb.connector import SPEC_KEY

    db = lancedb.connect(str(root), storage_options=STABLE if stable else None)
    schema = spec.arrow_schema().with_metadata({SPEC_KEY: spec.to_json().encode()})
    db.create_table(table, data=make_table(spec, N).cast(schema), schema=schema)
    return f"lancedb://{root}?table={table}"


def _keeps_history(source: str) -> bool:
    cdc = LanceVersionSource(ConnectorURI.parse(source))
    try:
        return cdc._keeps_history(cdc.tables.open())
    finally:
        cdc.close()


class LanceWriter(threading.Thread):
    """Inserts, updates (merge_insert) and deletes, one commit each, until stopped."""

    def __init__(self, root: Path, table: str, spec: CollectionSpec, limit_s: float = 20.0):
        super().__init__(daemon=True)
        self.root, self.table, self.spec, self.limit_s = root, table, spec, limit_s
        self.halt = threading.Event()
        self.ops = 0
        self.next_id = N

    def run(self) -> None:
        rng = np.random.default_rng(5)
        table = lancedb.connect(str(self.root)).open_table(self.table)
        end = time.monotonic() + self.limit_s
        while not self.halt.is_set() and time.monotonic() < end:
            roll = rng.random()
            if roll < 0.4:
                n = int(rng.integers(1, 4))
                table.add(make_batch(self.spec, self.next_id, n, seed=7))
                self.next_id += n
            elif roll < 0.8:
                victim = int(rng.integers(UNTOUCHED, self.next_id))
                rows = make_batch(self.spec, victim, 1, seed=int(rng.integers(1, 1 << 30)))
                table.merge_insert("id").when_matched_update_all().execute(rows)
            else:
                table.delete(f"id = '{_doc(int(rng.integers(UNTOUCHED, self.next_id)))}'")
            self.ops += 1
            time.sleep(0.01)


def _follow(job: SyncJob, writer: threading.Thread, halt: threading.Event, busy_s: float) -> Any:
    """Snapshot and follow while ``writer`` writes for ``busy_s``; then stop both."""
    result: dict[str, Any] = {}
    writer.start()
    follower = threading.Thread(target=lambda: result.setdefault("r", job.run()), daemon=True)
    follower.start()
    time.sleep(busy_s)
    halt.set()
    writer.join(30)
    time.sleep(1.0)
    job.stop()
    follower.join(120)
    assert "r" in result, "the follower did not finish"
    return result["r"]


def _crash_then_resume(source: str, target: str, options: SyncOptions) -> tuple[int, SyncResult]:
    """A --once sync that dies applying its third change set, then the same sync again."""
    crashing = SyncJob(source, target, options)
    applied: list[int] = []
    real_apply = crashing._apply

    def apply(cs: Any, *args: Any) -> None:
        if len(applied) == 2:
            raise RuntimeError("simulated crash while applying a change set")
        real_apply(cs, *args)
        applied.append(cs.changes)

    crashing._apply = apply  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.run()
    return sum(applied), SyncJob(source, target, options).run()


def test_lance_versions_under_live_writes_to_qdrant_edge(tmp_path: Path) -> None:
    if importlib.util.find_spec("qdrant_edge") is None:
        pytest.skip("qdrant+edge: client not installed")
    spec = make_spec(dim=DIM, metric=Metric.COSINE)
    source = _lance_source(tmp_path / "lance", "items", spec, stable=True)
    target = f"qdrant+edge://{tmp_path}/edge"
    state = tmp_path / "state"
    writer = LanceWriter(tmp_path / "lance", "items", spec)
    job = SyncJob(source, target, SyncOptions(cdc="lance", state_dir=state, max_changes=200))
    followed = _follow(job, writer, writer.halt, busy_s=8)
    assert writer.ops > 50 and followed.changes_applied > 0
    assert _keeps_history(source)  # the row-history path, not the content diff
    once = SyncJob(source, target, SyncOptions(cdc="lance", state_dir=state, once=True)).run()
    assert once.snapshot is None
    _assert_equal(source, target)

    # a later --once applies exactly what changed since: 3 inserts, 4 updates, 2 deletes
    table = lancedb.connect(str(tmp_path / "lance")).open_table("items")
    table.add(make_batch(spec, 900_000, 3))
    table.merge_insert("id").when_matched_update_all().execute(make_batch(spec, 10, 4, seed=99))
    table.delete(f"id IN ('{_doc(20)}', '{_doc(21)}')")
    again = SyncJob(source, target, SyncOptions(cdc="lance", state_dir=state, once=True)).run()
    assert (again.changes_applied, again.ids_applied) == (9, 9)
    assert again.backlog["pending_versions"] == 0
    _assert_equal(source, target)

    # a crash part-way through a diff: the resumed sync re-diffs from the checkpoint
    for i in range(30):
        table.merge_insert("id").when_matched_update_all().execute(
            make_batch(spec, 100 + i, 1, seed=1_000 + i)
        )
    table.delete(f"id IN ({', '.join(repr(_doc(i)) for i in range(200, 210))})")
    opts = SyncOptions(cdc="lance", state_dir=state, once=True, max_changes=5)
    before_crash, resumed = _crash_then_resume(source, target, opts)
    assert before_crash == 10 and resumed.changes_applied == 40
    _assert_equal(source, target)


def test_lance_versions_without_stable_row_ids_to_pgvector(
    postgres_engine: Any, tmp_path: Path
) -> None:
    """Tables without row history are diffed by content hash; deletes and updates still seen."""
    spec = make_spec(dim=DIM, metric=Metric.L2)
    source = _lance_source(tmp_path / "lance", "plain", spec, stable=False)
    target = postgres_engine.uri("sync_lance_plain")
    state = tmp_path / "state"
    first = SyncJob(source, target, SyncOptions(cdc="lance", state_dir=state, once=True)).run()
    assert first.snapshot is not None and first.snapshot["rows"] == N
    assert not _keeps_history(source)
    table = lancedb.connect(str(tmp_path / "lance")).open_table("plain")
    table.add(make_batch(spec, 800_000, 5))
    table.merge_insert("id").when_matched_update_all().execute(make_batch(spec, 30, 6, seed=3))
    table.delete(f"id IN ({', '.join(repr(_doc(i)) for i in range(40, 44))})")
    table.optimize()  # compaction moves every row: still only the real changes are applied
    again = SyncJob(source, target, SyncOptions(cdc="lance", state_dir=state, once=True)).run()
    assert again.changes_applied == 5 + 6 + 4
    _assert_equal(source, target)


# -- polling an updated-at field (pgvector, a trigger keeps it) ---------------------------------
def _add_updated_at(pg: Any, table: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    sql = psycopg.sql
    conn = psycopg.connect(
        host=pg.host, port=pg.port, user=pg.user, dbname=pg.database, password=pg.password,
        autocommit=True,
    )  # fmt: skip
    fn = sql.Identifier(f"{table}_touch")
    with conn:
        conn.execute(sql.SQL(
            "ALTER TABLE {} ADD COLUMN updated_at timestamptz NOT NULL DEFAULT clock_timestamp()"
        ).format(sql.Identifier(table)))  # fmt: skip
        conn.execute(sql.SQL("CREATE INDEX ON {} (updated_at)").format(sql.Identifier(table)))
        conn.execute(sql.SQL(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.updated_at = clock_timestamp(); RETURN NEW; END $$"
        ).format(fn))  # fmt: skip
        conn.execute(sql.SQL(
            "CREATE TRIGGER touch BEFORE UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(table), fn))  # fmt: skip


def _pg_exec(pg: Any, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(
        host=pg.host, port=pg.port, user=pg.user, dbname=pg.database, password=pg.password,
        autocommit=True,
    ) as conn:  # fmt: skip
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def test_poll_updated_at_under_live_writes_pgvector_to_lancedb(
    postgres_engine: Any, tmp_path: Path
) -> None:
    table = "sync_poll_items"
    source = postgres_engine.uri(table)
    target = f"lancedb://{tmp_path}/lance?table=items"
    pg_sync._fill(source)
    _add_updated_at(postgres_engine, table)
    state = tmp_path / "state"

    def options(**kw: Any) -> SyncOptions:
        return SyncOptions(cdc="poll", poll_field="updated_at", state_dir=state, **kw)

    writer = pg_sync.Writer(postgres_engine, table, limit_s=20)
    followed = _follow(
        SyncJob(source, target, options(max_changes=500, id_diff_every=2.0)),
        writer, writer.halt, busy_s=8,
    )  # fmt: skip
    assert writer.ops > 300 and followed.changes_applied > 0
    once = SyncJob(source, target, options(once=True, id_diff_every=0)).run()
    assert once.snapshot is None
    _assert_equal(source, target)

    # a later --once applies only what changed since: 2 updates, 1 insert; 2 deletes by id diff
    ids = [r[0] for r in _pg_exec(postgres_engine, f"SELECT id FROM {table} ORDER BY id LIMIT 5")]
    _pg_exec(postgres_engine, f"UPDATE {table} SET category = 'later' WHERE id IN (%s, %s)",
             ids[0], ids[1])  # fmt: skip
    _pg_exec(
        postgres_engine,
        f"INSERT INTO {table} (id, vector, document, category, rank, score, active) "
        "SELECT 'doc-late', vector, document, category, rank, score, active FROM "
        f"{table} WHERE id = %s",
        ids[2],
    )
    _pg_exec(postgres_engine, f"DELETE FROM {table} WHERE id IN (%s, %s)", ids[3], ids[4])
    polled = SyncJob(source, target, options(once=True)).run()
    assert polled.changes_applied == 3  # no id diff asked for: deletes not seen yet
    diffed = SyncJob(source, target, options(once=True, id_diff_every=0)).run()
    assert diffed.changes_applied == 2
    assert SyncJob(source, target, options(once=True)).run().changes_applied == 0
    _assert_equal(source, target)

    # a crash after two checkpointed change sets: the resumed sync applies the rest
    _pg_exec(postgres_engine, f"UPDATE {table} SET score = score + 1 WHERE mod(rank, 97) = 0")
    with connect(source) as conn:
        touched = sum(
            int(((b.batch.column("rank").to_numpy() % 97) == 0).sum())
            for p in conn.partitions(1)
            for b in conn.scan(p, None, 10_000)
        )
    before_crash, resumed = _crash_then_resume(source, target, options(once=True, max_changes=7))
    assert before_crash == 14 and resumed.changes_applied == touched - 14
    _assert_equal(source, target)


# -- polling a version field with tombstones: LanceDB, sqlite-vec and the dataset ---------------
def _versioned_spec() -> CollectionSpec:
    spec = make_spec(dim=8, metric=Metric.L2)
    spec.metadata += [
        MetadataField(name="version", type=MetadataType.INT64),
        MetadataField(name="deleted", type=MetadataType.BOOL),
    ]
    return spec


def _versioned(spec: CollectionSpec, start: int, n: int, version: int, *, seed: int = 0,
               deleted: bool = False) -> pa.RecordBatch:  # fmt: skip
    base = make_batch(make_spec(dim=8, metric=Metric.L2), start, n, seed=seed)
    columns = [*base.columns, pa.array([version] * n, pa.int64()), pa.array([deleted] * n)]
    return pa.RecordBatch.from_arrays(columns, schema=spec.arrow_schema())


SOURCES = {
    "lancedb": lambda tmp: f"lancedb://{tmp}/src?table=items",
    "sqlitevec": lambda tmp: f"sqlitevec://{tmp}/src.db?table=items",
    "parquet": lambda tmp: f"parquet://{tmp}/dataset",
}


@pytest.mark.parametrize("system", list(SOURCES))
def test_poll_version_field_with_tombstones(system: str, tmp_path: Path) -> None:
    if system == "sqlitevec" and importlib.util.find_spec("sqlite_vec") is None:
        pytest.skip("sqlitevec: client not installed")
    spec = _versioned_spec()
    source = SOURCES[system](tmp_path)
    target = f"lancedb://{tmp_path}/target?table=items"
    rows = [_versioned(spec, 0, 200, 1), _versioned(spec, 200, 10, 1, deleted=True)]

    def write(batches: list[pa.RecordBatch], deletes: tuple[str, ...] = ()) -> None:
        with connect(source) as conn:
            if system == "parquet":  # a dataset changes by being written again
                conn.create(spec, IfExists.REPLACE)
                for b in batches:
                    conn.upsert(b)
            else:
                conn.create(spec, IfExists.REUSE)
                for b in batches:
                    conn.upsert(b)
                if deletes:
                    conn.delete(list(deletes))
            conn.finalize(spec)

    write(rows)
    state = tmp_path / "state"

    def once(**kw: Any) -> SyncResult:
        opts = SyncOptions(cdc="poll", poll_field="version", tombstone_field="deleted",
                           state_dir=state, once=True, **kw)  # fmt: skip
        return SyncJob(source, target, opts).run()

    first = once()
    assert first.snapshot is not None and first.changes_applied == 10  # the tombstone sweep
    with connect(target) as conn:
        assert conn.count() == 200

    # version 2: 3 updates (one sharing the version with the next batch), 2 tombstones, 1 insert
    changes = [
        _versioned(spec, 0, 3, 2, seed=42),
        _versioned(spec, 3, 2, 2, deleted=True),
        _versioned(spec, 500, 1, 2),
    ]
    hard_deleted = ("doc-0000010", "doc-0000011")
    if system == "parquet":
        replaced = pa.array([_doc(i) for i in range(5)] + list(hard_deleted))
        keep = pa.Table.from_batches(rows)
        keep = keep.filter(pc.invert(pc.is_in(keep.column("id"), value_set=replaced)))
        write([*keep.to_batches(), *changes])
    else:
        write(changes, hard_deleted)
    second = once()
    assert second.changes_applied == 6
    third = once(id_diff_every=0)
    assert third.changes_applied == 2  # the hard deletes, found by the id diff
    with connect(target) as conn:
        assert conn.count() == 200 - 2 - 2 + 1
        got = conn.fetch(["doc-0000000", "doc-0000003", "doc-0000500", "doc-0000010"])
        assert sorted(got.column("id").to_pylist()) == ["doc-0000000", "doc-0000500"]
        assert got.column("version").to_pylist() == [2, 2]


def test_cli_sync_picks_the_source_change_feed_and_polls(tmp_path: Path) -> None:
    """``vecmigrate sync`` defaults to LanceDB's version diff; --cdc poll takes its flags."""
    import json

    from typer.testing import CliRunner

    from vecmigrate.cli.app import app

    spec = _versioned_spec()
    source = f"lancedb://{tmp_path}/src?table=items"
    with connect(source) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(_versioned(spec, 0, 50, 1))
        conn.upsert(_versioned(spec, 50, 5, 1, deleted=True))

    def sync(target: str, *flags: str) -> dict[str, Any]:
        args = ["sync", source, target, "--once", "--json", "--state-dir", str(tmp_path / "s")]
        result = CliRunner().invoke(app, [*args, *flags])
        assert result.exit_code == 0, result.output
        out: dict[str, Any] = json.loads(result.stdout)
        return out

    by_version = f"lancedb://{tmp_path}/t1?table=items"
    polled = f"lancedb://{tmp_path}/t2?table=items"
    poll = ("--cdc", "poll", "--poll-field", "version", "--tombstone-field", "deleted")
    assert sync(by_version)["snapshot"]["rows"] == 55
    assert sync(polled, *poll, "--id-diff-every", "0")["changes_applied"] == 5  # the sweep
    with connect(source) as conn:
        conn.upsert(_versioned(spec, 0, 2, 2, seed=9))
        conn.delete(["doc-0000010"])
    assert sync(by_version)["changes_applied"] == 3
    assert sync(polled, *poll)["changes_applied"] == 2
    assert sync(polled, *poll, "--id-diff-every", "0")["changes_applied"] == 1
    with connect(f"{by_version}") as a, connect(polled) as b:
        assert a.count() == 54 and b.count() == 49
    result = CliRunner().invoke(
        app, ["sync", source, polled, "--cdc", "lance", "--poll-field", "x"]
    )
    assert result.exit_code == 2 and "need --cdc poll" in result.output
