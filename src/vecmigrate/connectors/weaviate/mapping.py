"""CollectionSpec <-> Weaviate collection definitions, and objects <-> Arrow record batches.

Pure functions over the client's typed config (``CollectionConfig``, parsed by weaviate-client
from ``GET /v1/schema/{Collection}``) and its query ``Object``s, so they are tested without a
server. Weaviate ids are UUIDs: a source id that is not a canonical UUID string is stored as
``uuid5(ID_NAMESPACE, str(id))`` and kept in the ``_vecmigrate_id`` property, which reading
turns back into the original id (same scheme as the Qdrant connector).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from vecmigrate.errors import DataError, SchemaMismatch, Unsupported
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

# the Qdrant connector's namespace: a source id gets the same UUID in both systems
ID_NAMESPACE = uuid.UUID("5b0c4e9e-7a43-5c1e-9a2f-3d1f6c0b8e11")
ID_PROPERTY = "_vecmigrate_id"  # the payload key the Qdrant connector uses
ID_MARKER = "vecmigrate:id"
JSON_MARKER = "vecmigrate:json"
DOCUMENT_MARKER = "vecmigrate:document"
LEGACY_VECTOR = "default"  # the key of the unnamed vector in query results
LEGACY_COLUMN = "vector"  # the column the unnamed vector becomes

_FROM_DATATYPE: dict[str, MetadataType] = {
    "text": MetadataType.STRING,
    "string": MetadataType.STRING,
    "uuid": MetadataType.STRING,
    "blob": MetadataType.STRING,
    "int": MetadataType.INT64,
    "number": MetadataType.FLOAT64,
    "boolean": MetadataType.BOOL,
    "date": MetadataType.TIMESTAMP,
    "text[]": MetadataType.LIST_STRING,
    "string[]": MetadataType.LIST_STRING,
    "uuid[]": MetadataType.LIST_STRING,
    "int[]": MetadataType.LIST_INT64,
    "number[]": MetadataType.LIST_FLOAT64,
    "boolean[]": MetadataType.JSON,
    "date[]": MetadataType.JSON,
    "object": MetadataType.JSON,
    "object[]": MetadataType.JSON,
    "geoCoordinates": MetadataType.JSON,
    "phoneNumber": MetadataType.JSON,
}
_TO_DATATYPE: dict[MetadataType, str] = {
    MetadataType.STRING: "text",
    MetadataType.INT64: "int",
    MetadataType.FLOAT64: "number",
    MetadataType.BOOL: "boolean",
    MetadataType.TIMESTAMP: "date",
    MetadataType.JSON: "text",  # JSON text, marked in the property description
    MetadataType.LIST_STRING: "text[]",
    MetadataType.LIST_INT64: "int[]",
    MetadataType.LIST_FLOAT64: "number[]",
}
_FROM_DISTANCE = {"cosine": Metric.COSINE, "dot": Metric.IP, "l2-squared": Metric.L2}
_TO_DISTANCE = {Metric.COSINE: "cosine", Metric.IP: "dot", Metric.L2: "l2-squared"}
# HNSW parameters: vecmigrate/other systems' names -> Weaviate's vectorIndexConfig keys
_HNSW_KEYS = {
    "ef": "ef",
    "ef_search": "ef",
    "ef_construction": "efConstruction",
    "efConstruction": "efConstruction",
    "max_connections": "maxConnections",
    "maxConnections": "maxConnections",
    "m": "maxConnections",
    "M": "maxConnections",
    "dynamic_ef_min": "dynamicEfMin",
    "dynamic_ef_max": "dynamicEfMax",
    "dynamic_ef_factor": "dynamicEfFactor",
    "flat_search_cutoff": "flatSearchCutoff",
    "vector_cache_max_objects": "vectorCacheMaxObjects",
    "cleanup_interval_seconds": "cleanupIntervalSeconds",
}


def weaviate_uuid(value: object) -> str:
    """The object UUID for a source id: the id itself when it is a canonical UUID string."""
    if isinstance(value, str):
        try:
            if str(uuid.UUID(value)) == value:
                return value
        except ValueError:
            pass
    return str(uuid.uuid5(ID_NAMESPACE, str(value)))


def id_mapping_note(id_property: str = ID_PROPERTY) -> str:
    return (
        f"weaviate uuid = the id if it is a canonical UUID string, else "
        f"uuid5({ID_NAMESPACE}, str(id)); original id in property {id_property!r}"
    )


@dataclass(frozen=True)
class VectorColumn:
    column: str  # the record-batch column
    name: str | None  # the Weaviate named vector, None for the collection's unnamed vector


@dataclass(frozen=True)
class PropertyColumn:
    name: str
    type: MetadataType
    json_text: bool = False  # JSON kept as text in Weaviate (vs. an object property)


@dataclass
class Layout:
    """How a collection's objects become record-batch columns, and back."""

    id_type: Literal["string", "int64"] = "string"
    id_property: str | None = None
    document_property: str | None = None
    vectors: list[VectorColumn] = field(default_factory=list)
    properties: list[PropertyColumn] = field(default_factory=list)
    tenant_field: str | None = None  # a column carrying the tenant (all tenants read at once)

    def property_names(self) -> list[str]:
        names = [p.name for p in self.properties]
        for extra in (self.id_property, self.document_property):
            if extra:
                names.append(extra)
        return names


