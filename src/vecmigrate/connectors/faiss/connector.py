"""FAISS index files, with a sidecar so string ids, documents and metadata round trip.

Writes are journaled in the sidecar first (durable per ``upsert``, idempotent by id) and
applied to the in-memory index in bulk; ``finalize`` commits the index file and the sidecar
(temp files + renames). A ``.index`` written by someone else (no sidecar) is read as it is:
ids are the FAISS int64 labels, with no documents or metadata.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.connectors.base import (
    Capabilities,
    Connector,
    IfExists,
    Partition,
    QueryResult,
    ScanBatch,
    WriteToken,
)
from vecmigrate.connectors.faiss.config import FaissConfig
from vecmigrate.connectors.faiss.errors import faiss_errors
from vecmigrate.connectors.faiss.indexes import (
    VectorReader,
    build,
    describe,
    index_metric,
    inner,
    normalized,
    tune,
)
from vecmigrate.connectors.faiss.sidecar import LABEL, Commit, RowsFile, Sidecar, sync_folder
from vecmigrate.connectors.faiss.state import (
    JournalOp,
    OpenIndex,
    align_rows,
    apply_pending,
    rows_schema,
)
from vecmigrate.errors import DataError, NotFoundError, SchemaMismatch, TerminalError, Unsupported
from vecmigrate.records import conform, fixed_size_vectors
from vecmigrate.spec import ID, CollectionSpec, Metric, VectorField
from vecmigrate.uri import ConnectorURI

APPLY_ROWS = 65_536  # journaled rows applied to the in-memory index in one go


def _write_index(index: Any, path: Path) -> None:
    """Write an index file through a temp file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        faiss.write_index(index, str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sync_folder(path.parent)


def _id_array(ids: Sequence[Any], id_type: pa.DataType) -> pa.Array:
    """The ids as an Arrow array of the collection's id type, leaving out any that cannot be."""
    try:
        return pa.array(list(ids), id_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        good = []
        for value in ids:
            try:
                pa.array([value], id_type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                continue
            good.append(value)
        return pa.array(good, id_type)


class FaissConnector(Connector):
    scheme = "faiss"
    capabilities = Capabilities(
        query=True,
        fetch=True,
        delete=True,
        normalizes_cosine=True,
        notes=(
            "cosine is stored as inner product over L2-normalised vectors (FAISS has no cosine)",
            "ids, documents and metadata live in a sidecar folder <index>.vecmigrate",
            "writes are journaled per upsert; finalize() rewrites the index file",
            "query scores are FAISS's: squared L2, or inner product (cosine similarity)",
            "an index without a sidecar is read with its int64 labels as ids; it is not written",
        ),
    )

    @classmethod
    def single_process(cls, uri: ConnectorURI) -> str | None:
        return "a FAISS index is held in one process's memory (its sidecar folder is locked)"

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = FaissConfig.from_uri(uri)
        self.sidecar = Sidecar(self.config.sidecar)
        self._lock = threading.RLock()
        self._state: OpenIndex | None = None

    # -- life cycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Forget the in-memory index; unfinalized writes stay in the journal for next time."""
        with self._lock:
            self._state = None
            self.sidecar.unlock()

    def exists(self) -> bool:
        return self.config.path.exists()

    # -- loading ------------------------------------------------------------------------
    def _load(self) -> OpenIndex:
        if self._state is not None:
            return self._state
        path = self.config.path
        if not path.exists():
            raise NotFoundError(f"faiss: index file {path} does not exist")
        with faiss_errors(f"reading {path}"):
            index = faiss.read_index(str(path))
            tune(
                index,
                ef_construction=self.config.ef_construction,
                ef_search=self.config.ef_search,
                nprobe=self.config.nprobe,
            )
            if self.sidecar.exists():
                self._state = self._load_with_sidecar(index)
            else:
                self._state = self._load_without_sidecar(index)
        return self._state

    def _load_with_sidecar(self, index: Any) -> OpenIndex:
        commit = self.sidecar.read_commit()
        reader = VectorReader(index)
        found: tuple[int, RowsFile] | None = None
        for generation in (commit.generation, commit.generation + 1):
            rows_file = self.sidecar.read_rows(generation)
            if rows_file is not None and np.array_equal(
                rows_file.table.column(LABEL).to_numpy(), reader.labels
            ):
                found = (generation, rows_file)
                break
        if found is None:
            raise TerminalError(
                f"faiss: {self.config.path} and its sidecar {self.sidecar.folder} disagree "
                "(their labels differ): one of them was changed outside vecmigrate"
            )
        generation, rows_file = found
        state = OpenIndex(
            index=index,
            reader=reader,
            spec=commit.spec,
            storage=commit.storage,
            rows=align_rows(rows_file.table, commit.spec),
            generation=generation,
            journal_upto=rows_file.journal_upto,
            next_label=max(rows_file.next_label, int(reader.labels.max(initial=-1)) + 1),
            next_seq=rows_file.journal_upto + 1,
        )
        for entry in self.sidecar.journal_entries():
            state.next_seq = max(state.next_seq, entry.seq + 1)
            if entry.seq <= rows_file.journal_upto:
                continue
            table = self.sidecar.read_journal(entry)
            state.pending.append(JournalOp(entry.seq, entry.kind, table))
            state.pending_rows += table.num_rows
            if state.pending_rows >= APPLY_ROWS and index.is_trained:
                self._apply(state)
        return state

    def _load_without_sidecar(self, index: Any) -> OpenIndex:
        path = self.config.path
        metric = index_metric(index, str(path))
        spec = CollectionSpec(
            name=path.stem,
            id_type="int64",
            vectors=[VectorField(name="vector", dim=int(index.d), metric=metric)],
            id_mapping="FAISS int64 labels (no sidecar: no documents or metadata)",
        )
        storage = {"factory": None, "index_metric": metric.value, "normalized": False}
        return OpenIndex(
            index=index, reader=VectorReader(index), spec=spec, storage=storage, rows=None
        )

    def _ready(self) -> OpenIndex:
        """The open index with every journaled write applied (in memory)."""
        state = self._load()
        if state.pending:
            self._apply(state)
        return state

    def _writable(self) -> OpenIndex:
        state = self._load()
        if state.rows is None:
            raise Unsupported(
                f"faiss: {self.config.path} was not written by vecmigrate (no sidecar "
                f"{self.sidecar.folder}): it can be read, not written"
            )
        return state

    def _apply(self, state: OpenIndex) -> None:
        """Apply the journal in memory; on failure forget the state (reloaded from disk)."""
        try:
            apply_pending(state, str(self.config.path))
        except BaseException:
            self._state = None
            raise

    # -- source -------------------------------------------------------------------------
    def describe(self) -> CollectionSpec:
        with self._lock:
            state = self._ready()
            spec = state.spec.model_copy(deep=True)
            vf = spec.vector()
            facts = describe(state.index, vf.name, vf.metric)
            spec.indexes = [facts.config]
            spec.system = {
                **spec.system,
                "faiss": {
                    "class": facts.faiss_class,
                    "factory": state.storage.get("factory"),
                    "index_metric": index_metric(state.index, str(self.config.path)).value,
                    "normalized": state.normalized,
                    "exact": facts.exact,
                    "labels": facts.labels,
                    "sidecar": state.rows is not None,
                    "ntotal": int(state.index.ntotal),
                },
            }
            return spec

    def count(self) -> int:
        with self._lock:
            return int(self._ready().index.ntotal)

    def partitions(self, hint: int) -> list[Partition]:
        """Label ranges of about equal size (``lo`` inclusive, ``hi`` exclusive, None: open)."""
        with self._lock:
            state = self._ready()
            sorted_labels, _ = state.label_order()
        n = len(sorted_labels)
        parts = max(1, min(hint, n // 1000 or 1))
        cuts = sorted(
            {int(sorted_labels[i]) for i in np.linspace(0, n, parts + 1)[1:-1].astype(int)}
        )
        edges: list[int | None] = [None, *cuts, None]
        out = []
        for lo, hi in itertools.pairwise(edges):
            a = 0 if lo is None else int(np.searchsorted(sorted_labels, lo, "left"))
            b = n if hi is None else int(np.searchsorted(sorted_labels, hi, "left"))
            out.append(
                Partition(
                    key=f"labels-{'min' if lo is None else lo}-{'max' if hi is None else hi}",
                    bounds={"lo": lo, "hi": hi},
                    estimated_rows=b - a,
                )
            )
        return out

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        """Rows in label order; the cursor is the last label read (runs of one label kept whole)."""
        lo, hi = partition.bounds.get("lo"), partition.bounds.get("hi")
        last = int(cursor) if cursor is not None else None
        while True:
            with self._lock:
                state = self._ready()
                sorted_labels, order = state.label_order()
                n = len(sorted_labels)
                if last is not None:
                    a = int(np.searchsorted(sorted_labels, last, "right"))
                else:
                    a = 0 if lo is None else int(np.searchsorted(sorted_labels, lo, "left"))
                end = n if hi is None else int(np.searchsorted(sorted_labels, hi, "left"))
                if a >= end:
                    return
                b = min(a + batch_size, end)
                b = min(int(np.searchsorted(sorted_labels, sorted_labels[b - 1], "right")), end)
                batch = self._batch(state, slice(a, b) if order is None else order[a:b])
                last = int(sorted_labels[b - 1])
            yield ScanBatch(batch=batch, cursor=str(last))

    def _batch(self, state: OpenIndex, positions: slice | np.ndarray) -> pa.RecordBatch:
        spec = state.spec
        vf = spec.vector()
        with faiss_errors(f"reading vectors of {self.config.path}"):
            if isinstance(positions, slice):
                vectors = state.reader.range(positions.start, positions.stop)
                labels = state.reader.labels[positions]
            else:
                vectors = state.reader.vectors(positions)
                labels = state.reader.labels[positions]
        meta: pa.Table | None = None
        if state.rows is not None:
            if isinstance(positions, slice):
                meta = state.rows.slice(positions.start, positions.stop - positions.start)
            else:
                meta = state.rows.take(pa.array(positions, pa.int64()))
        schema = spec.arrow_schema()
        arrays: list[pa.Array] = []
        for f in schema:
            if f.name == vf.name:
                arrays.append(fixed_size_vectors(vectors))
            elif meta is None:
                arrays.append(pa.array(labels, pa.int64()))
            else:
                arrays.append(meta.column(f.name).combine_chunks())
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        with self._lock:
            state = self._ready()
            wanted = _id_array(ids, state.spec.arrow_schema().field(ID).type)
            if state.rows is None:
                positions = state.positions_of(
                    np.asarray(wanted.to_numpy(zero_copy_only=False), dtype=np.int64)
                )
            else:
                idx = pc.index_in(wanted, value_set=state.rows.column(ID).combine_chunks())
                positions = np.asarray(idx.drop_null().to_numpy(), dtype=np.int64)
            return self._batch(state, positions)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        """FAISS search (exact for Flat); cosine queries are normalised first."""
        with self._lock:
            state = self._ready()
            q = np.ascontiguousarray(vectors, dtype=np.float32)
            if q.ndim == 1:
                q = q[None, :]
            dim = int(state.index.d)
            if q.shape[1] != dim:
                raise DataError(
                    f"query vectors have {q.shape[1]} dimensions, {self.config.path} has {dim}"
                )
            if state.normalized:
                q = normalized(q)
            if state.index.ntotal == 0 or k < 1:
                return QueryResult(ids=[[] for _ in q], scores=[[] for _ in q])
            with faiss_errors(f"searching {self.config.path}"):
                distances, labels = state.index.search(q, k)
            found = labels >= 0
            flat = labels[found]
            if state.rows is None or state.spec.id_type == "int64":
                values: list[Any] = [int(x) for x in flat]
            else:  # labels of an index with a sidecar are unique
                positions = state.positions_of(flat)
                values = state.rows.column(ID).take(pa.array(positions)).to_pylist()
            ids_out: list[list[Any]] = []
            scores_out: list[list[float]] = []
            start = 0
            for row_found, row_scores in zip(found, distances, strict=True):
                stop = start + int(row_found.sum())
                ids_out.append(values[start:stop])
                scores_out.append([float(x) for x in row_scores[row_found]])
                start = stop
            return QueryResult(ids=ids_out, scores=scores_out)

    # -- target -------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        dense = [v for v in spec.vectors if not v.sparse]
        if len(dense) != 1 or len(spec.vectors) != 1:
            raise SchemaMismatch(
                f"faiss: an index holds exactly one dense vector field; the collection has "
                f"{', '.join(v.name for v in spec.vectors) or 'none'}"
            )
        spec = spec.model_copy(deep=True)
        if self.config.metric is not None:
            spec.vectors[0].metric = self.config.metric
        with self._lock:
            if self.exists():
                if if_exists is IfExists.FAIL:
                    raise SchemaMismatch(f"faiss: index {self.config.path} already exists")
                if if_exists is IfExists.REUSE:
                    self._reuse(spec)
                    return
                self.drop()
            elif self.sidecar.folder.exists():
                self.sidecar.remove()  # left by a create that did not finish
            self._create_new(spec)

    def _reuse(self, spec: CollectionSpec) -> None:
        state = self._writable()
        old, new = state.spec.vector(), spec.vector()
        if old.name != new.name:
            raise SchemaMismatch(
                f"faiss: index {self.config.path} holds vector field {old.name!r}, the source "
                f"has {new.name!r} (map the field name, or use if_exists=replace)"
            )
        if (old.dim, old.metric) != (new.dim, new.metric):
            raise SchemaMismatch(
                f"faiss: index {self.config.path} holds vectors of dim {old.dim} ({old.metric}), "
                f"the source has dim {new.dim} ({new.metric})"
            )
        if state.spec.id_type != spec.id_type:
            raise SchemaMismatch(
                f"faiss: index {self.config.path} has {state.spec.id_type} ids, the source has "
                f"{spec.id_type} ids"
            )
        added = []
        for m in spec.metadata:
            have = state.spec.metadata_field(m.name)
            if have is None:
                added.append(m)
            elif have.type is not m.type:
                raise SchemaMismatch(
                    f"faiss: metadata field {m.name!r} of {self.config.path} is {have.type}, "
                    f"the source has {m.type}"
                )
        self.sidecar.lock()
        if added or (spec.has_document and not state.spec.has_document):
            state.spec = state.spec.model_copy(
                update={
                    "metadata": [*state.spec.metadata, *added],
                    "has_document": state.spec.has_document or spec.has_document,
                }
            )
            assert state.rows is not None
            state.rows = align_rows(state.rows, state.spec)
            with faiss_errors(f"writing the sidecar of {self.config.path}"):
                self.sidecar.write_commit(Commit(state.generation, state.spec, state.storage))

    def _create_new(self, spec: CollectionSpec) -> None:
        vf = spec.vector()
        layout = self.config.layout
        path = self.config.path
        storage = {
            "factory": layout.factory,
            "index_metric": (Metric.L2 if vf.metric is Metric.L2 else Metric.IP).value,
            "normalized": vf.metric is Metric.COSINE,
        }
        with faiss_errors(f"creating {path}"):
            index = build(
                layout,
                vf.dim,
                vf.metric,
                ef_construction=self.config.ef_construction,
                ef_search=self.config.ef_search,
                nprobe=self.config.nprobe,
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            self.sidecar.lock()
            rows = rows_schema(spec).empty_table()
            self.sidecar.write_rows(0, RowsFile(rows, journal_upto=0, next_label=0))
            self.sidecar.write_commit(Commit(0, spec, storage))
            _write_index(index, path)  # the index file appearing makes the collection exist
        self._state = OpenIndex(
            index=index, reader=VectorReader(index), spec=spec, storage=storage, rows=rows
        )

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        with self._lock:
            state = self._writable()
            rows = conform(batch, state.spec)
            if state.spec.id_type == "int64" and pc.any(pc.equal(rows.column(ID), -1)).as_py():
                raise DataError("id -1 is reserved by FAISS (it marks 'no result')", field=ID)
            self._journal(state, "upsert", rows)
            index = state.index
            sub = inner(index)
            trained_or_enough = index.is_trained or state.pending_rows >= 40 * int(
                getattr(sub, "nlist", 1)
            )
            if state.pending_rows >= APPLY_ROWS and trained_or_enough:
                self._apply(state)

    def delete(self, ids: Sequence[Any]) -> None:
        with self._lock:
            state = self._writable()
            wanted = _id_array(ids, state.spec.arrow_schema().field(ID).type)
            if len(wanted):
                self._journal(state, "delete", pa.record_batch([wanted], names=[ID]))

    def _journal(self, state: OpenIndex, kind: str, batch: pa.RecordBatch) -> None:
        self.sidecar.lock()
        seq = state.next_seq
        with faiss_errors(f"journaling a write to {self.config.path}"):
            self.sidecar.write_journal(seq, kind, batch)
        state.next_seq = seq + 1
        state.pending.append(JournalOp(seq, kind, pa.Table.from_batches([batch])))
        state.pending_rows += batch.num_rows

    def finalize(self, spec: CollectionSpec) -> None:
        """Apply the journal and commit: rows file, index file, commit.json, then drop journal."""
        with self._lock:
            state = self._ready()
            if state.rows is None or not state.dirty:
                return
            generation = state.generation + 1
            rows = RowsFile(state.rows.combine_chunks(), state.journal_upto, state.next_label)
            with faiss_errors(f"writing {self.config.path}"):
                self.sidecar.write_rows(generation, rows)
                _write_index(state.index, self.config.path)
                self.sidecar.write_commit(Commit(generation, state.spec, state.storage))
                self.sidecar.drop_rows_except(generation)
                self.sidecar.drop_journal(state.journal_upto)
            state.rows = rows.table
            state.generation = generation
            state.dirty = False

    def drop(self) -> None:
        with self._lock:
            self._state = None
            with faiss_errors(f"removing {self.config.path}"):
                self.sidecar.remove()
                self.config.path.unlink(missing_ok=True)
