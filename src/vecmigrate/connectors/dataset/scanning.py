"""Reading helpers shared by file-backed sources: partitions, cursors, fetch and kNN by scan."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.connectors.base import Partition, QueryResult
from vecmigrate.connectors.memory.connector import knn
from vecmigrate.errors import ConfigError
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import ID, VectorField


def file_partitions(files: Sequence[tuple[str, int]], hint: int) -> list[Partition]:
    """Up to ``hint`` partitions of consecutive files; bounds list the files (relative paths)."""
    if not files:
        return [Partition(key="empty", bounds={"files": []}, estimated_rows=0)]
    groups = np.array_split(np.arange(len(files)), max(1, min(hint, len(files))))
    return [
        Partition(
            key=f"files-{int(g[0]):05d}-{int(g[-1]):05d}",
            bounds={"files": [files[i][0] for i in g]},
            estimated_rows=sum(files[i][1] for i in g),
        )
        for g in groups
    ]


def partition_files(partition: Partition, all_files: Sequence[str]) -> list[str]:
    files = partition.bounds.get("files")
    return list(all_files) if files is None else [str(f) for f in files]


def parse_cursor(cursor: str | None) -> tuple[int, int]:
    """``"FILE_INDEX:ROW"`` -> (index of the file in the partition, rows of it already read)."""
    if cursor is None:
        return 0, 0
    try:
        index, row = cursor.split(":")
        out = int(index), int(row)
    except ValueError:
        raise ConfigError(f"bad dataset cursor {cursor!r} (expected FILE_INDEX:ROW)") from None
    if out[0] < 0 or out[1] < 0:
        raise ConfigError(f"bad dataset cursor {cursor!r}")
    return out


def id_array(ids: Sequence[Any], id_type: pa.DataType) -> pa.Array:
    """The ids that can be of the collection's id type (others cannot match anything)."""
    try:
        return pa.array(list(ids), id_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        ok = []
        for value in ids:
            try:
                pa.array([value], id_type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                continue
            ok.append(value)
        return pa.array(ok, id_type)


def fetch_by_scan(
    batches: Iterable[pa.RecordBatch], ids: Sequence[Any], schema: pa.Schema
) -> pa.RecordBatch:
    """The rows whose id is in ``ids``, found by reading every batch."""
    wanted = id_array(ids, schema.field(ID).type)
    found: list[pa.RecordBatch] = []
    left = len(set(wanted.to_pylist()))
    for batch in batches:
        if left == 0:
            break
        hit = batch.filter(pc.is_in(batch.column(ID), value_set=wanted))
        if hit.num_rows:
            found.append(hit)
            left -= hit.num_rows
    if not found:
        return pa.RecordBatch.from_pylist([], schema=schema)
    return pa.Table.from_batches(found, schema).combine_chunks().to_batches()[0]


def knn_by_scan(
    batches: Iterable[pa.RecordBatch], queries: np.ndarray, k: int, vf: VectorField
) -> QueryResult:
    """Exact top-k (distance: smaller is nearer) over every batch, keeping k per query."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    best_ids = np.empty((len(q), 0), dtype=object)
    best_dist = np.empty((len(q), 0), dtype=np.float32)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        matrix = vectors_numpy(batch.column(vf.name))
        idx, dist = knn(matrix, q, k, vf.metric)
        ids = np.asarray(batch.column(ID).to_pylist(), dtype=object)[idx]
        cand_ids = np.concatenate([best_ids, ids], axis=1)
        cand_dist = np.concatenate([best_dist, dist.astype(np.float32)], axis=1)
        order = np.argsort(cand_dist, axis=1, kind="stable")[:, :k]
        best_ids = np.take_along_axis(cand_ids, order, axis=1)
        best_dist = np.take_along_axis(cand_dist, order, axis=1)
    return QueryResult(
        ids=[list(row) for row in best_ids], scores=[[float(d) for d in row] for row in best_dist]
    )
