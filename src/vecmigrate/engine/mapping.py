"""Map a source CollectionSpec onto what a target system can hold, saying what changes."""

from __future__ import annotations

from dataclasses import dataclass, field

from vecmigrate.connectors.base import Capabilities
from vecmigrate.errors import SchemaMismatch
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType


@dataclass
class MappingReport:
    """What carries over exactly, what is converted, and what is lost."""

    exact: list[str] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"exact": self.exact, "converted": self.converted, "lost": self.lost}


_NEAREST: dict[MetadataType, list[MetadataType]] = {
    MetadataType.BOOL: [MetadataType.INT64, MetadataType.STRING],
    MetadataType.INT64: [MetadataType.FLOAT64, MetadataType.STRING],
    MetadataType.FLOAT64: [MetadataType.STRING],
    MetadataType.TIMESTAMP: [MetadataType.STRING, MetadataType.INT64],
    MetadataType.JSON: [MetadataType.STRING],
    MetadataType.LIST_STRING: [MetadataType.JSON, MetadataType.STRING],
    MetadataType.LIST_INT64: [MetadataType.JSON, MetadataType.STRING],
    MetadataType.LIST_FLOAT64: [MetadataType.JSON, MetadataType.STRING],
    MetadataType.STRING: [],
}


def map_spec(
    spec: CollectionSpec, caps: Capabilities, *, target: str
) -> tuple[CollectionSpec, MappingReport]:
    """The spec the target will be created with; refuse what it cannot express."""
    report = MappingReport()
    out = spec.model_copy(deep=True)
    if spec.id_type == "string" and not caps.string_ids:
        raise SchemaMismatch(f"{target} cannot store string ids, and the source has string ids")
    if spec.id_type == "int64" and not caps.int_ids:
        out.id_type = "string"
        report.converted.append("id: int64 -> string")
    else:
        report.exact.append(f"id: {spec.id_type}")
    for vf in spec.vectors:
        if vf.sparse and not caps.sparse_vectors:
            raise SchemaMismatch(f"{target} cannot store sparse vector field {vf.name!r}")
        if vf.metric not in caps.metrics:
            have = ", ".join(sorted(m.value for m in caps.metrics))
            raise SchemaMismatch(
                f"{target} cannot express metric {vf.metric.value!r} of field {vf.name!r} "
                f"(it has {have})"
            )
        if caps.max_dim is not None and vf.dim > caps.max_dim:
            raise SchemaMismatch(
                f"{target} allows at most {caps.max_dim} dimensions; field {vf.name!r} has {vf.dim}"
            )
        note = f"vector {vf.name}: dim {vf.dim}, {vf.metric.value}"
        if vf.metric.value == "cosine" and caps.normalizes_cosine:
            report.converted.append(note + " (target stores cosine vectors normalised)")
        elif not caps.exact_float32:
            ulps = max(caps.max_ulp, 1)
            report.converted.append(note + f" (target may change float32 values by {ulps} ulp)")
        else:
            report.exact.append(note)
    vector_count = sum(1 for v in spec.vectors if not v.sparse)
    if vector_count > 1 and not caps.named_vectors:
        raise SchemaMismatch(f"{target} holds one vector per record; the source has {vector_count}")
    if spec.has_document and not caps.documents:
        out.has_document = False
        report.lost.append("document text")
    fields: list[MetadataField] = []
    for m in spec.metadata:
        if m.type in caps.metadata_types:
            fields.append(m)
            report.exact.append(f"metadata {m.name}: {m.type.value}")
            continue
        nearest = next((t for t in _NEAREST[m.type] if t in caps.metadata_types), None)
        if nearest is None:
            report.lost.append(f"metadata {m.name}: {m.type.value}")
            continue
        fields.append(m.model_copy(update={"type": nearest}))
        report.converted.append(f"metadata {m.name}: {m.type.value} -> {nearest.value}")
    out.metadata = fields
    extras: list[tuple[str, int, bool]] = [
        ("partitions", len(spec.partitions), caps.partitions),
        ("aliases", len(spec.aliases), caps.aliases),
        ("access-control entries", len(spec.access), caps.access_control),
    ]
    for what, count, cap in extras:
        if count and not cap:
            report.lost.append(f"{what}: {count} (kept in manifests and reports only)")
    return out, report
