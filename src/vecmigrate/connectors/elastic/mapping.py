"""CollectionSpec <-> Elasticsearch/OpenSearch index mappings, hits <-> Arrow, bulk bodies.

Vectors are ``dense_vector`` fields (Elasticsearch: ``dims``, ``similarity``,
``index_options``) or ``knn_vector`` fields (OpenSearch: ``dimension``, ``space_type``,
``method``). Indexes created here record the spec in the mapping's ``_meta.vecmigrate``
(id field and type, logical metadata types), so describing them round-trips exactly; other
indexes are described from their field types, with ``_id`` as the id.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from vecmigrate.errors import DataError, SchemaMismatch, TransientError, Unsupported
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import (
    DOCUMENT,
    ID,
    CollectionSpec,
    IndexConfig,
    MetadataField,
    MetadataType,
    Metric,
    VectorField,
)

Dialect = Literal["elasticsearch", "opensearch"]
META_KEY = "vecmigrate"
TRANSIENT_ITEM_STATUS = frozenset({429, 502, 503, 504})

_ES_SIMILARITY = {
    "cosine": Metric.COSINE,
    "dot_product": Metric.IP,
    "max_inner_product": Metric.IP,
    "l2_norm": Metric.L2,
}
_OS_SPACE = {"cosinesimil": Metric.COSINE, "innerproduct": Metric.IP, "l2": Metric.L2}
# dot_product needs unit-length vectors in Elasticsearch; max_inner_product takes any
_TO_ES_SIMILARITY = {Metric.COSINE: "cosine", Metric.IP: "max_inner_product", Metric.L2: "l2_norm"}
_TO_OS_SPACE = {Metric.COSINE: "cosinesimil", Metric.IP: "innerproduct", Metric.L2: "l2"}
_FIELD_TYPES: dict[str, MetadataType] = {
    "keyword": MetadataType.STRING,
    "constant_keyword": MetadataType.STRING,
    "wildcard": MetadataType.STRING,
    "text": MetadataType.STRING,
    "match_only_text": MetadataType.STRING,
    "ip": MetadataType.STRING,
    "version": MetadataType.STRING,
    "long": MetadataType.INT64,
    "integer": MetadataType.INT64,
    "short": MetadataType.INT64,
    "byte": MetadataType.INT64,
    "unsigned_long": MetadataType.INT64,
    "double": MetadataType.FLOAT64,
    "float": MetadataType.FLOAT64,
    "half_float": MetadataType.FLOAT64,
    "scaled_float": MetadataType.FLOAT64,
    "boolean": MetadataType.BOOL,
    "date": MetadataType.TIMESTAMP,
    "date_nanos": MetadataType.TIMESTAMP,
    "object": MetadataType.JSON,
    "nested": MetadataType.JSON,
    "flattened": MetadataType.JSON,
    "flat_object": MetadataType.JSON,
    "geo_point": MetadataType.JSON,
    "geo_shape": MetadataType.JSON,
}
_TO_FIELD: dict[MetadataType, dict[str, Any]] = {
    MetadataType.STRING: {"type": "keyword"},
    MetadataType.INT64: {"type": "long"},
    MetadataType.FLOAT64: {"type": "double"},
    MetadataType.BOOL: {"type": "boolean"},
    MetadataType.TIMESTAMP: {"type": "date", "format": "strict_date_optional_time||epoch_millis"},
    MetadataType.JSON: {"type": "keyword", "index": False, "doc_values": False},
    MetadataType.LIST_STRING: {"type": "keyword"},
    MetadataType.LIST_INT64: {"type": "long"},
    MetadataType.LIST_FLOAT64: {"type": "double"},
}
_LISTS = (MetadataType.LIST_STRING, MetadataType.LIST_INT64, MetadataType.LIST_FLOAT64)


@dataclass
class Layout:
    """Where a record's parts live in a document."""

    id_field: str | None = None  # None: the document _id is the id
    id_type: Literal["string", "int64"] = "string"
    document_field: str | None = None
    vectors: list[str] = field(default_factory=list)
    properties: list[MetadataField] = field(default_factory=list)
    sort_field: str | None = None  # unique and sortable: resumable scans

    def source_fields(self) -> list[str]:
        names = [*self.vectors, *(m.name for m in self.properties)]
        for extra in (self.id_field, self.document_field):
            if extra:
                names.append(extra)
        return names


