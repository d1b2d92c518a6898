"""Batch transforms between the source's spec and the target's (mapped) spec."""

from __future__ import annotations

import json
from typing import Protocol

import pyarrow as pa

from vecmigrate.records import conform
from vecmigrate.spec import CollectionSpec, MetadataType


class BatchTransform(Protocol):
    """A step between reading and writing, e.g. re-embedding documents with a new model.

    ``spec`` maps the collection spec once at plan time; ``apply`` maps each checked source
    batch (called from several worker threads at once) and may drop rows it cannot handle,
    reporting them through its own dead-letter mechanism.
    """

    def spec(self, spec: CollectionSpec) -> CollectionSpec: ...

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...


def to_target(
    batch: pa.RecordBatch, source: CollectionSpec, target: CollectionSpec
) -> pa.RecordBatch:
    """Drop what the target cannot hold, encode converted types, cast to the target schema."""
    if source == target:
        return batch
    names = set(target.arrow_schema().names)
    columns: dict[str, pa.Array] = {}
    for name in batch.schema.names:
        if name not in names:
            continue
        col = batch.column(name)
        src_field = source.metadata_field(name)
        dst_field = target.metadata_field(name)
        if (
            src_field is not None
            and dst_field is not None
            and src_field.type is not dst_field.type
            and dst_field.type in (MetadataType.JSON, MetadataType.STRING)
            and not pa.types.is_string(col.type)
        ):
            col = pa.array(
                [None if v is None else json.dumps(v, default=str) for v in col.to_pylist()],
                pa.string(),
            )
        columns[name] = col
    if target.id_type == "string" and not pa.types.is_string(batch.column("id").type):
        columns["id"] = batch.column("id").cast(pa.string())
    return conform(pa.RecordBatch.from_pydict(columns), target)
