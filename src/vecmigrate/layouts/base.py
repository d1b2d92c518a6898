"""What every framework layout connector shares: the canonical records and the carry-over report.

Canonical records are ``id`` (string), ``vector``, ``document`` and one column per metadata key
(:mod:`vecmigrate.layouts.metadata`); records read from a LlamaIndex store also carry the
node's serialized form and class (``_node_content``, ``_node_type``), which a LlamaIndex
target writes back and a LangChain target cannot hold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.connectors.base import Capabilities, Connector, WriteToken
from vecmigrate.engine.mapping import MappingReport
from vecmigrate.errors import ConfigError, NotFoundError
from vecmigrate.layouts.llamaindex import INTERNAL_KEYS, StoredNode
from vecmigrate.layouts.metadata import (
    NODE_COLUMNS,
    NODE_CONTENT,
    NODE_TYPE,
    VECTOR,
    key_name,
    to_columns,
    to_dicts,
)
from vecmigrate.records import check_batch, conform, fixed_size_vectors, vectors_numpy
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
from vecmigrate.uri import ConnectorURI

log = logging.getLogger("vecmigrate.layouts")


def system_uri(
    uri: ConnectorURI, *, own: set[str], passed: set[str], **set_options: str
) -> ConnectorURI:
    """The URI for the plain connector's config parser, without the layout's own options.

    Options neither the layout (``own``) nor the plain connector (``passed``) knows are
    refused here, so a typo is never ignored.
    """
    uri.check_options({"layout", *own, *passed})
    options = {
        k: v
        for k, v in uri.options.items()
        if k in passed or k.endswith("_env") or k.endswith("_file")
    }
    options.update(set_options)
    return replace(uri, options=options)


class LayoutConnector(Connector):
    """A framework's own layout on one system, read and written as canonical records."""

    framework: ClassVar[str] = ""
    system: ClassVar[str] = ""
    nests: ClassVar[bool] = True  # nested metadata values are stored nested
    native_metrics: ClassVar[frozenset[Metric]] = frozenset(Metric)
    shadowed_keys: ClassVar[frozenset[str]] = frozenset()  # keys the store uses itself
    capabilities: ClassVar[Capabilities] = Capabilities(
        query=True,
        delete=True,
        int_ids=False,
        sparse_vectors=False,
        named_vectors=False,
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self._target: CollectionSpec | None = None  # what create() was given
        self._described: CollectionSpec | None = None

    @property
    def where(self) -> str:
        """The collection, for messages."""
        return f"{self.framework} {self.system} collection"

    # -- spec ---------------------------------------------------------------------------
    def describe(self) -> CollectionSpec:
        if self._described is None:
            self._described = self._describe()
        return self._described.model_copy(deep=True)

    def _describe(self) -> CollectionSpec:
        raise NotImplementedError

    def _require(self) -> None:
        if not self.exists():
            raise NotFoundError(f"{self.where} does not exist")

    def canonical_spec(
        self,
        name: str,
        dim: int,
        metric: Metric,
        fields: Sequence[MetadataField],
        *,
        indexes: Sequence[IndexConfig] = (),
        info: dict[str, Any] | None = None,
    ) -> CollectionSpec:
        metadata = list(fields)
        if self.framework == "llamaindex":
            metadata += [
                MetadataField(name=NODE_CONTENT, type=MetadataType.STRING),
                MetadataField(name=NODE_TYPE, type=MetadataType.STRING),
            ]
        system = {"framework": self.framework, "system": self.system, **(info or {})}
        return CollectionSpec(
            name=name,
            id_type="string",
            vectors=[VectorField(name=VECTOR, dim=dim, metric=metric)],
            metadata=metadata,
            has_document=True,
            indexes=list(indexes),
            system={"layout": system},
        )

    def canonical_batch(
        self,
        ids: list[str],
        vectors: np.ndarray,
        documents: Sequence[str | None],
        metadata: Sequence[dict[str, Any] | None],
        nodes: Sequence[StoredNode] | None = None,
    ) -> pa.RecordBatch:
        """A batch of the described spec from what the store returned."""
        spec = self._described or self.describe()
        schema = spec.arrow_schema()
        vf = spec.vector()
        cols: dict[str, pa.Array] = {
            ID: pa.array(ids, pa.string()),
            vf.name: fixed_size_vectors(vectors.reshape(len(ids), vf.dim)),
            DOCUMENT: pa.array(list(documents), pa.string()),
        }
        user = [m for m in spec.metadata if m.name not in NODE_COLUMNS]
        cols.update(to_columns(metadata, user, ids))
        if self.framework == "llamaindex":
            stored = nodes or []
            cols[NODE_CONTENT] = pa.array([n.node_content for n in stored], pa.string())
            cols[NODE_TYPE] = pa.array([n.node_type for n in stored], pa.string())
        return pa.RecordBatch.from_arrays([cols[f.name] for f in schema], schema=schema)

    # -- target -------------------------------------------------------------------------
    def target_spec(self) -> CollectionSpec:
        if self._target is None:
            self._target = self.describe()
        return self._target

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        spec = self.target_spec()
        if batch.schema != spec.arrow_schema():
            batch = conform(batch, spec)
        check_batch(batch, spec)
        if batch.num_rows:
            self._write(Records.of(batch, spec))

    def _write(self, records: Records) -> None:
        raise NotImplementedError

    def check_target(self, spec: CollectionSpec) -> None:
        """Refuse what this layout cannot hold at all, and log what it will not carry, before
        anything is created or written."""
        dense = [v for v in spec.vectors if not v.sparse]
        if not dense:
            raise ConfigError(f"{self.where}: the source has no dense vector field")
        report = self.carry(spec)
        for note in report.lost:
            log.warning("%s cannot hold: %s", self.where, note)
        for note in report.converted:
            log.info("%s converts: %s", self.where, note)

    def carry(self, spec: CollectionSpec) -> MappingReport:
        """What of ``spec``'s records this layout keeps, converts and cannot hold."""
        report = MappingReport()
        dense = [v for v in spec.vectors if not v.sparse]
        if dense:
            vf = dense[0]
            note = f"vector {vf.name}: dim {vf.dim}, {vf.metric.value}"
            if vf.metric in self.native_metrics:
                report.exact.append(note)
            else:
                report.converted.append(note + f" ({self.metric_note(vf.metric)})")
        for extra in [v for v in spec.vectors if v not in dense[:1]]:
            report.lost.append(f"vector {extra.name}: {self.framework} keeps one dense vector")
        if spec.id_type == "int64":
            report.converted.append("id: int64 -> string")
        if spec.has_document:
            report.exact.append("document text")
        else:
            report.converted.append("document text: the source has none (empty text written)")
        names = {m.name for m in spec.metadata}
        for m in spec.metadata:
            self._carry_field(m, report)
        if self.framework == "llamaindex" and NODE_CONTENT not in names:
            report.converted.append(
                "nodes: built as TextNode from id, text and metadata (no source document: "
                "ref_doc_id 'None', no relationships)"
            )
        return report

    def _carry_field(self, m: MetadataField, report: MappingReport) -> None:
        if m.name == NODE_TYPE:
            return  # reported with the node content
        if m.name in NODE_COLUMNS:
            if self.framework == "llamaindex":
                report.exact.append(f"LlamaIndex {m.name}")
            else:
                report.lost.append(
                    f"LlamaIndex {m.name}: node relationships (source document, previous/next, "
                    "parent/child), templates, excluded metadata keys and character offsets "
                    "have no place in a LangChain Document"
                )
            return
        key = key_name(m.name)
        if key in self.shadowed():
            report.lost.append(self.shadow_note(key))
        elif m.type is MetadataType.JSON and not self.nests:
            report.converted.append(
                f"metadata {key}: json stored as JSON text (key listed in the collection "
                "metadata 'vecmigrate:json_keys'; vecmigrate restores it)"
            )
        else:
            report.exact.append(f"metadata {key}: {m.type.value}")

    def shadowed(self) -> frozenset[str]:
        """Metadata keys the store uses itself (the source's values cannot keep the key)."""
        return self.shadowed_keys

    def metric_note(self, metric: Metric) -> str:
        return f"{self.framework} {self.system} cannot store {metric.value}"

    def shadow_note(self, key: str) -> str:
        if self.framework == "llamaindex" and key in INTERNAL_KEYS:
            return (
                f"metadata {key}: top-level key is LlamaIndex's own; the value is kept in "
                "the node content only"
            )
        return f"metadata {key}: the key is a field of the {self.system} collection itself"


@dataclass
class Records:
    """A canonical batch as the lists a framework's store takes (one metadata dict per record:
    every framework API here is row-oriented)."""

    ids: list[str]
    vectors: np.ndarray
    documents: list[str | None]
    metadata: list[dict[str, Any]]
    node_content: list[str | None]
    node_type: list[str | None]

    @classmethod
    def of(cls, batch: pa.RecordBatch, spec: CollectionSpec) -> Records:
        n = batch.num_rows
        ids_col = batch.column(ID)
        if not pa.types.is_string(ids_col.type):
            ids_col = pc.cast(ids_col, pa.string())
        vf = next(v for v in spec.vectors if not v.sparse)
        names = batch.schema.names
        documents = batch.column(DOCUMENT).to_pylist() if DOCUMENT in names else [None] * n
        user = [m for m in spec.metadata if m.name not in NODE_COLUMNS]

        def optional(name: str) -> list[str | None]:
            return batch.column(name).to_pylist() if name in names else [None] * n

        return cls(
            ids=ids_col.to_pylist(),
            vectors=vectors_numpy(batch.column(vf.name)),
            documents=documents,
            metadata=to_dicts(batch, user),
            node_content=optional(NODE_CONTENT),
            node_type=optional(NODE_TYPE),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, keys: frozenset[str]) -> list[dict[str, Any]]:
        """The metadata dicts less ``keys``."""
        if not keys:
            return self.metadata
        return [{k: v for k, v in m.items() if k not in keys} for m in self.metadata]
