"""Batch transforms between the source's spec and the target's (mapped) spec."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import pyarrow as pa

from vecmigrate.errors import ConfigError
from vecmigrate.records import conform
from vecmigrate.spec import CollectionSpec, MetadataType


class BatchTransform(Protocol):
    """A step between reading and writing, e.g. re-embedding documents with a new model.

    ``spec`` maps the source's collection spec to what the transform produces (e.g. a vector
    field of the new model's size, with the model recorded). The engine calls it before the
    first ``apply`` of every run, resumed runs and every Ray worker included (see
    :func:`shape_for_run`); ``apply`` maps each checked source batch (called from several
    worker threads at once) and may drop rows it cannot handle, reporting them through its own
    dead-letter mechanism.
    """

    def spec(self, spec: CollectionSpec) -> CollectionSpec: ...

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch: ...


@runtime_checkable
class PortableTransform(BatchTransform, Protocol):
    """A transform the Ray executor can run in its actors.

    ``recipe()`` is picklable and builds an equivalent transform in a worker process, which
    keeps it (and e.g. a loaded model) for every slice it copies; ``counters()`` of a worker's
    copy are handed back to the driver's transform by ``absorb()``, for its report.
    """

    def recipe(self) -> Callable[[], PortableTransform]: ...

    def counters(self) -> dict[str, float]: ...

    def absorb(self, counters: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


def shape_for_run(
    transform: BatchTransform | None, spec: CollectionSpec, planned: CollectionSpec
) -> CollectionSpec:
    """Shape ``transform`` for the source ``spec`` and check it makes the ``planned`` target.

    Called before any batch is transformed. A resumed run whose transform makes other vectors
    than the plan recorded (another model, another size), or that drops the transform the plan
    had, would mix two models' vectors in one field: refused.
    """
    shaped = transform.spec(spec) if transform is not None else spec
    recorded = {v.name: v for v in planned.vectors}
    for vf in shaped.vectors:
        plan = recorded.get(vf.name)
        if plan is None:
            raise ConfigError(f"vector field {vf.name!r} is not in the planned target spec")
        if (vf.dim, vf.embedding_model) != (plan.dim, plan.embedding_model):
            now = f"{vf.embedding_model or 'the source vectors'} ({vf.dim}-d)"
            was = f"{plan.embedding_model or 'the source vectors'} ({plan.dim}-d)"
            raise ConfigError(
                f"this copy was planned with {was} in field {vf.name!r}, this run would write "
                f"{now}: run it with the same --embed, or start over with --restart"
            )
    return shaped


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
