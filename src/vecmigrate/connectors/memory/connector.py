"""A collection held in process memory as one Arrow table."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
from vecmigrate.connectors.memory.config import MemoryConfig
from vecmigrate.errors import NotFoundError, SchemaMismatch, TransientError
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import ID, CollectionSpec, Metric
from vecmigrate.uri import ConnectorURI


@dataclass
class MemoryCollection:
    spec: CollectionSpec
    table: pa.Table
    lock: threading.Lock = field(default_factory=threading.Lock)
    upserts: int = 0


class MemoryStore:
    """The named in-memory collections of this process (explicit, resettable)."""

    collections: ClassVar[dict[str, MemoryCollection]] = {}

    @classmethod
    def reset(cls) -> None:
        cls.collections.clear()

    @classmethod
    def put(cls, name: str, spec: CollectionSpec, table: pa.Table) -> None:
        cls.collections[name] = MemoryCollection(spec=spec, table=table.cast(spec.arrow_schema()))


def knn(
    matrix: np.ndarray, queries: np.ndarray, k: int, metric: Metric
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by brute force: (indices, distances); smaller distance is nearer."""
    q = queries.astype(np.float64)  # float64: no overflow for any float32 input
    m = matrix.astype(np.float64)
    if metric is Metric.COSINE:
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
        mn = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-30)
        dist = 1.0 - qn @ mn.T
    elif metric is Metric.IP:
        dist = -(q @ m.T)
    else:
        dist = (q * q).sum(1)[:, None] - 2 * q @ m.T + (m * m).sum(1)[None, :]
    k = min(k, m.shape[0])
    if k == 0:
        return np.zeros((len(q), 0), dtype=np.int64), np.zeros((len(q), 0), dtype=np.float32)
    idx = np.argpartition(dist, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(dist, idx, axis=1)
    order = np.argsort(part, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(part, order, axis=1)


class MemoryConnector(Connector):
    scheme = "memory"
    capabilities = Capabilities(
        query=True, fetch=True, delete=True, sparse_vectors=True, named_vectors=True
    )

    @classmethod
    def single_process(cls, uri: ConnectorURI) -> str | None:
        return "a memory:// collection lives in the process that made it"

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = MemoryConfig.from_uri(uri)

    def _collection(self) -> MemoryCollection:
        coll = MemoryStore.collections.get(self.config.name)
        if coll is None:
            raise NotFoundError(f"memory collection {self.config.name!r} does not exist")
        return coll

    def exists(self) -> bool:
        return self.config.name in MemoryStore.collections

    def describe(self) -> CollectionSpec:
        return self._collection().spec.model_copy(deep=True)

    def count(self) -> int:
        return int(self._collection().table.num_rows)

    def partitions(self, hint: int) -> list[Partition]:
        n = self.count()
        parts = max(1, min(hint, n // 1000 or 1))
        edges = np.linspace(0, n, parts + 1, dtype=np.int64)
        return [
            Partition(
                key=f"rows-{a}-{b}",
                bounds={"start": int(a), "end": int(b)},
                estimated_rows=int(b - a),
            )
            for a, b in itertools.pairwise(edges)
        ]

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        table = self._collection().table
        start = int(partition.bounds.get("start", 0))
        end = int(partition.bounds.get("end", table.num_rows))
        pos = int(cursor) if cursor is not None else start
        while pos < end:
            stop = min(pos + batch_size, end)
            chunk = table.slice(pos, stop - pos).combine_chunks()
            batches = chunk.to_batches()
            batch = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)
            yield ScanBatch(batch=batch, cursor=str(stop))
            pos = stop

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        table = self._collection().table
        got = table.filter(
            pc.is_in(table.column(ID), pa.array(list(ids), table.schema.field(ID).type))
        )
        return (
            got.combine_chunks().to_batches()[0]
            if got.num_rows
            else pa.RecordBatch.from_pylist([], schema=table.schema)
        )

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        coll = self._collection()
        vf = coll.spec.vector(vector_field)
        matrix = vectors_numpy(coll.table.column(vf.name))
        idx, dist = knn(matrix, vectors, k, vf.metric)
        ids = coll.table.column(ID).to_numpy(zero_copy_only=False)
        return QueryResult(
            ids=[list(ids[row]) for row in idx], scores=[list(map(float, d)) for d in dist]
        )

    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        existing = MemoryStore.collections.get(self.config.name)
        if existing is not None and if_exists is IfExists.REUSE:
            old, new = existing.spec.vector(), spec.vector()
            if (old.dim, old.metric) != (new.dim, new.metric):
                raise SchemaMismatch(
                    f"memory collection {self.config.name!r} has vectors of dim {old.dim} "
                    f"({old.metric}), the source has dim {new.dim} ({new.metric})"
                )
            return
        if existing is not None and if_exists is IfExists.FAIL:
            raise SchemaMismatch(f"memory collection {self.config.name!r} already exists")
        MemoryStore.put(self.config.name, spec, spec.arrow_schema().empty_table())

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        coll = self._collection()
        with coll.lock:
            coll.upserts += 1
            if self.config.fail_every and coll.upserts % self.config.fail_every == 0:
                raise TransientError(f"injected failure on upsert {coll.upserts}")
            table = coll.table
            keep = pc.invert(pc.is_in(table.column(ID), batch.column(ID)))
            new = pa.Table.from_batches([batch.cast(table.schema)])
            coll.table = pa.concat_tables([table.filter(keep), new]).combine_chunks()

    def delete(self, ids: Sequence[Any]) -> None:
        coll = self._collection()
        with coll.lock:
            id_type = coll.table.schema.field(ID).type
            keep = pc.invert(pc.is_in(coll.table.column(ID), pa.array(list(ids), id_type)))
            coll.table = coll.table.filter(keep)

    def drop(self) -> None:
        MemoryStore.collections.pop(self.config.name, None)
