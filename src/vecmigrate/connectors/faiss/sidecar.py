"""The sidecar folder next to a FAISS index: what FAISS cannot hold.

``<index>.vecmigrate/`` keeps

- ``commit.json``: format version, the generation last committed, the CollectionSpec and how
  vectors are stored (metric in the index, whether cosine vectors were normalised);
- ``rows-<generation>.parquet``: one row per vector in the index's internal order: ``_label``
  (the FAISS int64 label), ``id``, ``document`` and the metadata columns; its schema metadata
  says which journal entries it already contains and the next free label;
- ``journal/<seq>.<upsert|delete>.arrow``: every write since the last commit (Arrow IPC), so
  a crash between ``upsert`` and ``finalize`` loses nothing: opening replays them.

A commit writes the new rows file, then the index (temp file + rename), then ``commit.json``,
then drops the journal. Whatever step a crash interrupts, the index matches either the
committed rows file or the next one, and replaying the journal (upserts and deletes by id)
gives the same result again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from vecmigrate.errors import TerminalError
from vecmigrate.spec import CollectionSpec

FORMAT = "vecmigrate-faiss-sidecar"
VERSION = 1
LABEL = "_label"
_JOURNAL_NAME = re.compile(r"^(\d{12})\.(upsert|delete)\.arrow$")
_UPTO = b"vecmigrate.journal_upto"
_NEXT_LABEL = b"vecmigrate.next_label"


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], *, sync: bool = True) -> None:
    """Write ``path`` through a temp file in the same folder and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if sync:
        sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make renames in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class Commit:
    """What ``commit.json`` says."""

    generation: int
    spec: CollectionSpec
    storage: dict[str, Any]  # factory, index_metric, normalized

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "generation": self.generation,
                "storage": self.storage,
                "spec": self.spec.to_dict(),
            },
            indent=2,
        )


@dataclass
class RowsFile:
    table: pa.Table
    journal_upto: int  # journal entries up to this sequence number are included
    next_label: int  # the next label for a new string id


@dataclass(frozen=True)
class JournalEntry:
    seq: int
    kind: str  # upsert | delete
    path: Path


class Sidecar:
    """Files of one index's sidecar folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.journal = folder / "journal"
        self._lock_file: IO[bytes] | None = None

    @property
    def commit_path(self) -> Path:
        return self.folder / "commit.json"

    def exists(self) -> bool:
        return self.commit_path.exists()

    # -- commit -------------------------------------------------------------------------
    def read_commit(self) -> Commit:
        raw = json.loads(self.commit_path.read_text(encoding="utf-8"))
        if raw.get("format") != FORMAT or int(raw.get("version", 0)) > VERSION:
            raise TerminalError(
                f"faiss: {self.commit_path} is not a vecmigrate sidecar this version can read "
                f"(format {raw.get('format')!r}, version {raw.get('version')!r})"
            )
        return Commit(
            generation=int(raw["generation"]),
            spec=CollectionSpec.model_validate(raw["spec"]),
            storage=dict(raw["storage"]),
        )

    def write_commit(self, commit: Commit) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = commit.to_json().encode("utf-8")

        def write(f: IO[bytes]) -> None:
            f.write(data)

        atomic_write(self.commit_path, write)

    # -- rows ---------------------------------------------------------------------------
    def rows_path(self, generation: int) -> Path:
        return self.folder / f"rows-{generation:09d}.parquet"

    def read_rows(self, generation: int) -> RowsFile | None:
        path = self.rows_path(generation)
        if not path.exists():
            return None
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        return RowsFile(
            table=table.replace_schema_metadata(None),
            journal_upto=int(meta.get(_UPTO, b"0")),
            next_label=int(meta.get(_NEXT_LABEL, b"0")),
        )

    def write_rows(self, generation: int, rows: RowsFile) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        table = rows.table.replace_schema_metadata(
            {_UPTO: str(rows.journal_upto).encode(), _NEXT_LABEL: str(rows.next_label).encode()}
        )
        atomic_write(self.rows_path(generation), lambda f: pq.write_table(table, f))

    def drop_rows_except(self, generation: int) -> None:
        keep = self.rows_path(generation).name
        for path in self.folder.glob("rows-*.parquet"):
            if path.name != keep:
                path.unlink(missing_ok=True)

    # -- journal ------------------------------------------------------------------------
    def journal_entries(self) -> list[JournalEntry]:
        if not self.journal.exists():
            return []
        out = []
        for path in self.journal.iterdir():
            m = _JOURNAL_NAME.match(path.name)
            if m:
                out.append(JournalEntry(seq=int(m.group(1)), kind=m.group(2), path=path))
        return sorted(out, key=lambda e: e.seq)

    def write_journal(self, seq: int, kind: str, batch: pa.RecordBatch) -> JournalEntry:
        self.journal.mkdir(parents=True, exist_ok=True)
        path = self.journal / f"{seq:012d}.{kind}.arrow"

        def write(f: IO[bytes]) -> None:
            with pa.ipc.new_file(f, batch.schema) as writer:
                writer.write_batch(batch)

        atomic_write(path, write, sync=False)
        return JournalEntry(seq=seq, kind=kind, path=path)

    @staticmethod
    def read_journal(entry: JournalEntry) -> pa.Table:
        with pa.OSFile(str(entry.path), "rb") as f:
            return pa.ipc.open_file(f).read_all()

    def drop_journal(self, upto: int) -> None:
        for entry in self.journal_entries():
            if entry.seq <= upto:
                entry.path.unlink(missing_ok=True)

    # -- life cycle ---------------------------------------------------------------------
    def lock(self) -> None:
        """Hold an exclusive lock on the sidecar while this process writes (POSIX only)."""
        if self._lock_file is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.folder / "lock", "ab")  # noqa: SIM115 - held until unlock()
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            f.close()
            raise TerminalError(
                f"faiss: another process is writing {self.folder.parent} (lock held on "
                f"{self.folder / 'lock'})"
            ) from exc
        self._lock_file = f

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def remove(self) -> None:
        self.unlock()
        shutil.rmtree(self.folder, ignore_errors=True)
