"""CollectionSpec: what a collection is, independent of the system that holds it."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vecmigrate.errors import ConfigError

ID = "id"
DOCUMENT = "document"
RESERVED = frozenset({ID, DOCUMENT})


class Metric(StrEnum):
    """Distance functions, by their common names."""

    COSINE = "cosine"
    L2 = "l2"
    IP = "ip"

    @classmethod
    def parse(cls, name: str) -> Metric:
        """Accept the spellings systems use (``Cosine``, ``euclidean``, ``dot``, ``IP``...)."""
        key = name.strip().lower().replace("-", "_")
        aliases = {
            "cosine": cls.COSINE,
            "cos": cls.COSINE,
            "l2": cls.L2,
            "euclid": cls.L2,
            "euclidean": cls.L2,
            "l2_squared": cls.L2,
            "ip": cls.IP,
            "dot": cls.IP,
            "dot_product": cls.IP,
            "inner_product": cls.IP,
            "max_inner_product": cls.IP,
        }
        if key not in aliases:
            known = ", ".join(m.value for m in cls)
            raise ConfigError(f"unknown metric {name!r}: use one of {known}")
        return aliases[key]


class MetadataType(StrEnum):
    """Logical metadata types; each has one Arrow type."""

    STRING = "string"
    INT64 = "int64"
    FLOAT64 = "float64"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    JSON = "json"
    LIST_STRING = "list<string>"
    LIST_INT64 = "list<int64>"
    LIST_FLOAT64 = "list<float64>"

    def arrow(self) -> pa.DataType:
        return _ARROW_OF[self]

    @classmethod
    def of_values(cls, values: list[Any]) -> MetadataType:
        """The type of the non-null values a schemaless key holds (payloads, dynamic fields)."""
        kinds = {type(v) for v in values if v is not None}
        if not kinds:
            return cls.STRING
        if kinds == {bool}:
            return cls.BOOL
        if kinds == {int}:
            return cls.INT64
        if kinds <= {int, float}:
            return cls.FLOAT64
        if kinds == {str}:
            return cls.STRING
        if kinds == {list}:
            inner = {type(x) for v in values if isinstance(v, list) for x in v}
            if inner == {str}:
                return cls.LIST_STRING
            if inner == {int}:
                return cls.LIST_INT64
            if inner and inner <= {int, float}:
                return cls.LIST_FLOAT64
        return cls.JSON

    @classmethod
    def of_arrow(cls, dtype: pa.DataType, *, field: str = "?") -> MetadataType:
        """The logical type of an Arrow column; nested structs become JSON."""
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            return cls.STRING
        if pa.types.is_boolean(dtype):
            return cls.BOOL
        if pa.types.is_integer(dtype):
            return cls.INT64
        if pa.types.is_floating(dtype):
            return cls.FLOAT64
        if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
            return cls.TIMESTAMP
        if pa.types.is_dictionary(dtype):
            return cls.of_arrow(dtype.value_type, field=field)
        if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
            inner = dtype.value_type
            if pa.types.is_string(inner) or pa.types.is_large_string(inner):
                return cls.LIST_STRING
            if pa.types.is_integer(inner):
                return cls.LIST_INT64
            if pa.types.is_floating(inner):
                return cls.LIST_FLOAT64
            return cls.JSON
        if pa.types.is_struct(dtype) or pa.types.is_map(dtype):
            return cls.JSON
        raise ConfigError(f"field {field!r}: unsupported metadata type {dtype}")


_ARROW_OF: dict[MetadataType, pa.DataType] = {
    MetadataType.STRING: pa.string(),
    MetadataType.INT64: pa.int64(),
    MetadataType.FLOAT64: pa.float64(),
    MetadataType.BOOL: pa.bool_(),
    MetadataType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    MetadataType.JSON: pa.string(),
    MetadataType.LIST_STRING: pa.list_(pa.string()),
    MetadataType.LIST_INT64: pa.list_(pa.int64()),
    MetadataType.LIST_FLOAT64: pa.list_(pa.float64()),
}

JSON_FIELD_META = b"vecmigrate.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, use_enum_values=False)


class VectorField(_Model):
    """A dense or sparse vector field."""

    name: str = "vector"
    dim: int = Field(ge=0, description="dimension; 0 for sparse fields with no fixed size")
    metric: Metric = Metric.COSINE
    dtype: Literal["float32", "float16"] = "float32"
    sparse: bool = False
    embedding_model: str | None = None

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, v: Any) -> Any:
        return Metric.parse(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _dense_has_dim(self) -> VectorField:
        if not self.sparse and self.dim <= 0:
            raise ConfigError(f"vector field {self.name!r}: a dense vector needs a dimension > 0")
        return self

    def arrow(self) -> pa.DataType:
        if self.sparse:
            return SPARSE_TYPE
        return pa.list_(pa.float32(), self.dim)


SPARSE_TYPE = pa.struct(
    [pa.field("indices", pa.list_(pa.uint32())), pa.field("values", pa.list_(pa.float32()))]
)


class MetadataField(_Model):
    name: str
    type: MetadataType
    nullable: bool = True
    max_length: int | None = None


class IndexConfig(_Model):
    """A vector index as the source system configured it."""

    field: str
    kind: str = Field(description="hnsw, ivf_flat, ivf_pq, flat, diskann, ...")
    metric: Metric | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class AccessEntry(_Model):
    """One grant: a principal's privileges on a resource. Never a secret value."""

    principal: str
    privileges: list[str]
    resource: str | None = None