# -- describe -------------------------------------------------------------------------------
def _value(enum_or_str: Any) -> str:
    return str(getattr(enum_or_str, "value", enum_or_str))


def index_config(column: str, vic: Any) -> tuple[Metric, IndexConfig]:
    """The metric and IndexConfig of a typed vector index config (HNSW, flat, dynamic...)."""
    kind = _value(vic.vector_index_type()) if hasattr(vic, "vector_index_type") else "hnsw"
    distance = _value(getattr(vic, "distance_metric", "cosine"))
    metric = _FROM_DISTANCE.get(distance)
    if metric is None:
        raise Unsupported(
            f"weaviate: vector {column!r} uses distance {distance!r}; vecmigrate moves cosine, "
            "dot and l2-squared vectors"
        )
    params: dict[str, Any] = {}
    raw = vic.to_dict() if hasattr(vic, "to_dict") else {}
    for key, val in raw.items():
        if key in ("distance", "distanceMetric") or isinstance(val, dict | list):
            continue
        params[key] = val
    for quant in ("pq", "bq", "sq", "rq"):
        if isinstance(raw.get(quant), dict):
            params["quantizer"] = {"type": quant, **raw[quant]}
    return metric, IndexConfig(field=column, kind=kind, metric=metric, params=params)


def describe_config(
    config: Any,
    *,
    dims: Mapping[str, int],
    document_property: str,
    tenant_field: str | None,
    tenants: Mapping[str, str] | None,
) -> tuple[CollectionSpec, Layout]:
    """A CollectionSpec (and read layout) for a weaviate-client ``CollectionConfig``.

    ``dims`` gives each vector's dimension by column name (Weaviate's schema has none; the
    connector reads one object). ``tenant_field`` adds a column with the tenant when every
    tenant is read at once; ``tenants`` maps tenant names to their activity status.
    """
    layout = Layout()
    vectors: list[VectorField] = []
    indexes: list[IndexConfig] = []
    vectorizers: dict[str, Any] = {}
    legacy = not config.vector_config
    if config.vector_config:
        named = dict(config.vector_config)
    elif config.vector_index_config is not None:
        named = {}
    else:
        raise Unsupported(f"weaviate: collection {config.name!r} has no vector index")
    entries: list[tuple[str, str | None, Any, Any]] = []
    for name, nvc in named.items():
        entries.append((name, name, nvc.vector_index_config, nvc.vectorizer))
    if legacy:
        entries.append((LEGACY_COLUMN, None, config.vector_index_config, config.vectorizer_config))
    for column, wname, vic, vectorizer in entries:
        if vic is None or _value(vic.vector_index_type()) == "none":
            continue  # a dropped vector index: no vectors to move
        if getattr(vic, "multi_vector", None) is not None:
            raise Unsupported(
                f"weaviate: vector {column!r} is a multi-vector (ColBERT-style) field; "
                "vecmigrate moves one dense vector per field"
            )
        dim = dims.get(column)
        if not dim:
            raise Unsupported(
                f"weaviate: cannot tell the dimension of vector {column!r} of collection "
                f"{config.name!r}: it has no object with that vector"
            )
        metric, index = index_config(column, vic)
        model = None
        if vectorizer is not None:
            vname = _value(vectorizer.vectorizer)
            settings = dict(getattr(vectorizer, "model", {}) or {})
            if vname != "none":
                vectorizers[column] = {
                    "vectorizer": vname,
                    "model": settings,
                    "source_properties": getattr(vectorizer, "source_properties", None),
                }
                model = str(settings.get("model") or vname)
        vectors.append(VectorField(name=column, dim=int(dim), metric=metric, embedding_model=model))
        indexes.append(index)
        layout.vectors.append(VectorColumn(column=column, name=wname))
    metadata: list[MetadataField] = []
    for prop in config.properties:
        dtype = _value(prop.data_type)
        if prop.name == ID_PROPERTY or prop.description == ID_MARKER:
            layout.id_property = prop.name
            layout.id_type = "int64" if dtype == "int" else "string"
            continue
        if dtype == "text" and (
            prop.description == DOCUMENT_MARKER or prop.name == document_property
        ):
            layout.document_property = prop.name
            continue
        mtype = _FROM_DATATYPE.get(dtype)
        if mtype is None:
            raise Unsupported(f"weaviate: property {prop.name!r} has unknown data type {dtype!r}")
        json_text = dtype == "text" and prop.description == JSON_MARKER
        if json_text:
            mtype = MetadataType.JSON
        metadata.append(MetadataField(name=prop.name, type=mtype))
        layout.properties.append(PropertyColumn(prop.name, mtype, json_text))
    mt = config.multi_tenancy_config
    system: dict[str, Any] = {
        "collection": config.name,
        "description": config.description,
        "legacy_vector": legacy,
        "vectorizers": vectorizers,
        "multi_tenancy": {
            "enabled": bool(mt.enabled),
            "auto_tenant_creation": bool(mt.auto_tenant_creation),
            "auto_tenant_activation": bool(mt.auto_tenant_activation),
        },
        "uuid_ids": layout.id_property is None,
        "references": [r.name for r in getattr(config, "references", [])],
    }
    replication = getattr(config, "replication_config", None)
    if replication is not None:
        system["replication_factor"] = getattr(replication, "factor", None)
    if tenants is not None:
        system["tenants"] = dict(sorted(tenants.items()))
    if tenant_field and mt.enabled:
        metadata.append(MetadataField(name=tenant_field, type=MetadataType.STRING, nullable=False))
        layout.tenant_field = tenant_field
    spec = CollectionSpec(
        name=config.name,
        id_type=layout.id_type,
        vectors=vectors,
        metadata=metadata,
        has_document=layout.document_property is not None,
        indexes=indexes,
        partitions=sorted(tenants) if tenants else [],
        id_mapping=id_mapping_note(layout.id_property) if layout.id_property else None,
        system={"weaviate": system},
    )
    return spec, layout


