"""Does the new model retrieve at least as well? The same query texts through both models.

The old model's query vectors search the collection holding old vectors (SOURCE), the new
model's search the one holding new vectors (TARGET; it may be the same collection with another
vector field). With relevance labels: recall@k, nDCG@10 and MRR before and after, a paired
bootstrap interval of the nDCG@10 change, and a go/no-go on the largest allowed drop. Without:
how much the top-k overlaps, and the queries whose results changed most.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from vecmigrate.connectors.base import Connector
from vecmigrate.embed.providers import EmbeddingProvider, embed_isolating
from vecmigrate.errors import ConfigError, DataError
from vecmigrate.spec import CollectionSpec
from vecmigrate.validate.accuracy import _metrics

METRICS = ("recall_at_k", "ndcg_at_10", "mrr")


@dataclass(frozen=True)
class QueryTexts:
    ids: list[str]
    texts: list[str]


def load_query_texts(path: Path) -> QueryTexts:
    """Queries from JSONL (``{"id", "text"}``; ``query`` also read), Parquet with ``id`` and
    ``text``, TSV ``id<TAB>text``, or plain lines (ids are line numbers from 1)."""
    if not path.is_file():
        raise DataError("query file does not exist", file=str(path))
    ids: list[str] = []
    texts: list[str] = []
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        col = "text" if "text" in table.column_names else "query"
        if "id" not in table.column_names or col not in table.column_names:
            raise DataError("query file needs 'id' and 'text' columns", file=str(path))
        ids = [str(x) for x in table.column("id").to_pylist()]
        texts = [str(x or "") for x in table.column(col).to_pylist()]
    else:
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                try:
                    row = json.loads(line)
                    ids.append(str(row["id"]))
                    texts.append(str(row.get("text", row.get("query", ""))))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise DataError(f"bad query line: {exc}", file=str(path), row=line_no) from exc
            elif "\t" in line:
                qid, text = line.split("\t", 1)
                ids.append(qid)
                texts.append(text)
            else:
                ids.append(str(line_no))
                texts.append(line)
    empty = [i for i, t in zip(ids, texts, strict=True) if not t.strip()]
    if empty:
        raise DataError(f"query {empty[0]!r} has no text", file=str(path))
    if not ids:
        raise DataError("the query file holds no queries", file=str(path))
    return QueryTexts(ids, texts)


def field_for(spec: CollectionSpec, model_id: str, explicit: str | None = None) -> str:
    """The vector field the model produced (recorded by ``copy --embed``), else the first."""
    if explicit is not None:
        return spec.vector(explicit).name
    base = model_id.split("?", 1)[0]
    for vf in spec.vectors:
        if vf.embedding_model in (model_id, base):
            return vf.name
    return spec.vector().name


def embed_queries(provider: EmbeddingProvider, texts: Sequence[str]) -> np.ndarray:
    """Query vectors (``query_prefix`` option of the model applied); any failure is an error."""
    prefix = provider.ref.option("query_prefix", "") or ""
    batch = [prefix + t for t in texts]
    out: list[np.ndarray] = []
    for start in range(0, len(batch), provider.call_size):
        outcome = embed_isolating(provider, batch[start : start + provider.call_size])
        if outcome.errors:
            i, reason = next(iter(outcome.errors.items()))
            raise DataError(f"{provider.model_id} cannot embed query {start + i}: {reason}")
        out.append(outcome.vectors)
    return np.vstack(out) if out else np.zeros((0, provider.dimension()), np.float32)


def ranked_ids(conn: Connector, vectors: np.ndarray, k: int, field: str) -> list[list[str]]:
    res = conn.query(vectors, k, vector_field=field)
    return [[str(x) for x in row] for row in res.ids]


def per_query_metrics(
    ranked: list[list[str]], ids: list[str], qrels: dict[str, dict[str, float]], k: int
) -> tuple[list[str], np.ndarray]:
    """Labelled query ids and an (n, 3) array of recall@k, nDCG@10, MRR."""
    labelled = [
        (q, r)
        for q, r in zip(ids, ranked, strict=True)
        if any(g > 0 for g in qrels.get(q, {}).values())
    ]
    if not labelled:
        raise ConfigError("no query in the query file has a relevant document in --qrels")
    scores = np.array([_metrics(r, qrels[q], k) for q, r in labelled], dtype=np.float64)
    return [q for q, _ in labelled], scores


def summary(scores: np.ndarray, k: int) -> dict[str, float]:
    means = scores.mean(axis=0)
    return {
        f"recall_at_{k}": round(float(means[0]), 6),
        "ndcg_at_10": round(float(means[1]), 6),
        "mrr": round(float(means[2]), 6),
    }


def paired_bootstrap(diff: np.ndarray, *, rounds: int = 2_000, seed: int = 0) -> list[float]:
    """95% interval of the mean of paired per-query differences."""
    if len(diff) < 2:
        return [float(diff.mean()), float(diff.mean())] if len(diff) else [0.0, 0.0]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diff), size=(rounds, len(diff)))
    means = diff[picks].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 6), round(float(np.percentile(means, 97.5)), 6)]


def overlap_at_k(a: list[list[str]], b: list[list[str]], k: int) -> np.ndarray:
    return np.array([len(set(x[:k]) & set(y[:k])) / k for x, y in zip(a, b, strict=True)])


@dataclass
class ModelComparison:
    """Old model on SOURCE vs new model on TARGET for the same queries."""

    old_model: str
    new_model: str
    old_field: str
    new_field: str
    k: int
    queries: QueryTexts
    old_ranked: list[list[str]]
    new_ranked: list[list[str]]
    old_vectors: np.ndarray
    new_vectors: np.ndarray


def run_queries(
    source: Connector,
    target: Connector,
    old: EmbeddingProvider,
    new: EmbeddingProvider,
    queries: QueryTexts,
    *,
    k: int,
    old_field: str | None = None,
    new_field: str | None = None,
) -> ModelComparison:
    of = field_for(source.describe(), old.model_id, old_field)
    nf = field_for(target.describe(), new.model_id, new_field)
    depth = max(k, 10)
    old_q = embed_queries(old, queries.texts)
    new_q = embed_queries(new, queries.texts)
    return ModelComparison(
        old_model=old.model_id,
        new_model=new.model_id,
        old_field=of,
        new_field=nf,
        k=k,
        queries=queries,
        old_ranked=ranked_ids(source, old_q, depth, of),
        new_ranked=ranked_ids(target, new_q, depth, nf),
        old_vectors=old_q,
        new_vectors=new_q,
    )


def compare_models(
    cmp: ModelComparison,
    qrels: dict[str, dict[str, float]] | None,
    *,
    max_drop: float = 0.0,
    min_overlap: float = 0.5,
    show: int = 10,
) -> dict[str, Any]:
    """The ``embedding_quality`` check: metrics before/after with a verdict."""
    k = cmp.k
    overlap = overlap_at_k(cmp.old_ranked, cmp.new_ranked, k)
    order = np.argsort(overlap, kind="stable")[:show]
    changed = [
        {
            "id": cmp.queries.ids[i],
            "text": cmp.queries.texts[i][:200],
            f"overlap_at_{k}": round(float(overlap[i]), 4),
            "old_top": cmp.old_ranked[i][:5],
            "new_top": cmp.new_ranked[i][:5],
        }
        for i in order
    ]
    out: dict[str, Any] = {
        "old_model": cmp.old_model,
        "new_model": cmp.new_model,
        "old_field": cmp.old_field,
        "new_field": cmp.new_field,
        "queries": len(cmp.queries.ids),
        "k": k,
        f"mean_overlap_at_{k}": round(float(overlap.mean()), 6) if len(overlap) else None,
        "changed_most": changed,
    }
    if qrels is None:
        out["min_overlap"] = min_overlap
        out["labels"] = False
        out["passed"] = bool(len(overlap)) and float(overlap.mean()) >= min_overlap
        out["verdict"] = "go" if out["passed"] else "no-go"
        return out
    labelled, before = per_query_metrics(cmp.old_ranked, cmp.queries.ids, qrels, k)
    _, after = per_query_metrics(cmp.new_ranked, cmp.queries.ids, qrels, k)
    old_summary, new_summary = summary(before, k), summary(after, k)
    drop = {m: round(old_summary[m] - new_summary[m], 6) for m in old_summary}
    diff = after[:, 1] - before[:, 1]
    out.update(
        {
            "labels": True,
            "labelled_queries": len(labelled),
            "old": old_summary,
            "new": new_summary,
            "drop": drop,
            "max_drop": max_drop,
            "ndcg_at_10_change_ci95": paired_bootstrap(diff),
            "queries_better": int((diff > 1e-9).sum()),
            "queries_worse": int((diff < -1e-9).sum()),
            "queries_same": int((np.abs(diff) <= 1e-9).sum()),
        }
    )
    out["passed"] = all(d <= max_drop + 1e-12 for d in drop.values())
    out["verdict"] = "go" if out["passed"] else "no-go"
    return out