# -- describe -------------------------------------------------------------------------------
def _vector_field(
    name: str, prop: Mapping[str, Any], dialect: Dialect
) -> tuple[VectorField, IndexConfig]:
    if prop["type"] == "dense_vector":
        if prop.get("element_type", "float") != "float":
            raise Unsupported(
                f"elasticsearch: vector {name!r} has element_type {prop['element_type']!r}; "
                "vecmigrate moves float vectors"
            )
        similarity = str(prop.get("similarity", "cosine"))
        metric = _ES_SIMILARITY.get(similarity)
        if metric is None:
            raise Unsupported(f"elasticsearch: vector {name!r} has similarity {similarity!r}")
        dim = prop.get("dims")
        options = dict(prop.get("index_options") or {})
        kind = str(options.pop("type", "hnsw" if prop.get("index", True) else "flat"))
        params: dict[str, Any] = {"similarity": similarity, **options}
        if prop.get("index") is False:
            kind = "none"
    else:  # knn_vector
        if prop.get("data_type", "float") != "float":
            raise Unsupported(
                f"opensearch: vector {name!r} has data_type {prop['data_type']!r}; "
                "vecmigrate moves float vectors"
            )
        method = dict(prop.get("method") or {})
        space = str(prop.get("space_type") or method.get("space_type") or "l2")
        metric = _OS_SPACE.get(space)
        if metric is None:
            raise Unsupported(f"opensearch: vector {name!r} has space_type {space!r}")
        dim = prop.get("dimension")
        kind = str(method.get("name", "hnsw"))
        params = {"space_type": space, **dict(method.get("parameters") or {})}
        if method.get("engine"):
            params["engine"] = method["engine"]
        if prop.get("mode"):
            params["mode"] = prop["mode"]
    if not dim:
        raise Unsupported(f"{dialect}: vector {name!r} has no dimension in its mapping")
    return (
        VectorField(name=name, dim=int(dim), metric=metric),
        IndexConfig(field=name, kind=kind, metric=metric, params=params),
    )


