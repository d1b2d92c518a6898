"""LanceDB change source: the difference between the table version last applied and the latest.

Every LanceDB write commits a new table version, so the change feed is a diff of two versions;
the position is the table version. ``start()`` pins the current version before the snapshot.

With stable row ids (tables created with ``new_table_enable_stable_row_ids``), Lance stamps each
row with the versions that created and last updated it: inserted and updated ids are the rows of
the latest version with ``_row_last_updated_at_version`` past the position (a filter Lance
evaluates on its row metadata), and deleted ids are row ids of the position's version that the
latest no longer has, looked for only when the row counts say rows were deleted. Without stable
row ids those columns carry no history, so both versions are streamed as (id, content hash) and
diffed by id through hash-partitioned runs on disk.

Limits: the position's version must still exist (``optimize`` removes versions older than its
``cleanup_older_than``, 7 days by default); a ``restore`` to an older version is seen as the
changes between the two versions' rows only through the content diff (use ``--restart``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.cdc.base import ChangeSet
from vecmigrate.cdc.diff import diff_by_id, fingerprints
from vecmigrate.errors import ConfigError, NotFoundError, TerminalError, VecmigrateError
from vecmigrate.spec import ID
from vecmigrate.uri import ConnectorURI

READ_BATCH = 10_000
# some row of the table proves Lance keeps per-row history (stable row ids)
_HISTORY_PROBE = (
    "_rowid != _rowaddr OR _row_created_at_version > 1 OR _row_last_updated_at_version > 1"
)


class LanceTables:
    """Opens one LanceDB table at its latest or a given version (always read fresh)."""

    def __init__(self, uri: ConnectorURI) -> None:
        from vecmigrate.connectors.lancedb.config import LanceDBConfig

        self.config = LanceDBConfig.from_uri(uri)
        self.where = f"lancedb table {self.config.table!r} in {self.config.path}"
        self._db: Any = None

    def open(self, version: int | None = None) -> Any:
        import lancedb

        from vecmigrate.connectors.lancedb.errors import lance_errors

        what = f"open {self.where}" + ("" if version is None else f" at version {version}")
        with lance_errors(what):
            if self._db is None:
                self._db = lancedb.connect(
                    str(self.config.path), read_consistency_interval=timedelta(0)
                )
            if version is None:
                return self._db.open_table(self.config.table)
            return self._db.open_table(self.config.table, version=version)

    def close(self) -> None:
        self._db = None


class LanceVersionSource:
    """Changes of one LanceDB table as the diff between two of its versions."""

    name = "lance"

    def __init__(self, uri: ConnectorURI) -> None:
        self.uri = uri
        self.tables = LanceTables(uri)
        self.config = self.tables.config
        if self.config.version is not None:
            raise ConfigError(
                "lancedb: sync follows the table's latest version: remove ?version= from the "
                "source URI"
            )
        self._history = False  # the table keeps per-row versions (once seen, always)

    @property
    def _where(self) -> str:
        return self.tables.where

    def _open(self, version: int | None = None) -> Any:
        return self.tables.open(version)

    def start(self) -> str:
        return str(int(self._open().version))

    def changes(self, position: str, max_changes: int) -> Iterator[ChangeSet]:
        from vecmigrate.connectors.lancedb.errors import lance_errors

        applied = int(position)
        latest = self._open()
        upto = int(latest.version)
        if upto == applied:
            return
        if upto < applied:
            raise TerminalError(
                f"{self._where} is at version {upto}, before the sync's position {applied} "
                "(dropped and created again?): sync again with --restart"
            )
        try:
            old = self._open(applied)
        except NotFoundError as exc:
            raise TerminalError(
                f"{self._where}: version {applied}, the last one applied, no longer exists "
                "(optimize cleaned it up), so what changed since cannot be known: sync again "
                "with --restart"
            ) from exc
        new = self._open(upto)
        oldest = self._committed_after(latest, applied)
        with lance_errors(f"diff versions {applied} and {upto} of {self._where}"):
            touched = (
                self._by_row_history(old, new, applied)
                if self._keeps_history(new)
                else self._by_content(applied, upto)
            )
            pending: list[Any] = []
            for ids in touched:
                pending.extend(ids)
                while len(pending) >= max_changes:
                    # the diff is applied whole before the position moves: a crash redoes it
                    chunk, pending = pending[:max_changes], pending[max_changes:]
                    yield ChangeSet(position=str(applied), ids=chunk, changes=len(chunk),
                                    oldest_commit=oldest)  # fmt: skip
        yield ChangeSet(position=str(upto), ids=pending, changes=len(pending), oldest_commit=oldest)

    def _committed_after(self, table: Any, version: int) -> float | None:
        """When the first version after ``version`` was committed (unix time)."""
        for v in table.list_versions():
            if int(v["version"]) > version:
                return float(v["timestamp"].timestamp())  # naive local time, as Lance gives it
        return None

    def _keeps_history(self, table: Any) -> bool:
        if not self._history:
            try:
                probe = table.search().where(_HISTORY_PROBE).select([self.config.id_column])
                self._history = probe.limit(1).to_arrow().num_rows > 0
            except (ValueError, RuntimeError):
                self._history = False  # a Lance without row history columns
        return self._history

    def _by_row_history(self, old: Any, new: Any, applied: int) -> Iterator[list[Any]]:
        """Ids written after ``applied`` (row versions), then ids deleted since (row ids)."""
        id_column = self.config.id_column
        written = (
            new.search()
            .where(f"_row_last_updated_at_version > {applied}")
            .select([id_column])
            .limit(None)
            .to_batches(READ_BATCH)
        )
        for batch in written:
            yield batch.column(id_column).to_pylist()
        kept = int(new.count_rows(f"_row_created_at_version <= {applied}"))
        if int(old.count_rows()) == kept:
            return  # every row of the old version is still there: nothing was deleted
        rows = old.search().select([id_column]).with_row_id(True).limit(None)
        for batch in _rebatched(rows.to_batches(READ_BATCH), READ_BATCH):
            row_ids = batch.column("_rowid")
            live = new.take_row_ids(row_ids.to_pylist()).select([id_column]).with_row_id()
            still = live.to_arrow().column("_rowid")
            gone = pc.invert(pc.is_in(row_ids, value_set=still))
            yield pc.filter(batch.column(id_column), gone).to_pylist()

    def _by_content(self, applied: int, upto: int) -> Iterator[list[Any]]:
        """Ids inserted, deleted or changed between the two versions (content hashes)."""
        from vecmigrate.connectors.lancedb.connector import LanceDBConnector

        sides = [
            LanceDBConnector(
                dataclasses.replace(self.uri, options={**self.uri.options, "version": str(v)})
            )
            for v in (applied, upto)
        ]
        try:
            spec = sides[0].describe()
            columns = [n for n in spec.arrow_schema().names if n != ID]
            rows = max(sides[0].count(), sides[1].count())
            streams = [_fingerprint_stream(side, columns) for side in sides]
            for diff in diff_by_id(streams[0], streams[1], rows=rows):
                yield diff.only_left + diff.only_right + diff.changed
        finally:
            for side in sides:
                side.close()

    def acknowledge(self, position: str) -> None:
        """Nothing to release: versions stay until LanceDB's own cleanup removes them."""

    def backlog(self, position: str) -> dict[str, Any]:
        try:
            latest = self._open()
            upto = int(latest.version)
            oldest = self._committed_after(latest, int(position))
        except VecmigrateError as exc:
            return {"position": position, "error": exc.one_line()}
        out: dict[str, Any] = {
            "position": position,
            "source_position": str(upto),
            "pending_versions": max(0, upto - int(position)),
        }
        if oldest is not None:
            import time

            out["lag_s"] = round(max(0.0, time.time() - oldest), 3)
        return out

    def cleanup(self) -> None:
        """The source was never changed: nothing to drop."""

    def close(self) -> None:
        self.tables.close()


def _rebatched(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Batches of about ``rows`` rows (Lance yields one small batch per fragment)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending).combine_chunks()
            pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending).combine_chunks()


def _fingerprint_stream(conn: Any, columns: list[str]) -> Iterator[pa.Table]:
    for part in conn.partitions(1):
        for sb in conn.scan(part, None, READ_BATCH):
            yield fingerprints(sb.batch, columns)
