"""What the Qdrant framework layouts share: the client, ids, scrolling, the vector's name.

Qdrant ids are unsigned integers or UUIDs. A record id that is neither is stored under
``uuid5(namespace, id)`` (a UUID in another spelling under its canonical form, a decimal
string as the integer), with the original in the payload key ``_vecmigrate_id``, which the
frameworks ignore and a read restores.
"""

from __future__ import annotations

import json
import re
import uuid
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from vecmigrate.connectors.base import Capabilities, IfExists, Partition, QueryResult, ScanBatch
from vecmigrate.connectors.qdrant.config import QdrantConfig
from vecmigrate.connectors.qdrant.errors import translated
from vecmigrate.connectors.qdrant.points import ID_NAMESPACE, ORIGINAL_ID
from vecmigrate.errors import ConfigError, SchemaMismatch
from vecmigrate.layouts.base import LayoutConnector, Records, system_uri
from vecmigrate.layouts.llamaindex import StoredNode
from vecmigrate.layouts.metadata import KindTally
from vecmigrate.spec import CollectionSpec, Metric
from vecmigrate.uri import ConnectorURI

PAGE = 1_000
U64_MAX = 2**64 - 1
_CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")
_DISTANCE = {Metric.COSINE: "Cosine", Metric.L2: "Euclid", Metric.IP: "Dot"}
PASSED_OPTIONS = {"collection", "timeout", "write_batch", "secure"}


def point_id(record_id: str) -> tuple[int | str, bool]:
    """The Qdrant id of a record id, and whether the original must be kept in the payload."""
    if _CANONICAL_UUID.match(record_id):
        return record_id, False
    if _DECIMAL.match(record_id) and int(record_id) <= U64_MAX:
        return int(record_id), False
    try:
        return str(uuid.UUID(record_id)), True
    except ValueError:
        return str(uuid.uuid5(ID_NAMESPACE, record_id)), True


def record_id(qid: Any, payload: dict[str, Any]) -> str:
    original = payload.get(ORIGINAL_ID)
    return str(original) if original is not None else str(qid)


