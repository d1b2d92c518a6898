"""Milvus collections through pymilvus: a server, or the Milvus Lite engine on a local file.

Reading pages through primary-key ranges, ``pk > cursor and pk <= bound``. A query answer is
complete only when it holds fewer rows than its limit (Milvus truncates silently, and caps
offset + limit at 16,384), so every page is proven complete before it is emitted: a page that
fills its limit is cut at its ``limit``-th key and the cut range re-checked by an ids-only query.
Rows that share a primary key are one record (Milvus keeps the newest), never dropped.
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
from vecmigrate.connectors.milvus.config import MilvusConfig
from vecmigrate.connectors.milvus.errors import translated
from vecmigrate.connectors.milvus.lite import LiteEngines
from vecmigrate.connectors.milvus.schema import (
    DYNAMIC_REST,
    Layout,
    build_schema,
    check_compatible,
    index_configs,
    index_params,
    infer_type,
    layout_for,
    layout_of,
    metric_name,
    parse_description,
)
from vecmigrate.errors import DataError, NotFoundError, SchemaMismatch, Unsupported
from vecmigrate.records import conform, fixed_size_vectors
from vecmigrate.spec import (
    DOCUMENT,
    ID,
    SPARSE_TYPE,
    CollectionSpec,
    MetadataField,
    MetadataType,
)
from vecmigrate.uri import ConnectorURI

STRONG = "Strong"
SAMPLE_ROWS = 1_000  # rows sampled to find the keys of a dynamic field
FETCH_CHUNK = 1_000
SPLIT_MIN_ROWS = 50_000  # below this one partition reads as fast as several


PAGE_BYTES = 3_000_000  # read pages of about this size (see scan)


class MilvusConnector(Connector):
    scheme: ClassVar[str] = "milvus"
    capabilities: ClassVar[Capabilities] = Capabilities(
        query=True,
        fetch=True,
        delete=True,
        sparse_vectors=True,
        named_vectors=True,
        max_dim=32_768,
        max_batch=1_000,
        partitions=True,
        aliases=True,
        notes=(
            "Milvus Lite cannot declare nullable fields: nullable metadata and the document "
            "are kept as keys of the dynamic field there",
            "Milvus Lite builds only FLAT indexes; the requested index is kept as a hint",
            "count() counts every stored row, so rows inserted twice under one primary key "
            "count twice while a scan returns them once",
        ),
    )

    @classmethod
    def single_process(cls, uri: ConnectorURI) -> str | None:
        if uri.scheme == "milvus+lite":
            return "Milvus Lite opens its file in one process; a Milvus server (milvus://) is not"
        return None

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = MilvusConfig.from_uri(uri)
        self._client: Any = None
        self._spec: CollectionSpec | None = None
        self._layout: Layout | None = None

    # -- life cycle ---------------------------------------------------------------------
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

    @property
    def name(self) -> str:
        return self.config.collection

    def exists(self) -> bool:
        with translated(f"looking up collection {self.name!r}"):
            return bool(self.client.has_collection(self.name, timeout=self.config.timeout))

    def _require(self) -> None:
        if not self.exists():
            raise NotFoundError(f"milvus collection {self.name!r} does not exist ({self.uri})")

    # -- describe -----------------------------------------------------------------------
    def describe(self) -> CollectionSpec:
        if self._spec is None:
            self._spec, self._layout = self._describe()
        return self._spec.model_copy(deep=True)

    def layout(self) -> Layout:
        if self._layout is None:
            self._spec, self._layout = self._describe()
        return self._layout

    def _describe(self) -> tuple[CollectionSpec, Layout]:
        self._require()
        c, name, t = self.client, self.name, self.config.timeout
        with translated(f"describing collection {name!r}"):
            info = c.describe_collection(name, timeout=t)
            description, hints = parse_description(info.get("description") or "")
            indexes, metrics = index_configs(c, name)
            layout = layout_of(info, hints, metrics)
            partitions: list[str] = []
            aliases: list[str] = []
            if not self.config.lite:  # Milvus Lite has neither partitions nor aliases
                partitions = [p for p in c.list_partitions(name, timeout=t) if p != "_default"]
                aliases = list(c.list_aliases(name, timeout=t).get("aliases", []))
            if layout.dynamic_rest:
                self._sample_dynamic_keys(layout)
        max_length = {
            (ID if f.get("is_primary") else f["name"]): int(f["params"]["max_length"])
            for f in info["fields"]
            if "max_length" in f.get("params", {})
        }
        nullable = {f["name"]: bool(f.get("nullable", False)) for f in info["fields"]}
        metadata = [
            MetadataField(
                name=k,
                type=v,
                nullable=nullable.get(k, False),
                max_length=max_length.get(k) if v is MetadataType.STRING else None,
            )
            for k, v in layout.typed.items()
        ]
        metadata += [MetadataField(name=k, type=v) for k, v in layout.dynamic.items()]
        if layout.dynamic_rest:
            metadata.append(MetadataField(name=DYNAMIC_REST, type=MetadataType.JSON))
        system = {
            "pk_field": layout.pk,
            "auto_id": bool(info.get("auto_id", False)),
            "enable_dynamic_field": layout.enable_dynamic,
            "description": description,
            "max_length": max_length,
            "lite": self.config.lite,
        }
        if hints.get("indexes"):
            system["requested_indexes"] = hints["indexes"]
        if hints.get("partitions"):  # asked for, but Milvus Lite has no partitions
            system["requested_partitions"] = hints["partitions"]
        spec = CollectionSpec(
            name=name,
            id_type=layout.id_type,
            vectors=layout.vectors,
            metadata=metadata,
            has_document=layout.document is not None,
            indexes=indexes,
            partitions=partitions,
            aliases=aliases,
            system={"milvus": system},
        )
        return spec, layout

    def _sample_dynamic_keys(self, layout: Layout) -> None:
        """Name the dynamic keys found in a sample of rows (the rest go to DYNAMIC_REST)."""
        rows = self._query("", ["*"], SAMPLE_ROWS)
        fixed = {layout.pk, *layout.typed, *(v.name for v in layout.vectors)}
        if layout.document is not None:
            fixed.add(DOCUMENT)
        values: dict[str, list[Any]] = {}
        for row in rows:
            for key, value in row.items():
                if key not in fixed and key not in layout.dynamic and key != DYNAMIC_REST:
                    values.setdefault(key, []).append(value)
        for key, seen in values.items():
            if key == ID:
                continue  # left to DYNAMIC_REST: 'id' is reserved for the primary key
            layout.dynamic[key] = infer_type(seen)

    def count(self) -> int:
        self._require()
        with translated(f"counting collection {self.name!r}"):
            return self._count_where("")

    # -- reading ------------------------------------------------------------------------
    def _literal(self, value: Any) -> str:
        if self.layout().id_type == "string":
            text = str(value)
            if any(ord(ch) < 0x20 for ch in text):
                # Milvus filter strings cannot express control characters (no \n escape)
                raise DataError(
                    "a primary key with control characters cannot be used in a Milvus filter",
                    record_id=text,
                    field=self.layout().pk,
                )
            return json.dumps(text, ensure_ascii=False)
        return str(int(value))

    def _range(self, lo: Any, hi: Any) -> str:
        pk = self.layout().pk
        parts = []
        if lo is not None:
            parts.append(f"{pk} > {self._literal(lo)}")
        if hi is not None:
            parts.append(f"{pk} <= {self._literal(hi)}")
        return " and ".join(parts)

    def _query(self, expr: str, fields: list[str], limit: int) -> list[dict[str, Any]]:
        from pymilvus.exceptions import MilvusException

        with translated(f"reading collection {self.name!r} where {expr or 'true'}"):
            try:
                rows = self.client.query(
                    self.name,
                    filter=expr,
                    output_fields=fields,
                    limit=limit,
                    consistency_level=STRONG,
                    timeout=self.config.timeout,
                )
            except MilvusException as exc:
                # pymilvus 2.5 fails to decode an ARRAY field of an empty answer
                if "Unsupported data type: 0" not in str(exc) or self._count_where(expr):
                    raise
                return []
        return list(rows)

    def _count_where(self, expr: str) -> int:
        rows = self.client.query(
            self.name,
            filter=expr,
            output_fields=["count(*)"],
            consistency_level=STRONG,
            timeout=self.config.timeout,
        )
        return int(rows[0]["count(*)"])

    def _page(
        self, lo: Any, hi: Any, size: int, fields: list[str]
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``size`` rows with the smallest keys in (lo, hi], proven to be all rows up to
        the last of them; and whether they reach ``hi`` (the range is exhausted)."""
        pk = self.layout().pk
        limit = max(1, min(size, self.config.read_batch_cap))
        bound = hi
        while True:
            rows = self._query(self._range(lo, bound), fields, limit + 1)
            rows.sort(key=lambda r: r[pk])
            if len(rows) <= limit:  # fewer than asked: nothing in (lo, bound] was left out
                return rows, bound == hi
            cut = rows[limit - 1][pk]
            check = self._query(self._range(lo, cut), [pk], limit + 1)
            held = {r[pk] for r in rows[:limit]}
            if len(check) <= limit and all(r[pk] in held for r in check):
                return rows[:limit], False
            keys = sorted(r[pk] for r in check)  # the engine skipped keys: narrow the range
            bound = keys[min(limit // 2, len(keys) - 1)]

    def partitions(self, hint: int) -> list[Partition]:
        total = self.count()
        if hint <= 1 or total < SPLIT_MIN_ROWS:
            return [
                Partition(key="pk-all", bounds={"after": None, "upto": None}, estimated_rows=total)
            ]
        step = max(1, total // hint)
        pk = self.layout().pk
        edges: list[Any] = []
        lo, seen, done = None, 0, False
        while not done:  # an ids-only pass: exact quantiles of the keys
            rows, done = self._page(lo, None, self.config.read_batch_cap, [pk])
            for row in rows:
                seen += 1
                if seen % step == 0 and len(edges) < hint - 1:
                    edges.append(row[pk])
            if rows:
                lo = rows[-1][pk]
        bounds = [None, *edges, None]
        return [
            Partition(
                key=f"pk-{i}",
                bounds={"after": bounds[i], "upto": bounds[i + 1]},
                estimated_rows=step,
            )
            for i in range(len(bounds) - 1)
        ]

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        layout = self.layout()
        lo = json.loads(cursor) if cursor is not None else partition.bounds.get("after")
        hi = partition.bounds.get("upto")
        # Milvus (Lite, measured) slows down badly on large result pages: 20k x 384 read in
        # 3.7 s as pages of 2,000 rows but 148 s as pages of 5,000. Keep pages near 3 MB.
        row_bytes = 64 + sum(4 * v.dim for v in layout.vectors if not v.sparse)
        page = max(64, min(batch_size, PAGE_BYTES // row_bytes))
        while True:
            rows, done = self._page(lo, hi, page, ["*"])
            if rows:
                lo = rows[-1][layout.pk]
                yield ScanBatch(batch=self._to_batch(rows), cursor=json.dumps(lo))
            if done:
                return

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        self._require()
        pk = self.layout().pk
        rows: list[dict[str, Any]] = []
        wanted = list(dict.fromkeys(ids))
        if self.layout().id_type == "int64":
            wanted = [i for i in wanted if isinstance(i, int | np.integer)]
        else:
            wanted = [i for i in wanted if isinstance(i, str)]
        for start in range(0, len(wanted), FETCH_CHUNK):
            chunk = wanted[start : start + FETCH_CHUNK]
            expr = f"{pk} in [{', '.join(self._literal(i) for i in chunk)}]"
            rows += self._query(expr, ["*"], len(chunk))
        return self._to_batch(rows)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        spec = self.describe()
        vf = spec.vector(vector_field)
        data = np.asarray(vectors, dtype=np.float16 if vf.dtype == "float16" else np.float32)
        with translated(f"searching collection {self.name!r}"):
            hits = self.client.search(
                self.name,
                data=list(data),
                anns_field=vf.name,
                limit=k,
                search_params={"metric_type": metric_name(vf.metric), "params": {}},
                output_fields=[],
                consistency_level=STRONG,
                timeout=self.config.timeout,
            )
        return QueryResult(
            ids=[[h["id"] for h in row] for row in hits],
            scores=[[float(h["distance"]) for h in row] for row in hits],
        )

    # -- rows <-> Arrow -------------------------------------------------------------------
    def _to_batch(self, rows: list[dict[str, Any]]) -> pa.RecordBatch:
        spec, layout = self.describe(), self.layout()
        schema = spec.arrow_schema()
        cols: dict[str, pa.Array] = {
            ID: pa.array([r[layout.pk] for r in rows], schema.field(ID).type)
        }
        for vf in layout.vectors:
            if vf.sparse:
                cols[vf.name] = _sparse_array([r.get(vf.name) for r in rows])
            elif vf.dtype == "float16":
                raw = b"".join(bytes(r[vf.name][0]) for r in rows)
                m = np.frombuffer(raw, dtype=np.float16).reshape(len(rows), vf.dim)
                cols[vf.name] = fixed_size_vectors(m.astype(np.float32))
            else:
                m = np.asarray([r[vf.name] for r in rows], dtype=np.float32)
                cols[vf.name] = fixed_size_vectors(m.reshape(len(rows), vf.dim))
        if layout.document is not None:
            cols[DOCUMENT] = pa.array([r.get(DOCUMENT) for r in rows], pa.string())
        for name, mtype in {**layout.typed, **layout.dynamic}.items():
            cols[name] = _metadata_array([r.get(name) for r in rows], mtype, name)
        if layout.dynamic_rest:
            cols[DYNAMIC_REST] = self._rest_column(rows, layout)
        elif layout.enable_dynamic:
            self._check_closed(rows, layout)
        return pa.RecordBatch.from_arrays([cols[f.name] for f in schema], schema=schema)

    def _known_keys(self, layout: Layout) -> set[str]:
        known = {layout.pk, *layout.typed, *layout.dynamic, *(v.name for v in layout.vectors)}
        if layout.document is not None:
            known.add(DOCUMENT)
        return known

    def _rest_column(self, rows: list[dict[str, Any]], layout: Layout) -> pa.Array:
        known = self._known_keys(layout)
        out: list[str | None] = []
        for row in rows:
            rest = {k: v for k, v in row.items() if k not in known}
            out.append(json.dumps(rest, ensure_ascii=False) if rest else None)
        return pa.array(out, pa.string())

    def _check_closed(self, rows: list[dict[str, Any]], layout: Layout) -> None:
        known = self._known_keys(layout)
        for i, row in enumerate(rows):
            extra = [k for k in row if k not in known]
            if extra:
                raise DataError(
                    f"dynamic key {extra[0]!r} is not in the collection spec of {self.name!r}",
                    row=i,
                    record_id=row.get(layout.pk),
                    field=extra[0],
                )

    def _to_rows(self, batch: pa.RecordBatch) -> list[dict[str, Any]]:
        spec, layout = self.describe(), self.layout()
        if batch.schema != spec.arrow_schema():
            batch = conform(batch, spec)
        names: list[str] = [layout.pk]
        columns: list[list[Any]] = [batch.column(ID).to_pylist()]
        for vf in layout.vectors:
            col = batch.column(vf.name)
            names.append(vf.name)
            if vf.sparse:
                columns.append([_sparse_dict(v) for v in col.to_pylist()])
            else:
                m = np.asarray(
                    col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32
                ).reshape(batch.num_rows, vf.dim)
                columns.append(list(m.astype(np.float16) if vf.dtype == "float16" else m))
        if layout.document is not None:
            names.append(DOCUMENT)
            columns.append(batch.column(DOCUMENT).to_pylist())
        for name, mtype in {**layout.typed, **layout.dynamic}.items():
            names.append(name)
            columns.append(_metadata_values(batch.column(name), mtype))
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
        if layout.dynamic_rest:
            for row, extra in zip(rows, batch.column(DYNAMIC_REST).to_pylist(), strict=True):
                if extra:
                    row.update({k: v for k, v in json.loads(extra).items() if k not in row})
        return rows

    # -- writing ------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        if self.exists():
            if if_exists is IfExists.REUSE:
                self._spec = self._layout = None
                check_compatible(self.describe(), spec, self.name)
                return
            if if_exists is IfExists.FAIL:
                raise SchemaMismatch(f"milvus collection {self.name!r} already exists")
            self.drop()
        lite = self.config.lite
        layout = layout_for(spec, lite=lite)
        with translated(f"creating collection {self.name!r}"):
            schema = build_schema(spec, layout, lite=lite)
            self.client.create_collection(
                self.name,
                schema=schema,
                index_params=index_params(self.client, spec, lite=lite),
                consistency_level=STRONG,
                timeout=self.config.timeout,
            )
            for partition in [] if lite else spec.partitions:
                if partition != "_default":
                    self.client.create_partition(self.name, partition, timeout=self.config.timeout)
        self._spec = self._layout = None

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        rows = self._to_rows(batch)
        step = self.config.write_batch
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            with translated(f"writing {len(chunk)} rows to collection {self.name!r}"):
                self.client.upsert(self.name, chunk, timeout=self.config.timeout)

    def delete(self, ids: Sequence[Any]) -> None:
        pk = self.layout().pk
        wanted = list(ids)
        for start in range(0, len(wanted), FETCH_CHUNK):
            chunk = wanted[start : start + FETCH_CHUNK]
            expr = f"{pk} in [{', '.join(self._literal(i) for i in chunk)}]"
            with translated(f"deleting {len(chunk)} rows from collection {self.name!r}"):
                self.client.delete(self.name, filter=expr, timeout=self.config.timeout)

    def finalize(self, spec: CollectionSpec) -> None:
        with translated(f"flushing collection {self.name!r}"):
            self.client.flush(self.name, timeout=self.config.timeout)

    def drop(self) -> None:
        with translated(f"dropping collection {self.name!r}"):
            if self.client.has_collection(self.name, timeout=self.config.timeout):
                self.client.drop_collection(self.name, timeout=self.config.timeout)
        self._spec = self._layout = None

    # -- aliases (Milvus server; Milvus Lite has none) ----------------------------------
    def _alias_target(self, alias: str) -> str | None:
        from pymilvus.exceptions import MilvusException

        try:
            info = self.client.describe_alias(alias, timeout=self.config.timeout)
        except MilvusException:
            return None
        return str(info.get("collection_name")) if info else None

    def switch_alias(self, alias: str) -> str | None:
        """Point ``alias`` at this collection (alter or create); returns its old target."""
        if self.config.lite:
            raise Unsupported("Milvus Lite has no aliases: traffic switches through the router")
        t = self.config.timeout
        with translated(f"switching alias {alias!r} to {self.name!r}"):
            previous = self._alias_target(alias)
            if previous is None:
                self.client.create_alias(self.name, alias, timeout=t)
            else:
                self.client.alter_alias(self.name, alias, timeout=t)
        return previous

    def drop_alias(self, alias: str) -> None:
        if self.config.lite:
            raise Unsupported("Milvus Lite has no aliases")
        with translated(f"dropping alias {alias!r}"):
            if self._alias_target(alias) is not None:
                self.client.drop_alias(alias, timeout=self.config.timeout)


# -- column conversions ------------------------------------------------------------------


def _metadata_values(column: pa.Array, mtype: MetadataType) -> list[Any]:
    """Python values Milvus takes for a metadata column (JSON parsed, timestamps as µs)."""
    if mtype is MetadataType.TIMESTAMP:
        column = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    values: list[Any] = column.to_pylist()
    if mtype is MetadataType.JSON:
        return [None if v is None else json.loads(v) for v in values]
    return values


def _metadata_array(values: list[Any], mtype: MetadataType, name: str) -> pa.Array:
    """An Arrow column of ``mtype`` from the values Milvus returned."""
    try:
        if mtype is MetadataType.JSON:
            return pa.array(
                [None if v is None else json.dumps(v, ensure_ascii=False) for v in values],
                pa.string(),
            )
        if mtype is MetadataType.TIMESTAMP:
            return pa.array(values, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        return pa.array(values, mtype.arrow())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise DataError(f"values do not fit type {mtype}: {exc}", field=name) from exc


def _sparse_dict(value: dict[str, Any] | None) -> dict[int, float]:
    if not value:
        return {}
    return {int(i): float(v) for i, v in zip(value["indices"], value["values"], strict=True)}


def _sparse_array(values: list[Any]) -> pa.Array:
    rows: list[dict[str, list[Any]] | None] = []
    for v in values:
        if v is None:
            rows.append(None)
            continue
        items = sorted((int(i), float(x)) for i, x in dict(v).items())
        rows.append({"indices": [i for i, _ in items], "values": [x for _, x in items]})
    return pa.array(rows, SPARSE_TYPE)
