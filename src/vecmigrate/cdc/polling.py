"""Polling change source: rows whose updated-at or version field moved past the position.

For systems without a change feed whose records carry a field that every write sets to a value
not below any earlier one: an updated-at timestamp set by the writer or a trigger, or a version
counter. Each poll reads (id, field, tombstone) of the rows with ``field >= position`` in field
order, skipping the ids already applied at exactly the position's value. The position is (the
greatest value applied, the ids applied at that value), so rows sharing a timestamp are not
lost when some of them commit after a poll.

How a poll reads, per system:
- pgvector: ``WHERE field >= $1 ... ORDER BY field LIMIT n`` pages; with an index on the field
  a poll costs O(changed rows), without one a sequential scan;
- LanceDB: a filter on the field, two columns read: O(rows) column scan per poll;
- anything else (sqlite-vec, the dataset, ...): a scan of the collection filtered column-wise,
  O(rows) per poll. Rows that match are held as (id, value) until the poll is applied.

Deletes leave no row to poll. Two ways to see them:
- a tombstone field (soft delete): a row whose tombstone is true is deleted in the target (the
  apply treats it as gone); rows already tombstoned when the sync starts are swept once;
- a periodic id diff (``id_diff_every`` seconds): the source's and the target's ids are streamed
  through the on-disk diff (bounded memory, O(rows) of both sides); ids only in the target are
  deleted there, ids only in the source are copied.

Limits: a row committed with a field value below one already applied is missed (writers whose
transactions commit out of timestamp order); the id diff recovers such inserts, not such
updates. Rows whose field is NULL are never polled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.cdc.base import ChangeSet
from vecmigrate.cdc.diff import diff_by_id, fingerprints
from vecmigrate.connectors.base import Connector
from vecmigrate.connectors.registry import connect
from vecmigrate.errors import ConfigError, Unsupported
from vecmigrate.spec import ID, CollectionSpec, MetadataType
from vecmigrate.uri import ConnectorURI

READ_BATCH = 10_000
START_IDS = 10_000  # at most this many ids at the greatest value are kept by start()
VALUE = "value"
DEAD = "dead"
POLLABLE = (MetadataType.TIMESTAMP, MetadataType.INT64, MetadataType.FLOAT64, MetadataType.STRING)
TOMBSTONE_TYPES = (MetadataType.BOOL, MetadataType.INT64)
UTC_MICROS = pa.timestamp("us", tz="UTC")

Value = int | float | str


@dataclass
class PollPosition:
    """The greatest field value applied and the ids applied at it; sweep and id diff state.

    ``ids`` None means strictly after ``after``: set when more than ``START_IDS`` rows share the
    greatest value when the sync starts (a table loaded with one version number), so the
    position does not list them all; later writes must then use a greater value.
    """

    after: Value | None = None  # timestamps as microseconds since the epoch (UTC)
    ids: list[str] | None = field(default_factory=list)
    swept: bool = True  # rows tombstoned before the sync started have been deleted
    diffed: float = 0.0  # unix time the last completed id diff started

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> PollPosition:
        return cls(**json.loads(text))

    @property
    def inclusive(self) -> bool:
        """Whether rows at exactly ``after`` (other than ``ids``) are still to be read."""
        return self.ids is not None

    def advanced(self, page: pa.Table) -> PollPosition:
        """The position after applying ``page`` (rows in ascending field order)."""
        if page.num_rows == 0:
            return self
        values = page.column(VALUE)
        last = values[-1].as_py()
        at_last = pc.filter(page.column(ID), pc.equal(values, last)).to_pylist()
        ids = [*(self.ids or []), *at_last] if last == self.after else at_last
        return PollPosition(after=last, ids=ids, swept=self.swept, diffed=self.diffed)


def normalized(column: pa.Array | pa.ChunkedArray, mtype: MetadataType) -> pa.Array:
    """A poll field's values in the form positions keep: timestamps as int64 microseconds."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if mtype is MetadataType.TIMESTAMP:
        if not pa.types.is_timestamp(column.type):
            raise ConfigError(f"poll field holds {column.type}, not timestamps")
        return pc.cast(pc.cast(column, UTC_MICROS, safe=False), pa.int64())
    return pc.cast(column, mtype.arrow())


