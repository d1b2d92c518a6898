"""What the Chroma framework layouts share: the client, paging, the collection's settings.

Chroma keeps ids, embeddings, documents and one flat metadata dict per record; the
frameworks differ only in what they put in that dict. Chroma cannot nest metadata: nested
values follow the JSON-text convention of :mod:`vecmigrate.layouts.metadata`, with the keys
listed in the collection's metadata under ``vecmigrate:json_keys``. A scan pages in Chroma's
insertion order (``get(offset, limit)``): the source must not change while it is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from vecmigrate.connectors.base import Capabilities, IfExists, Partition, QueryResult, ScanBatch
from vecmigrate.connectors.chroma.config import ChromaConfig
from vecmigrate.connectors.chroma.errors import chroma_errors
from vecmigrate.errors import ConfigError, NotFoundError, SchemaMismatch
from vecmigrate.layouts.base import LayoutConnector, Records, system_uri
from vecmigrate.layouts.llamaindex import StoredNode
from vecmigrate.layouts.metadata import CHROMA_JSON_KEYS, KindTally, json_keys_of
from vecmigrate.spec import CollectionSpec, Metric
from vecmigrate.uri import ConnectorURI

PAGE = 2_000
SPACE = {Metric.COSINE: "cosine", Metric.L2: "l2", Metric.IP: "ip"}
PASSED_OPTIONS = {"collection", "tenant", "database", "ssl", "token_header"}


class ChromaLayout(LayoutConnector):
    """A framework's records in one Chroma collection (persistent folder or server)."""

    system: ClassVar[str] = "chroma"
    nests: ClassVar[bool] = False
    capabilities: ClassVar[Capabilities] = Capabilities(
        query=True,
        delete=True,
        int_ids=False,
        exact_float32=False,
        max_batch=5_461,
        notes=(
            "nested metadata values are stored as JSON text; the keys are listed in the "
            "collection metadata 'vecmigrate:json_keys'",
            "a scan pages in Chroma's insertion order: the source must not change during it",
            "cosine collections return vector values up to 2 float32 ulp off",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = ChromaConfig.from_uri(system_uri(uri, own=set(), passed=PASSED_OPTIONS))
        self._client: Any = None
        self._collection: Any = None
        self._json_keys: frozenset[str] | None = None

    @property
    def where(self) -> str:
        return f"{self.framework} {self.config.where()}"

    # -- framework specifics ------------------------------------------------------------
    def read_record(
        self, stored: dict[str, Any] | None, document: str | None
    ) -> tuple[dict[str, Any], StoredNode | None]:
        """The record's metadata (nested values restored) and, for LlamaIndex, its node."""
        raise NotImplementedError

    def stored_metadata(
        self, records: Records, json_keys: frozenset[str]
    ) -> list[dict[str, Any] | None]:
        """The metadata dict Chroma stores for each record."""
        raise NotImplementedError

    # -- connection ---------------------------------------------------------------------
    def client(self, *, create: bool = False) -> Any:
        if self._client is None:
            import chromadb
            from chromadb.config import Settings

            settings = Settings(anonymized_telemetry=False)
            cfg = self.config
            if cfg.path is not None:
                if not create and not cfg.path.is_dir():
                    raise NotFoundError(f"{self.where}: the folder {cfg.path} does not exist")
                with chroma_errors(f"open {cfg.path}"):
                    self._client = chromadb.PersistentClient(path=str(cfg.path), settings=settings)
            else:
                with chroma_errors(f"connect to {self.where}"):
                    self._client = chromadb.HttpClient(
                        host=cfg.host or "127.0.0.1",
                        port=cfg.port or 8000,
                        ssl=cfg.ssl,
                        headers=cfg.headers(),
                        settings=settings,
                        tenant=cfg.tenant,
                        database=cfg.database,
                    )
        return self._client

    def coll(self) -> Any:
        if self._collection is None:
            with chroma_errors(f"open {self.where}"):
                self._collection = self.client().get_collection(
                    self.config.collection, embedding_function=None
                )
        return self._collection

    def close(self) -> None:
        self._client = self._collection = None

    def exists(self) -> bool:
        try:
            self.coll()
        except NotFoundError:
            return False
        return True

    def count(self) -> int:
        with chroma_errors(f"count {self.where}"):
            return int(self.coll().count())

    def json_keys(self) -> frozenset[str]:
        """The keys whose values follow the JSON-text convention in this collection."""
        if self._json_keys is None:
            raw = (self.coll().metadata or {}).get(CHROMA_JSON_KEYS)
            try:
                keys = json.loads(raw) if isinstance(raw, str) else []
            except ValueError:
                keys = []
            self._json_keys = frozenset(str(k) for k in keys)
        return self._json_keys

    # -- describe -----------------------------------------------------------------------
    def _metric(self) -> Metric:
        coll = self.coll()
        with chroma_errors(f"read the settings of {self.where}"):
            config: dict[str, Any] = dict(coll.configuration_json or {})
            meta: dict[str, Any] = dict(coll.metadata or {})
        space = None
        for kind in ("hnsw", "spann"):
            if config.get(kind):
                space = config[kind].get("space")
                break
        return Metric.parse(str(space or meta.get("hnsw:space") or "l2"))

    def _pages(self, include: list[str], offset: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        coll = self.coll()
        while True:
            with chroma_errors(f"read {self.where} at offset {offset}"):
                got = coll.get(offset=offset, limit=PAGE, include=include)
            n = len(got["ids"])
            if n:
                yield offset, got
            if n < PAGE:
                return
            offset += n

    def _describe(self) -> CollectionSpec:
        self._require()
        with chroma_errors(f"sample {self.where}"):
            first = self.coll().get(limit=1, include=["embeddings"])
        embeddings = first.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            raise ConfigError(f"{self.where} is empty: its vector dimension is unknown")
        dim = int(np.asarray(embeddings).shape[1])
        tally = KindTally()
        for _, got in self._pages(["metadatas", "documents"]):
            for stored, doc in zip(got["metadatas"], got["documents"], strict=True):
                tally.add(self.read_record(stored, doc)[0])
        info = {"collection": self.config.collection}
        return self.canonical_spec(
            self.config.collection, dim, self._metric(), tally.fields(), info=info
        )

    # -- reading ------------------------------------------------------------------------
    def partitions(self, hint: int) -> list[Partition]:
        return [Partition(key="all", bounds={}, estimated_rows=self.count())]

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        spec = self.describe()
        offset = int(cursor) if cursor is not None else 0
        coll = self.coll()
        include = ["embeddings", "documents", "metadatas"]
        while True:
            with chroma_errors(f"read {self.where} at offset {offset}"):
                got = coll.get(offset=offset, limit=batch_size, include=include)
            ids: list[str] = list(got["ids"])
            if not ids:
                return
            vectors = np.asarray(got["embeddings"], dtype=np.float32).reshape(
                len(ids), spec.vector().dim
            )
            metadata: list[dict[str, Any] | None] = []
            nodes: list[StoredNode] = []
            documents = list(got["documents"] or [None] * len(ids))
            for stored, doc in zip(got["metadatas"] or [None] * len(ids), documents, strict=True):
                md, node = self.read_record(stored, doc)
                metadata.append(md)
                if node is not None:
                    nodes.append(node)
            offset += len(ids)
            batch = self.canonical_batch(ids, vectors, documents, metadata, nodes or None)
            yield ScanBatch(batch=batch, cursor=str(offset))
            if len(ids) < batch_size:
                return

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        with chroma_errors(f"query {self.where}"):
            got = self.coll().query(query_embeddings=queries, n_results=k, include=["distances"])
        return QueryResult(
            ids=[list(row) for row in got["ids"]],
            scores=[[float(d) for d in row] for row in got["distances"] or []],
        )

    # -- writing ------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        self.check_target(spec)
        vf = next(v for v in spec.vectors if not v.sparse)
        keys = frozenset(json_keys_of(list(spec.metadata)))
        if self.exists():
            if if_exists is IfExists.FAIL:
                raise SchemaMismatch(f"{self.where} already exists (if_exists=fail)")
            if if_exists is IfExists.REUSE:
                self._check_compatible(vf.dim, vf.metric)
                self._record_json_keys(keys)
                self._target, self._described = spec, None
                return
            self.drop()
        client = self.client(create=True)
        with chroma_errors(f"create {self.where}"):
            self._collection = client.create_collection(
                self.config.collection,
                configuration={"hnsw": {"space": SPACE[vf.metric]}},
                metadata={CHROMA_JSON_KEYS: json.dumps(sorted(keys))},
                embedding_function=None,
            )
        self._json_keys = keys
        self._target, self._described = spec, None

    def _check_compatible(self, dim: int, metric: Metric) -> None:
        have = self._metric()
        if have is not metric:
            raise SchemaMismatch(
                f"{self.where} uses {have.value} distance, the source {metric.value}"
            )
        with chroma_errors(f"sample {self.where}"):
            first = self.coll().get(limit=1, include=["embeddings"])
        got = first.get("embeddings")
        have_dim = np.asarray(got).shape[1] if got is not None and len(got) else dim
        if have_dim != dim:
            raise SchemaMismatch(
                f"{self.where} holds {have_dim}-dimensional vectors, the source has {dim}"
            )

    def _record_json_keys(self, keys: frozenset[str]) -> None:
        have = self.json_keys()
        if keys <= have:
            return
        coll = self.coll()
        metadata = {k: v for k, v in (coll.metadata or {}).items() if not k.startswith("hnsw:")}
        metadata[CHROMA_JSON_KEYS] = json.dumps(sorted(have | keys))
        with chroma_errors(f"record the JSON keys of {self.where}"):
            coll.modify(metadata=metadata)
        self._json_keys = have | keys

    def _write(self, records: Records) -> None:
        spec = self.target_spec()
        keys = frozenset(json_keys_of(spec.metadata))
        metadatas = [m or None for m in self.stored_metadata(records, keys | self.json_keys())]
        coll = self.coll()
        with chroma_errors(f"ask {self.where} for its batch size"):
            step = int(self.client().get_max_batch_size())
        for start in range(0, len(records), step):
            stop = start + step
            with chroma_errors(f"write {len(records.ids[start:stop])} records to {self.where}"):
                coll.upsert(
                    ids=records.ids[start:stop],
                    embeddings=records.vectors[start:stop],
                    metadatas=metadatas[start:stop],
                    documents=records.documents[start:stop],
                )

    def delete(self, ids: Sequence[Any]) -> None:
        with chroma_errors(f"delete {len(ids)} ids from {self.where}"):
            self.coll().delete(ids=[str(i) for i in ids])

    def drop(self) -> None:
        if self.config.path is not None and not self.config.path.is_dir():
            return
        try:
            with chroma_errors(f"drop {self.where}"):
                self.client().delete_collection(self.config.collection)
        except NotFoundError:
            pass
        self._collection = self._described = None
        self._json_keys = None
