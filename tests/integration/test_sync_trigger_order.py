"""The trigger change log misses no change that commits after a later-numbered one was read."""

from __future__ import annotations

from typing import Any

import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.cdc.postgres import ChangeLogSource
from vecmigrate.connectors import IfExists, connect
from vecmigrate.uri import ConnectorURI

psycopg = pytest.importorskip("psycopg")


def _ids(source: ChangeLogSource, position: str) -> tuple[list[str], str]:
    ids: list[str] = []
    for cs in source.changes(position, max_changes=100):
        ids += cs.ids
        position = cs.position
        source.acknowledge(position)
    return ids, position


def test_a_change_committed_late_with_a_lower_seq_is_not_lost(postgres_engine: Any) -> None:
    pg, table = postgres_engine, "trigger_order"
    spec = make_spec(dim=4)
    with connect(pg.uri(table)) as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 10))
    source = ChangeLogSource(ConnectorURI.parse(pg.uri(table)))
    kwargs = {"host": pg.host, "port": pg.port, "user": pg.user, "dbname": pg.database}
    slow = psycopg.connect(**kwargs, password=pg.password)
    fast = psycopg.connect(**kwargs, password=pg.password, autocommit=True)
    ident = psycopg.sql.Identifier(table)
    update = psycopg.sql.SQL("UPDATE {} SET category = 'x' WHERE id = %s").format(ident)
    try:
        position = source.start()
        slow.execute(update, ("doc-0000001",))  # takes the lower seq, commits later
        fast.execute(update, ("doc-0000002",))  # takes the higher seq, commits first
        ids, position = _ids(source, position)
        assert ids == ["doc-0000002"]
        slow.commit()
        ids, position = _ids(source, position)
        assert ids == ["doc-0000001"], "the change that committed late was skipped"
        assert _ids(source, position)[0] == []  # acknowledged: nothing is applied twice
        assert source.backlog(position)["pending_changes"] == 0
    finally:
        slow.close()
        fast.close()
        source.cleanup()
        source.close()
