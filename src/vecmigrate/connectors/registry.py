"""URI scheme -> connector class: built-ins by dotted path, plugins by entry point.

Connector modules are imported only when their scheme is used, so a missing client library
shows an install hint instead of a traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from vecmigrate.connectors.base import Connector
from vecmigrate.errors import ConfigError, MissingDependency
from vecmigrate.uri import ConnectorURI

ENTRY_POINT_GROUP = "vecmigrate.connectors"


@dataclass(frozen=True)
class _Builtin:
    target: str  # "package.module:Class"
    extra: str | None  # pip extra that installs the client
    client: str | None  # top-level module the client provides
    one_process: bool = False  # its class's single_process() may answer (see single_process)


_BUILTINS: dict[str, _Builtin] = {
    "memory": _Builtin(
        "vecmigrate.connectors.memory.connector:MemoryConnector", None, None, one_process=True
    ),
    "parquet": _Builtin("vecmigrate.connectors.dataset.connector:DatasetConnector", None, None),
    "jsonl": _Builtin("vecmigrate.connectors.dataset.connector:DatasetConnector", None, None),
    "csv": _Builtin("vecmigrate.connectors.dataset.connector:DatasetConnector", None, None),
    "vdf": _Builtin("vecmigrate.connectors.vdf.connector:VdfConnector", None, None),
    "lancedb": _Builtin(
        "vecmigrate.connectors.lancedb.connector:LanceDBConnector", "lancedb", "lancedb"
    ),
    "chroma": _Builtin(
        "vecmigrate.connectors.chroma.connector:ChromaConnector",
        "chroma",
        "chromadb",
        one_process=True,
    ),
    "chroma+http": _Builtin(
        "vecmigrate.connectors.chroma.connector:ChromaConnector", "chroma", "chromadb"
    ),
    "pgvector": _Builtin(
        "vecmigrate.connectors.pgvector.connector:PgvectorConnector", "pgvector", "psycopg"
    ),
    "milvus": _Builtin(
        "vecmigrate.connectors.milvus.connector:MilvusConnector", "milvus", "pymilvus"
    ),
    "milvus+lite": _Builtin(
        "vecmigrate.connectors.milvus.connector:MilvusConnector",
        "milvus",
        "pymilvus",
        one_process=True,
    ),
    "qdrant": _Builtin(
        "vecmigrate.connectors.qdrant.connector:QdrantConnector", "qdrant", "qdrant_client"
    ),
    "qdrant+local": _Builtin(
        "vecmigrate.connectors.qdrant.connector:QdrantConnector",
        "qdrant",
        "qdrant_client",
        one_process=True,
    ),
    "qdrant+edge": _Builtin(
        "vecmigrate.connectors.qdrant.edge:QdrantEdgeConnector",
        "qdrant",
        "qdrant_edge",
        one_process=True,
    ),
    "faiss": _Builtin(
        "vecmigrate.connectors.faiss.connector:FaissConnector", "faiss", "faiss", one_process=True
    ),
    "sqlitevec": _Builtin(
        "vecmigrate.connectors.sqlitevec.connector:SqliteVecConnector", "sqlitevec", "sqlite_vec"
    ),
    "redis": _Builtin("vecmigrate.connectors.redis.connector:RedisConnector", "redis", "redis"),
    "weaviate": _Builtin(
        "vecmigrate.connectors.weaviate.connector:WeaviateConnector", "weaviate", "weaviate"
    ),
    "pinecone": _Builtin(
        "vecmigrate.connectors.pinecone.connector:PineconeConnector", "pinecone", "pinecone"
    ),
    "elasticsearch": _Builtin(
        "vecmigrate.connectors.elastic.connector:ElasticsearchConnector",
        "elasticsearch",
        "elasticsearch",
    ),
    "opensearch": _Builtin(
        "vecmigrate.connectors.elastic.connector:OpenSearchConnector", "opensearch", "opensearchpy"
    ),
}

_registered: dict[str, type[Connector]] = {}


def register(scheme: str, cls: type[Connector]) -> None:
    """Make ``scheme://`` URIs open ``cls`` (for connectors shipped outside vecmigrate)."""
    _registered[scheme.lower()] = cls


def known_schemes() -> list[str]:
    plugins = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(set(_BUILTINS) | set(_registered) | plugins)


def _import(target: str) -> type[Connector]:
    module_name, _, attr = target.partition(":")
    cls: type[Connector] = getattr(importlib.import_module(module_name), attr)
    return cls


def single_process(uri: ConnectorURI) -> str | None:
    """Why only one process at a time may open ``uri``'s collection; None if many may.

    A built-in connector whose class never says so answers None without importing its client
    (importing LanceDB's takes ~1 s, which the Ray executor would wait for before starting).
    """
    scheme = uri.scheme.lower()
    builtin = _BUILTINS.get(scheme)
    plugin = scheme in _registered or any(
        ep.name == scheme for ep in entry_points(group=ENTRY_POINT_GROUP)
    )
    if builtin is not None and not builtin.one_process and not plugin:
        return None
    return connector_class(scheme).single_process(uri)


def connector_class(scheme: str) -> type[Connector]:
    """The class for a scheme; an install hint when its client library is missing."""
    scheme = scheme.lower()
    if scheme in _registered:
        return _registered[scheme]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == scheme:
            cls: type[Connector] = ep.load()
            return cls
    builtin = _BUILTINS.get(scheme)
    if builtin is None:
        raise ConfigError(
            f"unknown URI scheme {scheme!r}: known schemes are {', '.join(known_schemes())}"
        )
    if builtin.client is not None:
        try:
            importlib.import_module(builtin.client)
        except ImportError as exc:
            raise MissingDependency(builtin.client, builtin.extra or scheme) from exc
    try:
        return _import(builtin.target)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("vecmigrate"):
            raise ConfigError(f"the {scheme}:// connector is not available yet") from exc
        raise MissingDependency(exc.name or "?", builtin.extra or scheme) from exc


LAYOUTS = ("langchain", "llamaindex")


def connect(uri: str | ConnectorURI) -> Connector:
    """Open a connector for a URI (nothing is created or written yet).

    ``?layout=langchain|llamaindex`` opens the framework's own layout of that system instead
    (``vecmigrate.layouts``), reading and writing canonical records.
    """
    parsed = uri if isinstance(uri, ConnectorURI) else ConnectorURI.parse(uri)
    layout = parsed.option("layout")
    if layout is not None:
        if layout not in LAYOUTS:
            raise ConfigError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
        from vecmigrate.layouts import layout_connector

        return layout_connector(layout, parsed)
    return connector_class(parsed.scheme)(parsed)


PROCESS_CHOICES = ("auto", "own", "shared")


def connect_writer(uri: str | ConnectorURI, process: str = "auto") -> Connector:
    """A connector to write through: in a child process of its own when ``process`` is "own",
    or "auto" and its client holds the GIL while it writes (``Capabilities.holds_gil``), so
    this process's threads keep running meanwhile (``connectors.isolated``)."""
    parsed = uri if isinstance(uri, ConnectorURI) else ConnectorURI.parse(uri)
    if process not in PROCESS_CHOICES:
        raise ConfigError(f"unknown target process {process!r}: use auto, own or shared")
    if process == "own" or (
        process == "auto" and connector_class(parsed.scheme).capabilities.holds_gil
    ):
        from vecmigrate.connectors.isolated import IsolatedConnector

        return IsolatedConnector(parsed)
    return connect(parsed)
