"""A Qdrant Edge shard (``qdrant+edge:///abs/dir``): Qdrant's Rust engine embedded in-process.

One folder is one shard, so the folder is the collection. A shard can be opened once per
process (its WAL is locked), so connectors on the same folder share it. vecmigrate's hints
(id type, metadata types, document key) sit beside the engine's files in ``vecmigrate.json``.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from vecmigrate.connectors.base import Capabilities
from vecmigrate.connectors.qdrant.base import QDRANT_CAPABILITIES, QdrantBase
from vecmigrate.connectors.qdrant.errors import locked_elsewhere, translated
from vecmigrate.connectors.qdrant.points import PointColumns, PointLayout
from vecmigrate.errors import ConfigError, Unsupported
from vecmigrate.spec import CollectionSpec, IndexConfig, Metric, VectorField
from vecmigrate.uri import ConnectorURI

ENGINE_CONFIG = "edge_config.json"
HINTS_FILE = "vecmigrate.json"
_DISTANCE = {Metric.COSINE: "Cosine", Metric.L2: "Euclid", Metric.IP: "Dot"}
_PAYLOAD_KINDS = {
    "keyword": "Keyword",
    "integer": "Integer",
    "float": "Float",
    "bool": "Bool",
    "geo": "Geo",
    "datetime": "Datetime",
    "text": "Text",
    "uuid": "Uuid",
}


LOCKED_WAIT_S = 10.0  # a process that just ended (a crashed copy's writer) may still hold it


def _while_locked(open_shard: Callable[[], Any]) -> Any:
    """``open_shard()``, tried again for a few seconds while another process holds the WAL."""
    deadline = time.monotonic() + LOCKED_WAIT_S
    while True:
        try:
            return open_shard()
        except Exception as exc:
            if not locked_elsewhere(str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class EdgeShards:
    """The Edge shards open in this process, shared by connectors on the same folder."""

    _lock = threading.Lock()
    _open: ClassVar[dict[str, tuple[Any, int]]] = {}

    @classmethod
    def acquire(cls, path: Path, create: Any = None) -> Any:
        """The shard at ``path`` (loaded, or made by ``create()``), one more user."""
        from qdrant_edge import EdgeShard

        key = str(path.resolve())
        with cls._lock:
            shard, users = cls._open.get(key, (None, 0))
            if shard is None:
                shard = _while_locked(create or (lambda: EdgeShard.load(key)))
            cls._open[key] = (shard, users + 1)
            return shard

    @classmethod
    def release(cls, path: Path, *, close_now: bool = False) -> None:
        key = str(path.resolve())
        with cls._lock:
            shard, users = cls._open.get(key, (None, 0))
            if shard is None:
                return
            if users > 1 and not close_now:
                cls._open[key] = (shard, users - 1)
                return
            del cls._open[key]
            shard.close()


class QdrantEdgeConnector(QdrantBase):
    scheme: ClassVar[str] = "qdrant+edge"
    capabilities: ClassVar[Capabilities] = replace(
        QDRANT_CAPABILITIES, aliases=False, holds_gil=True
    )
    dense_rows = "buffer"  # the edge takes float32 rows as buffers (see points.to_points)

    @classmethod
    def single_process(cls, uri: ConnectorURI) -> str | None:
        return (
            "a Qdrant Edge shard is opened by one process (its WAL is locked); "
            "a Qdrant server (qdrant://) is not"
        )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        assert self.config.path is not None
        self.path: Path = self.config.path
        self._shard: Any = None

    @property
    def shard(self) -> Any:
        if self._shard is None:
            self._require()
            with translated(f"opening Qdrant Edge shard {self.path}"):
                self._shard = EdgeShards.acquire(self.path)
        return self._shard

    def close(self) -> None:
        if self._shard is not None:
            self._shard = None
            with translated(f"closing Qdrant Edge shard {self.path}"):
                EdgeShards.release(self.path)

    def exists(self) -> bool:
        return (self.path / ENGINE_CONFIG).is_file()

    # -- describe -----------------------------------------------------------------------
    def _hints(self) -> dict[str, Any]:
        try:
            hints = json.loads((self.path / HINTS_FILE).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {self.path / HINTS_FILE}: {exc}") from exc
        return hints if isinstance(hints, dict) else {}

    def _raw_spec(self) -> tuple[CollectionSpec, PointLayout]:
        config = json.loads((self.path / ENGINE_CONFIG).read_text())
        layout = PointLayout()
        vectors: list[VectorField] = []
        indexes: list[IndexConfig] = []
        for qname, params in (config.get("vectors") or {}).items():
            name = qname or "vector"
            try:
                metric = Metric.parse(str(params["distance"]))
            except ConfigError as exc:
                raise Unsupported(
                    f"qdrant edge shard {self.path}: vector {name!r} uses distance "
                    f"{params['distance']}, which vecmigrate cannot move"
                ) from exc
            dtype: Literal["float32", "float16"] = (
                "float16" if str(params.get("datatype", "")).lower() == "float16" else "float32"
            )
            vectors.append(
                VectorField(name=name, dim=int(params["size"]), metric=metric, dtype=dtype)
            )
            layout.vector_names[name] = qname
            index_params = dict(config.get("hnsw_config") or {})
            index_params.update(params.get("hnsw_config") or {})
            quant = params.get("quantization_config") or config.get("quantization_config")
            if quant:
                index_params["quantization"] = quant
            indexes.append(IndexConfig(field=name, kind="hnsw", metric=metric, params=index_params))
        layout.unnamed = "" in (config.get("vectors") or {})
        for qname in config.get("sparse_vectors") or {}:
            vectors.append(VectorField(name=qname, dim=0, metric=Metric.IP, sparse=True))
            layout.vector_names[qname] = qname
        with translated(f"reading Qdrant Edge shard info of {self.path}"):
            payload_schema = self.shard.info().payload_schema
        for key, info in payload_schema.items():
            kind = str(info.data_type).rsplit(".", 1)[-1].lower()  # PayloadSchemaType.Integer
            indexes.append(IndexConfig(field=key, kind=f"payload:{kind}"))
        layout.vectors = vectors
        system = {
            "qdrant": {
                "edge_config": {k: v for k, v in config.items() if k not in ("vectors",)},
                "unnamed_vector": layout.unnamed,
            }
        }
        spec = CollectionSpec(name=self.name, vectors=vectors, indexes=indexes, system=system)
        return spec, layout

    # -- engine calls -------------------------------------------------------------------
    def _count(self) -> int:
        from qdrant_edge import CountRequest

        with translated(f"counting points of {self.path}"):
            return int(self.shard.count(CountRequest(exact=True)))

    def _scroll(self, offset: Any, limit: int) -> tuple[list[Any], Any]:
        from qdrant_edge import ScrollRequest

        with translated(f"scrolling {self.path}"):
            records, following = self.shard.scroll(
                ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=True)
            )
        return list(records), following

    def _retrieve(self, ids: list[Any]) -> list[Any]:
        with translated(f"retrieving points of {self.path}"):
            return list(self.shard.retrieve(ids, with_payload=True, with_vector=True))

    def _search(self, qname: str, vector: list[float], k: int) -> list[Any]:
        from qdrant_edge import Query, QueryRequest

        with translated(f"searching {self.path}"):
            return list(
                self.shard.query(
                    QueryRequest(
                        query=Query.Nearest(vector, using=qname),
                        limit=k,
                        with_payload=True,
                        with_vector=False,
                    )
                )
            )

    def _write(self, points: PointColumns) -> None:
        from qdrant_edge import Point, SparseVector, UpdateOperation

        layout = self.layout()
        sparse = {layout.vector_names[v.name] for v in layout.vectors if v.sparse}
        columns = []
        for qname, rows in points.vectors.items():
            if qname in sparse:
                rows_of_name = [SparseVector(list(r[0]), list(r[1])) if r else None for r in rows]
                columns.append((qname, rows_of_name))
            else:
                columns.append((qname, rows))
        batch = []
        for i, (pid, payload) in enumerate(zip(points.ids, points.payloads, strict=True)):
            vector: dict[str, Any] = {q: rows[i] for q, rows in columns if rows[i] is not None}
            batch.append(Point(id=pid, vector=vector, payload=payload))
        with translated(f"writing {len(batch)} points to {self.path}"):
            self.shard.update(UpdateOperation.upsert_points(batch))

    def _delete(self, ids: list[Any]) -> None:
        from qdrant_edge import UpdateOperation

        with translated(f"deleting points of {self.path}"):
            self.shard.update(UpdateOperation.delete_points(ids))

    def _create(self, spec: CollectionSpec, layout: PointLayout, hints: dict[str, Any]) -> None:
        import qdrant_edge as qe

        dense = {}
        sparse = {}
        for vf in spec.vectors:
            if vf.sparse:
                sparse[vf.name] = qe.EdgeSparseVectorParams()
                continue
            wanted = next((ix for ix in spec.indexes if ix.field == vf.name), None)
            dense[vf.name] = qe.EdgeVectorParams(
                size=vf.dim,
                distance=getattr(qe.Distance, _DISTANCE[vf.metric]),
                datatype=qe.VectorStorageDatatype.Float16 if vf.dtype == "float16" else None,
                hnsw_config=_hnsw(qe, wanted.params if wanted else {}),
            )
        config = qe.EdgeConfig(vectors=dense, sparse_vectors=sparse or None)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / HINTS_FILE).write_text(json.dumps(hints, indent=1))
        with translated(f"creating Qdrant Edge shard {self.path}"):
            self._shard = EdgeShards.acquire(
                self.path, create=lambda: qe.EdgeShard.create(str(self.path), config)
            )
            for ix in spec.indexes:
                kind = _PAYLOAD_KINDS.get(ix.kind.lower().removeprefix("payload:"))
                if kind and spec.metadata_field(ix.field) is not None:
                    schema = getattr(qe.PayloadSchemaType, kind)
                    self._shard.update(qe.UpdateOperation.create_field_index(ix.field, schema))

    def drop(self) -> None:
        if self._shard is not None:
            self._shard = None
            with translated(f"closing Qdrant Edge shard {self.path}"):
                EdgeShards.release(self.path, close_now=True)
        if self.exists():
            shutil.rmtree(self.path)
        self._spec = self._layout = None

    def finalize(self, spec: CollectionSpec) -> None:
        with translated(f"flushing {self.path}"):
            self.shard.flush()
            if self.config.optimize:
                self.shard.optimize()

    # -- aliases ------------------------------------------------------------------------
    # Qdrant Edge has no alias objects: an alias is a symbolic link beside the shard folder
    # (``qdrant+edge:///dir/ALIAS`` opens the shard it points at), replaced atomically.
    def _alias_link(self, alias: str) -> Path:
        if not alias or "/" in alias or alias in (".", ".."):
            raise ConfigError(f"qdrant edge: alias {alias!r} must be a plain folder name")
        link = self.path.parent / alias
        if link.exists() and not link.is_symlink():
            raise ConfigError(
                f"qdrant edge: {link} exists and is not an alias link; refusing to replace it"
            )
        return link

    def switch_alias(self, alias: str) -> str | None:
        """Point ``alias`` at this shard; returns the shard it pointed at before (or None)."""
        import os

        link = self._alias_link(alias)
        previous = os.readlink(link) if link.is_symlink() else None
        tmp = link.with_name(f".{alias}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(self.path.name, tmp, target_is_directory=True)
        os.replace(tmp, link)
        return previous

    def drop_alias(self, alias: str) -> None:
        link = self._alias_link(alias)
        if link.is_symlink():
            link.unlink()


def _hnsw(qe: Any, params: dict[str, Any]) -> Any:
    m = params.get("m", params.get("M"))
    ef = params.get("ef_construct", params.get("efConstruction", params.get("ef_construction")))
    if not isinstance(m, int) or not isinstance(ef, int):
        return None
    return qe.HnswIndexConfig(
        m=m, ef_construct=ef, full_scan_threshold=int(params.get("full_scan_threshold", 10_000))
    )
