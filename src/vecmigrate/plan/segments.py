"""Engine-independent pieces the plan's copies need: segment filters, a throttle, chaining.

A phased migration copies one segment at a time. Filtering happens on the Arrow batches the
copy engine reads (``pyarrow.compute``), so it works for every source; the copy's ledger still
covers the whole scan, so a crashed segment copy resumes where it stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.connectors.base import Connector, Partition, ScanBatch
from vecmigrate.engine.transforms import BatchTransform
from vecmigrate.errors import ConfigError, Unsupported
from vecmigrate.plan.model import Segment
from vecmigrate.spec import ID, CollectionSpec


def _scalar(value: Any, dtype: pa.DataType) -> pa.Scalar:
    try:
        return pa.scalar(value).cast(dtype)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(f"segment bound {value!r} does not fit a column of type {dtype}") from exc


def _own_mask(batch: pa.RecordBatch, field: str, segment: Segment) -> pa.Array:
    col = batch.column(field)
    if segment.values is not None:
        values = pa.array([_scalar(v, col.type).as_py() for v in segment.values], col.type)
        return pc.fill_null(pc.is_in(col, value_set=values), False)
    mask = pa.array([True] * batch.num_rows, pa.bool_())
    if segment.id_from is not None:
        mask = pc.and_(mask, pc.greater_equal(col, _scalar(segment.id_from, col.type)))
    if segment.id_to is not None:
        mask = pc.and_(mask, pc.less(col, _scalar(segment.id_to, col.type)))
    return pc.fill_null(mask, False)


def segment_mask(
    batch: pa.RecordBatch, field: str, segment: Segment, all_segments: Sequence[Segment]
) -> pa.Array:
    """Which rows of ``batch`` belong to ``segment`` (``rest``: rows no other segment takes)."""
    if field not in batch.schema.names:
        raise ConfigError(f"segment field {field!r} is not a column of the collection")
    if not segment.rest:
        return _own_mask(batch, field, segment)
    taken = pa.array([False] * batch.num_rows, pa.bool_())
    for other in all_segments:
        if not other.rest:
            taken = pc.or_(taken, _own_mask(batch, field, other))
    return pc.invert(taken)


class SegmentFilter:
    """A BatchTransform that keeps one segment's rows (the spec is unchanged)."""

    def __init__(self, field: str, segment: Segment, all_segments: Sequence[Segment]) -> None:
        self.field = ID if field == "id" else field
        self.segment = segment
        self.all_segments = list(all_segments)

    def spec(self, spec: CollectionSpec) -> CollectionSpec:
        if self.field != ID and spec.metadata_field(self.field) is None:
            raise ConfigError(
                f"segment field {self.field!r} is not a metadata field of {spec.name!r} "
                f"(it has: {', '.join(m.name for m in spec.metadata) or 'none'})"
            )
        return spec

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.filter(segment_mask(batch, self.field, self.segment, self.all_segments))


class Throttle:
    """A BatchTransform that passes rows at no more than ``rows_per_s`` (all workers together)."""

    def __init__(self, rows_per_s: float) -> None:
        self.rows_per_s = rows_per_s
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def spec(self, spec: CollectionSpec) -> CollectionSpec:
        return spec

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now)
            self._next = start + batch.num_rows / self.rows_per_s
        if start > now:
            time.sleep(start - now)
        return batch


class TransformChain:
    """Transforms applied in order (filter, then throttle, then re-embedding...)."""

    def __init__(self, transforms: Sequence[BatchTransform]) -> None:
        self.transforms = list(transforms)

    def spec(self, spec: CollectionSpec) -> CollectionSpec:
        for t in self.transforms:
            spec = t.spec(spec)
        return spec

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        for t in self.transforms:
            if batch.num_rows == 0:
                break
            batch = t.apply(batch)
        return batch


def chain(transforms: Sequence[BatchTransform | None]) -> BatchTransform | None:
    present = [t for t in transforms if t is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else TransformChain(present)


class SegmentView(Connector):
    """Read-only view of one segment of a collection, for validating that segment alone.

    kNN is not offered (a filtered top-k is not the system's top-k), so validation of a
    segment checks completeness and metadata; query parity is checked on the whole collection.
    """

    def __init__(
        self, inner: Connector, field: str, segment: Segment, all_segments: Sequence[Segment]
    ) -> None:
        super().__init__(inner.uri)
        self.inner = inner
        self.filter = SegmentFilter(field, segment, all_segments)
        self.capabilities = replace(inner.capabilities, query=False, write=False)  # type: ignore[misc]

    def describe(self) -> CollectionSpec:
        return self.inner.describe()

    def count(self) -> int:
        raise Unsupported("a segment view counts while scanning")

    def partitions(self, hint: int) -> list[Partition]:
        return self.inner.partitions(hint)

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        for sb in self.inner.scan(partition, cursor, batch_size):
            yield ScanBatch(self.filter.apply(sb.batch), sb.cursor)

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        return self.filter.apply(self.inner.fetch(ids))


class VectorlessView(Connector):
    """A collection without its vector columns: for checking ids and metadata of a copy
    whose vectors were recomputed by another model."""

    def __init__(self, inner: Connector) -> None:
        super().__init__(inner.uri)
        self.inner = inner
        self.capabilities = replace(inner.capabilities, query=False, write=False)  # type: ignore[misc]

    def describe(self) -> CollectionSpec:
        return self.inner.describe().model_copy(update={"vectors": []})

    def count(self) -> int:
        return self.inner.count()

    def partitions(self, hint: int) -> list[Partition]:
        return self.inner.partitions(hint)

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        vectors = {v.name for v in self.inner.describe().vectors}
        for sb in self.inner.scan(partition, cursor, batch_size):
            keep = [n for n in sb.batch.schema.names if n not in vectors]
            yield ScanBatch(sb.batch.select(keep), sb.cursor)
