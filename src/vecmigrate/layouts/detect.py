"""Recognise the frameworks' layouts in a database, folder or server (for ``vecmigrate inspect``).

- PostgreSQL: LangChain's ``langchain_pg_collection`` / ``langchain_pg_embedding`` (one entry
  per collection) and LlamaIndex's ``data_<name>`` tables (id, text, metadata_, node_id,
  embedding).
- Chroma: a collection whose records carry ``_node_content`` is LlamaIndex's; any other
  collection with documents is in LangChain's layout (plain documents and flat metadata).
- Qdrant: payloads with ``page_content`` and ``metadata`` are LangChain's, payloads with
  ``_node_content`` LlamaIndex's.
- Milvus: a VARCHAR primary key ``pk``, a VARCHAR ``text`` and a float vector ``vector`` is
  LangChain's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from vecmigrate.engine.mapping import MappingReport
from vecmigrate.errors import ConfigError
from vecmigrate.layouts.metadata import NODE_CONTENT
from vecmigrate.uri import ConnectorURI

COLLECTION_OPTION = {
    "pgvector": "table",
    "chroma": "collection",
    "chroma+http": "collection",
    "qdrant": "collection",
    "qdrant+local": "collection",
    "milvus": "collection",
    "milvus+lite": "collection",
}


@dataclass(frozen=True)
class DetectedLayout:
    """One framework collection found, and the URI that opens it in its layout."""

    framework: str
    system: str
    collection: str
    count: int
    uri: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def names_one_collection(uri: ConnectorURI) -> bool:
    """Whether the URI names one collection (else it names where collections live)."""
    option = COLLECTION_OPTION.get(uri.scheme)
    return option is None or bool(uri.option(option)) or bool(uri.option("layout"))


def detect_layouts(uri: str | ConnectorURI) -> list[DetectedLayout]:
    """Every framework collection where ``uri`` points (a database, folder or server)."""
    parsed = uri if isinstance(uri, ConnectorURI) else ConnectorURI.parse(uri)
    finder = _FINDERS.get(parsed.scheme)
    if finder is None:
        return []
    return finder(parsed)


def inspect_layouts(uri: str) -> dict[str, Any] | None:
    """``inspect``'s answer for a URI naming a database, folder or server (None otherwise)."""
    parsed = ConnectorURI.parse(uri)
    if names_one_collection(parsed):
        return None
    if parsed.scheme not in COLLECTION_OPTION:
        return None
    found = detect_layouts(parsed)
    return {
        "command": "inspect",
        "ok": True,
        "uri": parsed.redacted(),
        "layouts": [d.as_dict() for d in found],
    }


def layout_rows(info: dict[str, Any]) -> list[tuple[str, Any]]:
    """Lines for the terminal: one per framework collection."""
    if not info["layouts"]:
        return [("layouts", "no LangChain or LlamaIndex collection found")]
    return [
        (f"{d['framework']} {d['collection']}", f"{d['count']} records: {d['uri']}")
        for d in info["layouts"]
    ]


def carry_over(spec: Any, target: Any, report: MappingReport) -> MappingReport:
    """Add what a framework layout target keeps, converts and cannot hold to ``report``."""
    carry: Callable[[Any], MappingReport] | None = getattr(target, "carry", None)
    if carry is None:
        return report
    layout = carry(spec)
    seen = set(report.exact + report.converted + report.lost)
    report.converted += [n for n in layout.converted if n not in seen]
    report.lost += [n for n in layout.lost if n not in seen]
    return report


def _with(uri: ConnectorURI, framework: str, **options: str) -> str:
    kept = {k: v for k, v in uri.options.items() if k.endswith("_env") or k.endswith("_file")}
    return replace(uri, options={**kept, "layout": framework, **options}).redacted()


# -- PostgreSQL ---------------------------------------------------------------------------
_LLAMAINDEX_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = %s AND c.relname LIKE 'data\\_%%'
  AND (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
       AND NOT a.attisdropped
       AND a.attname IN ('id', 'text', 'metadata_', 'node_id', 'embedding')) = 5
