"""CollectionSpec <-> Pinecone index descriptions, and fetched vectors <-> Arrow record batches.

Pinecone's vectors API addresses an index's dense vector as the reserved schema field
``_values`` and its sparse vector as ``_sparse_values`` (what the SDK's legacy
``dimension=/metric=/vector_type=`` create path declares). Metadata has no schema: its keys
and types are learned from a sample of records. Pinecone keeps numbers as 64-bit floats and
lists only of strings, so other types are written as the nearest of those (see
``metadata_value``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from vecmigrate.errors import DataError, SchemaMismatch, Unsupported
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import (
    DOCUMENT,
    ID,
    SPARSE_TYPE,
    CollectionSpec,
    MetadataField,
    MetadataType,
    Metric,
    VectorField,
)

DENSE_FIELD = "_values"
SPARSE_FIELD = "_sparse_values"
DENSE_COLUMN = "vector"
SPARSE_COLUMN = "sparse"
DEFAULT_NAMESPACES = ("", "__default__")
_FROM_METRIC = {"cosine": Metric.COSINE, "euclidean": Metric.L2, "dotproduct": Metric.IP}
TO_METRIC = {Metric.COSINE: "cosine", Metric.L2: "euclidean", Metric.IP: "dotproduct"}
STORED_TYPES = frozenset(
    {MetadataType.STRING, MetadataType.FLOAT64, MetadataType.BOOL, MetadataType.LIST_STRING}
)


@dataclass
class Layout:
    """How fetched vectors become record-batch columns, and back."""

    dense_column: str | None = None
    sparse_column: str | None = None
    document_key: str | None = None
    properties: list[MetadataField] = field(default_factory=list)
    namespace_field: str | None = None


def _tagged(obj: Any) -> dict[str, Any]:
    """A msgspec struct (deployment, field) as a plain dict, without None values."""
    names = getattr(obj, "__struct_fields__", ())
    out = {n: getattr(obj, n) for n in names if getattr(obj, n, None) is not None}
    tag = getattr(type(obj), "__struct_config__", None)
    if tag is not None and getattr(tag, "tag", None) is not None:
        out[str(tag.tag_field)] = tag.tag
    return out


def _value_type(value: Any) -> MetadataType:
    if isinstance(value, bool):
        return MetadataType.BOOL
    if isinstance(value, int | float):
        return MetadataType.FLOAT64
    if isinstance(value, str):
        return MetadataType.STRING
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return MetadataType.LIST_STRING
    return MetadataType.JSON


def infer_metadata(samples: Sequence[Mapping[str, Any] | None]) -> dict[str, MetadataType]:
    """Metadata keys and types seen in sampled records (mixed types become JSON)."""
    types: dict[str, MetadataType] = {}
    for meta in samples:
        for key, value in (meta or {}).items():
            if value is None:
                continue
            t = _value_type(value)
            prev = types.get(key)
            types[key] = t if prev in (None, t) else MetadataType.JSON
    return dict(sorted(types.items()))


def describe_index(
    model: Any,
    *,
    namespaces: Mapping[str, int],
    samples: Sequence[Mapping[str, Any] | None],
    document_key: str,
    sparse: str,
    namespace_field: str | None,
) -> tuple[CollectionSpec, Layout]:
    """A CollectionSpec (and read layout) for an ``IndexModel`` and sampled metadata."""
    fields = dict(model.schema.fields)
    dense = fields.get(DENSE_FIELD)
    sparse_field = fields.get(SPARSE_FIELD)
    others = sorted(set(fields) - {DENSE_FIELD, SPARSE_FIELD})
    if others or (dense is None and sparse_field is None):
        raise Unsupported(
            f"pinecone: index {model.name!r} is a document index (fields {', '.join(others)}); "
            "vecmigrate reads indexes served by the vectors API"
        )
    layout = Layout()
    vectors: list[VectorField] = []
    metric: Metric | None = None
    if dense is not None:
        metric = _FROM_METRIC.get(str(dense.metric))
        if metric is None:
            raise Unsupported(f"pinecone: unknown metric {dense.metric!r}")
        vectors.append(VectorField(name=DENSE_COLUMN, dim=int(dense.dimension), metric=metric))
        layout.dense_column = DENSE_COLUMN
    with_sparse = sparse_field is not None or (
        sparse != "false" and metric is Metric.IP and dense is not None
    )
    if sparse == "true" or with_sparse:
        vectors.append(VectorField(name=SPARSE_COLUMN, dim=0, metric=Metric.IP, sparse=True))
        layout.sparse_column = SPARSE_COLUMN
    inferred = infer_metadata(samples)
    doc_type = inferred.pop(document_key, None)
    if doc_type is MetadataType.STRING:
        layout.document_key = document_key
    elif doc_type is not None:
        inferred[document_key] = doc_type
    metadata = [MetadataField(name=k, type=t) for k, t in inferred.items()]
    layout.properties = list(metadata)
    if namespace_field:
        metadata.append(MetadataField(name=namespace_field, type=MetadataType.STRING))
        layout.namespace_field = namespace_field
    deployment = _tagged(model.deployment)
    system: dict[str, Any] = {
        "index": model.name,
        "deployment": deployment,
        "kind": "pod" if deployment.get("deployment_type") == "pod" else "serverless",
        "deletion_protection": model.deletion_protection,
        "tags": dict(model.tags) if model.tags else {},
        "namespaces": dict(sorted(namespaces.items())),
        "sampled_records": len(samples),
    }
    spec = CollectionSpec(
        name=model.name,
        id_type="string",
        vectors=vectors,
        metadata=metadata,
        has_document=layout.document_key is not None,
        partitions=sorted(namespaces) if namespace_field else [],
        system={"pinecone": system},
    )
    return spec, layout


def create_arguments(spec: CollectionSpec) -> dict[str, Any]:
    """``dimension``/``metric``/``vector_type`` for the SDK's vectors-API create path."""
    dense = [v for v in spec.vectors if not v.sparse]
    sparse = [v for v in spec.vectors if v.sparse]
    if len(dense) > 1 or len(sparse) > 1:
        raise SchemaMismatch("pinecone holds one dense and one sparse vector per record")
    if dense:
        vf = dense[0]
        if sparse and vf.metric is not Metric.IP:
            raise SchemaMismatch(
                "pinecone keeps sparse values next to dense ones only with metric dotproduct; "
                f"vector {vf.name!r} uses {vf.metric.value}"
            )
        return {"dimension": vf.dim, "metric": TO_METRIC[vf.metric], "vector_type": "dense"}
    if sparse:
        return {"vector_type": "sparse", "metric": "dotproduct"}
    raise SchemaMismatch(f"pinecone: collection {spec.name!r} has no vector field")


