"""Systems under test for the conformance suite.

Each system is a factory that returns a fresh connector URI for a new collection; a system
whose engine is not available here is skipped with the reason. Server engines are started by
session fixtures in ``tests/engines.py`` (bound to 127.0.0.1 on free ports, torn down after).
Add a system by adding one ``System`` to ``SYSTEMS``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

UriFactory = Callable[[Path, str], str]


@dataclass(frozen=True)
class System:
    name: str
    needs: tuple[str, ...]  # Python modules that must import
    engine_fixture: str | None  # a session fixture giving a server address, or None
    make_uri: Callable[..., str]  # (tmp_path, collection_name, engine) -> uri
    env: str | None = None  # an environment variable naming a live server to run against

    def skip_reason(self) -> str | None:
        missing = [m for m in self.needs if importlib.util.find_spec(m) is None]
        if missing:
            return f"{self.name}: client not installed ({', '.join(missing)})"
        if self.env and not os.environ.get(self.env):
            return f"{self.name}: set {self.env} to run against a live server"
        return None


def _live_uri(scheme: str, var: str, option: str, name: str, *, upper: bool = False) -> str:
    """A URI for a collection on the live server named by ``var`` (http[s]://[user@]host:port
    or a URI of the connector's own scheme, whose options are kept)."""
    raw = os.environ[var]
    parts = urlsplit(raw)
    safe = re.sub(r"[^0-9A-Za-z_]", "_", name)
    safe = ("Vecmigrate_" + safe) if upper else ("vecmigrate-" + safe.lower())
    user = f"{parts.username}@" if parts.username else ""
    query = parts.query
    if parts.scheme in ("http", "https"):
        query = "secure=true" if parts.scheme == "https" else ""
    sep = "&" if query else ""
    return f"{scheme}://{user}{parts.hostname}:{parts.port}?{query}{sep}{option}={safe}"


SYSTEMS: list[System] = [
    System("memory", (), None, lambda tmp, name, engine: f"memory://{tmp.name}-{name}"),
    System(
        "milvus+lite",
        ("pymilvus", "milvus_lite"),
        None,
        lambda tmp, name, engine: f"milvus+lite://{tmp}/milvus.db?collection={name}",
    ),
    System(
        "qdrant+local",
        ("qdrant_client",),
        "qdrant_local_root",
        lambda t, n, root: f"qdrant+local://{root}/{t.name}?collection={n}",
    ),
    System("qdrant+edge", ("qdrant_edge",), None, lambda t, n, e: f"qdrant+edge://{t}/edge-{n}"),
    System("parquet", (), None, lambda tmp, name, engine: f"parquet://{tmp / name}"),
    System("jsonl", (), None, lambda tmp, name, engine: f"jsonl://{tmp / name}"),
    System("csv", (), None, lambda tmp, name, engine: f"csv://{tmp / name}"),
    System("lancedb", ("lancedb",), None, lambda tmp, name, e: f"lancedb://{tmp}/db?table={name}"),
    System("chroma", ("chromadb",), None, lambda t, n, e: f"chroma://{t}/db?collection={n}"),
    System("chroma+http", ("chromadb",), "chroma_server", lambda t, n, e: e.uri(f"{n}-{t.name}")),
    System("redis", ("redis",), "redis_engine", lambda tmp, name, e: e.uri(f"{tmp.name}-{name}")),
    System("faiss", ("faiss",), None, lambda tmp, name, e: f"faiss://{tmp}/{name}.index"),
    System(
        "sqlitevec",
        ("sqlite_vec",),
        None,
        lambda tmp, name, e: f"sqlitevec://{tmp}/vec.db?table={name}&metadata=columns",
    ),
    System("pgvector", ("psycopg",), "postgres_engine", lambda t, n, e: e.uri(f"{t.name}_{n}")),
    # live servers only (not verified here): see docs/unverified-connectors.md
    System(
        "weaviate",
        ("weaviate",),
        None,
        lambda t, n, e: _live_uri(
            "weaviate", "VECMIGRATE_TEST_WEAVIATE_URL", "collection", f"{t.name}_{n}", upper=True
        ),
        env="VECMIGRATE_TEST_WEAVIATE_URL",
    ),
    System(
        "pinecone",
        ("pinecone",),
        None,
        lambda t, n, e: (
            f"pinecone://{os.environ['VECMIGRATE_TEST_PINECONE_INDEX']}"
            f"?namespace=vecmigrate-{re.sub(r'[^0-9a-z-]', '-', f'{t.name}-{n}'.lower())}"
        ),
        env="VECMIGRATE_TEST_PINECONE_INDEX",
    ),
    System(
        "elasticsearch",
        ("elasticsearch",),
        None,
        lambda t, n, e: _live_uri(
            "elasticsearch", "VECMIGRATE_TEST_ELASTICSEARCH_URL", "index", f"{t.name}-{n}"
        ),
        env="VECMIGRATE_TEST_ELASTICSEARCH_URL",
    ),
    System(
        "opensearch",
        ("opensearchpy",),
        None,
        lambda t, n, e: _live_uri(
            "opensearch", "VECMIGRATE_TEST_OPENSEARCH_URL", "index", f"{t.name}-{n}"
        ),
        env="VECMIGRATE_TEST_OPENSEARCH_URL",
    ),
]


def system_params() -> list[object]:
    return [pytest.param(s, id=s.name) for s in SYSTEMS]
