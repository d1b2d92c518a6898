"""Qdrant collections through qdrant-client: a server (``qdrant://``) or local mode
(``qdrant+local://``, the client's in-process imitation with the same client calls)."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

from vecmigrate.connectors.qdrant.base import QdrantBase
from vecmigrate.connectors.qdrant.errors import translated
from vecmigrate.connectors.qdrant.points import PointColumns, PointLayout
from vecmigrate.spec import CollectionSpec, IndexConfig, Metric, VectorField
from vecmigrate.uri import ConnectorURI

HINTS_KEY = "vecmigrate"  # key of vecmigrate's hints in the collection's metadata
_DISTANCE = {Metric.COSINE: "Cosine", Metric.L2: "Euclid", Metric.IP: "Dot"}


class QdrantConnector(QdrantBase):
    scheme: ClassVar[str] = "qdrant"

    @classmethod
    def single_process(cls, uri: ConnectorURI) -> str | None:
        if uri.scheme == "qdrant+local":
            return (
                "qdrant-client's local mode locks its folder to one process; "
                "a Qdrant server (qdrant://) is not"
            )
        return None

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from qdrant_client import QdrantClient

            with translated(f"connecting to {self.uri}"):
                if self.config.mode == "local":
                    assert self.config.path is not None
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
        with translated(f"looking up collection {self.name!r}"):
            return bool(self.client.collection_exists(self.name))

    # -- describe -----------------------------------------------------------------------
    def _info(self) -> Any:
        with translated(f"describing collection {self.name!r}"):
            return self.client.get_collection(self.name)

    def _hints(self) -> dict[str, Any]:
        metadata = getattr(self._info().config, "metadata", None) or {}
        hints = metadata.get(HINTS_KEY)
        return hints if isinstance(hints, dict) else {}

    def _raw_spec(self) -> tuple[CollectionSpec, PointLayout]:
        from qdrant_client import models

        info = self._info()
        params = info.config.params
        layout = PointLayout()
        vectors: list[VectorField] = []
        indexes: list[IndexConfig] = []
        dense = params.vectors
        named = {"": dense} if isinstance(dense, models.VectorParams) else dict(dense or {})
        layout.unnamed = "" in named
        hnsw = info.config.hnsw_config.model_dump(exclude_none=True)
        quantization = info.config.quantization_config
        for qname, vp in named.items():
            name = qname or "vector"
            metric = Metric.parse(str(vp.distance.value))
            dtype: Literal["float32", "float16"] = (
                "float16" if vp.datatype == models.Datatype.FLOAT16 else "float32"
            )
            vectors.append(VectorField(name=name, dim=vp.size, metric=metric, dtype=dtype))
            layout.vector_names[name] = qname
            index_params = {
                **hnsw,
                **(vp.hnsw_config.model_dump(exclude_none=True) if vp.hnsw_config else {}),
            }
            quant = vp.quantization_config or quantization
            if quant is not None:
                index_params["quantization"] = quant.model_dump(mode="json", exclude_none=True)
            if vp.on_disk is not None:
                index_params["on_disk"] = vp.on_disk
            indexes.append(IndexConfig(field=name, kind="hnsw", metric=metric, params=index_params))
        for qname in params.sparse_vectors or {}:
            vectors.append(VectorField(name=qname, dim=0, metric=Metric.IP, sparse=True))
            layout.vector_names[qname] = qname
        for key, schema in (info.payload_schema or {}).items():
            kind = str(getattr(schema.data_type, "value", schema.data_type))
            indexes.append(IndexConfig(field=key, kind=f"payload:{kind}"))
        layout.vectors = vectors
        with translated(f"listing aliases of {self.name!r}"):
            aliases = [a.alias_name for a in self.client.get_collection_aliases(self.name).aliases]
        system = {
            "qdrant": {
                "optimizers": info.config.optimizer_config.model_dump(
                    mode="json", exclude_none=True
                ),
                "shard_number": params.shard_number,
                "replication_factor": params.replication_factor,
                "on_disk_payload": params.on_disk_payload,
                "unnamed_vector": layout.unnamed,
            }
        }
        spec = CollectionSpec(
            name=self.name, vectors=vectors, indexes=indexes, aliases=aliases, system=system
        )
        return spec, layout

    # -- engine calls -------------------------------------------------------------------
    def _count(self) -> int:
        with translated(f"counting collection {self.name!r}"):
            return int(self.client.count(self.name, exact=True).count)

    def _scroll(self, offset: Any, limit: int) -> tuple[list[Any], Any]:
        with translated(f"scrolling collection {self.name!r}"):
            records, following = self.client.scroll(
                self.name, limit=limit, offset=offset, with_payload=True, with_vectors=True
            )
        return list(records), following

    def _retrieve(self, ids: list[Any]) -> list[Any]:
        with translated(f"retrieving points of {self.name!r}"):
            return list(
                self.client.retrieve(self.name, ids=ids, with_payload=True, with_vectors=True)
            )

    def _search(self, qname: str, vector: list[float], k: int) -> list[Any]:
        with translated(f"searching collection {self.name!r}"):
            return list(
                self.client.query_points(
                    self.name,
                    query=vector,
                    using=qname or None,
                    limit=k,
                    with_payload=True,
                ).points
            )

    def _write(self, points: PointColumns) -> None:
        from qdrant_client import models

        layout = self.layout()
        sparse = {layout.vector_names[v.name] for v in layout.vectors if v.sparse}
        vectors: dict[str, list[Any]] = {}
        for qname, rows in points.vectors.items():
            vectors[qname] = (
                [
                    models.SparseVector(indices=r[0], values=r[1])
                    if r
                    else models.SparseVector(indices=[], values=[])
                    for r in rows
                ]
                if qname in sparse
                else rows
            )
        unnamed = layout.unnamed and list(vectors) == [""]
        batch = models.Batch(
            ids=points.ids,
            vectors=vectors[""] if unnamed else vectors,
            payloads=points.payloads,
        )
        with (
            translated(f"writing {len(points.ids)} points to {self.name!r}"),
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", "Local mode is not recommended", UserWarning)
            self.client.upsert(self.name, points=batch, wait=True)

    def _delete(self, ids: list[Any]) -> None:
        from qdrant_client import models

        with translated(f"deleting points of {self.name!r}"):
            self.client.delete(
                self.name, points_selector=models.PointIdsList(points=ids), wait=True
            )

    def _create(self, spec: CollectionSpec, layout: PointLayout, hints: dict[str, Any]) -> None:
        from qdrant_client import models

        dense = {}
        sparse = {}
        for vf in spec.vectors:
            if vf.sparse:
                sparse[vf.name] = models.SparseVectorParams()
                continue
            wanted = next((ix for ix in spec.indexes if ix.field == vf.name), None)
            hnsw = _hnsw_diff(models, wanted.params if wanted else {})
            dense[vf.name] = models.VectorParams(
                size=vf.dim,
                distance=models.Distance(_DISTANCE[vf.metric]),
                datatype=models.Datatype.FLOAT16 if vf.dtype == "float16" else None,
                hnsw_config=hnsw,
            )
        with translated(f"creating collection {self.name!r}"):
            self.client.create_collection(
                self.name,
                vectors_config=dense,
                sparse_vectors_config=sparse or None,
                metadata={HINTS_KEY: hints},
            )
            # local mode ignores payload indexes (and warns)
            for ix in spec.indexes if self.config.mode == "server" else []:
                schema = _payload_schema(ix.kind)
                if schema is not None and spec.metadata_field(ix.field) is not None:
                    self.client.create_payload_index(
                        self.name, ix.field, field_schema=schema, wait=True
                    )

    def drop(self) -> None:
        with translated(f"dropping collection {self.name!r}"):
            if self.client.collection_exists(self.name):
                self.client.delete_collection(self.name)
        self._spec = self._layout = None

    def finalize(self, spec: CollectionSpec) -> None:
        """Nothing to do: upserts wait until applied."""

    # -- aliases ------------------------------------------------------------------------
    def switch_alias(self, alias: str) -> str | None:
        """Point ``alias`` at this collection in one atomic change; returns its old target."""
        from qdrant_client import models

        with translated(f"switching alias {alias!r} to {self.name!r}"):
            current = {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}
            ops: list[Any] = []
            if alias in current:
                ops.append(
                    models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
                )
            ops.append(
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=self.name, alias_name=alias)
                )
            )
            self.client.update_collection_aliases(change_aliases_operations=ops)
        self._spec = None  # describe() reports aliases
        return current.get(alias)

    def drop_alias(self, alias: str) -> None:
        from qdrant_client import models

        with translated(f"dropping alias {alias!r}"):
            current = {a.alias_name for a in self.client.get_aliases().aliases}
            if alias in current:
                self.client.update_collection_aliases(
                    change_aliases_operations=[
                        models.DeleteAliasOperation(
                            delete_alias=models.DeleteAlias(alias_name=alias)
                        )
                    ]
                )
        self._spec = None


def _hnsw_diff(models: Any, params: dict[str, Any]) -> Any:
    names = {
        "m": "m",
        "M": "m",
        "ef_construct": "ef_construct",
        "efConstruction": "ef_construct",
        "ef_construction": "ef_construct",
        "full_scan_threshold": "full_scan_threshold",
    }
    kw = {names[k]: int(v) for k, v in params.items() if k in names and isinstance(v, int | float)}
    return models.HnswConfigDiff(**kw) if kw else None


def _payload_schema(kind: str) -> str | None:
    kind = kind.lower().removeprefix("payload:")
    known = {"keyword", "integer", "float", "bool", "geo", "datetime", "text", "uuid"}
    return kind if kind in known else None