def write_layout(spec: CollectionSpec, *, document_key: str, namespace_field: str) -> Layout:
    layout = Layout()
    for vf in spec.vectors:
        if vf.sparse:
            layout.sparse_column = vf.name
        else:
            layout.dense_column = vf.name
    if spec.has_document:
        layout.document_key = document_key
    for m in spec.metadata:
        if m.name == namespace_field:
            layout.namespace_field = m.name
        else:
            layout.properties.append(m)
    return layout


# -- rows -----------------------------------------------------------------------------------
def _column(m: MetadataField, values: list[Any]) -> pa.Array:
    if m.type is MetadataType.JSON:
        values = [
            None if v is None else json.dumps(v, sort_keys=True, ensure_ascii=False) for v in values
        ]
    try:
        return pa.array(values, m.type.arrow())
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(
            f"metadata values are not {m.type.value} as sampled; raise ?sample= "
            f"or check the data ({exc})",
            field=m.name,
        ) from exc


def vectors_to_batch(
    records: Sequence[Any], layout: Layout, schema: pa.Schema, *, namespace: str | None = None
) -> pa.RecordBatch:
    """Fetched ``Vector``s (``id``, ``values``, ``sparse_values``, ``metadata``) as one batch."""
    n = len(records)
    metas = [r.metadata or {} for r in records]
    known = {m.name for m in layout.properties} | (
        {layout.document_key} if layout.document_key else set()
    )
    for i, meta in enumerate(metas):
        unknown = sorted(set(meta) - known)
        if unknown:
            raise DataError(
                f"metadata key {unknown[0]!r} was not in the sampled records: raise ?sample= "
                "so describe() sees every key",
                row=i,
                record_id=records[i].id,
                field=unknown[0],
            )
    arrays: dict[str, pa.Array] = {ID: pa.array([r.id for r in records], pa.string())}
    if layout.dense_column:
        dim = schema.field(layout.dense_column).type.list_size
        rows = [r.values for r in records]
        bad = next((i for i, v in enumerate(rows) if len(v) != dim), None)
        if bad is not None:
            raise DataError(
                f"vector has {len(rows[bad])} dimensions, expected {dim}",
                row=bad,
                record_id=records[bad].id,
                field=layout.dense_column,
            )
        matrix = np.asarray(rows, dtype=np.float32) if n else np.zeros((0, dim), np.float32)
        arrays[layout.dense_column] = fixed_size_vectors(matrix.reshape(n, dim))
    if layout.sparse_column:
        sparse: list[dict[str, list[Any]] | None] = []
        for r in records:
            sv = r.sparse_values
            sparse.append(
                None if sv is None else {"indices": list(sv.indices), "values": list(sv.values)}
            )
        arrays[layout.sparse_column] = pa.array(sparse, SPARSE_TYPE)
    if layout.document_key:
        arrays[DOCUMENT] = pa.array([m.get(layout.document_key) for m in metas], pa.string())
    for m in layout.properties:
        arrays[m.name] = _column(m, [meta.get(m.name) for meta in metas])
    if layout.namespace_field:
        arrays[layout.namespace_field] = pa.array([namespace or ""] * n, pa.string())
    return pa.RecordBatch.from_arrays([arrays[f.name] for f in schema], schema=schema)