class CollectionSpec(_Model):
    """A collection's shape: ids, vectors, documents, metadata, indexes, partitions, access."""

    name: str = "collection"
    id_type: Literal["string", "int64"] = "string"
    vectors: list[VectorField] = Field(default_factory=list)
    metadata: list[MetadataField] = Field(default_factory=list)
    has_document: bool = False
    indexes: list[IndexConfig] = Field(default_factory=list)
    partitions: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    access: list[AccessEntry] = Field(default_factory=list)
    id_mapping: str | None = Field(
        default=None, description="how ids were mapped, e.g. 'uuid5(original) in payload _id'"
    )
    system: dict[str, Any] = Field(
        default_factory=dict, description="system-specific settings kept for round trips"
    )

    @model_validator(mode="after")
    def _unique_names(self) -> CollectionSpec:
        seen: set[str] = set()
        for name in [v.name for v in self.vectors] + [m.name for m in self.metadata]:
            if name in seen:
                raise ConfigError(f"field {name!r} appears twice in the collection spec")
            if name in RESERVED:
                raise ConfigError(f"field name {name!r} is reserved for ids and documents")
            seen.add(name)
        return self

    # -- lookup -------------------------------------------------------------------------
    def vector(self, name: str | None = None) -> VectorField:
        """The named vector field, or the only/first dense one."""
        if name is None:
            dense = [v for v in self.vectors if not v.sparse]
            if not dense:
                raise ConfigError(f"collection {self.name!r} has no dense vector field")
            return dense[0]
        for v in self.vectors:
            if v.name == name:
                return v
        raise ConfigError(f"collection {self.name!r} has no vector field {name!r}")

    def metadata_field(self, name: str) -> MetadataField | None:
        return next((m for m in self.metadata if m.name == name), None)

    # -- Arrow --------------------------------------------------------------------------
    def arrow_schema(self) -> pa.Schema:
        """The record-batch schema every connector reads and writes for this collection."""
        fields = [pa.field(ID, pa.string() if self.id_type == "string" else pa.int64(), False)]
        fields += [pa.field(v.name, v.arrow()) for v in self.vectors]
        if self.has_document:
            fields.append(pa.field(DOCUMENT, pa.string()))
        for m in self.metadata:
            meta = {JSON_FIELD_META: b"1"} if m.type is MetadataType.JSON else None
            fields.append(pa.field(m.name, m.type.arrow(), m.nullable, metadata=meta))
        return pa.schema(fields)

    @classmethod
    def from_arrow_schema(
        cls, schema: pa.Schema, *, name: str = "collection", metric: Metric = Metric.COSINE
    ) -> CollectionSpec:
        """Infer a spec from a record-batch schema: fixed-size float lists are vectors."""
        if ID not in schema.names:
            raise ConfigError(f"schema has no {ID!r} column: {schema.names}")
        id_t = schema.field(ID).type
        id_type: Literal["string", "int64"] = "int64" if pa.types.is_integer(id_t) else "string"
        vectors: list[VectorField] = []
        metadata: list[MetadataField] = []
        for f in schema:
            if f.name in RESERVED:
                continue
            t = f.type
            if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type):
                dtype: Literal["float32", "float16"] = (
                    "float16" if pa.types.is_float16(t.value_type) else "float32"
                )
                vectors.append(
                    VectorField(name=f.name, dim=t.list_size, metric=metric, dtype=dtype)
                )
            elif t == SPARSE_TYPE:
                vectors.append(VectorField(name=f.name, dim=0, metric=Metric.IP, sparse=True))
            else:
                is_json = bool(f.metadata and f.metadata.get(JSON_FIELD_META))
                mtype = MetadataType.JSON if is_json else MetadataType.of_arrow(t, field=f.name)
                metadata.append(MetadataField(name=f.name, type=mtype, nullable=f.nullable))
        return cls(
            name=name,
            id_type=id_type,
            vectors=vectors,
            metadata=metadata,
            has_document=DOCUMENT in schema.names,
        )

    # -- JSON ---------------------------------------------------------------------------
    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> CollectionSpec:
        return cls.model_validate_json(text)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.model_dump_json())
        return result
