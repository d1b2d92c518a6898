"""A Chroma collection, in a local persistent folder or on a ``chroma run`` server.

Chroma has no schema: the CollectionSpec is kept as JSON in the collection's metadata (key
``vecmigrate:spec``), so types, nulls and int ids round-trip; a collection made elsewhere is
described by reading its metadata. Scans page with ``get(offset, limit)``: the order is
Chroma's internal insertion order, so the source must not change while it is read (a changed
row count stops the scan). Chroma's API is row-oriented: metadata goes in and out as one dict
per record; everything else is converted column-wise.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import chromadb
import numpy as np
import pyarrow as pa
from chromadb.config import Settings

from vecmigrate.connectors.base import (
    Capabilities,
    Connector,
    IfExists,
    Partition,
    QueryResult,
    ScanBatch,
    WriteToken,
)
from vecmigrate.connectors.chroma.config import ChromaConfig
from vecmigrate.connectors.chroma.errors import chroma_errors
from vecmigrate.connectors.chroma.records import from_chroma, to_chroma, type_of_values
from vecmigrate.errors import ConfigError, NotFoundError, SchemaMismatch, TerminalError
from vecmigrate.records import concat, conform
from vecmigrate.spec import (
    RESERVED,
    CollectionSpec,
    IndexConfig,
    MetadataField,
    MetadataType,
    Metric,
    VectorField,
)
from vecmigrate.uri import ConnectorURI

SPEC_KEY = "vecmigrate:spec"
DEFAULT_MAX_BATCH = 5_461  # Chroma's default; the client's get_max_batch_size() wins
MIN_PARTITION_ROWS = 1_000
DESCRIBE_PAGE = 5_000
_SPACE = {Metric.COSINE: "cosine", Metric.L2: "l2", Metric.IP: "ip"}
_HNSW_PARAMS = {
    "m": "max_neighbors",
    "M": "max_neighbors",
    "max_neighbors": "max_neighbors",
    "ef_construction": "ef_construction",
    "efConstruction": "ef_construction",
    "ef_search": "ef_search",
    "ef": "ef_search",
}


class ChromaConnector(Connector):
    scheme = "chroma"
    capabilities = Capabilities(
        query=True,
        fetch=True,
        delete=True,
        max_batch=DEFAULT_MAX_BATCH,
        exact_float32=False,
        max_ulp=2,
        exact_float64=False,
        notes=(
            "cosine collections return vector values up to 2 float32 ulp off (relative error "
            "below 2e-7); l2 and ip collections return them exactly",
            "float64 metadata comes back rounded to 16 significant digits (up to 2 float64 ulp)",
            "a scan pages in Chroma's insertion order: the source must not change during it",
            "int64 ids are stored as decimal strings and restored from the stored spec",
            "timestamps are stored as int64 microseconds since the epoch (UTC)",
            "NaN, infinite numbers, empty lists and nulls inside lists cannot be stored",
            "upsert cannot set an existing record's document back to null",
        ),
    )

    @classmethod
    def single_process(cls, uri: ConnectorURI) -> str | None:
        if uri.scheme == "chroma":
            return (
                "Chroma's PersistentClient is not process-safe (writers in two processes can "
                "corrupt its vector index); a `chroma run` server (chroma+http://) is"
            )
        return None

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = ChromaConfig.from_uri(uri)
        self._client: Any = None
        self._collection: Any = None
        self._spec: CollectionSpec | None = None
        self._write_spec: CollectionSpec | None = None
        self._foreign_json: frozenset[str] = frozenset()  # JSON fields held as other types
        self._max_batch: int | None = None

    def _where(self) -> str:
        return self.config.where()

    # -- connection -----------------------------------------------------------------------
    def _connect(self, *, create: bool = False) -> Any:
        if self._client is None:
            settings = Settings(anonymized_telemetry=False)
            cfg = self.config
            if cfg.path is not None:
                if not create and not cfg.path.is_dir():
                    raise NotFoundError(f"{self._where()}: the folder {cfg.path} does not exist")
                with chroma_errors(f"open {cfg.path}"):
                    self._client = chromadb.PersistentClient(path=str(cfg.path), settings=settings)
            else:
                with chroma_errors(f"connect to {self._where()}"):
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

    def _coll(self) -> Any:
        if self._collection is None:
            client = self._connect()
            with chroma_errors(f"open {self._where()}"):
                self._collection = client.get_collection(
                    self.config.collection, embedding_function=None
                )
        return self._collection

    def _batch_limit(self) -> int:
        if self._max_batch is None:
            with chroma_errors(f"ask {self._where()} for its batch size"):
                self._max_batch = int(self._connect().get_max_batch_size())
        return self._max_batch

    def close(self) -> None:
        client, self._client = self._client, None
        self._collection = None
        if client is not None and hasattr(client, "close"):
            client.close()

    def exists(self) -> bool:
        try:
            self._coll()
        except NotFoundError:
            return False
        return True

    # -- spec -----------------------------------------------------------------------------
    def describe(self) -> CollectionSpec:
        return self._describe().model_copy(deep=True)

    def _describe(self) -> CollectionSpec:
        if self._spec is None:
            coll = self._coll()
            with chroma_errors(f"read the settings of {self._where()}"):
                meta: dict[str, Any] = dict(coll.metadata or {})
                config: dict[str, Any] = dict(coll.configuration_json or {})
            index: dict[str, Any]
            index_kind, index = "hnsw", {}
            for kind in ("hnsw", "spann"):
                if config.get(kind):
                    index_kind, index = kind, dict(config[kind])
                    break
            space = index.get("space") or meta.get("hnsw:space") or "l2"
            metric = Metric.parse(str(space))
            stored = meta.pop(SPEC_KEY, None)
            if stored is not None:
                spec = CollectionSpec.from_json(str(stored))
                self._foreign_json = frozenset()
            else:
                spec = self._infer(metric)
            spec.name = self.config.collection
            for vf in spec.vectors:
                vf.metric = metric
            params = {k: v for k, v in index.items() if k != "space"}
            spec.indexes = [
                IndexConfig(field=spec.vector().name, kind=index_kind, metric=metric, params=params)
            ]
            chroma_info = dict(spec.system.get("chroma", {}))
            chroma_info.pop("collection_metadata", None)
            kept = {k: v for k, v in meta.items() if not k.startswith("hnsw:")}
            if kept:
                chroma_info["collection_metadata"] = kept
            spec.system = {k: v for k, v in spec.system.items() if k != "chroma"}
            if chroma_info:
                spec.system["chroma"] = chroma_info
            self._spec = spec
        return self._spec

    def _infer(self, metric: Metric) -> CollectionSpec:
        """A spec for a collection made without vecmigrate, from all of its records."""
        coll = self._coll()
        with chroma_errors(f"sample {self._where()}"):
            first = coll.get(limit=1, include=["embeddings"])
        embeddings = first.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            raise ConfigError(
                f"{self._where()} is empty and was not made by vecmigrate: its dimension is unknown"
            )
        dim = int(np.asarray(embeddings).shape[1])
        kinds: dict[str, set[type]] = {}
        items: dict[str, set[type]] = {}
        has_document = False
        for offset in itertools.count(0, DESCRIBE_PAGE):
            with chroma_errors(f"read the metadata of {self._where()}"):
                page = coll.get(
                    offset=offset, limit=DESCRIBE_PAGE, include=["metadatas", "documents"]
                )
            for record in page["metadatas"] or []:
                for key, value in (record or {}).items():
                    if value is None:
                        continue
                    kinds.setdefault(key, set()).add(type(value))
                    if isinstance(value, list):
                        items.setdefault(key, set()).update(type(v) for v in value)
            has_document = has_document or any(d is not None for d in page["documents"] or [])
            if len(page["ids"]) < DESCRIBE_PAGE:
                break
        fields = []
        skipped = sorted(k for k in kinds if k in RESERVED or k == SPEC_KEY)
        for key in sorted(set(kinds) - set(skipped)):
            fields.append(
                MetadataField(name=key, type=type_of_values(kinds[key], items.get(key, set())))
            )
        self._foreign_json = frozenset(f.name for f in fields if f.type is MetadataType.JSON)
        system: dict[str, Any] = {"chroma": {"inferred": True}}
        if skipped:
            system["chroma"]["skipped_keys"] = skipped
        return CollectionSpec(
            name=self.config.collection,
            id_type="string",
            vectors=[VectorField(name="vector", dim=dim, metric=metric)],
            metadata=fields,
            has_document=has_document,
            system=system,
        )

    def count(self) -> int:
        coll = self._coll()
        with chroma_errors(f"count {self._where()}"):
            return int(coll.count())

    # -- reading --------------------------------------------------------------------------
    def _records(self, got: dict[str, Any], spec: CollectionSpec) -> pa.RecordBatch:
        ignored = spec.system.get("chroma", {}).get("skipped_keys", [])
        return from_chroma(
            got, spec, foreign_json=self._foreign_json, ignored_keys=frozenset(ignored)
        )

    def partitions(self, hint: int) -> list[Partition]:
        n = self.count()
        parts = max(1, min(hint, n // MIN_PARTITION_ROWS or 1))
        edges = np.linspace(0, n, parts + 1, dtype=np.int64)
        return [
            Partition(
                key=f"offsets-{a}-{b}",
                bounds={"start": int(a), "end": int(b), "total": n},
                estimated_rows=int(b - a),
            )
            for a, b in itertools.pairwise(edges)
        ]

    def _check_unchanged(self, partition: Partition) -> None:
        total = partition.bounds.get("total")
        if total is not None and self.count() != int(total):
            raise TerminalError(
                f"{self._where()} changed during the scan: it held {total} records when the "
                f"scan was planned and holds {self.count()} now; start the copy again"
            )

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        spec = self._describe()
        coll = self._coll()
        end = int(partition.bounds.get("end", self.count()))
        pos = int(cursor) if cursor is not None else int(partition.bounds.get("start", 0))
        step = max(1, min(batch_size, self._batch_limit()))
        self._check_unchanged(partition)
        include = ["embeddings", "metadatas", "documents"]
        while pos < end:
            limit = min(step, end - pos)
            with chroma_errors(f"read records {pos}-{pos + limit} of {self._where()}"):
                got = coll.get(offset=pos, limit=limit, include=include)
            if len(got["ids"]) != limit:
                raise TerminalError(
                    f"{self._where()}: asked for records {pos}-{pos + limit}, got "
                    f"{len(got['ids'])}: the collection changed during the scan"
                )
            batch = self._records(got, spec)
            pos += limit
            self._check_unchanged(partition)
            yield ScanBatch(batch=batch, cursor=str(pos))

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        spec = self._describe()
        coll = self._coll()
        wanted = [str(i) for i in dict.fromkeys(ids)]
        out = []
        step = self._batch_limit()
        for start in range(0, len(wanted), step):
            with chroma_errors(f"fetch {len(wanted)} ids from {self._where()}"):
                got = coll.get(
                    ids=wanted[start : start + step],
                    include=["embeddings", "metadatas", "documents"],
                )
            if got["ids"]:
                out.append(self._records(got, spec))
        return concat(out, spec.arrow_schema())

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        spec = self._describe()
        spec.vector(vector_field)
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if len(queries) == 0:
            return QueryResult(ids=[], scores=[])
        coll = self._coll()
        with chroma_errors(f"query {self._where()}"):
            got = coll.query(query_embeddings=queries, n_results=k, include=["distances"])
        as_int = spec.id_type == "int64"
        return QueryResult(
            ids=[[int(i) for i in row] if as_int else list(row) for row in got["ids"]],
            scores=[[float(d) for d in row] for row in got["distances"] or []],
        )

    # -- writing --------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        dense = [v for v in spec.vectors if not v.sparse]
        if len(dense) != 1 or len(spec.vectors) != 1:
            raise SchemaMismatch(
                f"{self._where()}: Chroma holds exactly one dense vector per record, the spec "
                f"has {', '.join(v.name for v in spec.vectors) or 'none'}"
            )
        if self.exists():
            if if_exists is IfExists.FAIL:
                raise SchemaMismatch(f"{self._where()} already exists")
            if if_exists is IfExists.REUSE:
                self._check_compatible(spec)
                self._widen_stored_spec(spec)
                self._write_spec = spec
                return
            self.drop()
        vf = dense[0]
        hnsw: dict[str, Any] = {"space": _SPACE[vf.metric]}
        for ix in spec.indexes:
            if ix.field == vf.name and ix.kind.lower() == "hnsw":
                hnsw.update({_HNSW_PARAMS[k]: v for k, v in ix.params.items() if k in _HNSW_PARAMS})
        kept = spec.system.get("chroma", {}).get("collection_metadata", {})
        metadata = {**kept, SPEC_KEY: spec.to_json()}
        client = self._connect(create=True)
        with chroma_errors(f"create {self._where()}"):
            self._collection = client.create_collection(
                self.config.collection,
                configuration={"hnsw": hnsw},
                metadata=metadata,
                embedding_function=None,
            )
        self._spec = None
        self._write_spec = spec

    def _check_compatible(self, spec: CollectionSpec) -> None:
        have = self._describe()
        old, new = have.vector(), spec.vector()
        where = self._where()
        if old.dim != new.dim:
            raise SchemaMismatch(
                f"{where} holds vectors of dim {old.dim}, the source has dim {new.dim}"
            )
        if old.metric is not new.metric:
            raise SchemaMismatch(f"{where} uses metric {old.metric}, the source uses {new.metric}")
        if have.id_type != spec.id_type and not have.system.get("chroma", {}).get("inferred"):
            raise SchemaMismatch(f"{where} has {have.id_type} ids, the source has {spec.id_type}")
        for m in spec.metadata:
            got = have.metadata_field(m.name)
            if got is not None and got.type is not m.type and m.name not in self._foreign_json:
                raise SchemaMismatch(
                    f"{where}: metadata {m.name!r} is {got.type}, the source has {m.type}"
                )

    def _widen_stored_spec(self, spec: CollectionSpec) -> None:
        """Add the source's new metadata fields to the stored spec, so reads keep them."""
        coll = self._coll()
        stored = (coll.metadata or {}).get(SPEC_KEY)
        if stored is None:
            return  # made elsewhere: described from its records, new keys included
        have = CollectionSpec.from_json(str(stored))
        new = [m for m in spec.metadata if have.metadata_field(m.name) is None]
        if not new and (have.has_document or not spec.has_document):
            return
        have.metadata += new
        have.has_document = have.has_document or spec.has_document
        metadata = {k: v for k, v in (coll.metadata or {}).items() if not k.startswith("hnsw:")}
        with chroma_errors(f"update the stored spec of {self._where()}"):
            coll.modify(metadata={**metadata, SPEC_KEY: have.to_json()})
        self._spec = None

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        if batch.num_rows == 0:
            return
        spec = self._write_spec or self._describe()
        ids, embeddings, metadatas, documents = to_chroma(conform(batch, spec), spec)
        coll = self._coll()
        step = self._batch_limit()
        for start in range(0, len(ids), step):
            stop = start + step
            with chroma_errors(f"write {len(ids[start:stop])} records to {self._where()}"):
                coll.upsert(
                    ids=ids[start:stop],
                    embeddings=embeddings[start:stop],
                    metadatas=None if metadatas is None else metadatas[start:stop],
                    documents=None if documents is None else documents[start:stop],
                )

    def delete(self, ids: Sequence[Any]) -> None:
        coll = self._coll()
        keys = [str(i) for i in ids]
        step = self._batch_limit()
        for start in range(0, len(keys), step):
            with chroma_errors(f"delete {len(keys)} ids from {self._where()}"):
                coll.delete(ids=keys[start : start + step])

    def drop(self) -> None:
        if self.config.path is not None and not self.config.path.is_dir():
            return
        client = self._connect()
        try:
            with chroma_errors(f"drop {self._where()}"):
                client.delete_collection(self.config.collection)
        except NotFoundError:
            pass
        self._collection = None
        self._spec = None
