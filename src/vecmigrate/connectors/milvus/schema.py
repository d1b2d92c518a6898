"""Where a CollectionSpec lives in a Milvus collection, both ways.

A :class:`Layout` says which Milvus field holds the id, each vector, the document and each
metadata field. Milvus Lite cannot declare nullable fields, so there nullable metadata (and the
document) are keys of the dynamic field, where a missing key is a null. Types Milvus has no
field for (timestamps, vecmigrate's JSON) and the index a Lite collection could not build are
kept as hints after ``[vecmigrate]`` in the collection description, so describe() round-trips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from vecmigrate.errors import SchemaMismatch, Unsupported
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

HINT_MARK = "[vecmigrate] "
DYNAMIC_REST = "milvus_dynamic"  # JSON column for dynamic keys a spec does not name
VARCHAR_MAX = 65_535
ARRAY_CAPACITY = 4_096

_METRIC_TO_MILVUS = {Metric.COSINE: "COSINE", Metric.L2: "L2", Metric.IP: "IP"}
_INDEX_TYPES = {
    "hnsw": "HNSW",
    "flat": "FLAT",
    "ivf_flat": "IVF_FLAT",
    "ivf_sq8": "IVF_SQ8",
    "ivf_pq": "IVF_PQ",
    "diskann": "DISKANN",
    "scann": "SCANN",
    "autoindex": "AUTOINDEX",
}
_INDEX_PARAM_NAMES = {
    "m": "M",
    "ef_construct": "efConstruction",
    "ef_construction": "efConstruction",
    "efconstruction": "efConstruction",
    "nlist": "nlist",
    "lists": "nlist",
}
_INDEX_INFO_KEYS = {
    "index_type",
    "metric_type",
    "field_name",
    "index_name",
    "total_rows",
    "indexed_rows",
    "pending_index_rows",
    "state",
    "dim",
}


@dataclass
class Layout:
    """The Milvus fields of a collection, as vecmigrate reads and writes them."""

    pk: str = ID
    id_type: Literal["string", "int64"] = "string"
    vectors: list[VectorField] = field(default_factory=list)
    typed: dict[str, MetadataType] = field(default_factory=dict)
    dynamic: dict[str, MetadataType] = field(default_factory=dict)
    document: Literal["field", "dynamic"] | None = None
    enable_dynamic: bool = False
    dynamic_rest: bool = False  # the spec has a DYNAMIC_REST column for unnamed dynamic keys


def metric_name(metric: Metric) -> str:
    return _METRIC_TO_MILVUS[metric]


def layout_for(spec: CollectionSpec, *, lite: bool) -> Layout:
    """How ``spec`` is stored in a collection vecmigrate creates."""
    layout = Layout(
        pk=spec.system.get("milvus", {}).get("pk_field", ID),
        id_type=spec.id_type,
        vectors=list(spec.vectors),
    )
    for m in spec.metadata:
        if m.name == DYNAMIC_REST and m.type is MetadataType.JSON:
            layout.dynamic_rest = True
        elif lite and m.nullable:
            layout.dynamic[m.name] = m.type
        else:
            layout.typed[m.name] = m.type
    if spec.has_document:
        layout.document = "dynamic" if lite else "field"
    layout.enable_dynamic = bool(
        layout.dynamic or layout.dynamic_rest or layout.document == "dynamic"
    )
    return layout


def build_schema(spec: CollectionSpec, layout: Layout, *, lite: bool) -> Any:
    """A pymilvus CollectionSchema for ``spec`` (hints in the description)."""
    from pymilvus import CollectionSchema, DataType, FieldSchema

    fields = []
    if layout.id_type == "string":
        fields.append(
            FieldSchema(
                layout.pk,
                DataType.VARCHAR,
                is_primary=True,
                auto_id=False,
                max_length=_id_max_length(spec),
            )
        )
    else:
        fields.append(FieldSchema(layout.pk, DataType.INT64, is_primary=True, auto_id=False))
    for vf in layout.vectors:
        if vf.sparse:
            fields.append(FieldSchema(vf.name, DataType.SPARSE_FLOAT_VECTOR))
        elif vf.dtype == "float16":
            fields.append(FieldSchema(vf.name, DataType.FLOAT16_VECTOR, dim=vf.dim))
        else:
            fields.append(FieldSchema(vf.name, DataType.FLOAT_VECTOR, dim=vf.dim))
    if layout.document == "field":
        fields.append(
            FieldSchema(DOCUMENT, DataType.VARCHAR, max_length=VARCHAR_MAX, nullable=True)
        )
    for name, mtype in layout.typed.items():
        m = spec.metadata_field(name)
        nullable = bool(m and m.nullable) and not lite
        fields.append(_metadata_field(name, mtype, m, nullable=nullable))
    description = spec.system.get("milvus", {}).get("description", "")
    hints = _hints(spec, layout, lite=lite)
    if hints:
        description = (description + "\n" if description else "") + HINT_MARK + json.dumps(hints)
    return CollectionSchema(
        fields, description=description, enable_dynamic_field=layout.enable_dynamic
    )


def _id_max_length(spec: CollectionSpec) -> int:
    known = spec.system.get("milvus", {}).get("max_length", {}).get(ID)
    return int(known) if known else VARCHAR_MAX


def _metadata_field(
    name: str, mtype: MetadataType, m: MetadataField | None, *, nullable: bool
) -> Any:
    from pymilvus import DataType, FieldSchema

    kw: dict[str, Any] = {"nullable": True} if nullable else {}
    if mtype is MetadataType.STRING:
        max_length = m.max_length if m and m.max_length else VARCHAR_MAX
        return FieldSchema(name, DataType.VARCHAR, max_length=max_length, **kw)
    if mtype in (MetadataType.INT64, MetadataType.TIMESTAMP):
        return FieldSchema(name, DataType.INT64, **kw)
    if mtype is MetadataType.FLOAT64:
        return FieldSchema(name, DataType.DOUBLE, **kw)
    if mtype is MetadataType.BOOL:
        return FieldSchema(name, DataType.BOOL, **kw)
    if mtype is MetadataType.JSON:
        return FieldSchema(name, DataType.JSON, **kw)
    element = {
        MetadataType.LIST_STRING: DataType.VARCHAR,
        MetadataType.LIST_INT64: DataType.INT64,
        MetadataType.LIST_FLOAT64: DataType.DOUBLE,
    }[mtype]
    extra: dict[str, Any] = {"max_length": VARCHAR_MAX} if element == DataType.VARCHAR else {}
    return FieldSchema(
        name,
        DataType.ARRAY,
        element_type=element,
        max_capacity=ARRAY_CAPACITY,
        **extra,
        **kw,
    )


def _hints(spec: CollectionSpec, layout: Layout, *, lite: bool) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    if layout.dynamic:
        hints["dynamic"] = {k: str(v) for k, v in layout.dynamic.items()}
    if layout.document == "dynamic":
        hints["document"] = "dynamic"
    retyped = {k: str(v) for k, v in layout.typed.items() if v is MetadataType.TIMESTAMP}
    if retyped:
        hints["types"] = retyped
    if lite and spec.indexes:
        hints["indexes"] = [ix.model_dump(mode="json") for ix in spec.indexes]
    if lite and spec.partitions:
        hints["partitions"] = [p for p in spec.partitions if p != "_default"]
    if layout.enable_dynamic:
        hints["closed"] = not layout.dynamic_rest  # every dynamic key is named above
    return hints


def index_params(client: Any, spec: CollectionSpec, *, lite: bool) -> Any:
    """Index parameters for every vector field: the spec's kind, FLAT on Lite."""
    params = client.prepare_index_params()
    for vf in spec.vectors:
        if vf.sparse:
            params.add_index(vf.name, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
            continue
        wanted = next((ix for ix in spec.indexes if ix.field == vf.name), None)
        index_type = "FLAT" if lite else "AUTOINDEX"
        extra: dict[str, Any] = {}
        if wanted is not None and not lite:
            index_type = _INDEX_TYPES.get(wanted.kind.lower(), "AUTOINDEX")
            for key, value in wanted.params.items():
                name = _INDEX_PARAM_NAMES.get(key.lower())
                if name is not None:
                    extra[name] = value
        params.add_index(
            vf.name, index_type=index_type, metric_type=metric_name(vf.metric), params=extra
        )
    return params


# -- reading an existing collection ---------------------------------------------------


def parse_description(description: str) -> tuple[str, dict[str, Any]]:
    """The user's description and vecmigrate's hints."""
    text, mark, rest = description.partition(HINT_MARK)
    if not mark:
        return description, {}
    try:
        hints = json.loads(rest)
    except json.JSONDecodeError:
        return description, {}
    return text.rstrip("\n"), hints if isinstance(hints, dict) else {}


def layout_of(info: dict[str, Any], hints: dict[str, Any], metrics: dict[str, Metric]) -> Layout:
    """The layout of an existing collection from describe_collection() and its hints."""
    from pymilvus import DataType

    layout = Layout(enable_dynamic=bool(info.get("enable_dynamic_field")))
    retyped = hints.get("types", {})
    name = info.get("collection_name", "?")
    for f in info["fields"]:
        fname, ftype, params = f["name"], f["type"], f.get("params", {})
        if f.get("is_primary"):
            layout.pk = fname
            layout.id_type = "int64" if ftype == DataType.INT64 else "string"
        elif ftype == DataType.FLOAT_VECTOR:
            layout.vectors.append(
                VectorField(
                    name=fname, dim=int(params["dim"]), metric=metrics.get(fname, Metric.L2)
                )
            )
        elif ftype == DataType.FLOAT16_VECTOR:
            layout.vectors.append(
                VectorField(
                    name=fname,
                    dim=int(params["dim"]),
                    metric=metrics.get(fname, Metric.L2),
                    dtype="float16",
                )
            )
        elif ftype == DataType.SPARSE_FLOAT_VECTOR:
            layout.vectors.append(
                VectorField(name=fname, dim=0, metric=metrics.get(fname, Metric.IP), sparse=True)
            )
        elif ftype in (DataType.BINARY_VECTOR, DataType.BFLOAT16_VECTOR):
            raise Unsupported(
                f"milvus collection {name!r}: field {fname!r} has type {ftype.name}, "
                "which vecmigrate cannot move yet"
            )
        elif fname == DOCUMENT and ftype == DataType.VARCHAR:
            layout.document = "field"
        elif fname == ID:
            raise Unsupported(
                f"milvus collection {name!r}: scalar field 'id' is not the primary key; "
                "vecmigrate reserves 'id' for the primary key"
            )
        else:
            mtype = _metadata_type(ftype, params, f.get("element_type"))
            if mtype is None:
                raise Unsupported(
                    f"milvus collection {name!r}: field {fname!r} of type {ftype!r} "
                    "cannot be moved yet"
                )
            layout.typed[fname] = MetadataType(retyped.get(fname, mtype))
    layout.dynamic = {k: MetadataType(v) for k, v in hints.get("dynamic", {}).items()}
    if hints.get("document") == "dynamic":
        layout.document = "dynamic"
    layout.dynamic_rest = layout.enable_dynamic and not hints.get("closed", False)
    return layout


def _metadata_type(ftype: Any, params: dict[str, Any], element: Any) -> MetadataType | None:
    from pymilvus import DataType

    scalars = {
        DataType.BOOL: MetadataType.BOOL,
        DataType.INT8: MetadataType.INT64,
        DataType.INT16: MetadataType.INT64,
        DataType.INT32: MetadataType.INT64,
        DataType.INT64: MetadataType.INT64,
        DataType.FLOAT: MetadataType.FLOAT64,
        DataType.DOUBLE: MetadataType.FLOAT64,
        DataType.VARCHAR: MetadataType.STRING,
        DataType.JSON: MetadataType.JSON,
    }
    if ftype in scalars:
        return scalars[ftype]
    if ftype == DataType.ARRAY:
        element = element if element is not None else params.get("element_type")
        if element == DataType.VARCHAR:
            return MetadataType.LIST_STRING
        if element in (DataType.INT8, DataType.INT16, DataType.INT32, DataType.INT64):
            return MetadataType.LIST_INT64
        if element in (DataType.FLOAT, DataType.DOUBLE):
            return MetadataType.LIST_FLOAT64
        return MetadataType.JSON
    return None


infer_type = MetadataType.of_values  # one inference for every schemaless system


def index_configs(client: Any, collection: str) -> tuple[list[IndexConfig], dict[str, Metric]]:
    """The vector indexes of a collection and the metric of each vector field."""
    indexes: list[IndexConfig] = []
    metrics: dict[str, Metric] = {}
    for index_name in client.list_indexes(collection):
        info = client.describe_index(collection, index_name)
        field_name = info.get("field_name", index_name)
        metric = None
        if info.get("metric_type"):
            metric = Metric.parse(str(info["metric_type"]))
            metrics[field_name] = metric
        params = {k: _plain(v) for k, v in info.items() if k not in _INDEX_INFO_KEYS}
        indexes.append(
            IndexConfig(
                field=field_name,
                kind=str(info.get("index_type", "unknown")).lower(),
                metric=metric,
                params=params,
            )
        )
    return indexes, metrics


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def check_compatible(existing: CollectionSpec, wanted: CollectionSpec, collection: str) -> None:
    """Refuse to reuse a collection that cannot hold ``wanted``'s records."""
    if existing.id_type != wanted.id_type:
        raise SchemaMismatch(
            f"milvus collection {collection!r} has {existing.id_type} ids, "
            f"the source has {wanted.id_type} ids"
        )
    for vf in wanted.vectors:
        have = next((v for v in existing.vectors if v.name == vf.name), None)
        if have is None:
            raise SchemaMismatch(
                f"milvus collection {collection!r} has no vector field {vf.name!r}"
            )
        if have.sparse != vf.sparse or (not vf.sparse and have.dim != vf.dim):
            raise SchemaMismatch(
                f"milvus collection {collection!r}: field {vf.name!r} holds vectors of dim "
                f"{have.dim}, the source has dim {vf.dim}"
            )
        if not vf.sparse and have.metric != vf.metric:
            raise SchemaMismatch(
                f"milvus collection {collection!r}: field {vf.name!r} uses {have.metric}, "
                f"the source uses {vf.metric}"
            )
