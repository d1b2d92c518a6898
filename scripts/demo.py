"""Build a Chroma collection the way an application would (chromadb directly): 10k documents."""

from __future__ import annotations

import contextlib
import sys

import chromadb
import numpy as np

TOPICS = ["billing", "shipping", "returns", "accounts", "security", "search", "privacy", "api"]


def main(path: str, n: int = 10_000, dim: int = 384) -> None:
    client = chromadb.PersistentClient(path=path)
    with contextlib.suppress(Exception):  # absent on a fresh run
        client.delete_collection("support_articles")
    coll = client.create_collection("support_articles", metadata={"hnsw:space": "cosine"})
    rng = np.random.default_rng(42)
    centers = rng.standard_normal((len(TOPICS), dim)).astype(np.float32)
    step = 2_000
    for start in range(0, n, step):
        idx = np.arange(start, min(start + step, n))
        topic = idx % len(TOPICS)
        vectors = centers[topic] + 0.35 * rng.standard_normal((len(idx), dim)).astype(np.float32)
        pairs = list(zip(idx.tolist(), topic.tolist(), strict=True))
        coll.add(
            ids=[f"article-{i:05d}" for i, _ in pairs],
            embeddings=vectors,
            documents=[f"How to handle {TOPICS[t]} question number {i}" for i, t in pairs],
            metadatas=[
                {
                    "topic": TOPICS[t],
                    "views": i * 37 % 10_000,
                    "rating": float(i % 50) / 10,
                    "published": bool(i % 4),
                }
                for i, t in pairs
            ],
        )
    print(f"demo: built Chroma collection 'support_articles': {coll.count():,} vectors, dim {dim}")


if __name__ == "__main__":
    main(sys.argv[1])
