"""The registry's answers that must not import a connector's client library."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from vecmigrate.connectors import registry
from vecmigrate.uri import ConnectorURI

SAMPLES = {
    "memory": "memory://c",
    "parquet": "parquet:///d",
    "jsonl": "jsonl:///d",
    "csv": "csv:///d",
    "vdf": "vdf:///d",
    "lancedb": "lancedb:///d?table=t",
    "chroma": "chroma:///d?collection=c",
    "chroma+http": "chroma+http://127.0.0.1:8000?collection=c",
    "pgvector": "pgvector://u@127.0.0.1:5432/db?table=t",
    "milvus": "milvus://127.0.0.1:19530?collection=c",
    "milvus+lite": "milvus+lite:///d/m.db?collection=c",
    "qdrant": "qdrant://127.0.0.1:6333?collection=c",
    "qdrant+local": "qdrant+local:///d?collection=c",
    "qdrant+edge": "qdrant+edge:///d",
    "faiss": "faiss:///d/i.index",
    "sqlitevec": "sqlitevec:///d/v.db?table=t",
    "redis": "redis://127.0.0.1:6379?key=k",
    "weaviate": "weaviate://127.0.0.1:8080?collection=C",
    "pinecone": "pinecone://index-name",
    "elasticsearch": "elasticsearch://127.0.0.1:9200?index=i",
    "opensearch": "opensearch://127.0.0.1:9200?index=i",
}


def test_every_builtin_scheme_has_a_sample() -> None:
    assert set(SAMPLES) == set(registry._BUILTINS)


@pytest.mark.parametrize("scheme", sorted(SAMPLES))
def test_single_process_agrees_with_the_connector_class(scheme: str) -> None:
    """The registry's shortcut (no import) answers as the class itself would."""
    client = registry._BUILTINS[scheme].client
    if client is not None and importlib.util.find_spec(client) is None:
        pytest.skip(f"{client} is not installed")
    uri = ConnectorURI.parse(SAMPLES[scheme])
    expected = registry.connector_class(scheme).single_process(uri)
    assert registry.single_process(uri) == expected
    assert (expected is not None) <= registry._BUILTINS[scheme].one_process


def test_single_process_of_a_server_or_lancedb_imports_no_client() -> None:
    """The Ray executor asks before it starts Ray: importing LanceDB's client there (~1 s)
    delayed the start of its actors."""
    code = (
        "import sys\n"
        "from vecmigrate.connectors.registry import single_process\n"
        "from vecmigrate.uri import ConnectorURI\n"
        "for u in ('lancedb:///d?table=t', 'pgvector://u@h:1/db?table=t', 'parquet:///d'):\n"
        "    assert single_process(ConnectorURI.parse(u)) is None\n"
        "print(sorted(m for m in ('lancedb', 'psycopg', 'pyarrow.dataset') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
