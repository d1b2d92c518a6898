"""Logical decoding with a lazily advanced slot: small pages, a slot left behind, and close()
moving the slot up to what was applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.cdc.postgres import LogicalDecodingSource
from vecmigrate.cdc.sync import SyncJob, SyncOptions
from vecmigrate.connectors import IfExists, connect
from vecmigrate.uri import ConnectorURI
from vecmigrate.validate.run import ValidateOptions, validate

psycopg = pytest.importorskip("psycopg")
SPEC = make_spec(dim=8)


def _write(pg: Any, table: str, start: int, n: int) -> int:
    """Short transactions: inserts, updates and deletes; the rows they changed."""
    with psycopg.connect(
        host=pg.host, port=pg.port, user=pg.user, dbname=pg.database, password=pg.password,
        autocommit=True,
    ) as conn:  # fmt: skip
        conn.execute("SET synchronous_commit = on")  # decoding sees only flushed WAL
        t = psycopg.sql.Identifier(table)
        changed = 0
        for i in range(start, start + n):
            changed += conn.execute(
                psycopg.sql.SQL("INSERT INTO {} (id, vector) VALUES (%s, %s)").format(t),
                (f"doc-{i:07d}", "[" + ",".join(["0.5"] * 8) + "]"),
            ).rowcount
            changed += conn.execute(
                psycopg.sql.SQL("UPDATE {} SET category = 'x' WHERE id = %s").format(t),
                (f"doc-{i - start:07d}",),
            ).rowcount
            if i % 5 == 0:
                changed += conn.execute(
                    psycopg.sql.SQL("DELETE FROM {} WHERE id = %s").format(t),
                    (f"doc-{i - start + 1:07d}",),
                ).rowcount
    return changed


def test_small_pages_and_a_slot_behind_still_apply_everything(
    postgres_engine: Any, tmp_path: Path
) -> None:
    table = "lazy_slot"
    source = postgres_engine.uri(table)
    target = postgres_engine.uri("lazy_slot_target")  # its writes are decoded too: more pages
    with connect(source) as conn:
        conn.create(SPEC, IfExists.REPLACE)
        conn.upsert(make_batch(SPEC, 0, 50))
    state = tmp_path / "state"
    options = SyncOptions(cdc="logical", state_dir=state, once=True, max_changes=20)
    SyncJob(source, target, options).run()
    for round_start in (1_000, 2_000):  # each run: pages of ~20 rows, acks within a second
        changed = _write(postgres_engine, table, round_start, 60)
        result = SyncJob(source, target, options).run()
        assert result.changes_applied == changed
        check = validate(source, target, ValidateOptions(queries=5))
        assert check.checks["completeness"]["passed"], check.checks["completeness"]
        assert check.checks["metadata"]["passed"], check.checks["metadata"]
    cdc = LogicalDecodingSource(ConnectorURI.parse(source))
    try:
        row = (
            cdc.pg.conn()
            .execute(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s",
                (cdc.slot,),
            )
            .fetchone()
        )
        assert str(row[0]) == result.position  # close() advanced the slot to the last set
    finally:
        cdc.close()
        SyncJob(source, target, options).cleanup()