def describe_mapping(
    index: str,
    mapping: Mapping[str, Any],
    *,
    dialect: Dialect,
    document_field: str,
    sort_field: str | None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[CollectionSpec, Layout]:
    """A CollectionSpec (and layout) for one index's ``mappings`` (``properties``, ``_meta``)."""
    props: Mapping[str, Any] = mapping.get("properties") or {}
    meta: Mapping[str, Any] = (mapping.get("_meta") or {}).get(META_KEY) or {}
    logical: Mapping[str, str] = meta.get("fields") or {}
    layout = Layout(sort_field=sort_field)
    if meta.get("id_field") and meta["id_field"] in props:
        layout.id_field = str(meta["id_field"])
        layout.id_type = "int64" if meta.get("id_type") == "int64" else "string"
        layout.sort_field = layout.sort_field or layout.id_field
    doc_name = str(meta.get("document_field") or document_field)
    vectors: list[VectorField] = []
    indexes: list[IndexConfig] = []
    metadata: list[MetadataField] = []
    for name, prop in props.items():
        ftype = str(prop.get("type", "object" if "properties" in prop else ""))
        if name == layout.id_field:
            continue
        if ftype in ("dense_vector", "knn_vector"):
            vf, ic = _vector_field(name, prop, dialect)
            vectors.append(vf)
            indexes.append(ic)
            layout.vectors.append(name)
            continue
        if name == doc_name and ftype in ("text", "match_only_text"):
            layout.document_field = name
            continue
        if name in logical:
            mtype = MetadataType(logical[name])
        else:
            found = _FIELD_TYPES.get(ftype)
            if found is None:
                raise Unsupported(
                    f"{dialect}: field {name!r} has type {ftype!r} vecmigrate cannot move"
                )
            mtype = found
        metadata.append(MetadataField(name=name, type=mtype))
    if not vectors:
        raise Unsupported(f"{dialect}: index {index!r} has no dense_vector/knn_vector field")
    layout.properties = metadata
    system: dict[str, Any] = {"index": index, "dialect": dialect}
    if settings:
        system["settings"] = dict(settings)
    spec = CollectionSpec(
        name=index,
        id_type=layout.id_type,
        vectors=vectors,
        metadata=metadata,
        has_document=layout.document_field is not None,
        indexes=indexes,
        id_mapping=(
            f"document _id = str(id); original id in field {layout.id_field!r}"
            if layout.id_field
            else None
        ),
        system={dialect: system},
    )
    return spec, layout


# -- create ---------------------------------------------------------------------------------
def _hnsw_params(index: IndexConfig | None) -> dict[str, Any]:
    if index is None or index.kind not in ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw"):
        return {}
    out: dict[str, Any] = {}
    for key, target in (("m", "m"), ("M", "m"), ("max_connections", "m"), ("maxConnections", "m")):
        if isinstance(index.params.get(key), int):
            out[target] = index.params[key]
    for key in ("ef_construction", "efConstruction"):
        if isinstance(index.params.get(key), int):
            out["ef_construction"] = index.params[key]
    return out


def index_body(
    spec: CollectionSpec,
    *,
    dialect: Dialect,
    id_field: str,
    engine: str = "faiss",
    shards: int | None = None,
    replicas: int | None = None,
) -> tuple[dict[str, Any], Layout]:
    """``settings`` and ``mappings`` for an index that holds ``spec``, and its layout."""
    layout = Layout(id_field=id_field, id_type=spec.id_type, sort_field=id_field)
    indexes = {i.field: i for i in spec.indexes}
    props: dict[str, Any] = {
        id_field: {"type": "long"} if spec.id_type == "int64" else {"type": "keyword"}
    }
    for vf in spec.vectors:
        if vf.sparse:
            raise SchemaMismatch(
                f"{dialect} connector cannot store sparse vector field {vf.name!r}"
            )
        hnsw = _hnsw_params(indexes.get(vf.name))
        if dialect == "elasticsearch":
            props[vf.name] = {
                "type": "dense_vector",
                "dims": vf.dim,
                "element_type": "float",
                "index": True,
                "similarity": _TO_ES_SIMILARITY[vf.metric],
                "index_options": {"type": "hnsw", **hnsw},
            }
        else:
            method: dict[str, Any] = {
                "name": "hnsw",
                "space_type": _TO_OS_SPACE[vf.metric],
                "engine": engine,
            }
            if hnsw:
                method["parameters"] = hnsw
            props[vf.name] = {"type": "knn_vector", "dimension": vf.dim, "method": method}
        layout.vectors.append(vf.name)
    if spec.has_document:
        props[DOCUMENT] = {"type": "text"}
        layout.document_field = DOCUMENT
    for m in spec.metadata:
        if m.name in props:
            raise SchemaMismatch(f"{dialect}: field {m.name!r} clashes with the id field")
        props[m.name] = dict(_TO_FIELD[m.type])
        layout.properties.append(m)
    meta = {
        META_KEY: {
            "version": 1,
            "id_field": id_field,
            "id_type": spec.id_type,
            "document_field": DOCUMENT if spec.has_document else None,
            "fields": {m.name: m.type.value for m in spec.metadata},
        }
    }
    index_settings: dict[str, Any] = {}
    if shards is not None:
        index_settings["number_of_shards"] = shards
    if replicas is not None:
        index_settings["number_of_replicas"] = replicas
    if dialect == "opensearch":
        index_settings["knn"] = True
    body = {
        "settings": {"index": index_settings},
        "mappings": {"dynamic": "strict", "_meta": meta, "properties": props},
    }
    return body, layout


# -- rows -----------------------------------------------------------------------------------
def _timestamp(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
    text = str(value)
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _cell(value: Any, mtype: MetadataType, name: str, row: int) -> Any:
    if value is None:
        return None
    if mtype in _LISTS:
        return value if isinstance(value, list) else [value]
    if mtype is MetadataType.JSON:
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if isinstance(value, list):
        if len(value) == 1:
            value = value[0]
        else:
            raise DataError(f"field holds {len(value)} values, expected one", row=row, field=name)
    if mtype is MetadataType.TIMESTAMP:
        return _timestamp(value)
    return value


def hits_to_batch(
    hits: Sequence[Mapping[str, Any]], layout: Layout, schema: pa.Schema
) -> pa.RecordBatch:
    """Search hits (``_id``, ``_source``) as one record batch."""
    n = len(hits)
    sources = [h.get("_source") or {} for h in hits]
    arrays: dict[str, pa.Array] = {}
    if layout.id_field:
        raw: list[Any] = [s.get(layout.id_field) for s in sources]
        missing = next((i for i, v in enumerate(raw) if v is None), None)
        if missing is not None:
            raise DataError(
                f"document {hits[missing].get('_id')!r} has no {layout.id_field!r}",
                row=missing,
                field=ID,
            )
        if layout.id_type == "int64":
            arrays[ID] = pa.array([int(v) for v in raw], pa.int64())
        else:
            arrays[ID] = pa.array([str(v) for v in raw], pa.string())
    else:
        arrays[ID] = pa.array([str(h["_id"]) for h in hits], pa.string())
    for name in layout.vectors:
        dim = schema.field(name).type.list_size
        rows = [s.get(name) for s in sources]
        bad = next((i for i, v in enumerate(rows) if v is None or len(v) != dim), None)
        if bad is not None:
            got = rows[bad]
            raise DataError(
                "vector is missing"
                if got is None
                else f"vector has {len(got)} dimensions, expected {dim}",
                row=bad,
                record_id=arrays[ID][bad].as_py(),
                field=name,
            )
        matrix = np.asarray(rows, dtype=np.float32) if n else np.zeros((0, dim), np.float32)
        arrays[name] = fixed_size_vectors(matrix.reshape(n, dim))
    if layout.document_field:
        arrays[DOCUMENT] = pa.array([s.get(layout.document_field) for s in sources], pa.string())
    for m in layout.properties:
        values = [_cell(s.get(m.name), m.type, m.name, i) for i, s in enumerate(sources)]
        try:
            arrays[m.name] = pa.array(values, m.type.arrow())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"values are not {m.type.value}: {exc}", field=m.name) from exc
    return pa.RecordBatch.from_arrays([arrays[f.name] for f in schema], schema=schema)


def _write_value(value: Any, mtype: MetadataType) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def bulk_operations(
    batch: pa.RecordBatch, layout: Layout, index: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """NDJSON bulk lines (action, source) that index a (conformed) batch; and the ``_id``s."""
    ids = batch.column(ID).to_pylist()
    doc_ids = [str(i) for i in ids]
    names = batch.schema.names
    columns: list[tuple[str, MetadataType | None, list[Any]]] = []
    for vname in layout.vectors:
        columns.append((vname, None, vectors_numpy(batch.column(vname)).tolist()))
    if layout.document_field and DOCUMENT in names:
        columns.append((layout.document_field, None, batch.column(DOCUMENT).to_pylist()))
    for m in layout.properties:
        if m.name in names:
            columns.append((m.name, m.type, batch.column(m.name).to_pylist()))
    ops: list[dict[str, Any]] = []
    for i, doc_id in enumerate(doc_ids):
        source: dict[str, Any] = {}
        if layout.id_field:
            source[layout.id_field] = ids[i]
        for name, mtype, values in columns:
            value = values[i]
            if value is not None:
                source[name] = _write_value(value, mtype) if mtype else value
        ops.append({"index": {"_index": index, "_id": doc_id}})
        ops.append(source)
    return ops, doc_ids


def check_bulk_response(response: Mapping[str, Any], doc_ids: Sequence[str], system: str) -> None:
    """Raise for the items a bulk request failed: transient if all of them may be retried."""
    if not response.get("errors"):
        return
    failed: list[tuple[int, int, str]] = []
    for row, item in enumerate(response.get("items") or []):
        result = next(iter(item.values()))
        status = int(result.get("status", 200))
        if status >= 300:
            err = result.get("error") or {}
            reason = (
                f"{err.get('type', '')}: {err.get('reason', '')}"
                if isinstance(err, dict)
                else str(err)
            )
            failed.append((row, status, reason))
    if not failed:
        return
    shown = "; ".join(f"row {r} id {doc_ids[r]!r}: [{s}] {reason}" for r, s, reason in failed[:5])
    text = f"{system} refused {len(failed)} of {len(doc_ids)} documents: {shown}"
    if all(s in TRANSIENT_ITEM_STATUS for _, s, _ in failed):
        raise TransientError(text)
    row = failed[0][0]
    raise DataError(text, row=row, record_id=doc_ids[row])
