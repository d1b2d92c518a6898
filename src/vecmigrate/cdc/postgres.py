"""PostgreSQL change sources: logical decoding (test_decoding) and a trigger-filled change log.

Logical decoding needs ``wal_level=logical``; its slot is created before the snapshot so no
change falls in the gap, read with ``pg_logical_slot_peek_changes`` and advanced only after
the changes are applied (a crash re-reads, never skips). Every SQL-level decoding call starts
at the slot's restart point, which moves only past a running-transactions record (logged every
15 s); so a peek that returned less than asked for is the last of its poll. Where the role
may run ``pg_log_standby_snapshot()``, one such record is logged before each advance so the
restart point follows closely; otherwise advances are made at most once a second.

The change-log source is for servers where logical replication cannot be enabled: a trigger
records (seq, op, id) of every change.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from vecmigrate.cdc.base import ChangeSet
from vecmigrate.errors import ConfigError, TerminalError, TransientError

try:
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - the registry reports the missing extra first
    psycopg = None  # type: ignore[assignment]


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _fmt_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class _PgTable:
    """Connection and the table's identity (schema, name, primary key column)."""

    def __init__(self, uri: Any) -> None:
        from vecmigrate.connectors.pgvector.config import PgvectorConfig

        self.config = PgvectorConfig.from_uri(uri)
        self.uri = uri
        self._conn: Any = None
        self.schema, self.table, self.key = self._identity()

    def conn(self) -> Any:
        if self._conn is None or self._conn.closed:
            cfg = self.config
            try:
                self._conn = psycopg.connect(
                    host=cfg.host, port=cfg.port, user=cfg.user, dbname=cfg.database,
                    password=cfg.password, connect_timeout=cfg.connect_timeout, autocommit=True,
                )  # fmt: skip
            except psycopg.OperationalError as exc:
                raise TransientError(
                    f"cannot reach PostgreSQL at {self.uri.redacted()}: {exc}"
                ) from exc
        return self._conn

    def _identity(self) -> tuple[str, str, str]:
        row = (
            self.conn()
            .execute(
                "SELECT n.nspname, c.relname, a.attname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] "
                "WHERE c.oid = to_regclass(%s)",
                (self._qualified(),),
            )
            .fetchone()
        )
        if row is None:
            raise TerminalError(
                f"table {self.config.table!r} does not exist or has no primary key "
                "(change capture needs one)"
            )
        key = self.config.id_column or row[2]
        return str(row[0]), str(row[1]), str(key)

    def _qualified(self) -> str:
        parts = (
            [self.config.schema, self.config.table] if self.config.schema else [self.config.table]
        )
        return ".".join('"' + p.replace('"', '""') + '"' for p in parts)

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()


# test_decoding: `table public.items: INSERT: id[text]:'a' vector[vector]:'[1,2]' ...`
_COLUMN = re.compile(r'\s*("(?:[^"]|"")+"|[^\[\s]+)\[([^\]]+)\]:')


def parse_change(line: str, prefix: str, key: str) -> tuple[str, list[str]] | None:
    """(operation, key values) of one test_decoding line about our table, else None."""
    if not line.startswith(prefix):
        return None
    rest = line[len(prefix) :]
    op, _, cols = rest.partition(": ")
    values: list[str] = []
    pos = 0
    while pos < len(cols):
        if cols.startswith("old-key:", pos) or cols.startswith("new-tuple:", pos):
            pos = cols.index(":", pos) + 1
            continue
        m = _COLUMN.match(cols, pos)
        if m is None:
            break
        name = m.group(1)
        name = name[1:-1].replace('""', '"') if name.startswith('"') else name
        pos = m.end()
        if cols.startswith("'", pos):
            end = pos + 1
            chunks = []
            while True:
                nxt = cols.index("'", end)
                chunks.append(cols[end:nxt])
                if cols.startswith("''", nxt):
                    chunks.append("'")
                    end = nxt + 2
                    continue
                pos = nxt + 1
                break
            value = "".join(chunks)
        else:
            end = cols.find(" ", pos)
            end = len(cols) if end < 0 else end
            value = cols[pos:end]
            pos = end
        if name == key and value != "null":
            values.append(value)
    return op, values


_COMMIT_AT = re.compile(r"COMMIT(?: \d+)? \(at (.+)\)$")
ADVANCE_EVERY_S = 1.0


