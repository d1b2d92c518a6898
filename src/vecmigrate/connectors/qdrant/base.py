"""What the Qdrant connectors share: describe, scan, fetch, query and write over a few engine calls.

Each engine (qdrant-client, Qdrant Edge) implements the ``_``-methods; this class turns them into
the connector contract. Scrolling follows Qdrant's id order; the cursor is the next page's first
id (JSON), so a resumed scan starts exactly where the last batch ended.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from vecmigrate.connectors.base import (
    Capabilities,
    Connector,
    IfExists,
    Partition,
    QueryResult,
    ScanBatch,
    WriteToken,
)
from vecmigrate.connectors.qdrant.config import QdrantConfig
from vecmigrate.connectors.qdrant.points import (
    ID_MAPPING,
    ORIGINAL_ID,
    PAYLOAD_REST,
    PointColumns,
    PointLayout,
    infer_type,
    point_id,
    source_id,
    to_batch,
    to_points,
)
from vecmigrate.errors import NotFoundError, SchemaMismatch
from vecmigrate.records import conform
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType, Metric
from vecmigrate.uri import ConnectorURI

SAMPLE_POINTS = 1_000  # points sampled to find payload keys of a collection vecmigrate did not make
QDRANT_CAPABILITIES = Capabilities(
    query=True,
    fetch=True,
    delete=True,
    sparse_vectors=True,
    named_vectors=True,
    metrics=frozenset({Metric.COSINE, Metric.L2, Metric.IP}),
    max_dim=65_536,
    normalizes_cosine=True,
    aliases=True,
    notes=(
        "cosine vectors are stored normalised",
        "ids that are not unsigned ints or UUIDs are stored as uuid5 with the original id "
        f"in payload {ORIGINAL_ID!r}, and restored on reading",
    ),
)


class QdrantBase(Connector):
    """Shared logic; subclasses provide the engine calls."""

    capabilities: ClassVar[Capabilities] = QDRANT_CAPABILITIES

    dense_rows = "list"  # how _write wants dense vectors: see points.to_points

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = QdrantConfig.from_uri(uri)
        self._spec: CollectionSpec | None = None
        self._layout: PointLayout | None = None
        self._schema_of: tuple[CollectionSpec, pa.Schema] | None = None

    @property
    def name(self) -> str:
        return self.config.collection

    # -- engine calls (subclasses) ------------------------------------------------------
    def _raw_spec(self) -> tuple[CollectionSpec, PointLayout]:
        """Vectors, indexes, aliases and system settings as the engine reports them."""
        raise NotImplementedError

    def _hints(self) -> dict[str, Any]:
        """What vecmigrate recorded when it created the collection ({} if it did not)."""
        raise NotImplementedError

    def _scroll(self, offset: Any, limit: int) -> tuple[list[Any], Any]:
        raise NotImplementedError

    def _retrieve(self, ids: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _write(self, points: PointColumns) -> None:
        raise NotImplementedError

    def _delete(self, ids: list[Any]) -> None:
        raise NotImplementedError

    def _count(self) -> int:
        raise NotImplementedError

    def _search(self, qname: str, vector: list[float], k: int) -> list[Any]:
        """Scored points (``.id``, ``.score``, ``.payload`` with ORIGINAL_ID)."""
        raise NotImplementedError

    def _create(self, spec: CollectionSpec, layout: PointLayout, hints: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- describe -----------------------------------------------------------------------
    def _require(self) -> None:
        if not self.exists():
            raise NotFoundError(f"qdrant collection {self.name!r} does not exist ({self.uri})")

    def describe(self) -> CollectionSpec:
        if self._spec is None:
            self._spec, self._layout = self._describe()
        return self._spec.model_copy(deep=True)

    def layout(self) -> PointLayout:
        if self._layout is None:
            self._spec, self._layout = self._describe()
        return self._layout

    def _describe(self) -> tuple[CollectionSpec, PointLayout]:
        self._require()
        spec, layout = self._raw_spec()
        hints = self._hints()
        if hints:
            layout.id_type = hints.get("id_type", "string")
            layout.document_key = hints.get("document_key")
            layout.metadata = {k: MetadataType(v) for k, v in hints.get("metadata", {}).items()}
            nullable = hints.get("nullable", {})
            metadata = [
                MetadataField(name=k, type=v, nullable=nullable.get(k, True))
                for k, v in layout.metadata.items()
            ]
        else:
            metadata = self._infer_payload(layout)
        if layout.rest:
            metadata.append(MetadataField(name=PAYLOAD_REST, type=MetadataType.JSON))
        spec.id_type = layout.id_type
        spec.metadata = metadata
        spec.has_document = layout.document_key is not None
        spec.id_mapping = ID_MAPPING
        spec.system.setdefault("qdrant", {})["document_key"] = layout.document_key
        return CollectionSpec.model_validate(spec.model_dump()), layout

    def _infer_payload(self, layout: PointLayout) -> list[MetadataField]:
        """Payload keys and id type from a sample of points (a collection made elsewhere)."""
        records, _ = self._scroll(None, SAMPLE_POINTS)
        ints = all(isinstance(r.id, int) for r in records)
        values: dict[str, list[Any]] = {}
        for r in records:
            payload = r.payload or {}
            if isinstance(payload.get(ORIGINAL_ID), str):
                ints = False
            for key, value in payload.items():
                if key != ORIGINAL_ID:
                    values.setdefault(key, []).append(value)
        layout.id_type = "int64" if records and ints else "string"
        doc = self.config.document_key
        if doc in values and infer_type(values[doc]) is MetadataType.STRING:
            layout.document_key = doc
            del values[doc]
        for reserved in ("id", "document"):
            values.pop(reserved, None)  # left to the PAYLOAD_REST column
        layout.metadata = {k: infer_type(v) for k, v in values.items()}
        layout.rest = True
        return [MetadataField(name=k, type=v) for k, v in layout.metadata.items()]

    def count(self) -> int:
        self._require()
        return self._count()

    # -- reading ------------------------------------------------------------------------
    def partitions(self, hint: int) -> list[Partition]:
        return [Partition(key="all", bounds={}, estimated_rows=self.count())]

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        spec, layout = self.describe(), self.layout()
        state = json.loads(cursor) if cursor is not None else {"next": None}
        if state.get("done"):
            return
        offset = state["next"]
        while True:
            records, following = self._scroll(offset, batch_size)
            after = {"done": True} if following is None else {"next": _json_id(following)}
            if records:
                yield ScanBatch(batch=to_batch(records, spec, layout), cursor=json.dumps(after))
            if following is None:
                return
            offset = following

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        spec, layout = self.describe(), self.layout()
        wanted = list(dict.fromkeys(ids))
        records = self._retrieve([point_id(i) for i in wanted])
        # a uuid5 may only stand for the id it was made from
        want = {str(i) for i in wanted}
        records = [
            r for r in records if str(source_id(r.id, r.payload or {}, layout.id_type)) in want
        ]
        return to_batch(records, spec, layout)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        spec, layout = self.describe(), self.layout()
        vf = spec.vector(vector_field)
        qname = layout.vector_names[vf.name]
        ids: list[list[Any]] = []
        scores: list[list[float]] = []
        for q in np.asarray(vectors, dtype=np.float32):
            hits = self._search(qname, q.tolist(), k)
            ids.append([source_id(h.id, h.payload or {}, layout.id_type) for h in hits])
            scores.append([float(h.score) for h in hits])
        return QueryResult(ids=ids, scores=scores)

    # -- writing ------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        if self.exists():
            if if_exists is IfExists.REUSE:
                self._spec = self._layout = None
                _check_compatible(self.describe(), spec, self.name)
                return
            if if_exists is IfExists.FAIL:
                raise SchemaMismatch(f"qdrant collection {self.name!r} already exists")
            self.drop()
        layout = PointLayout(
            id_type=spec.id_type,
            vectors=list(spec.vectors),
            vector_names={v.name: v.name for v in spec.vectors},
            document_key=self.config.document_key if spec.has_document else None,
            metadata={m.name: m.type for m in spec.metadata if m.name != PAYLOAD_REST},
            rest=any(m.name == PAYLOAD_REST for m in spec.metadata),
        )
        hints = {
            "id_type": spec.id_type,
            "document_key": layout.document_key,
            "metadata": {k: str(v) for k, v in layout.metadata.items()},
            "nullable": {m.name: m.nullable for m in spec.metadata},
        }
        self._create(spec, layout, hints)
        self._spec = self._layout = None

    def _written_spec(self) -> tuple[CollectionSpec, PointLayout, pa.Schema]:
        """The described spec (not a copy: only read here), its layout and record schema."""
        layout = self.layout()
        spec = self._spec
        assert spec is not None
        cached = self._schema_of
        if cached is None or cached[0] is not spec:
            cached = self._schema_of = (spec, spec.arrow_schema())
        return spec, layout, cached[1]

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        spec, layout, schema = self._written_spec()  # per call: a router writes single rows
        if batch.schema != schema:
            batch = conform(batch, spec)
        step = self.config.write_batch
        for start in range(0, batch.num_rows, step):
            self._write(to_points(batch.slice(start, step), layout, dense_rows=self.dense_rows))

    def delete(self, ids: Sequence[Any]) -> None:
        self._require()
        self._delete([point_id(i) for i in ids])


def _json_id(value: Any) -> int | str:
    return value if isinstance(value, int) else str(value)


def _check_compatible(existing: CollectionSpec, wanted: CollectionSpec, collection: str) -> None:
    for vf in wanted.vectors:
        have = next((v for v in existing.vectors if v.name == vf.name), None)
        if have is None and len(existing.vectors) == 1 and len(wanted.vectors) == 1:
            have = existing.vectors[0]
        if have is None:
            raise SchemaMismatch(f"qdrant collection {collection!r} has no vector {vf.name!r}")
        if have.sparse != vf.sparse or (not vf.sparse and have.dim != vf.dim):
            raise SchemaMismatch(
                f"qdrant collection {collection!r}: vector {vf.name!r} has dim {have.dim}, "
                f"the source has dim {vf.dim}"
            )
        if not vf.sparse and have.metric != vf.metric:
            raise SchemaMismatch(
                f"qdrant collection {collection!r}: vector {vf.name!r} uses {have.metric}, "
                f"the source uses {vf.metric}"
            )
    if existing.id_type != wanted.id_type and existing.id_type == "int64":
        raise SchemaMismatch(
            f"qdrant collection {collection!r} holds int64 ids, the source has string ids"
        )
