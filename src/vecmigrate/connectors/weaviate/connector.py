"""A Weaviate collection through weaviate-client v4.

Reading uses the cursor API (``fetch_objects(after=uuid)``, ordered by UUID), one partition
per tenant of a multi-tenant collection; the cursor is the last UUID read. Writing imports
batches (``insert_many``; an object with an existing UUID is replaced) and reports every
object the server refused. Non-UUID ids are mapped as ``mapping.weaviate_uuid`` says.

Not verified against a live server: see docs/unverified-connectors.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from vecmigrate.connectors.base import (
    ALL_METADATA,
    Capabilities,
    Connector,
    IfExists,
    Partition,
    QueryResult,
    ScanBatch,
    WriteToken,
)
from vecmigrate.connectors.weaviate.config import WeaviateConfig
from vecmigrate.connectors.weaviate.errors import refused_objects, translated
from vecmigrate.connectors.weaviate.mapping import (
    LEGACY_VECTOR,
    Layout,
    WriteObject,
    batch_to_objects,
    collection_body,
    describe_config,
    objects_to_batch,
    tenant_statuses,
    weaviate_uuid,
)
from vecmigrate.errors import (
    DataError,
    NotFoundError,
    SchemaMismatch,
    TerminalError,
    TransientError,
)
from vecmigrate.records import concat, conform
from vecmigrate.spec import ID, CollectionSpec, Metric
from vecmigrate.uri import ConnectorURI

if TYPE_CHECKING:
    from weaviate import WeaviateClient
    from weaviate.collections import Collection

log = logging.getLogger(__name__)

NOT_VERIFIED = "not verified against a live server"
ACTIVE = "ACTIVE"


class WeaviateConnector(Connector):
    scheme = "weaviate"
    capabilities = Capabilities(
        query=True,
        fetch=True,
        delete=True,
        metrics=frozenset({Metric.COSINE, Metric.IP, Metric.L2}),
        metadata_types=ALL_METADATA,
        documents=True,
        sparse_vectors=False,
        named_vectors=True,
        max_batch=10_000,  # QUERY_MAXIMUM_RESULTS default caps one cursor page
        exact_float32=True,
        normalizes_cosine=False,
        partitions=True,
        verified=False,
        notes=(
            NOT_VERIFIED,
            "ids that are not UUIDs are stored as uuid5 and kept in property _vecmigrate_id",
            "multi-tenant collections: one partition per tenant; the tenant travels in a column",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = WeaviateConfig.from_uri(uri)
        self._client: WeaviateClient | None = None
        self._layout: Layout | None = None
        self._spec: CollectionSpec | None = None
        self._known_tenants: set[str] | None = None

    # -- connection -----------------------------------------------------------------------
    def _connect(self) -> WeaviateClient:
        if self._client is None:
            import weaviate
            from weaviate.classes.init import AdditionalConfig, Auth, Timeout

            c = self.config
            with translated(f"connect to {c.host}:{c.port}"):
                self._client = weaviate.connect_to_custom(
                    http_host=c.host,
                    http_port=c.port,
                    http_secure=c.secure,
                    grpc_host=c.grpc_host,
                    grpc_port=c.grpc_port,
                    grpc_secure=c.secure,
                    auth_credentials=Auth.api_key(c.api_key) if c.api_key else None,
                    additional_config=AdditionalConfig(
                        timeout=Timeout(init=10, query=c.timeout, insert=c.timeout)
                    ),
                    skip_init_checks=not c.init_checks,
                )
        return self._client

    def _collection(self, tenant: str | None = None) -> Collection[Any, Any]:
        coll = self._connect().collections.get(self.config.collection)
        name = tenant or self.config.tenant
        return coll.with_tenant(name) if name else coll

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def exists(self) -> bool:
        with translated(f"check collection {self.config.collection!r}"):
            return bool(self._connect().collections.exists(self.config.collection))

    # -- describe -------------------------------------------------------------------------
    def _config(self) -> Any:
        name = self.config.collection
        if not self.exists():
            raise NotFoundError(f"weaviate: collection {name!r} does not exist")
        with translated(f"read the definition of collection {name!r}"):
            return self._connect().collections.export_config(name)

    def _tenants(self, config: Any) -> dict[str, str] | None:
        if not config.multi_tenancy_config.enabled:
            return None
        return tenant_statuses(self._list_tenants())

    def _list_tenants(self) -> dict[str, Any]:
        with translated(f"list the tenants of {self.config.collection!r}"):
            return dict(self._collection().tenants.get())

    def _probe_dims(self, config: Any, tenants: dict[str, str] | None) -> dict[str, int]:
        """Vector dimensions, read from objects (Weaviate's schema does not record them)."""
        names = list(config.vector_config or {})
        wanted = {n: n for n in names} if names else {LEGACY_VECTOR: "vector"}
        candidates: list[str | None] = [self.config.tenant] if self.config.tenant else [None]
        if tenants is not None and not self.config.tenant:
            candidates = [t for t, s in sorted(tenants.items()) if s == ACTIVE]
        dims: dict[str, int] = {}
        for tenant in candidates:
            with translated("read one object to learn vector dimensions"):
                res = self._collection(tenant).query.fetch_objects(limit=20, include_vector=True)
            for obj in res.objects:
                for key, vec in (obj.vector or {}).items():
                    if key in wanted and wanted[key] not in dims and vec is not None:
                        dims[wanted[key]] = len(vec)
            if len(dims) == len(wanted):
                break
        return dims

    def describe(self) -> CollectionSpec:
        config = self._config()
        tenants = self._tenants(config)
        if tenants is not None and self.config.tenant and self.config.tenant not in tenants:
            raise NotFoundError(
                f"weaviate: collection {self.config.collection!r} has no tenant "
                f"{self.config.tenant!r}"
            )
        read_all = tenants is not None and not self.config.tenant
        spec, layout = describe_config(
            config,
            dims=self._probe_dims(config, tenants),
            document_property=self.config.document_property,
            tenant_field=self.config.tenant_field if read_all else None,
            tenants=tenants,
        )
        self._layout, self._spec = layout, spec
        return spec

    def _read_layout(self) -> tuple[CollectionSpec, Layout]:
        if self._layout is None or self._spec is None:
            self.describe()
        assert self._layout is not None and self._spec is not None
        return self._spec, self._layout

    def _readable_tenants(self) -> list[str] | None:
        """Tenants to read (None: not multi-tenant), applying ``inactive_tenants``."""
        spec, _ = self._read_layout()
        tenants: dict[str, str] | None = spec.system["weaviate"].get("tenants")
        if tenants is None:
            return None
        if self.config.tenant:
            return [self.config.tenant]
        inactive = sorted(t for t, s in tenants.items() if s != ACTIVE)
        if inactive and self.config.inactive_tenants == "fail":
            shown = ", ".join(f"{t} ({tenants[t]})" for t in inactive[:10])
            raise TerminalError(
                f"weaviate: collection {self.config.collection!r} has {len(inactive)} tenants "
                f"that are not active: {shown}. Activate them, or add "
                "?inactive_tenants=activate (sets them ACTIVE) or ?inactive_tenants=skip "
                "(leaves their objects behind)"
            )
        if inactive and self.config.inactive_tenants == "activate":
            from weaviate.classes.tenants import Tenant, TenantActivityStatus

            with translated(f"activate tenants {', '.join(inactive[:10])}"):
                self._collection().tenants.update(
                    [Tenant(name=t, activity_status=TenantActivityStatus.ACTIVE) for t in inactive]
                )
            return sorted(tenants)
        if inactive:
            log.warning("weaviate: skipping %d inactive tenants: %s", len(inactive), inactive)
        return sorted(t for t in tenants if t not in inactive)

    def count(self) -> int:
        tenants = self._readable_tenants()
        total = 0
        for tenant in tenants if tenants is not None else [None]:
            with translated(f"count objects of {self.config.collection!r}"):
                res = self._collection(tenant).aggregate.over_all(total_count=True)
            total += int(res.total_count or 0)
        return total

    # -- read -----------------------------------------------------------------------------
    def partitions(self, hint: int) -> list[Partition]:
        tenants = self._readable_tenants()
        if tenants is None:
            return [Partition(key="all")]
        return [Partition(key=f"tenant:{t}", bounds={"tenant": t}) for t in tenants]

    def _fetch_page(
        self, tenant: str | None, after: str | None, limit: int, layout: Layout
    ) -> list[Any]:
        include: bool | list[str] = True
        named = [vc.name for vc in layout.vectors if vc.name is not None]
        if named and len(named) == len(layout.vectors):
            include = named
        with translated(f"read objects of {self.config.collection!r} after {after}"):
            res = self._collection(tenant).query.fetch_objects(
                limit=limit,
                after=after,
                include_vector=include,
                return_properties=layout.property_names(),
            )
        return list(res.objects)

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        spec, layout = self._read_layout()
        schema = spec.arrow_schema()
        tenant = partition.bounds.get("tenant") or self.config.tenant
        limit = max(1, min(batch_size, self.capabilities.max_batch or batch_size))
        after = cursor
        while True:
            objects = self._fetch_page(tenant, after, limit, layout)
            if not objects:
                return
            batch = objects_to_batch(objects, layout, schema, tenant=tenant)
            after = str(objects[-1].uuid)
            yield ScanBatch(batch=batch, cursor=after)
            if len(objects) < limit:
                return

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        from weaviate.classes.query import Filter

        spec, layout = self._read_layout()
        schema = spec.arrow_schema()
        uuids = list(dict.fromkeys(weaviate_uuid(i) for i in ids))
        tenants = self._readable_tenants()
        batches = []
        for tenant in tenants if tenants is not None else [None]:
            for start in range(0, len(uuids), 1000):
                chunk = uuids[start : start + 1000]
                with translated(f"fetch {len(chunk)} objects by id"):
                    res = self._collection(tenant).query.fetch_objects(
                        filters=Filter.by_id().contains_any(chunk),
                        limit=len(chunk),
                        include_vector=True,
                        return_properties=layout.property_names(),
                    )
                if res.objects:
                    batches.append(objects_to_batch(res.objects, layout, schema, tenant=tenant))
        return concat(batches, schema)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        from weaviate.classes.query import MetadataQuery

        spec, layout = self._read_layout()
        vf = spec.vector(vector_field)
        target = next(vc.name for vc in layout.vectors if vc.column == vf.name)
        tenants = self._readable_tenants()
        if tenants is not None and len(tenants) != 1:
            raise TerminalError(
                "weaviate: a kNN query on a multi-tenant collection needs ?tenant=NAME"
            )
        tenant = tenants[0] if tenants else None
        out_ids: list[list[Any]] = []
        out_scores: list[list[float]] = []
        for q in np.asarray(vectors, dtype=np.float32):
            with translated("kNN query"):
                res = self._collection(tenant).query.near_vector(
                    near_vector=q.tolist(),
                    limit=k,
                    target_vector=target,
                    return_metadata=MetadataQuery(distance=True),
                    return_properties=[layout.id_property] if layout.id_property else [],
                )
            row_ids: list[Any] = []
            for o in res.objects:
                raw = (o.properties or {}).get(layout.id_property) if layout.id_property else None
                row_ids.append(str(o.uuid) if raw is None else raw)
            out_ids.append(row_ids)
            out_scores.append([float(o.metadata.distance or 0.0) for o in res.objects])
        return QueryResult(ids=out_ids, scores=out_scores)

    # -- write ----------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        name = self.config.collection
        tenant_field = self.config.tenant_field
        multi_tenant = bool(self.config.tenant) or spec.metadata_field(tenant_field) is not None
        body, layout = collection_body(
            spec,
            name=name,
            multi_tenant=multi_tenant,
            tenant_field=None if self.config.tenant else tenant_field,
            keep_vectorizers=self.config.vectorizer == "keep",
        )
        if self.exists():
            if if_exists is IfExists.FAIL:
                raise SchemaMismatch(f"weaviate: collection {name!r} already exists")
            if if_exists is IfExists.REUSE:
                self._check_compatible(spec, layout)
                self._layout = layout
                self._spec = spec
                return
            with translated(f"drop collection {name!r}"):
                self._connect().collections.delete(name)
        with translated(f"create collection {name!r}"):
            self._connect().collections.create_from_dict(body)
        self._layout, self._spec = layout, spec
        self._known_tenants = set()
        tenants = set(spec.partitions) if layout.tenant_field else set()
        if self.config.tenant:
            tenants = {self.config.tenant}
        self._ensure_tenants(tenants)

    def _check_compatible(self, spec: CollectionSpec, layout: Layout) -> None:
        config = self._config()
        existing = {vc.column: vc for vc in layout.vectors}
        have_names = set(config.vector_config or {}) or {"vector"}
        missing = sorted(set(existing) - have_names)
        if missing:
            raise SchemaMismatch(
                f"weaviate: collection {self.config.collection!r} has no vector {missing[0]!r}"
            )
        have_id = next((p for p in config.properties if p.name == layout.id_property), None)
        if layout.id_property and have_id is not None:
            want = "int" if spec.id_type == "int64" else "text"
            if str(getattr(have_id.data_type, "value", have_id.data_type)) != want:
                raise SchemaMismatch(
                    f"weaviate: collection {self.config.collection!r} keeps ids of another type "
                    f"than {spec.id_type}"
                )
        tenants = self._tenants(config)
        dims = self._probe_dims(config, tenants)
        for vf in spec.vectors:
            vcfg = (config.vector_config or {}).get(vf.name)
            vic = vcfg.vector_index_config if vcfg is not None else config.vector_index_config
            distance = str(getattr(getattr(vic, "distance_metric", None), "value", ""))
            want_distance = {Metric.COSINE: "cosine", Metric.IP: "dot", Metric.L2: "l2-squared"}
            if distance and distance != want_distance[vf.metric]:
                raise SchemaMismatch(
                    f"weaviate: vector {vf.name!r} of {self.config.collection!r} uses distance "
                    f"{distance!r}, the source has {vf.metric.value}"
                )
            if dims.get(vf.name) not in (None, vf.dim):
                raise SchemaMismatch(
                    f"weaviate: vector {vf.name!r} of {self.config.collection!r} has dimension "
                    f"{dims[vf.name]}, the source has {vf.dim}"
                )
        if tenants is not None:
            self._known_tenants = set(tenants)

    def _ensure_tenants(self, names: set[str]) -> None:
        if not names:
            return
        if self._known_tenants is None:
            with translated("list tenants"):
                self._known_tenants = set(self._collection().tenants.get())
        new = sorted(names - self._known_tenants)
        if new:
            from weaviate.classes.tenants import Tenant

            with translated(f"create tenants {', '.join(new[:10])}"):
                self._collection().tenants.create([Tenant(name=t) for t in new])
            self._known_tenants |= set(new)

    def _write_layout(self) -> tuple[CollectionSpec, Layout]:
        if self._layout is None or self._spec is None:
            self.describe()
        assert self._layout is not None and self._spec is not None
        return self._spec, self._layout

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        spec, layout = self._write_layout()
        batch = conform(batch, spec)
        objects = batch_to_objects(batch, layout, tenant=self.config.tenant)
        ids = batch.column(ID).to_pylist()
        groups: dict[str | None, list[int]] = {}
        for i, obj in enumerate(objects):
            groups.setdefault(obj.tenant, []).append(i)
        self._ensure_tenants({t for t in groups if t})
        for tenant, rows in groups.items():
            for start in range(0, len(rows), self.config.max_batch):
                chunk = rows[start : start + self.config.max_batch]
                self._import(tenant, [objects[i] for i in chunk], chunk, ids)

    def _import(
        self, tenant: str | None, objects: list[WriteObject], rows: list[int], ids: list[Any]
    ) -> None:
        from weaviate.classes.data import DataObject

        data = [DataObject(properties=o.properties, uuid=o.uuid, vector=o.vector) for o in objects]
        from weaviate.exceptions import WeaviateInsertManyAllFailedError

        try:
            with translated(f"import {len(data)} objects into {self.config.collection!r}"):
                result = self._collection(tenant).data.insert_many(data)
        except TransientError:
            raise
        except TerminalError as exc:
            if isinstance(exc.__cause__, WeaviateInsertManyAllFailedError):
                raise DataError(f"weaviate refused every object of the batch: {exc}") from exc
            raise
        refused = refused_objects(
            {i: err.message for i, err in result.errors.items()}, rows, ids, len(data)
        )
        if refused is not None:
            raise refused

    def delete(self, ids: Sequence[Any]) -> None:
        from weaviate.classes.query import Filter

        uuids = [weaviate_uuid(i) for i in ids]
        tenants = self._readable_tenants()
        for tenant in tenants if tenants is not None else [None]:
            for start in range(0, len(uuids), 1000):
                chunk = uuids[start : start + 1000]
                with translated(f"delete {len(chunk)} objects"):
                    self._collection(tenant).data.delete_many(
                        where=Filter.by_id().contains_any(chunk)
                    )

    def drop(self) -> None:
        with translated(f"drop collection {self.config.collection!r}"):
            self._connect().collections.delete(self.config.collection)
        self._layout = self._spec = None