class LogicalDecodingSource:
    """Changes of one table through a logical replication slot (test_decoding)."""

    name = "logical"

    def __init__(self, uri: Any, slot: str | None = None) -> None:
        self.pg = _PgTable(uri)
        digest = hashlib.sha256(uri.redacted().encode()).hexdigest()[:12]
        self.slot = slot or f"vecmigrate_{digest}"
        ident = (
            self.pg.conn()
            .execute("SELECT quote_ident(%s), quote_ident(%s)", (self.pg.schema, self.pg.table))
            .fetchone()
        )
        self.prefix = f"table {ident[0]}.{ident[1]}: "
        self._acked: str | None = None  # applied up to here, not yet advanced to
        self._advanced_at = 0.0
        self._may_log_snapshot = True

    def start(self) -> str:
        conn = self.pg.conn()
        level = conn.execute("SHOW wal_level").fetchone()[0]
        if level != "logical":
            raise ConfigError(
                f"logical decoding needs wal_level=logical (the server has {level}); "
                "use --cdc trigger instead"
            )
        row = conn.execute(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        ).fetchone()
        if row is not None:
            return str(row[0])
        created = conn.execute(
            "SELECT lsn FROM pg_create_logical_replication_slot(%s, 'test_decoding')", (self.slot,)
        ).fetchone()
        return str(created[0])

    def changes(self, position: str, max_changes: int) -> Iterator[ChangeSet]:
        after = _lsn(position)
        upto = str(self.pg.conn().execute("SELECT pg_current_wal_lsn()").fetchone()[0])
        while True:
            rows = (
                self.pg.conn()
                .execute(
                    "SELECT lsn, data FROM pg_logical_slot_peek_changes(%s, %s, %s, "
                    "'include-xids', '0', 'skip-empty-xacts', '1', 'include-timestamp', '1')",
                    (self.slot, upto, max_changes),
                )
                .fetchall()
            )
            batch = ChangeSet(position=_fmt_lsn(after))
            lines: list[str] = []
            for lsn, data in rows:
                if data.startswith("BEGIN"):
                    lines = []
                elif data.startswith("COMMIT"):
                    # transactions come whole, in commit order; one committed at or before
                    # ``after`` was applied already (the slot is advanced lazily): skip it
                    if _lsn(str(lsn)) > after:
                        m = _COMMIT_AT.match(data)
                        if m and batch.oldest_commit is None:
                            batch.oldest_commit = datetime.fromisoformat(m.group(1)).timestamp()
                        for line in lines:
                            parsed = parse_change(line, self.prefix, self.pg.key)
                            if parsed is not None:
                                batch.ids.extend(parsed[1])
                                batch.changes += 1
                        batch.position = str(lsn)
                    lines = []
                else:
                    lines.append(data)
            full = len(rows) >= max_changes
            if _lsn(batch.position) <= after:
                # nothing new; a full page of applied changes means the slot is behind
                if full and self._advance(_fmt_lsn(after)):
                    continue
                return
            after = _lsn(batch.position)
            yield batch  # the consumer acknowledges once applied; peeks start after that
            if not full:
                return  # that peek reached ``upto``: another would decode the WAL for nothing

    def acknowledge(self, position: str) -> None:
        """Advance the slot to ``position`` (without the snapshot grant at most once a second,
        as each advance decodes from the restart point; ``close`` does the last)."""
        self._acked = position
        # with the snapshot logged the restart point follows, so every advance is short
        every = 0.0 if self._may_log_snapshot else ADVANCE_EVERY_S
        if time.monotonic() - self._advanced_at >= every:
            self._advance()

    def _advance(self, position: str | None = None) -> bool:
        """Move the slot up to ``position`` (or the last acknowledged); whether it moved."""
        position = position or self._acked
        self._acked = None
        if position is None:
            return False
        self._advanced_at = time.monotonic()
        conn = self.pg.conn()
        if self._may_log_snapshot:
            try:  # a running-transactions record lets the restart point move with this advance
                conn.execute("SELECT pg_log_standby_snapshot()")
            except (
                psycopg.errors.InsufficientPrivilege,  # GRANT EXECUTE to the sync's role
                psycopg.errors.UndefinedFunction,  # PostgreSQL before 16
                psycopg.errors.ObjectNotInPrerequisiteState,  # a standby
            ):
                self._may_log_snapshot = False
        current = conn.execute(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        ).fetchone()
        if current is None or _lsn(str(current[0])) >= _lsn(position):
            return False
        conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, position))
        return True

    def backlog(self, position: str) -> dict[str, Any]:
        row = self.pg.conn().execute("SELECT pg_current_wal_lsn()").fetchone()
        behind = max(0, _lsn(str(row[0])) - _lsn(position))
        return {"pending_wal_bytes": behind, "position": position, "source_position": str(row[0])}

    def cleanup(self) -> None:
        self._acked = None
        conn = self.pg.conn()
        exists = conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
        ).fetchone()
        if exists:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))

    def close(self) -> None:
        try:
            self._advance()
        except (psycopg.Error, TransientError):
            pass  # the slot stays behind: the next run re-reads what it already applied
        finally:
            self.pg.close()