def is_dead(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Whether each tombstone value marks a deleted row (true / non-zero; null is alive)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flags = column if pa.types.is_boolean(column.type) else pc.not_equal(column, 0)
    return pc.fill_null(flags, False)


def live_rows(batch: pa.RecordBatch, tombstone: str) -> pa.RecordBatch:
    """``batch`` without its tombstoned rows (the apply then deletes them in the target)."""
    if tombstone not in batch.schema.names:
        raise ConfigError(f"the tombstone field {tombstone!r} is not in the source's records")
    return batch.filter(pc.invert(is_dead(batch.column(tombstone))))


def _check_field(
    spec: CollectionSpec, name: str, allowed: tuple[MetadataType, ...]
) -> MetadataType:
    found = spec.metadata_field(name)
    kinds = ", ".join(t.value for t in allowed)
    if found is None:
        raise ConfigError(
            f"{name!r} is not a metadata field of the source (it has: "
            f"{', '.join(m.name for m in spec.metadata) or 'none'})"
        )
    if found.type not in allowed:
        raise ConfigError(f"field {name!r} is {found.type.value}; it must be one of: {kinds}")
    return found.type


class ScannedRows:
    """Reads (id, value, dead) of changed rows by scanning the collection (any connector)."""

    def __init__(self, conn: Connector, poll_field: str, mtype: MetadataType,
                 tombstone: str | None) -> None:  # fmt: skip
        self.conn, self.field, self.mtype, self.tombstone = conn, poll_field, mtype, tombstone

    def _batches(self, after: Value | None) -> Iterator[pa.RecordBatch]:
        """Batches holding at least the id, field and tombstone columns (spec names)."""
        for part in self.conn.partitions(1):
            for sb in self.conn.scan(part, None, READ_BATCH):
                yield sb.batch

    def _project(self, batch: pa.RecordBatch) -> pa.Table:
        ids = batch.column(ID)
        cols = {
            ID: ids if pa.types.is_string(ids.type) else ids.cast(pa.string()),
            VALUE: normalized(batch.column(self.field), self.mtype),
            DEAD: is_dead(batch.column(self.tombstone))
            if self.tombstone
            else pa.nulls(batch.num_rows, pa.bool_()).fill_null(False),
        }
        return pa.table(cols)

    def changed(self, position: PollPosition, limit: int) -> Iterator[pa.Table]:
        """Pages of at most ``limit`` rows past ``position``, in ascending field order."""
        skip = pa.array(position.ids or [], pa.string())
        found: list[pa.Table] = []
        for batch in self._batches(position.after):
            rows = self._project(batch)
            keep = pc.is_valid(rows.column(VALUE))
            if position.after is not None:
                past = pc.greater_equal if position.inclusive else pc.greater
                keep = pc.and_(keep, past(rows.column(VALUE), position.after))
                # ids already applied are skipped only at the value they were applied at
                seen = pc.and_(
                    pc.equal(rows.column(VALUE), position.after),
                    pc.is_in(rows.column(ID), value_set=skip),
                )
                keep = pc.and_(keep, pc.invert(seen))
            found.append(rows.filter(pc.fill_null(keep, False)))
        if not found:
            return
        table = pa.concat_tables(found).sort_by([(VALUE, "ascending"), (ID, "ascending")])
        for start in range(0, table.num_rows, limit):
            yield table.slice(start, limit)

    def greatest(self) -> PollPosition:
        """The greatest field value now and the ids holding it."""
        top: Value | None = None
        ids: list[str] = []
        for batch in self._batches(None):
            rows = self._project(batch)
            values = rows.column(VALUE)
            if values.null_count == len(values):
                continue
            high = pc.max(values).as_py()
            if top is not None and high < top:
                continue
            at_high = pc.filter(rows.column(ID), pc.equal(values, high)).to_pylist()
            ids = [*ids, *at_high][: START_IDS + 1] if high == top else at_high
            top = high
        return PollPosition(after=top, ids=None if len(ids) > START_IDS else ids)

    def tombstoned(self) -> Iterator[list[str]]:
        for batch in self._batches(None):
            rows = self._project(batch)
            yield pc.filter(rows.column(ID), rows.column(DEAD)).to_pylist()

    def live_ids(self) -> Iterator[pa.Table]:
        """The ids of rows that are not tombstoned (the source side of the id diff)."""
        for batch in self._batches(None):
            rows = self._project(batch)
            yield rows.filter(pc.invert(rows.column(DEAD))).select([ID])

    def pending(self, position: PollPosition) -> int | None:
        return None  # would cost a full scan

    def close(self) -> None:
        """The connector is closed by its owner."""


def _lance_literal(value: Value, mtype: MetadataType) -> str:
    if mtype is MetadataType.TIMESTAMP:
        return f"to_timestamp_micros({int(value)})"
    if mtype is MetadataType.STRING:
        return "'" + str(value).replace("'", "''") + "'"
    return repr(value)


def _lance_ident(name: str) -> str:
    if "`" in name:
        raise ConfigError(f"lancedb: column name {name!r} contains a backtick")
    return f"`{name}`"


class LanceRows(ScannedRows):
    """LanceDB: the field filter is pushed down and only the needed columns are read."""

    def __init__(self, conn: Connector, poll_field: str, mtype: MetadataType,
                 tombstone: str | None) -> None:  # fmt: skip
        from vecmigrate.cdc.lance import LanceTables

        super().__init__(conn, poll_field, mtype, tombstone)
        self.tables = LanceTables(conn.uri)

    def _where(self, after: Value | None, *, inclusive: bool = True) -> str:
        column = _lance_ident(self.field)
        clause = f"{column} IS NOT NULL"
        if after is not None:
            past = ">=" if inclusive else ">"
            clause += f" AND {column} {past} {_lance_literal(after, self.mtype)}"
        return clause

    def _query(self, where: str | None) -> Iterator[pa.RecordBatch]:
        from vecmigrate.connectors.lancedb.errors import lance_errors

        id_column = self.tables.config.id_column
        columns = [id_column, self.field] + ([self.tombstone] if self.tombstone else [])
        with lance_errors(f"poll {self.tables.where}"):
            query = self.tables.open().search()
            if where:
                query = query.where(where)
            for batch in query.select(columns).limit(None).to_batches(READ_BATCH):
                yield batch.rename_columns([ID, *columns[1:]])

    def _batches(self, after: Value | None) -> Iterator[pa.RecordBatch]:
        return self._query(self._where(after))

    def close(self) -> None:
        self.tables.close()

    def tombstoned(self) -> Iterator[list[str]]:
        assert self.tombstone
        for batch in self._query(f"{_lance_ident(self.tombstone)} IS NOT NULL"):
            rows = self._project(batch)
            yield pc.filter(rows.column(ID), rows.column(DEAD)).to_pylist()

    def live_ids(self) -> Iterator[pa.Table]:
        for batch in self._query(None):
            rows = self._project(batch)
            yield rows.filter(pc.invert(rows.column(DEAD))).select([ID])

    def pending(self, position: PollPosition) -> int | None:
        from vecmigrate.connectors.lancedb.errors import lance_errors

        where = self._where(position.after, inclusive=False)
        with lance_errors(f"count changed rows of {self.tables.where}"):
            return int(self.tables.open().count_rows(where))


class PgRows(ScannedRows):
    """pgvector: keyset-like pages ordered by the field, read by SQL (an index on it helps)."""

    def __init__(self, conn: Connector, poll_field: str, mtype: MetadataType,
                 tombstone: str | None) -> None:  # fmt: skip
        from psycopg import sql

        from vecmigrate.cdc.postgres import _PgTable

        super().__init__(conn, poll_field, mtype, tombstone)
        self.pg = _PgTable(conn.uri)
        types = dict(
            self.pg.conn()
            .execute(
                "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
                (self.pg._qualified(),),
            )
            .fetchall()
        )
        f = sql.Identifier(poll_field)
        kind = str(types.get(poll_field, ""))
        if mtype is MetadataType.TIMESTAMP:
            self.value = sql.SQL("(extract(epoch FROM {}) * 1000000)::int8").format(f)
            base = "timestamptz" if "with time zone" in kind else "timestamp"
            self.column: sql.Composable = (
                f if kind != "date" else sql.SQL("{}::timestamp").format(f)
            )
            self.bound = sql.SQL(
                "('epoch'::" + base + " + %(after)s::int8 * interval '1 microsecond')"
            )
        else:
            cast = {"int64": "int8", "float64": "float8", "string": "text"}[mtype.value]
            self.value = sql.SQL("{}::" + cast).format(f)
            self.column = f
            self.bound = sql.SQL("%(after)s::" + cast)
        self.dead: sql.Composable = sql.SQL("false")
        if tombstone:
            t = sql.Identifier(tombstone)
            self.dead = (
                sql.SQL("COALESCE({}, false)").format(t)
                if types.get(tombstone) == "boolean"
                else sql.SQL("COALESCE({} <> 0, false)").format(t)
            )
        self.table = sql.Identifier(self.pg.schema, self.pg.table)
        self.key = sql.Identifier(self.pg.key)

    def _rows(self, query: Any, params: dict[str, Any]) -> pa.Table:
        rows = self.pg.conn().execute(query, params).fetchall()
        value_type = pa.int64() if self.mtype is MetadataType.TIMESTAMP else self.mtype.arrow()
        columns = list(zip(*rows, strict=True)) if rows else [(), (), ()]
        return pa.table(
            {
                ID: pa.array(columns[0], pa.string()),
                VALUE: pa.array(columns[1], value_type),
                DEAD: pa.array(columns[2], pa.bool_()),
            }
        )

    def changed(self, position: PollPosition, limit: int) -> Iterator[pa.Table]:
        from psycopg import sql

        where = [sql.SQL("{} IS NOT NULL").format(self.column)]
        if position.after is not None:
            past = sql.SQL(">=" if position.inclusive else ">")
            where.append(sql.SQL("{} {} {}").format(self.column, past, self.bound))
            # ids already applied are skipped only at the value they were applied at
            where.append(
                sql.SQL("NOT ({} = {} AND {}::text = ANY(%(skip)s::text[]))").format(
                    self.column, self.bound, self.key
                )
            )
        query = sql.SQL(
            "SELECT {key}::text, {value}, {dead} FROM {table} WHERE {where} "
            "ORDER BY {column}, {key} LIMIT %(limit)s"
        ).format(
            key=self.key, value=self.value, dead=self.dead, table=self.table,
            where=sql.SQL(" AND ").join(where), column=self.column,
        )  # fmt: skip
        while True:
            params = {"after": position.after, "skip": position.ids or [], "limit": limit}
            page = self._rows(query, params)
            if page.num_rows == 0:
                return
            yield page
            if page.num_rows < limit:
                return
            position = position.advanced(page)

    def greatest(self) -> PollPosition:
        from psycopg import sql

        query = sql.SQL(
            "SELECT {key}::text, {value}, false FROM {table} "
            "WHERE {column} = (SELECT max({column}) FROM {table}) LIMIT %(limit)s"
        ).format(key=self.key, value=self.value, table=self.table, column=self.column)
        rows = self._rows(query, {"limit": START_IDS + 1})
        if rows.num_rows == 0:
            return PollPosition()
        ids = rows.column(ID).to_pylist()
        return PollPosition(
            after=rows.column(VALUE)[0].as_py(), ids=None if len(ids) > START_IDS else ids
        )

    def _ids(self, where: Any) -> Iterator[list[str]]:
        from psycopg import sql

        query = sql.SQL("SELECT {}::text FROM {} WHERE {}").format(self.key, self.table, where)
        conn = self.pg.conn()
        with conn.transaction(), conn.cursor(name="vecmigrate_poll_ids") as cur:
            cur.execute(query)
            while rows := cur.fetchmany(READ_BATCH):
                yield [r[0] for r in rows]

    def tombstoned(self) -> Iterator[list[str]]:
        return self._ids(self.dead)

    def live_ids(self) -> Iterator[pa.Table]:
        from psycopg import sql

        for ids in self._ids(sql.SQL("NOT {}").format(self.dead)):
            yield pa.table({ID: pa.array(ids, pa.string())})

    def pending(self, position: PollPosition) -> int | None:
        from psycopg import sql

        if position.after is None:
            query = sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL")
            row = self.pg.conn().execute(query.format(self.table, self.column)).fetchone()
        else:
            query = sql.SQL("SELECT count(*) FROM {} WHERE {} > {}")
            row = (
                self.pg.conn()
                .execute(
                    query.format(self.table, self.column, self.bound), {"after": position.after}
                )
                .fetchone()
            )
        return int(row[0]) if row else None

    def close(self) -> None:
        self.pg.close()


_READERS: dict[str, type[ScannedRows]] = {"pgvector": PgRows, "lancedb": LanceRows}


class PollingSource:
    """Changes of any readable collection whose records carry an updated-at/version field."""

    name = "poll"

    def __init__(
        self,
        uri: ConnectorURI,
        poll_field: str,
        *,
        tombstone: str | None = None,
        id_diff_every: float | None = None,
        target: ConnectorURI | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if id_diff_every is not None and target is None:
            raise ConfigError("the periodic id diff needs the sync's target")
        self.uri, self.target = uri, target
        self.tombstone, self.id_diff_every, self.clock = tombstone, id_diff_every, clock
        self.conn = connect(uri)
        try:
            spec = self.conn.describe()
            self.mtype = _check_field(spec, poll_field, POLLABLE)
            if tombstone is not None:
                _check_field(spec, tombstone, TOMBSTONE_TYPES)
            reader = _READERS.get(uri.scheme, ScannedRows)
            self.rows = reader(self.conn, poll_field, self.mtype, tombstone)
        except BaseException:
            self.conn.close()
            raise

    def start(self) -> str:
        position = self.rows.greatest()
        position.swept = self.tombstone is None
        position.diffed = self.clock()  # the snapshot about to run is the first "diff"
        return position.dumps()

    def changes(self, position: str, max_changes: int) -> Iterator[ChangeSet]:
        pos = PollPosition.loads(position)
        for page in self.rows.changed(pos, max_changes):
            pos = pos.advanced(page)
            yield ChangeSet(
                position=pos.dumps(), ids=page.column(ID).to_pylist(), changes=page.num_rows,
                oldest_commit=self._committed(page),
            )  # fmt: skip
        if not pos.swept:
            pos = yield from self._chunked(self.rows.tombstoned(), pos, max_changes, swept=True)
        due = self.id_diff_every is not None and self.clock() - pos.diffed >= self.id_diff_every
        if due:
            began = self.clock()
            yield from self._chunked(self._id_diff(), pos, max_changes, diffed=began)

    def _committed(self, page: pa.Table) -> float | None:
        if self.mtype is not MetadataType.TIMESTAMP:
            return None
        return float(pc.min(page.column(VALUE)).as_py()) / 1e6

    def _chunked(
        self, ids: Iterator[list[str]], pos: PollPosition, max_changes: int, **done: Any
    ) -> Generator[ChangeSet, None, PollPosition]:
        """Change sets of the nominated ids; only the last one records the pass as done."""
        pending: list[str] = []
        for chunk in ids:
            pending.extend(chunk)
            while len(pending) >= max_changes:
                head, pending = pending[:max_changes], pending[max_changes:]
                yield ChangeSet(position=pos.dumps(), ids=head, changes=len(head))
        final = PollPosition(**{**asdict(pos), **done})
        yield ChangeSet(position=final.dumps(), ids=pending, changes=len(pending))
        return final

    def _id_diff(self) -> Iterator[list[str]]:
        """Ids on one side only: re-read, they are deleted in or copied to the target."""
        assert self.target is not None
        with connect(self.target) as target:
            rows = max(_count(self.conn), _count(target))
            target_ids = (
                fingerprints(sb.batch) for p in target.partitions(1)
                for sb in target.scan(p, None, READ_BATCH)
            )  # fmt: skip
            for diff in diff_by_id(self.rows.live_ids(), target_ids, rows=rows):
                yield diff.only_left + diff.only_right

    def acknowledge(self, position: str) -> None:
        """Nothing to release: polling leaves no state in the source."""

    def backlog(self, position: str) -> dict[str, Any]:
        pos = PollPosition.loads(position)
        out: dict[str, Any] = {"position": {"after": pos.after, "ids_at_it": len(pos.ids or [])}}
        pending = self.rows.pending(pos)
        if pending is not None:
            out["pending_changes"] = pending
        if self.id_diff_every is not None:
            out["last_id_diff_s_ago"] = round(max(0.0, self.clock() - pos.diffed), 3)
        return out

    def cleanup(self) -> None:
        """Polling created nothing in the source."""

    def close(self) -> None:
        self.rows.close()
        self.conn.close()


def _count(conn: Connector) -> int:
    try:
        return conn.count()
    except Unsupported:  # only sizes the diff's buckets
        return 0
