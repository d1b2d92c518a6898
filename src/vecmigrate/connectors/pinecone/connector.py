"""A Pinecone index (vectors API) through the pinecone SDK.

Reading lists every id of a namespace page by page (``list_paginated``: ids in sorted order,
a pagination token per page) and fetches each page's vectors; the cursor is the token of the
next page, so a scan is complete and resumable without probing. Writing upserts batches (a
record with an existing id is overwritten). One partition per namespace.

Not verified against a live server: see docs/unverified-connectors.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

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
from vecmigrate.connectors.pinecone.config import PineconeConfig
from vecmigrate.connectors.pinecone.errors import translated
from vecmigrate.connectors.pinecone.mapping import (
    DEFAULT_NAMESPACES,
    STORED_TYPES,
    Layout,
    batch_to_records,
    create_arguments,
    describe_index,
    namespaces_of,
    vectors_to_batch,
    write_layout,
)
from vecmigrate.errors import ConfigError, NotFoundError, SchemaMismatch, Unsupported
from vecmigrate.records import concat, conform
from vecmigrate.spec import CollectionSpec, Metric
from vecmigrate.uri import ConnectorURI

if TYPE_CHECKING:
    from pinecone import Index, Pinecone

log = logging.getLogger(__name__)

NOT_VERIFIED = "not verified against a live server"
LIST_PAGE = 100  # the list operation's default and largest page
FETCH_CHUNK = 100  # ids per fetch request (kept short: ids travel in the query string)
END = "end"  # the cursor after a namespace's last page


class PineconeConnector(Connector):
    scheme = "pinecone"
    capabilities = Capabilities(
        query=True,
        fetch=True,
        delete=True,
        int_ids=False,
        metrics=frozenset({Metric.COSINE, Metric.L2, Metric.IP}),
        metadata_types=STORED_TYPES,
        documents=True,
        sparse_vectors=True,
        named_vectors=False,
        max_dim=20_000,
        max_batch=1000,
        exact_float32=True,
        partitions=True,
        verified=False,
        notes=(
            NOT_VERIFIED,
            "metadata keys and types are learned from a sample of records (?sample=N)",
            "numbers are stored as 64-bit floats, lists only of strings",
            "list (and so reading) works on serverless indexes only",
            "counts and listings lag writes for a few seconds (finalize waits for them)",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = PineconeConfig.from_uri(uri)
        if not self.config.api_key:
            raise ConfigError(
                "pinecone: no API key: set PINECONE_API_KEY or add ?api_key_env=VARNAME"
            )
        self._pc: Pinecone | None = None
        self._index: Index | None = None
        self._spec: CollectionSpec | None = None
        self._layout: Layout | None = None

    # -- clients --------------------------------------------------------------------------
    def _control(self) -> Pinecone:
        if self._pc is None:
            from pinecone import Pinecone

            with translated("open the control-plane client"):
                self._pc = Pinecone(
                    api_key=self.config.api_key,
                    host=self.config.control_host,
                    source_tag="vecmigrate",
                )
        return self._pc

    def _data(self) -> Index:
        if self._index is None:
            from pinecone import Index

            host = self.config.host
            if host is None:
                with translated(f"describe index {self.config.index!r}"):
                    host = self._control().indexes.describe(self.config.index).host
                if not host:
                    raise NotFoundError(f"pinecone: index {self.config.index!r} has no host yet")
            with translated(f"open index host {host}"):
                self._index = Index(host=host, api_key=self.config.api_key, source_tag="vecmigrate")
        return self._index

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._pc is not None:
            self._pc.close()
            self._pc = None

    def exists(self) -> bool:
        with translated(f"check index {self.config.index!r}"):
            return bool(self._control().indexes.exists(self.config.index))

    # -- describe -------------------------------------------------------------------------
    def _namespace_counts(self) -> dict[str, int]:
        with translated("describe index stats"):
            stats = self._data().describe_index_stats()
        return {name: int(s.vector_count) for name, s in stats.namespaces.items()}

    def _sample(self, namespaces: Sequence[str]) -> list[Any]:
        """Up to ``sample`` records across namespaces, to learn metadata keys and types."""
        out: list[Any] = []
        for ns in namespaces:
            token: str | None = None
            while len(out) < self.config.sample:
                ids, token = self._list_page(ns, token, min(LIST_PAGE, self.config.sample))
                out += self._fetch(ns, ids)
                if token is None:
                    break
            if len(out) >= self.config.sample:
                break
        return [r.metadata for r in out]

    def describe(self) -> CollectionSpec:
        with translated(f"describe index {self.config.index!r}"):
            model = self._control().indexes.describe(self.config.index)
        counts = self._namespace_counts()
        if self.config.namespace is not None:
            wanted = {self.config.namespace: counts.get(self.config.namespace, 0)}
        else:
            wanted = counts or {"": 0}
        read_all = self.config.namespace is None and any(
            ns not in DEFAULT_NAMESPACES for ns in wanted
        )
        self._require_listing(model)
        spec, layout = describe_index(
            model,
            namespaces=wanted,
            samples=self._sample(sorted(wanted)),
            document_key=self.config.document_key,
            sparse=self.config.sparse,
            namespace_field=self.config.namespace_field if read_all else None,
        )
        self._spec, self._layout = spec, layout
        return spec

    def _require_listing(self, model: Any) -> None:
        if type(model.deployment).__name__ == "PodDeployment":
            raise Unsupported(
                f"pinecone: index {self.config.index!r} is pod-based, and Pinecone lists ids "
                "only on serverless indexes; move it to serverless first (collection -> "
                "serverless index) so that every record can be read"
            )

    def _read_layout(self) -> tuple[CollectionSpec, Layout]:
        if self._spec is None or self._layout is None:
            self.describe()
        assert self._spec is not None and self._layout is not None
        return self._spec, self._layout

    def count(self) -> int:
        counts = self._namespace_counts()
        if self.config.namespace is not None:
            return counts.get(self.config.namespace, 0)
        return sum(counts.values())

    # -- read -----------------------------------------------------------------------------
    def partitions(self, hint: int) -> list[Partition]:
        spec, _ = self._read_layout()
        namespaces = spec.system["pinecone"]["namespaces"]
        return [
            Partition(key=f"ns:{ns}", bounds={"namespace": ns}, estimated_rows=int(count))
            for ns, count in namespaces.items()
        ]

    def _list_page(
        self, namespace: str, token: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        with translated(f"list ids of namespace {namespace!r}"):
            page = self._data().list_paginated(
                namespace=namespace, limit=limit, pagination_token=token
            )
        ids = [v.id for v in page.vectors if v.id is not None]
        return ids, page.pagination.next if page.pagination else None

    def _fetch(self, namespace: str, ids: Sequence[str]) -> list[Any]:
        """Vectors for ids, in the ids' order (ids deleted meanwhile are left out)."""
        out: list[Any] = []
        for start in range(0, len(ids), FETCH_CHUNK):
            chunk = list(ids[start : start + FETCH_CHUNK])
            with translated(f"fetch {len(chunk)} vectors from namespace {namespace!r}"):
                got = self._data().fetch(ids=chunk, namespace=namespace).vectors
            out += [got[i] for i in chunk if i in got]
        return out

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        spec, layout = self._read_layout()
        schema = spec.arrow_schema()
        namespace = str(partition.bounds.get("namespace", self.config.namespace or ""))
        if cursor == END:
            return
        token = cursor
        while True:
            ids: list[str] = []
            while len(ids) < batch_size:
                page, token = self._list_page(namespace, token, LIST_PAGE)
                ids += page
                if token is None:
                    break
            records = self._fetch(namespace, ids)
            if len(records) < len(ids):
                log.warning(
                    "pinecone: %d listed ids were gone when fetched (deleted during the scan)",
                    len(ids) - len(records),
                )
            batch = vectors_to_batch(records, layout, schema, namespace=namespace)
            yield ScanBatch(batch=batch, cursor=token or END)
            if token is None:
                return

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        spec, layout = self._read_layout()
        schema = spec.arrow_schema()
        wanted = list(dict.fromkeys(str(i) for i in ids))
        batches = []
        for ns in spec.system["pinecone"]["namespaces"]:
            records = self._fetch(ns, wanted)
            if records:
                batches.append(vectors_to_batch(records, layout, schema, namespace=ns))
        return concat(batches, schema)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        namespace = self.config.namespace or ""
        ids: list[list[Any]] = []
        scores: list[list[float]] = []
        for q in np.asarray(vectors, dtype=np.float32):
            with translated("kNN query"):
                res = self._data().query(vector=q.tolist(), top_k=k, namespace=namespace)
            ids.append([m.id for m in res.matches])
            scores.append([float(m.score) for m in res.matches])
        return QueryResult(ids=ids, scores=scores)

    # -- write ----------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        """Create the index; with ``?namespace=`` the namespace is the collection.

        A URI naming a namespace never deletes the index: REPLACE empties that namespace of
        a compatible index, FAIL refuses a namespace that holds vectors.
        """
        args = create_arguments(spec)
        name = self.config.index
        ns = self.config.namespace
        if self.exists():
            if ns is not None:
                self._check_compatible(args)
                held = self._namespace_counts().get(ns, 0)
                if if_exists is IfExists.FAIL and held:
                    raise SchemaMismatch(
                        f"pinecone: namespace {ns!r} of index {name!r} holds {held} vectors"
                    )
                if if_exists is IfExists.REPLACE and held:
                    with translated(f"empty namespace {ns!r}"):
                        self._data().delete(delete_all=True, namespace=ns)
                self._use_write_layout(spec)
                return
            if if_exists is IfExists.FAIL:
                raise SchemaMismatch(f"pinecone: index {name!r} already exists")
            if if_exists is IfExists.REUSE:
                self._check_compatible(args)
                self._use_write_layout(spec)
                return
            with translated(f"delete index {name!r}"):
                self._control().indexes.delete(name)
        c = self.config
        deployment: dict[str, Any] = {
            "deployment_type": "managed",
            "cloud": c.cloud,
            "region": c.region,
        }
        if c.pod_environment and c.pod_type:
            deployment = {
                "deployment_type": "pod",
                "environment": c.pod_environment,
                "pod_type": c.pod_type,
                "replicas": 1,
                "shards": 1,
            }
        with translated(f"create index {name!r}"):
            self._control().indexes.create(name=name, deployment=deployment, timeout=300, **args)
        self._index = None
        self._use_write_layout(spec)

    def _check_compatible(self, args: dict[str, Any]) -> None:
        with translated(f"describe index {self.config.index!r}"):
            model = self._control().indexes.describe(self.config.index)
        fields: dict[str, Any] = dict(model.schema.fields)
        dense = fields.get("_values")
        if args["vector_type"] == "dense":
            if dense is None:
                raise SchemaMismatch(f"pinecone: index {self.config.index!r} has no dense vectors")
            if int(dense.dimension) != args["dimension"] or str(dense.metric) != args["metric"]:
                raise SchemaMismatch(
                    f"pinecone: index {self.config.index!r} has dimension {dense.dimension} "
                    f"({dense.metric}); the source has {args['dimension']} ({args['metric']})"
                )
        elif "_sparse_values" not in fields:
            raise SchemaMismatch(f"pinecone: index {self.config.index!r} is not a sparse index")

    def _use_write_layout(self, spec: CollectionSpec) -> None:
        self._spec = spec
        self._layout = write_layout(
            spec, document_key=self.config.document_key, namespace_field=self.config.namespace_field
        )

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        if self._spec is None or self._layout is None:
            self._read_layout()
        assert self._spec is not None and self._layout is not None
        batch = conform(batch, self._spec)
        records = batch_to_records(batch, self._layout)
        namespaces = namespaces_of(batch, self._layout, self.config.namespace)
        groups: dict[str, list[dict[str, Any]]] = {}
        for ns, rec in zip(namespaces, records, strict=True):
            groups.setdefault(ns, []).append(rec)
        for ns, recs in groups.items():
            for start in range(0, len(recs), self.config.max_batch):
                chunk = recs[start : start + self.config.max_batch]
                with translated(f"upsert {len(chunk)} vectors into namespace {ns!r}"):
                    self._data().upsert(vectors=chunk, namespace=ns, show_progress=False)

    def finalize(self, spec: CollectionSpec) -> None:
        """Wait (up to a minute) until the index's counts stop moving: they lag writes."""
        last = -1
        for _ in range(30):
            now = self.count()
            if now == last:
                return
            last = now
            time.sleep(2)

    def delete(self, ids: Sequence[Any]) -> None:
        namespace = self.config.namespace or ""
        keys = [str(i) for i in ids]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            with translated(f"delete {len(chunk)} vectors"):
                self._data().delete(ids=chunk, namespace=namespace)

    def drop(self) -> None:
        with translated(f"delete index {self.config.index!r}"):
            self._control().indexes.delete(self.config.index)
        self._index = None
        self._spec = self._layout = None