def tenant_statuses(tenants: Mapping[str, Any]) -> dict[str, str]:
    """Tenant name -> activity status (ACTIVE, INACTIVE, OFFLOADED, ...) from the client's
    ``tenants.get()`` result."""
    return {
        name: str(getattr(t.activity_status, "value", t.activity_status))
        for name, t in sorted(tenants.items())
    }


# -- create ---------------------------------------------------------------------------------
def _index_body(vf: VectorField, index: IndexConfig | None) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"distance": _TO_DISTANCE[vf.metric]}
    kind = "hnsw"
    if index is not None:
        if index.kind in ("hnsw", "flat", "dynamic", "hfresh"):
            kind = index.kind
        for key, val in index.params.items():
            target = _HNSW_KEYS.get(key)
            if target and kind in ("hnsw", "dynamic") and isinstance(val, int | float | bool):
                body[target] = val
            elif key == "vectorCacheMaxObjects" and isinstance(val, int):
                body[key] = val
    return kind, body


def collection_body(
    spec: CollectionSpec,
    *,
    name: str,
    multi_tenant: bool,
    tenant_field: str | None,
    keep_vectorizers: bool = False,
) -> tuple[dict[str, Any], Layout]:
    """The ``POST /v1/schema`` body that holds ``spec``, and the write layout for it."""
    from vecmigrate.connectors.weaviate.config import check_property_name

    source = spec.system.get("weaviate", {}) if isinstance(spec.system, dict) else {}
    vectorizers = source.get("vectorizers", {}) if keep_vectorizers else {}
    dense = [v for v in spec.vectors if not v.sparse]
    if len(dense) != len(spec.vectors):
        sparse = next(v.name for v in spec.vectors if v.sparse)
        raise SchemaMismatch(f"weaviate cannot store sparse vector field {sparse!r}")
    if not dense:
        raise SchemaMismatch(f"weaviate: collection {spec.name!r} has no dense vector")
    layout = Layout(id_type=spec.id_type)
    indexes = {i.field: i for i in spec.indexes}
    body: dict[str, Any] = {"class": name}
    if source.get("description"):
        body["description"] = source["description"]
    legacy = bool(source.get("legacy_vector")) and len(dense) == 1
    if legacy:
        vf = dense[0]
        kind, cfg = _index_body(vf, indexes.get(vf.name))
        vz = vectorizers.get(vf.name)
        body["vectorizer"] = vz["vectorizer"] if vz else "none"
        if vz and vz.get("model"):
            body["moduleConfig"] = {vz["vectorizer"]: vz["model"]}
        body["vectorIndexType"] = kind
        body["vectorIndexConfig"] = cfg
        layout.vectors.append(VectorColumn(column=vf.name, name=None))
    else:
        vector_config: dict[str, Any] = {}
        for vf in dense:
            check_property_name(vf.name, "named vector")
            kind, cfg = _index_body(vf, indexes.get(vf.name))
            vz = vectorizers.get(vf.name)
            vectorizer: dict[str, Any] = {"none": {}}
            if vz:
                settings = dict(vz.get("model") or {})
                if vz.get("source_properties"):
                    settings["properties"] = list(vz["source_properties"])
                vectorizer = {vz["vectorizer"]: settings}
            vector_config[vf.name] = {
                "vectorizer": vectorizer,
                "vectorIndexType": kind,
                "vectorIndexConfig": cfg,
            }
            layout.vectors.append(VectorColumn(column=vf.name, name=vf.name))
        body["vectorConfig"] = vector_config
    properties: list[dict[str, Any]] = []
    if not source.get("uuid_ids") or spec.id_type != "string":
        properties.append(
            {
                "name": ID_PROPERTY,
                "dataType": ["int" if spec.id_type == "int64" else "text"],
                "description": ID_MARKER,
                "tokenization": None if spec.id_type == "int64" else "field",
                "indexFilterable": True,
                "indexSearchable": False,
            }
        )
        layout.id_property = ID_PROPERTY
    if spec.has_document:
        properties.append({"name": DOCUMENT, "dataType": ["text"], "description": DOCUMENT_MARKER})
        layout.document_property = DOCUMENT
    for m in spec.metadata:
        if multi_tenant and tenant_field and m.name == tenant_field:
            layout.tenant_field = m.name
            continue
        check_property_name(m.name)
        prop: dict[str, Any] = {"name": m.name, "dataType": [_TO_DATATYPE[m.type]]}
        if m.type is MetadataType.JSON:
            prop["description"] = JSON_MARKER
            prop["indexSearchable"] = False
        properties.append(prop)
        layout.properties.append(PropertyColumn(m.name, m.type, m.type is MetadataType.JSON))
    for p in properties:
        if p.get("tokenization", "") is None:
            del p["tokenization"]
    body["properties"] = properties
    if multi_tenant:
        mt = source.get("multi_tenancy", {})
        body["multiTenancyConfig"] = {
            "enabled": True,
            "autoTenantCreation": bool(mt.get("auto_tenant_creation", False)),
            "autoTenantActivation": bool(mt.get("auto_tenant_activation", False)),
        }
    return body, layout


