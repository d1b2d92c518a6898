"""LangChain's ``Milvus`` (langchain-milvus) with dynamic fields.

LangChain creates ``text`` (VARCHAR 65,535), ``pk`` (VARCHAR 65,535 primary key, no auto id)
and ``vector`` (FLOAT_VECTOR), in that order; with ``enable_dynamic_field=True`` (what this
layout writes: any metadata, nested values included) each metadata key is a dynamic field.
Collections made with one scalar field per metadata key, or with ``metadata_field=...`` (a
JSON field holding the dict), are read too. LangChain returns the primary key in each
Document's metadata (``pk``); it is the record id here, not metadata.

``milvus+lite:///abs/file.db?layout=langchain&collection=NAME`` or
``milvus://HOST:19530?layout=langchain&collection=NAME``; ``text_field=``, ``primary_field=``,
``vector_field=`` and ``metadata_field=`` name what a store was constructed with.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from vecmigrate.connectors.base import Capabilities, IfExists, Partition, QueryResult, ScanBatch
from vecmigrate.connectors.milvus.config import MilvusConfig
from vecmigrate.connectors.milvus.errors import translated
from vecmigrate.connectors.milvus.lite import LiteEngines
from vecmigrate.errors import ConfigError, DataError, SchemaMismatch
from vecmigrate.layouts.base import LayoutConnector, Records, system_uri
from vecmigrate.layouts.metadata import KindTally
from vecmigrate.spec import CollectionSpec, Metric
from vecmigrate.uri import ConnectorURI

VARCHAR_MAX = 65_535
PAGE = 1_000
DYNAMIC = "$meta"
_METRIC = {Metric.COSINE: "COSINE", Metric.L2: "L2", Metric.IP: "IP"}
PASSED_OPTIONS = {"collection", "db_name", "timeout", "write_batch", "secure"}


class LangChainMilvus(LayoutConnector):
    framework: ClassVar[str] = "langchain"
    system: ClassVar[str] = "milvus"
    capabilities: ClassVar[Capabilities] = Capabilities(
        query=True,
        delete=True,
        int_ids=False,
        max_batch=1_000,
        notes=(
            "documents and ids longer than 65,535 bytes cannot be stored",
            "metadata keys named like the collection's fields (pk, text, vector) cannot be "
            "dynamic fields and are left out (listed before writing)",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        own = {"text_field", "primary_field", "vector_field", "metadata_field"}
        self.config = MilvusConfig.from_uri(system_uri(uri, own=own, passed=PASSED_OPTIONS))
        self.text_field = uri.option("text_field") or "text"
        self.primary_field = uri.option("primary_field") or "pk"
        self.vector_field = uri.option("vector_field") or "vector"
        self.metadata_field = uri.option("metadata_field")
        self._client: Any = None
        self._info: dict[str, Any] | None = None

    def shadowed(self) -> frozenset[str]:
        return frozenset({self.text_field, self.primary_field, self.vector_field, DYNAMIC})

    @property
    def name(self) -> str:
        return self.config.collection

    @property
    def where(self) -> str:
        return f"LangChain Milvus collection {self.name!r}"

    # -- connection ---------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            with translated(f"connecting to {self.uri}"):
                if self.config.lite_path is not None:
                    self._client = LiteEngines.open_client(
                        self.config.lite_path, self.config.timeout
                    )
                else:
                    from pymilvus import MilvusClient

                    kw: dict[str, Any] = {"uri": self.config.address}
                    if self.config.token:
                        kw["token"] = self.config.token
                    if self.config.db_name:
                        kw["db_name"] = self.config.db_name
                    self._client = MilvusClient(timeout=self.config.timeout, **kw)
        return self._client

    def close(self) -> None:
        if self._client is None:
            return
        client, self._client = self._client, None
        try:
            client.close()
        finally:
            if self.config.lite_path is not None:
                LiteEngines.release(self.config.lite_path)

    def exists(self) -> bool:
        with translated(f"looking up {self.where}"):
            return bool(self.client.has_collection(self.name, timeout=self.config.timeout))

    def count(self) -> int:
        self._require()
        with translated(f"counting {self.where}"):
            rows = self.client.query(
                self.name, filter="", output_fields=["count(*)"], consistency_level="Strong"
            )
        return int(rows[0]["count(*)"])

    # -- describe -----------------------------------------------------------------------
    def _fields(self) -> dict[str, Any]:
        """pk, text, vector and metadata fields of the collection, by role."""
        if self._info is None:
            with translated(f"describing {self.where}"):
                self._info = dict(
                    self.client.describe_collection(self.name, timeout=self.config.timeout)
                )
        from pymilvus import DataType

        fields = self._info["fields"]
        pk = next((f for f in fields if f.get("is_primary")), None)
        vectors = [f for f in fields if f["type"] == DataType.FLOAT_VECTOR]
        vector = next((f for f in vectors if f["name"] == self.vector_field), None)
        if vector is None and len(vectors) == 1:
            vector = vectors[0]
        if pk is None or vector is None:
            raise ConfigError(
                f"{self.where} has no primary key or no float vector field {self.vector_field!r}"
            )
        text = next((f for f in fields if f["name"] == self.text_field), None)
        if text is None:
            raise ConfigError(
                f"{self.where} has no text field {self.text_field!r} (see ?text_field=)"
            )
        skip = {pk["name"], vector["name"], text["name"]}
        scalars = [
            f["name"]
            for f in fields
            if f["name"] not in skip and f["type"] not in _VECTOR_TYPES(DataType)
        ]
        return {
            "pk": pk["name"],
            "vector": vector["name"],
            "dim": int(vector["params"]["dim"]),
            "text": text["name"],
            "scalars": scalars,
            "dynamic": bool(self._info.get("enable_dynamic_field")),
        }

    def _metric(self, vector: str) -> Metric:
        with translated(f"reading the index of {self.where}"):
            for index_name in self.client.list_indexes(self.name, field_name=vector):
                info = self.client.describe_index(self.name, index_name)
                if info.get("metric_type"):
                    return Metric.parse(str(info["metric_type"]))
        return Metric.L2  # LangChain's default

    def _output_fields(self, roles: dict[str, Any], *, vectors: bool) -> list[str]:
        out = [roles["pk"], roles["text"], *roles["scalars"]]
        if vectors:
            out.append(roles["vector"])
        if roles["dynamic"]:
            out.append(DYNAMIC)
        return out

    def _metadata(self, row: dict[str, Any], roles: dict[str, Any]) -> dict[str, Any]:
        skip = {roles["pk"], roles["text"], roles["vector"]}
        md = {k: v for k, v in row.items() if k not in skip}
        if self.metadata_field is not None:
            inner = md.pop(self.metadata_field, None)
            md.update(inner if isinstance(inner, dict) else {})
        return md

    def _rows(
        self, roles: dict[str, Any], after: str | None, size: int, *, vectors: bool
    ) -> Iterator[list[dict[str, Any]]]:
        """Rows in primary-key order after ``after`` (Milvus's query iterator)."""
        expr = "" if after is None else f"{roles['pk']} > {json.dumps(after, ensure_ascii=False)}"
        with translated(f"reading {self.where}"):
            iterator = self.client.query_iterator(
                self.name,
                batch_size=size,
                filter=expr,
                output_fields=self._output_fields(roles, vectors=vectors),
            )
        try:
            while True:
                with translated(f"reading {self.where}"):
                    rows = iterator.next()
                if not rows:
                    return
                yield list(rows)
        finally:
            iterator.close()

    def _describe(self) -> CollectionSpec:
        self._require()
        roles = self._fields()
        tally = KindTally()
        for rows in self._rows(roles, None, PAGE, vectors=False):
            for row in rows:
                tally.add(self._metadata(row, roles))
        info = {"collection": self.name, **{k: roles[k] for k in ("pk", "text", "vector")}}
        return self.canonical_spec(
            self.name, roles["dim"], self._metric(roles["vector"]), tally.fields(), info=info
        )

    # -- reading ------------------------------------------------------------------------
    def partitions(self, hint: int) -> list[Partition]:
        return [Partition(key="all", bounds={}, estimated_rows=self.count())]

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        spec = self.describe()
        roles = self._fields()
        after = json.loads(cursor) if cursor is not None else None
        for rows in self._rows(roles, after, min(batch_size, 16_000), vectors=True):
            ids = [str(r[roles["pk"]]) for r in rows]
            vectors = np.asarray([r[roles["vector"]] for r in rows], dtype=np.float32)
            batch = self.canonical_batch(
                ids,
                vectors.reshape(len(rows), spec.vector().dim),
                [r.get(roles["text"]) for r in rows],
                [self._metadata(r, roles) for r in rows],
            )
            yield ScanBatch(batch=batch, cursor=json.dumps(rows[-1][roles["pk"]]))

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        roles = self._fields()
        metric = self._metric(roles["vector"])
        with translated(f"searching {self.where}"):
            hits = self.client.search(
                self.name,
                data=[list(map(float, q)) for q in np.asarray(vectors, dtype=np.float32)],
                anns_field=roles["vector"],
                limit=k,
                search_params={"metric_type": _METRIC[metric], "params": {}},
                output_fields=[],
                consistency_level="Strong",
            )
        return QueryResult(
            ids=[[str(h["id"]) for h in row] for row in hits],
            scores=[[float(h["distance"]) for h in row] for row in hits],
        )

    # -- writing ------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        self.check_target(spec)
        vf = next(v for v in spec.vectors if not v.sparse)
        if self.exists():
            if if_exists is IfExists.FAIL:
                raise SchemaMismatch(f"{self.where} already exists (if_exists=fail)")
            if if_exists is IfExists.REUSE:
                roles = self._fields()
                have = self._metric(roles["vector"])
                if roles["dim"] != vf.dim or have is not vf.metric or not roles["dynamic"]:
                    raise SchemaMismatch(
                        f"{self.where} holds {roles['dim']}-dimensional {have.value} vectors"
                        f"{'' if roles['dynamic'] else ' without dynamic fields'}, the source "
                        f"{vf.dim}-dimensional {vf.metric.value}"
                    )
                self._target, self._described = spec, None
                return
            self.drop()
        from pymilvus import CollectionSchema, DataType, FieldSchema

        fields = [
            FieldSchema(self.text_field, DataType.VARCHAR, max_length=VARCHAR_MAX),
            FieldSchema(
                self.primary_field,
                DataType.VARCHAR,
                is_primary=True,
                auto_id=False,
                max_length=VARCHAR_MAX,
            ),
            FieldSchema(self.vector_field, DataType.FLOAT_VECTOR, dim=vf.dim),
        ]
        schema = CollectionSchema(fields, description="", enable_dynamic_field=True)
        with translated(f"creating {self.where}"):
            params = self.client.prepare_index_params()
            params.add_index(
                self.vector_field, index_type="AUTOINDEX", metric_type=_METRIC[vf.metric], params={}
            )
            self.client.create_collection(
                self.name,
                schema=schema,
                index_params=params,
                consistency_level="Session",
                timeout=self.config.timeout,
            )
        self._info = None
        self._target, self._described = spec, None

    def _write(self, records: Records) -> None:
        shadowed = self.shadowed()
        rows: list[dict[str, Any]] = []
        vectors = records.vectors.tolist()
        for i, rid in enumerate(records.ids):
            doc = records.documents[i] or ""
            for what, value in (("id", rid), ("document", doc)):
                if len(value.encode()) > VARCHAR_MAX:
                    raise DataError(
                        f"the {what} is longer than {VARCHAR_MAX} bytes (Milvus VARCHAR limit)",
                        row=i,
                        record_id=rid,
                    )
            row = {k: v for k, v in records.metadata[i].items() if k not in shadowed}
            row[self.text_field] = doc
            row[self.primary_field] = rid
            row[self.vector_field] = vectors[i]
            rows.append(row)
        step = self.config.write_batch
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            with translated(f"writing {len(chunk)} rows to {self.where}"):
                self.client.upsert(self.name, chunk, timeout=self.config.timeout)

    def finalize(self, spec: CollectionSpec) -> None:
        with translated(f"flushing {self.where}"):
            self.client.flush(self.name, timeout=self.config.timeout)

    def delete(self, ids: Sequence[Any]) -> None:
        keys = ", ".join(json.dumps(str(i), ensure_ascii=False) for i in ids)
        with translated(f"deleting rows of {self.where}"):
            self.client.delete(self.name, filter=f"{self.primary_field} in [{keys}]")

    def drop(self) -> None:
        with translated(f"dropping {self.where}"):
            if self.client.has_collection(self.name, timeout=self.config.timeout):
                self.client.drop_collection(self.name, timeout=self.config.timeout)
        self._info = None
        self._described = None


def _VECTOR_TYPES(data_type: Any) -> set[Any]:
    return {
        data_type.FLOAT_VECTOR,
        data_type.FLOAT16_VECTOR,
        data_type.BFLOAT16_VECTOR,
        data_type.BINARY_VECTOR,
        data_type.SPARSE_FLOAT_VECTOR,
    }