ORDER BY 1
"""


def _postgres(uri: ConnectorURI) -> list[DetectedLayout]:
    import psycopg
    from psycopg import sql

    from vecmigrate.connectors.pgvector.config import PgvectorConfig
    from vecmigrate.connectors.pgvector.errors import translated

    options = {k: v for k, v in uri.options.items() if k != "table"}
    config = PgvectorConfig.from_uri(replace(uri, options={**options, "table": "-"}))
    schema = config.schema or "public"
    out: list[DetectedLayout] = []
    with (
        translated(config.database, "look for framework tables", secret=config.password),
        psycopg.connect(**config.connect_kwargs(), autocommit=True) as conn,
    ):
        colls = conn.execute(
            "SELECT to_regclass(%s), to_regclass(%s)",
            (f"{schema}.langchain_pg_collection", f"{schema}.langchain_pg_embedding"),
        ).fetchone()
        if colls and colls[0] and colls[1]:
            rows = conn.execute(
                sql.SQL(
                    "SELECT c.name, count(e.id) FROM {} c LEFT JOIN {} e "
                    "ON e.collection_id = c.uuid GROUP BY c.name ORDER BY c.name"
                ).format(
                    sql.Identifier(schema, "langchain_pg_collection"),
                    sql.Identifier(schema, "langchain_pg_embedding"),
                )
            ).fetchall()
            for name, count in rows:
                link = _with(uri, "langchain", collection=str(name))
                out.append(DetectedLayout("langchain", "pgvector", str(name), int(count), link))
        for (table,) in conn.execute(_LLAMAINDEX_TABLES, (schema,)).fetchall():
            count = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            ).fetchone()
            name = str(table)[len("data_") :]
            link = _with(uri, "llamaindex", table=name)
            n = int(count[0]) if count else 0
            out.append(DetectedLayout("llamaindex", "pgvector", name, n, link))
    return out


# -- Chroma -------------------------------------------------------------------------------
def _chroma(uri: ConnectorURI) -> list[DetectedLayout]:
    import chromadb
    from chromadb.config import Settings

    from vecmigrate.connectors.chroma.config import ChromaConfig
    from vecmigrate.connectors.chroma.errors import chroma_errors

    config = ChromaConfig.from_uri(replace(uri, options={**uri.options, "collection": "probe"}))
    settings = Settings(anonymized_telemetry=False)
    out: list[DetectedLayout] = []
    with chroma_errors(f"list the collections of {uri.redacted()}"):
        if config.path is not None:
            if not config.path.is_dir():
                raise ConfigError(f"chroma: the folder {config.path} does not exist")
            client = chromadb.PersistentClient(path=str(config.path), settings=settings)
        else:
            client = chromadb.HttpClient(
                host=config.host or "127.0.0.1",
                port=config.port or 8000,
                ssl=config.ssl,
                headers=config.headers(),
                settings=settings,
                tenant=config.tenant,
                database=config.database,
            )
        for coll in client.list_collections():
            got = coll.get(limit=1, include=["metadatas", "documents"])
            if not got["ids"]:
                continue
            metadatas: list[Any] = list(got["metadatas"] or [])
            documents: list[Any] = list(got["documents"] or [])
            if NODE_CONTENT in ((metadatas[0] if metadatas else None) or {}):
                framework = "llamaindex"
            elif documents and documents[0] is not None:
                framework = "langchain"
            else:
                continue
            link = _with(uri, framework, collection=coll.name)
            out.append(DetectedLayout(framework, "chroma", coll.name, int(coll.count()), link))
    return out


# -- Qdrant -------------------------------------------------------------------------------
def _qdrant(uri: ConnectorURI) -> list[DetectedLayout]:
    from qdrant_client import QdrantClient

    from vecmigrate.connectors.qdrant.config import QdrantConfig
    from vecmigrate.connectors.qdrant.errors import translated

    config = QdrantConfig.from_uri(replace(uri, options={**uri.options, "collection": "probe"}))
    out: list[DetectedLayout] = []
    with translated(f"listing the collections of {uri.redacted()}"):
        if config.mode == "local":
            client = QdrantClient(path=str(config.path))
        else:
            client = QdrantClient(url=config.url, api_key=config.api_key, timeout=config.timeout)
        try:
            for desc in client.get_collections().collections:
                points, _ = client.scroll(desc.name, limit=1, with_payload=True)
                payload = (points[0].payload or {}) if points else {}
                if NODE_CONTENT in payload:
                    framework = "llamaindex"
                elif "page_content" in payload and "metadata" in payload:
                    framework = "langchain"
                else:
                    continue
                count = int(client.count(desc.name, exact=True).count)
                link = _with(uri, framework, collection=desc.name)
                out.append(DetectedLayout(framework, "qdrant", desc.name, count, link))
        finally:
            client.close()
    return out


# -- Milvus -------------------------------------------------------------------------------
def _milvus(uri: ConnectorURI) -> list[DetectedLayout]:
    from pymilvus import DataType

    from vecmigrate.connectors.milvus.config import MilvusConfig
    from vecmigrate.connectors.milvus.errors import translated
    from vecmigrate.connectors.milvus.lite import LiteEngines

    config = MilvusConfig.from_uri(replace(uri, options={**uri.options, "collection": "probe"}))
    out: list[DetectedLayout] = []
    with translated(f"listing the collections of {uri.redacted()}"):
        if config.lite_path is not None:
            client = LiteEngines.open_client(config.lite_path, config.timeout)
        else:
            from pymilvus import MilvusClient

            kw: dict[str, Any] = {"uri": config.address}
            if config.token:
                kw["token"] = config.token
            client = MilvusClient(timeout=config.timeout, **kw)
        try:
            for name in client.list_collections():
                fields = {f["name"]: f for f in client.describe_collection(name)["fields"]}
                pk, text, vector = fields.get("pk"), fields.get("text"), fields.get("vector")
                if (
                    pk is None
                    or not pk.get("is_primary")
                    or text is None
                    or vector is None
                    or vector["type"] != DataType.FLOAT_VECTOR
                ):
                    continue
                rows = client.query(name, filter="", output_fields=["count(*)"])
                link = _with(uri, "langchain", collection=name)
                out.append(
                    DetectedLayout("langchain", "milvus", name, int(rows[0]["count(*)"]), link)
                )
        finally:
            client.close()
            if config.lite_path is not None:
                LiteEngines.release(config.lite_path)
    return out


_FINDERS: dict[str, Callable[[ConnectorURI], list[DetectedLayout]]] = {
    "pgvector": _postgres,
    "chroma": _chroma,
    "chroma+http": _chroma,
    "qdrant": _qdrant,
    "qdrant+local": _qdrant,
    "milvus": _milvus,
    "milvus+lite": _milvus,
}
