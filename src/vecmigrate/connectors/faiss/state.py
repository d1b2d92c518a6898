"""An open FAISS index in memory, and applying journaled writes to it.

Writes are applied in bulk: of all journaled upserts and deletes, the last one per id wins.
New ids are appended to the index; replaced or deleted ones are removed first (Flat removes
in place; HNSW and IVF are rebuilt, see ``indexes.replace_rows``). The sidecar rows stay
aligned with the index's internal order, so position ``i`` of one is position ``i`` of the
other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.connectors.faiss.errors import faiss_errors
from vecmigrate.connectors.faiss.indexes import VectorReader, replace_rows
from vecmigrate.connectors.faiss.sidecar import LABEL
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import ID, CollectionSpec


@dataclass
class JournalOp:
    seq: int
    kind: str  # upsert | delete
    table: pa.Table


@dataclass
class OpenIndex:
    """The FAISS object, its sidecar rows (None without a sidecar), the unapplied journal."""

    index: Any
    reader: VectorReader
    spec: CollectionSpec
    storage: dict[str, Any]
    rows: pa.Table | None  # aligned with the index's internal order
    generation: int = 0
    journal_upto: int = 0
    next_label: int = 0
    next_seq: int = 1
    pending: list[JournalOp] = field(default_factory=list)
    pending_rows: int = 0
    dirty: bool = False
    sorted_labels: np.ndarray | None = None
    order: np.ndarray | None = None  # positions in label order; None when already sorted

    @property
    def normalized(self) -> bool:
        return bool(self.storage.get("normalized"))

    def label_order(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The labels sorted, and the positions in that order (None: already sorted)."""
        if self.sorted_labels is None:
            labels = self.reader.labels
            if len(labels) < 2 or bool(np.all(labels[1:] >= labels[:-1])):
                self.sorted_labels, self.order = labels, None
            else:
                order = np.argsort(labels, kind="stable")
                self.sorted_labels, self.order = labels[order], order
        return self.sorted_labels, self.order

    def positions_of(self, labels: np.ndarray) -> np.ndarray:
        """Internal positions of the labels that exist (all rows of a repeated label)."""
        sorted_labels, order = self.label_order()
        lo = np.searchsorted(sorted_labels, labels, "left")
        hi = np.searchsorted(sorted_labels, labels, "right")
        if bool(np.all(hi - lo <= 1)):
            found = lo[hi > lo]
        else:
            found = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])
        found = found.astype(np.int64)
        return found if order is None else order[found]


def rows_schema(spec: CollectionSpec) -> pa.Schema:
    """The sidecar rows: the label, then the collection's columns without vectors."""
    vectors = {v.name for v in spec.vectors}
    fields = [f for f in spec.arrow_schema() if f.name not in vectors]
    return pa.schema([pa.field(LABEL, pa.int64(), False), *fields])


def align_rows(table: pa.Table, spec: CollectionSpec) -> pa.Table:
    """``table`` with exactly the rows-schema columns (new metadata fields as nulls)."""
    schema = rows_schema(spec)
    columns = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            columns.append(col if col.type == f.type else col.cast(f.type))
        else:
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, f.type)]))
    return pa.Table.from_arrays(columns, schema=schema)


def _matrix(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """A fixed-size-list column as one new float32 matrix (one copy, chunk by chunk)."""
    parts = [vectors_numpy(chunk) for chunk in column.chunks if len(chunk)]
    if not parts:
        return np.zeros((0, dim), dtype=np.float32)
    return np.concatenate(parts) if len(parts) > 1 else np.array(parts[0], order="C")


def _last_writes(state: OpenIndex) -> tuple[pa.Table, pa.Array]:
    """The rows to upsert (the last upsert of each id whose last write is one) and every id
    the journal touches."""
    schema = state.spec.arrow_schema()
    chunks: list[pa.Array] = []
    kinds: list[np.ndarray] = []
    upserts: list[pa.Table] = []
    for op in state.pending:
        chunks.extend(op.table.column(ID).chunks)
        kinds.append(np.full(op.table.num_rows, op.kind == "upsert"))
        if op.kind == "upsert":
            upserts.append(op.table)
    all_ids = pa.chunked_array(chunks, type=schema.field(ID).type)
    is_upsert = np.concatenate(kinds) if kinds else np.zeros(0, dtype=bool)
    table = pa.concat_tables(upserts) if upserts else schema.empty_table()
    if is_upsert.all() and pc.count_distinct(all_ids).as_py() == len(all_ids):
        return table, all_ids.combine_chunks()
    last = (
        pa.table({ID: all_ids, "pos": np.arange(len(all_ids), dtype=np.int64)})
        .group_by(ID)
        .aggregate([("pos", "max")])
    )
    last_pos = np.sort(last.column("pos_max").to_numpy())
    upsert_row = np.cumsum(is_upsert) - 1
    table = table.take(pa.array(upsert_row[last_pos[is_upsert[last_pos]]]))
    return table, last.column(ID).combine_chunks()


def _labels_for(state: OpenIndex, table: pa.Table) -> np.ndarray:
    """FAISS labels of written rows: an int id is its own label; a string id keeps its label,
    a new one takes the next free label."""
    ids = table.column(ID)
    if state.spec.id_type == "int64":
        return np.asarray(ids.to_numpy(), dtype=np.int64)
    assert state.rows is not None
    labels = np.empty(table.num_rows, dtype=np.int64)
    known = np.zeros(table.num_rows, dtype=bool)
    if state.rows.num_rows and table.num_rows:
        pos = pc.index_in(ids, value_set=state.rows.column(ID).combine_chunks())
        pos = pos.combine_chunks() if isinstance(pos, pa.ChunkedArray) else pos
        known = pos.is_valid().to_numpy(zero_copy_only=False)
        old = state.rows.column(LABEL).to_numpy()
        labels[known] = old[pos.fill_null(0).to_numpy()[known]]
    fresh = int((~known).sum())
    labels[~known] = state.next_label + np.arange(fresh, dtype=np.int64)
    state.next_label += fresh
    return labels


def apply_pending(state: OpenIndex, where: str) -> None:
    """Apply the journaled writes to the in-memory index and rows."""
    assert state.rows is not None
    table, touched = _last_writes(state)
    rows = state.rows
    keep: np.ndarray | None = None
    if rows.num_rows and len(touched):
        hit = pc.is_in(rows.column(ID), value_set=touched).to_numpy(zero_copy_only=False)
        if hit.any():
            keep = ~hit
    labels = _labels_for(state, table)
    vf = state.spec.vector()
    vectors = _matrix(table.column(vf.name), vf.dim)
    if state.normalized:
        faiss.normalize_L2(vectors)
    with faiss_errors(f"adding vectors to {where}"):
        replace_rows(state.index, state.reader, keep, vectors, labels)
    label_field = pa.field(LABEL, pa.int64(), False)
    added = align_rows(table.append_column(label_field, [labels]), state.spec)
    merged = pa.concat_tables([rows if keep is None else rows.filter(pa.array(keep)), added])
    state.rows = merged.combine_chunks() if merged.column(0).num_chunks > 64 else merged
    state.reader = VectorReader(state.index)
    state.journal_upto = state.pending[-1].seq
    state.pending = []
    state.pending_rows = 0
    state.dirty = True
    state.sorted_labels = None
    state.order = None
