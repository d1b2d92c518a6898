"""Elasticsearch and OpenSearch indexes with dense_vector / knn_vector fields.

One implementation, two dialects (``dialect.py``). Scans, in order of preference:

- ``after``: a unique sortable field (``?sort_field=``, or the id field of indexes created
  here) with ``search_after``, inside a point in time where the server has one. The cursor
  holds only the last sort value, so a scan resumes from any process.
- ``pit`` (Elasticsearch): a point in time sorted by ``_shard_doc``; the cursor holds the PIT
  id and the last sort value, so it resumes while the PIT is alive (``?keep_alive=``).
- ``scroll`` (OpenSearch without a sort field or PIT): fast, but a scroll cannot be resumed.

Writes are bulk ``index`` requests by ``_id`` (idempotent), every refused item reported.
Not verified against a live server: see docs/unverified-connectors.md.
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
from vecmigrate.connectors.elastic.config import ElasticConfig
from vecmigrate.connectors.elastic.dialect import ElasticsearchDialect, OpenSearchDialect
from vecmigrate.connectors.elastic.errors import translated
from vecmigrate.connectors.elastic.mapping import (
    Layout,
    bulk_operations,
    check_bulk_response,
    describe_mapping,
    hits_to_batch,
    index_body,
)
from vecmigrate.errors import DataError, NotFoundError, SchemaMismatch, TerminalError
from vecmigrate.records import concat, conform
from vecmigrate.spec import CollectionSpec, Metric
from vecmigrate.uri import ConnectorURI

NOT_VERIFIED = "not verified against a live server"
MAX_PAGE = 10_000  # index.max_result_window default


def encode_cursor(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if cursor is None:
        return None
    state: dict[str, Any] = json.loads(cursor)
    return state


class ElasticsearchConnector(Connector):
    scheme = "elasticsearch"
    dialect: ClassVar[ElasticsearchDialect] = ElasticsearchDialect()
    capabilities = Capabilities(
        query=True,
        fetch=True,
        delete=True,
        metrics=frozenset({Metric.COSINE, Metric.IP, Metric.L2}),
        documents=True,
        sparse_vectors=False,
        named_vectors=True,
        max_dim=4096,
        max_batch=MAX_PAGE,
        exact_float32=True,
        verified=False,
        notes=(
            NOT_VERIFIED,
            "vectors are read from _source (as written); metric ip maps to max_inner_product",
            "scans resume from any process with a unique sort field (the id field of indexes "
            "created here, or ?sort_field=); otherwise only while the point in time lives",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = ElasticConfig.from_uri(uri)
        self._client: Any = None
        self._version: tuple[int, int] | None = None
        self._spec: CollectionSpec | None = None
        self._layout: Layout | None = None

    # -- client ---------------------------------------------------------------------------
    def _run(self, what: str) -> Any:
        return translated(what, self.dialect.name)

    def _conn(self) -> Any:
        if self._client is None:
            with self._run(f"connect to {self.config.url}"):
                self._client = self.dialect.client(self.config)
        return self._client

    def _server_version(self) -> tuple[int, int]:
        if self._version is None:
            with self._run("read the server version"):
                number = str(self.dialect.info(self._conn())["version"]["number"])
            major, minor = (int(p) for p in number.split(".")[:2])
            self._version = (major, minor)
        return self._version

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def exists(self) -> bool:
        with self._run(f"check index {self.config.index!r}"):
            return self.dialect.exists(self._conn(), self.config.index)

    # -- describe -------------------------------------------------------------------------
    def describe(self) -> CollectionSpec:
        index = self.config.index
        if not self.exists():
            raise NotFoundError(f"{self.dialect.name}: index {index!r} does not exist")
        with self._run(f"read the mapping of {index!r}"):
            response = self.dialect.get_mapping(self._conn(), index)
        entry: dict[str, Any] = response.get(index) or next(iter(response.values()), {})
        spec, layout = describe_mapping(
            index,
            entry.get("mappings") or {},
            dialect=self.dialect.name,
            document_field=self.config.document_field,
            sort_field=self.config.sort_field,
        )
        self._spec, self._layout = spec, layout
        return spec

    def _read_layout(self) -> tuple[CollectionSpec, Layout]:
        if self._spec is None or self._layout is None:
            self.describe()
        assert self._spec is not None and self._layout is not None
        return self._spec, self._layout

    def count(self) -> int:
        with self._run(f"count documents of {self.config.index!r}"):
            return self.dialect.count(self._conn(), self.config.index)

    # -- read -----------------------------------------------------------------------------
    def scan_mode(self) -> str:
        """``after``, ``pit`` or ``scroll``: how this index is scanned (see the module doc)."""
        _, layout = self._read_layout()
        if layout.sort_field:
            return "after"
        if self.dialect.shard_doc_tiebreak and self.dialect.supports_pit(self._server_version()):
            return "pit"
        return "scroll"

    def partitions(self, hint: int) -> list[Partition]:
        return [Partition(key="all", bounds={"mode": self.scan_mode()})]

    def _page_body(self, layout: Layout, size: int, sort: list[Any]) -> dict[str, Any]:
        return {
            "size": size,
            "query": {"match_all": {}},
            "sort": sort,
            "_source": layout.source_fields(),
            "track_total_hits": False,
        }

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        spec, layout = self._read_layout()
        schema = spec.arrow_schema()
        size = max(1, min(batch_size, MAX_PAGE))
        mode = str(partition.bounds.get("mode") or self.scan_mode())
        state = decode_cursor(cursor)
        if state is not None and state.get("done"):
            return
        if mode == "after":
            yield from self._scan_after(layout, schema, size, state)
        elif mode == "pit":
            yield from self._scan_pit(layout, schema, size, state)
        else:
            yield from self._scan_scroll(layout, schema, size, state)

    def _scan_after(
        self, layout: Layout, schema: pa.Schema, size: int, state: dict[str, Any] | None
    ) -> Iterator[ScanBatch]:
        assert layout.sort_field is not None
        client, index = self._conn(), self.config.index
        pit: str | None = None
        if self.dialect.supports_pit(self._server_version()):
            with self._run(f"open a point in time on {index!r}"):
                pit = self.dialect.open_pit(client, index, self.config.keep_alive)
        after = state.get("after") if state else None
        try:
            while True:
                body = self._page_body(layout, size, [{layout.sort_field: "asc"}])
                if pit is not None:
                    body["pit"] = {"id": pit, "keep_alive": self.config.keep_alive}
                if after is not None:
                    body["search_after"] = after
                with self._run(f"read {index!r} after {after}"):
                    resp = self.dialect.search(client, body, None if pit else index)
                pit = resp.get("pit_id") or pit
                hits = resp["hits"]["hits"]
                if not hits:
                    return
                after = hits[-1]["sort"]
                done = len(hits) < size
                cursor = encode_cursor({"mode": "after", "after": after, "done": done})
                yield ScanBatch(hits_to_batch(hits, layout, schema), cursor)
                if done:
                    return
        finally:
            if pit is not None:
                with self._run("close the point in time"):
                    self.dialect.close_pit(client, pit)

    def _scan_pit(
        self, layout: Layout, schema: pa.Schema, size: int, state: dict[str, Any] | None
    ) -> Iterator[ScanBatch]:
        client, index = self._conn(), self.config.index
        if state is None:
            with self._run(f"open a point in time on {index!r}"):
                pit = self.dialect.open_pit(client, index, self.config.keep_alive)
            after = None
        else:
            pit, after = str(state["pit"]), state.get("after")
        while True:
            body = self._page_body(layout, size, [{"_shard_doc": "asc"}])
            body["pit"] = {"id": pit, "keep_alive": self.config.keep_alive}
            if after is not None:
                body["search_after"] = after
            try:
                with self._run(f"read {index!r} in its point in time"):
                    resp = self.dialect.search(client, body, None)
            except TerminalError as exc:
                if state is not None and "search_context_missing" in str(exc):
                    raise TerminalError(
                        f"{self.dialect.name}: the point in time of this scan expired "
                        f"(keep_alive={self.config.keep_alive}), so it cannot resume; restart "
                        "the copy, raise ?keep_alive=, or give a unique ?sort_field="
                    ) from exc
                raise
            pit = resp.get("pit_id") or pit
            hits = resp["hits"]["hits"]
            if not hits:
                break
            after = hits[-1]["sort"]
            done = len(hits) < size
            cursor = encode_cursor({"mode": "pit", "pit": pit, "after": after, "done": done})
            yield ScanBatch(hits_to_batch(hits, layout, schema), cursor)
            if done:
                break
        with self._run("close the point in time"):
            self.dialect.close_pit(client, pit)

    def _scan_scroll(
        self, layout: Layout, schema: pa.Schema, size: int, state: dict[str, Any] | None
    ) -> Iterator[ScanBatch]:
        if state is not None:
            raise TerminalError(
                f"{self.dialect.name}: a scroll cannot resume after an interruption; restart "
                "the copy, or give a unique ?sort_field= so the scan can resume"
            )
        client, index = self._conn(), self.config.index
        body = self._page_body(layout, size, ["_doc"])
        with self._run(f"start a scroll over {index!r}"):
            resp = self.dialect.scroll_start(client, index, body, self.config.keep_alive)
        scroll_id = resp.get("_scroll_id")
        try:
            while True:
                hits = resp["hits"]["hits"]
                if not hits:
                    return
                done = len(hits) < size
                cursor = encode_cursor({"mode": "scroll", "done": done})
                yield ScanBatch(hits_to_batch(hits, layout, schema), cursor)
                if done or not scroll_id:
                    return
                with self._run(f"continue the scroll over {index!r}"):
                    resp = self.dialect.scroll_next(client, scroll_id, self.config.keep_alive)
                scroll_id = resp.get("_scroll_id") or scroll_id
        finally:
            if scroll_id:
                with self._run("clear the scroll"):
                    self.dialect.clear_scroll(client, scroll_id)

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        spec, layout = self._read_layout()
        schema = spec.arrow_schema()
        keys = list(dict.fromkeys(str(i) for i in ids))
        batches = []
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            with self._run(f"fetch {len(chunk)} documents"):
                resp = self.dialect.mget(self._conn(), self.config.index, chunk)
            found = [d for d in resp.get("docs", []) if d.get("found")]
            if found:
                batches.append(hits_to_batch(found, layout, schema))
        return concat(batches, schema)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        spec, layout = self._read_layout()
        vf = spec.vector(vector_field)
        fields = [layout.id_field] if layout.id_field else []
        out_ids: list[list[Any]] = []
        out_scores: list[list[float]] = []
        for q in np.asarray(vectors, dtype=np.float32):
            body = self.dialect.knn_body(vf.name, q.tolist(), k, fields)
            with self._run("kNN query"):
                resp = self.dialect.search(self._conn(), body, self.config.index)
            hits = resp["hits"]["hits"]
            ids: list[Any] = []
            for h in hits:
                src = h.get("_source") or {}
                ids.append(src[layout.id_field] if layout.id_field else h["_id"])
            out_ids.append(ids)
            out_scores.append([float(h.get("_score") or 0.0) for h in hits])
        return QueryResult(ids=out_ids, scores=out_scores)

    # -- write ----------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        index = self.config.index
        body, layout = index_body(
            spec,
            dialect=self.dialect.name,
            id_field=self.config.id_field,
            engine=self.config.engine,
            shards=self.config.shards,
            replicas=self.config.replicas,
        )
        if self.exists():
            if if_exists is IfExists.FAIL:
                raise SchemaMismatch(f"{self.dialect.name}: index {index!r} already exists")
            if if_exists is IfExists.REUSE:
                self._check_compatible(spec)
                return
            with self._run(f"delete index {index!r}"):
                self.dialect.delete_index(self._conn(), index)
        with self._run(f"create index {index!r}"):
            self.dialect.create_index(self._conn(), index, body)
        self._spec, self._layout = spec, layout

    def _check_compatible(self, spec: CollectionSpec) -> None:
        have = self.describe()
        layout = self._layout
        assert layout is not None
        for vf in spec.vectors:
            try:
                old = have.vector(vf.name)
            except Exception as exc:
                raise SchemaMismatch(
                    f"{self.dialect.name}: index {self.config.index!r} has no vector {vf.name!r}"
                ) from exc
            if (old.dim, old.metric) != (vf.dim, vf.metric):
                raise SchemaMismatch(
                    f"{self.dialect.name}: vector {vf.name!r} of {self.config.index!r} has dim "
                    f"{old.dim} ({old.metric.value}); the source has {vf.dim} ({vf.metric.value})"
                )
        if have.id_type != spec.id_type and layout.id_field:
            raise SchemaMismatch(
                f"{self.dialect.name}: index {self.config.index!r} keeps {have.id_type} ids, "
                f"the source has {spec.id_type} ids"
            )

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        spec, layout = self._read_layout()
        batch = conform(batch, spec)
        step = self.config.max_batch
        for start in range(0, batch.num_rows, step):
            part = batch.slice(start, step)
            ops, doc_ids = bulk_operations(part, layout, self.config.index)
            with self._run(f"bulk-index {len(doc_ids)} documents"):
                resp = self.dialect.bulk(self._conn(), ops)
            try:
                check_bulk_response(resp, doc_ids, self.dialect.name)
            except DataError as exc:
                raise exc.located(row_offset=start) from None

    def finalize(self, spec: CollectionSpec) -> None:
        with self._run(f"refresh {self.config.index!r}"):
            self.dialect.refresh(self._conn(), self.config.index)

    def delete(self, ids: Sequence[Any]) -> None:
        keys = [str(i) for i in ids]
        for start in range(0, len(keys), self.config.max_batch):
            chunk = keys[start : start + self.config.max_batch]
            ops = [{"delete": {"_index": self.config.index, "_id": k}} for k in chunk]
            with self._run(f"delete {len(chunk)} documents"):
                resp = self.dialect.bulk(self._conn(), ops)
            items = [next(iter(i.values())) for i in resp.get("items", [])]
            failed = [it for it in items if int(it.get("status", 200)) not in (200, 404)]
            if failed:
                raise TerminalError(
                    f"{self.dialect.name}: could not delete {len(failed)} documents: "
                    f"{failed[0].get('error')}"
                )

    def drop(self) -> None:
        with self._run(f"delete index {self.config.index!r}"):
            self.dialect.delete_index(self._conn(), self.config.index)
        self._spec = self._layout = None


class OpenSearchConnector(ElasticsearchConnector):
    scheme = "opensearch"
    dialect: ClassVar[ElasticsearchDialect] = OpenSearchDialect()
    capabilities = Capabilities(
        query=True,
        fetch=True,
        delete=True,
        metrics=frozenset({Metric.COSINE, Metric.IP, Metric.L2}),
        documents=True,
        sparse_vectors=False,
        named_vectors=True,
        max_dim=16_000,
        max_batch=MAX_PAGE,
        exact_float32=True,
        verified=False,
        notes=(
            NOT_VERIFIED,
            "vectors are read from _source (as written)",
            "scans use a point in time (OpenSearch >= 2.4) with a unique sort field (the id "
            "field of indexes created here, or ?sort_field=), else a scroll, which cannot resume",
        ),
    )