class ChangeLogSource:
    """Changes recorded by a trigger into a change-log table (no logical replication needed).

    The log is a queue: a change is pending while its row is in the table, and acknowledging
    deletes exactly the rows that were read. Sequence numbers are taken when a writer's
    statement runs, not when it commits, so a change with a lower number can appear after a
    higher one was read; every read therefore starts from the oldest row still in the log,
    and nothing is skipped by a "seq <= position" cut-off.
    """

    name = "trigger"

    def __init__(self, uri: Any) -> None:
        self.pg = _PgTable(uri)
        self._read: dict[int, list[int]] = {}  # change-set position -> the seqs it holds
        digest = hashlib.sha256(uri.redacted().encode()).hexdigest()[:12]
        self.log_table = f"vecmigrate_changes_{digest}"
        self.function = f"vecmigrate_capture_{digest}"
        self.trigger = f"vecmigrate_capture_{digest}"

    def _names(self) -> dict[str, Any]:
        return {
            "log": sql.Identifier(self.pg.schema, self.log_table),
            "fn": sql.Identifier(self.pg.schema, self.function),
            "trg": sql.Identifier(self.trigger),
            "tbl": sql.Identifier(self.pg.schema, self.pg.table),
            "key": sql.Identifier(self.pg.key),
        }

    def start(self) -> str:
        conn = self.pg.conn()
        n = self._names()
        with conn.transaction():
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {log} (seq bigserial PRIMARY KEY, op char(1) NOT NULL, "
                "id text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ).format(**n))  # fmt: skip
            conn.execute(sql.SQL(
                "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF TG_OP = 'DELETE' THEN "
                "INSERT INTO {log} (op, id) VALUES ('D', OLD.{key}::text); "
                "ELSE INSERT INTO {log} (op, id) VALUES (left(TG_OP, 1), NEW.{key}::text); "
                "IF TG_OP = 'UPDATE' AND OLD.{key} IS DISTINCT FROM NEW.{key} THEN "
                "INSERT INTO {log} (op, id) VALUES ('D', OLD.{key}::text); END IF; END IF; "
                "RETURN NULL; END $$"
            ).format(**n))  # fmt: skip
            exists = conn.execute(
                "SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s)",
                (self.trigger, self.pg._qualified()),
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL(
                    "CREATE TRIGGER {trg} AFTER INSERT OR UPDATE OR DELETE ON {tbl} "
                    "FOR EACH ROW EXECUTE FUNCTION {fn}()"
                ).format(**n))  # fmt: skip
            row = conn.execute(
                sql.SQL("SELECT COALESCE(MAX(seq), 0) FROM {log}").format(**n)
            ).fetchone()
        return str(row[0])

    def changes(self, position: str, max_changes: int) -> Iterator[ChangeSet]:
        """Every row still in the log (read or not before: re-applying is idempotent)."""
        n = self._names()
        after = 0  # not ``position``: a lower seq may have committed since it was passed
        highest = int(position)
        while True:
            query = sql.SQL(
                "SELECT seq, id, extract(epoch FROM at) FROM {log} WHERE seq > %s "
                "ORDER BY seq LIMIT %s"
            ).format(**n)
            rows = self.pg.conn().execute(query, (after, max_changes)).fetchall()
            if not rows:
                return
            after = int(rows[-1][0])
            highest = max(highest, after)
            self._read[highest] = self._read.get(highest, []) + [int(r[0]) for r in rows]
            yield ChangeSet(
                position=str(highest), ids=[r[1] for r in rows], changes=len(rows),
                oldest_commit=min(float(r[2]) for r in rows),
            )  # fmt: skip
            if len(rows) < max_changes:
                return  # the log had no more

    def acknowledge(self, position: str) -> None:
        """Delete the rows of the change sets read up to ``position``, and only those."""
        upto = int(position)
        done = [p for p in self._read if p <= upto]
        seqs = [seq for p in done for seq in self._read.pop(p)]
        if seqs:
            self.pg.conn().execute(
                sql.SQL("DELETE FROM {log} WHERE seq = ANY(%s)").format(**self._names()), (seqs,)
            )

    def backlog(self, position: str) -> dict[str, Any]:
        query = sql.SQL("SELECT COUNT(*), MIN(extract(epoch FROM at)) FROM {log}").format(
            **self._names()
        )
        row = self.pg.conn().execute(query).fetchone()
        lag = time.time() - float(row[1]) if row[1] is not None else 0.0
        return {"pending_changes": int(row[0]), "lag_s": round(lag, 3), "position": position}

    def cleanup(self) -> None:
        conn = self.pg.conn()
        n = self._names()
        with conn.transaction():
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {trg} ON {tbl}").format(**n))
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {fn}()").format(**n))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {log}").format(**n))

    def close(self) -> None:
        self.pg.close()