def metadata_value(value: Any, mtype: MetadataType) -> Any:
    """A value as Pinecone stores it: strings, numbers, booleans, lists of strings."""
    if value is None:
        return None
    if mtype is MetadataType.FLOAT64 and isinstance(value, float) and not math.isfinite(value):
        raise ValueError("Pinecone metadata cannot hold NaN or infinity")
    if mtype is MetadataType.TIMESTAMP and isinstance(value, dt.datetime):
        return value.isoformat()
    if mtype in (MetadataType.LIST_INT64, MetadataType.LIST_FLOAT64):
        return json.dumps(value)
    return value


def batch_to_records(batch: pa.RecordBatch, layout: Layout) -> list[dict[str, Any]]:
    """A (conformed) record batch as upsert dicts, converting column-wise."""
    ids = [str(i) for i in batch.column(ID).to_pylist()]
    n = len(ids)
    names = batch.schema.names
    dense = (
        vectors_numpy(batch.column(layout.dense_column)).tolist() if layout.dense_column else None
    )
    sparse = batch.column(layout.sparse_column).to_pylist() if layout.sparse_column else None
    columns: list[tuple[str, MetadataType, list[Any]]] = []
    for m in layout.properties:
        if m.name in names:
            columns.append((m.name, m.type, batch.column(m.name).to_pylist()))
    if layout.document_key and DOCUMENT in names:
        columns.append(
            (layout.document_key, MetadataType.STRING, batch.column(DOCUMENT).to_pylist())
        )
    out: list[dict[str, Any]] = []
    for i in range(n):
        record: dict[str, Any] = {"id": ids[i]}
        if dense is not None:
            record["values"] = dense[i]
        if sparse is not None and sparse[i] is not None:
            record["sparse_values"] = {
                "indices": list(sparse[i]["indices"]),
                "values": list(sparse[i]["values"]),
            }
        meta: dict[str, Any] = {}
        for name, mtype, values in columns:
            try:
                value = metadata_value(values[i], mtype)
            except ValueError as exc:
                raise DataError(str(exc), row=i, record_id=ids[i], field=name) from exc
            if value is not None:
                meta[name] = value
        if meta:
            record["metadata"] = meta
        out.append(record)
    return out


def namespaces_of(batch: pa.RecordBatch, layout: Layout, default: str | None) -> list[str]:
    """The namespace of each row: the URI's, else the batch's namespace column, else default."""
    n = batch.num_rows
    if default is not None:
        return [default] * n
    if layout.namespace_field and layout.namespace_field in batch.schema.names:
        return [v or "" for v in batch.column(layout.namespace_field).to_pylist()]
    return [""] * n