class QdrantLayout(LayoutConnector):
    """A framework's points in one Qdrant collection (a server, or qdrant-client local mode)."""

    system: ClassVar[str] = "qdrant"
    own_options: ClassVar[set[str]] = set()
    capabilities: ClassVar[Capabilities] = Capabilities(
        query=True,
        delete=True,
        int_ids=False,
        normalizes_cosine=True,
        notes=(
            "cosine vectors are stored normalised",
            "ids that are not canonical UUIDs or unsigned integers are stored as uuid5 with "
            f"the original in payload {ORIGINAL_ID!r}",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        if uri.scheme == "qdrant+edge":
            raise ConfigError("framework layouts are for qdrant:// and qdrant+local://")
        self.config = QdrantConfig.from_uri(
            system_uri(uri, own=self.own_options, passed=PASSED_OPTIONS)
        )
        self._client: Any = None
        self._vector_name: str | None = None

    @property
    def name(self) -> str:
        return self.config.collection

    @property
    def where(self) -> str:
        return f"{self.framework} qdrant collection {self.name!r}"

    # -- framework specifics ------------------------------------------------------------
    def read_point(
        self, payload: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any], StoredNode | None]:
        """A point's document, metadata (nested) and, for LlamaIndex, its node."""
        raise NotImplementedError

    def payloads(self, records: Records) -> list[dict[str, Any]]:
        """The payload the framework stores for each record."""
        raise NotImplementedError

    def vectors_config(self, dim: int, metric: Metric) -> Any:
        raise NotImplementedError

    def pick_vector(self, named: dict[str, Any]) -> str:
        """Which of a collection's dense vectors the framework searches."""
        raise NotImplementedError

    def after_create(self) -> None:
        """Payload indexes the framework creates with a collection."""

    # -- connection ---------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            from qdrant_client import QdrantClient

            with translated(f"connecting to {self.uri}"):
                if self.config.mode == "local":
                    self._client = QdrantClient(path=str(self.config.path))
                else:
                    self._client = QdrantClient(
                        url=self.config.url,
                        api_key=self.config.api_key,
                        timeout=self.config.timeout,
                    )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def exists(self) -> bool:
        with translated(f"looking up {self.where}"):
            return bool(self.client.collection_exists(self.name))

    def count(self) -> int:
        self._require()
        with translated(f"counting {self.where}"):
            return int(self.client.count(self.name, exact=True).count)

    def vector_name(self) -> str:
        if self._vector_name is None:
            self._vector_name, _ = self._vector_params()
        return self._vector_name

    def _vector_params(self) -> tuple[str, Any]:
        from qdrant_client import models

        with translated(f"describing {self.where}"):
            info = self.client.get_collection(self.name)
        vectors = info.config.params.vectors
        if isinstance(vectors, models.VectorParams):
            return "", vectors
        named = dict(vectors or {})
        if not named:
            raise ConfigError(f"{self.where} has no dense vectors")
        name = self.pick_vector(named)
        return name, named[name]

    # -- describe -----------------------------------------------------------------------
    def _describe(self) -> CollectionSpec:
        self._require()
        name, params = self._vector_params()
        self._vector_name = name
        tally = KindTally()
        offset: Any = None
        while True:
            with translated(f"scrolling {self.where}"):
                points, offset = self.client.scroll(
                    self.name, limit=PAGE, offset=offset, with_payload=True, with_vectors=False
                )
            for p in points:
                tally.add(self.read_point(p.payload or {})[1])
            if offset is None:
                break
        metric = Metric.parse(str(params.distance.value))
        info = {"collection": self.name, "vector_name": name}
        return self.canonical_spec(self.name, int(params.size), metric, tally.fields(), info=info)

    # -- reading ------------------------------------------------------------------------
    def partitions(self, hint: int) -> list[Partition]:
        return [Partition(key="all", bounds={}, estimated_rows=self.count())]

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        spec = self.describe()
        state = json.loads(cursor) if cursor is not None else {"next": None}
        if state.get("done"):
            return
        offset = state["next"]
        name = self.vector_name()
        while True:
            with translated(f"scrolling {self.where}"):
                points, following = self.client.scroll(
                    self.name,
                    limit=batch_size,
                    offset=offset,
                    with_payload=True,
                    with_vectors=[name] if name else True,
                )
            if points:
                yield ScanBatch(
                    batch=self._batch(points, spec),
                    cursor=json.dumps(
                        {"done": True} if following is None else {"next": _json_id(following)}
                    ),
                )
            if following is None:
                return
            offset = following

    def _batch(self, points: Sequence[Any], spec: CollectionSpec) -> Any:
        name = self.vector_name()
        ids: list[str] = []
        docs: list[str | None] = []
        metadata: list[dict[str, Any] | None] = []
        nodes: list[StoredNode] = []
        rows = []
        for p in points:
            payload = p.payload or {}
            doc, md, node = self.read_point(payload)
            ids.append(record_id(p.id, payload))
            docs.append(doc)
            metadata.append(md)
            if node is not None:
                nodes.append(node)
            vec = p.vector
            rows.append(vec.get(name) if isinstance(vec, dict) else vec)
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(ids), spec.vector().dim)
        return self.canonical_batch(ids, vectors, docs, metadata, nodes or None)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        name = self.vector_name()
        ids: list[list[Any]] = []
        scores: list[list[float]] = []
        for q in np.asarray(vectors, dtype=np.float32):
            with translated(f"searching {self.where}"):
                hits = self.client.query_points(
                    self.name, query=q.tolist(), using=name or None, limit=k, with_payload=True
                ).points
            ids.append([record_id(h.id, h.payload or {}) for h in hits])
            scores.append([float(h.score) for h in hits])
        return QueryResult(ids=ids, scores=scores)

    # -- writing ------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        self.check_target(spec)
        vf = next(v for v in spec.vectors if not v.sparse)
        if self.exists():
            if if_exists is IfExists.FAIL:
                raise SchemaMismatch(f"{self.where} already exists (if_exists=fail)")
            if if_exists is IfExists.REUSE:
                _, params = self._vector_params()
                have = Metric.parse(str(params.distance.value))
                if int(params.size) != vf.dim or have is not vf.metric:
                    raise SchemaMismatch(
                        f"{self.where} holds {params.size}-dimensional {have.value} vectors, "
                        f"the source {vf.dim}-dimensional {vf.metric.value}"
                    )
                self._target, self._described = spec, None
                return
            self.drop()
        with translated(f"creating {self.where}"):
            self.client.create_collection(
                self.name, vectors_config=self.vectors_config(vf.dim, vf.metric)
            )
            self.after_create()
        self._vector_name = None
        self._target, self._described = spec, None

    def distance(self, metric: Metric) -> Any:
        from qdrant_client import models

        return models.Distance(_DISTANCE[metric])

    def _write(self, records: Records) -> None:
        from qdrant_client import models

        payloads = self.payloads(records)
        ids: list[int | str] = []
        for rid, payload in zip(records.ids, payloads, strict=True):
            qid, keep = point_id(rid)
            ids.append(qid)
            if keep:
                payload[ORIGINAL_ID] = rid
        name = self.vector_name()
        rows = records.vectors.tolist()
        vectors = [{name: v} for v in rows] if name else rows
        step = self.config.write_batch
        for start in range(0, len(ids), step):
            stop = start + step
            points = [
                models.PointStruct(id=i, vector=v, payload=p)
                for i, v, p in zip(
                    ids[start:stop], vectors[start:stop], payloads[start:stop], strict=True
                )
            ]
            with (
                translated(f"writing {len(points)} points to {self.where}"),
                warnings.catch_warnings(),
            ):
                warnings.filterwarnings("ignore", "Local mode is not recommended", UserWarning)
                self.client.upsert(self.name, points=points, wait=True)

    def delete(self, ids: Sequence[Any]) -> None:
        from qdrant_client import models

        keys: list[Any] = [point_id(str(i))[0] for i in ids]
        with translated(f"deleting points of {self.where}"):
            self.client.delete(
                self.name, points_selector=models.PointIdsList(points=keys), wait=True
            )

    def drop(self) -> None:
        with translated(f"dropping {self.where}"):
            if self.client.collection_exists(self.name):
                self.client.delete_collection(self.name)
        self._described = None
        self._vector_name = None


def _json_id(value: Any) -> int | str:
    return value if isinstance(value, int) else str(value)