# -- rows -----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-able form of client values (GeoCoordinate and other models, datetimes, UUIDs)."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=_plain)


def _column_values(prop: PropertyColumn, values: list[Any]) -> list[Any]:
    if prop.type is MetadataType.JSON:
        if prop.json_text:
            return values
        return [None if v is None else _json_text(v) for v in values]
    if prop.type is MetadataType.STRING:
        return [None if v is None else str(v) for v in values]
    if prop.type is MetadataType.LIST_STRING:
        return [None if v is None else [str(x) for x in v] for v in values]
    return values


def objects_to_batch(
    objects: Sequence[Any], layout: Layout, schema: pa.Schema, *, tenant: str | None = None
) -> pa.RecordBatch:
    """Query-result objects (``uuid``, ``properties``, ``vector``) as one record batch."""
    n = len(objects)
    props = [o.properties or {} for o in objects]
    uids = [str(o.uuid) for o in objects]
    arrays: dict[str, pa.Array] = {}
    if layout.id_property:
        raw = [p.get(layout.id_property) for p in props]
        ids: list[Any] = [uid if r is None else r for r, uid in zip(raw, uids, strict=True)]
        if layout.id_type == "int64":
            missing = [i for i, r in enumerate(raw) if r is None]
            if missing:
                i = missing[0]
                raise DataError(
                    f"object {uids[i]} has no {layout.id_property!r} property", row=i, field=ID
                )
            arrays[ID] = pa.array([int(v) for v in ids], pa.int64())
        else:
            arrays[ID] = pa.array([str(v) for v in ids], pa.string())
    else:
        arrays[ID] = pa.array(uids, pa.string())
    for vc in layout.vectors:
        key = vc.name or LEGACY_VECTOR
        rows = []
        for i, o in enumerate(objects):
            vec = (o.vector or {}).get(key)
            if vec is None:
                raise DataError(f"object {uids[i]} has no vector", row=i, field=vc.column)
            rows.append(vec)
        dim = schema.field(vc.column).type.list_size
        matrix = np.asarray(rows, dtype=np.float32) if n else np.zeros((0, dim), np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != dim:
            lengths = {len(r) for r in rows}
            raise DataError(
                f"vectors have {sorted(lengths)} dimensions, expected {dim}", field=vc.column
            )
        arrays[vc.column] = fixed_size_vectors(matrix)
    if layout.document_property:
        arrays[DOCUMENT] = pa.array([p.get(layout.document_property) for p in props], pa.string())
    for prop in layout.properties:
        values = _column_values(prop, [p.get(prop.name) for p in props])
        try:
            arrays[prop.name] = pa.array(values, prop.type.arrow())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(
                f"cannot read values as {prop.type.value}: {exc}", field=prop.name
            ) from exc
    if layout.tenant_field:
        arrays[layout.tenant_field] = pa.array([tenant] * n, pa.string())
    return pa.RecordBatch.from_arrays([arrays[f.name] for f in schema], schema=schema)


@dataclass(frozen=True)
class WriteObject:
    """One object to import: its UUID, properties, vectors and tenant (None: not multi-tenant)."""

    uuid: str
    properties: dict[str, Any]
    vector: dict[str, list[float]] | list[float]
    tenant: str | None


def batch_to_objects(
    batch: pa.RecordBatch, layout: Layout, *, tenant: str | None = None
) -> list[WriteObject]:
    """A (conformed) record batch as objects to import, column-wise to Python values."""
    ids = batch.column(ID).to_pylist()
    n = len(ids)
    columns = batch.schema.names
    vectors = {vc.column: vectors_numpy(batch.column(vc.column)).tolist() for vc in layout.vectors}
    values: dict[str, list[Any]] = {}
    for prop in layout.properties:
        if prop.name in columns:
            values[prop.name] = batch.column(prop.name).to_pylist()
    if layout.document_property and DOCUMENT in columns:
        values[layout.document_property] = batch.column(DOCUMENT).to_pylist()
    tenants: list[Any] = [tenant] * n
    if layout.tenant_field and tenant is None:
        if layout.tenant_field not in columns:
            raise DataError(
                f"multi-tenant collection: the batch has no {layout.tenant_field!r} column "
                "and the URI names no ?tenant=",
                field=layout.tenant_field,
            )
        tenants = batch.column(layout.tenant_field).to_pylist()
    out: list[WriteObject] = []
    for i in range(n):
        properties = {k: col[i] for k, col in values.items() if col[i] is not None}
        if layout.id_property:
            properties[layout.id_property] = ids[i]
        if layout.tenant_field and not tenants[i]:
            raise DataError("tenant is empty", row=i, record_id=ids[i], field=layout.tenant_field)
        vector: dict[str, list[float]] | list[float]
        if len(layout.vectors) == 1 and layout.vectors[0].name is None:
            vector = vectors[layout.vectors[0].column][i]
        else:
            vector = {vc.name or LEGACY_VECTOR: vectors[vc.column][i] for vc in layout.vectors}
        out.append(WriteObject(weaviate_uuid(ids[i]), properties, vector, tenants[i]))
    return out
