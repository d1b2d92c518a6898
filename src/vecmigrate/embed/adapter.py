"""An embedding adapter: new-model queries mapped linearly into the old model's space.

Fitted on documents embedded by both models (old vectors as stored, new ones from the new
model), so an application can switch its query encoder to the new model and keep searching the
old index while re-embedding runs. ``ridge`` (least squares with an L2 penalty chosen on a
held-out fifth of the documents) or ``procrustes`` (the best rotation, which keeps lengths and
angles). It is only worth using if it retrieves better than simply keeping the old model, so
:func:`evaluate_adapter` measures both on held-out labelled queries and refuses otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.connectors.base import Connector
from vecmigrate.embed.quality import ModelComparison, per_query_metrics, ranked_ids, summary
from vecmigrate.errors import ConfigError, DataError
from vecmigrate.records import vectors_numpy

KINDS = ("ridge", "procrustes")
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _unit(m: np.ndarray) -> np.ndarray:
    out: np.ndarray = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    return out


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((_unit(a) * _unit(b)).sum(axis=1).mean()) if len(a) else 0.0


@dataclass
class LinearAdapter:
    """``old ≈ unit(new) @ weights + bias``."""

    kind: str
    weights: np.ndarray
    bias: np.ndarray
    new_model: str
    old_model: str
    fit_rows: int
    heldout_cosine: float
    alpha: float | None = None

    def map(self, new_vectors: np.ndarray) -> np.ndarray:
        """New-model vectors in the old model's space."""
        out: np.ndarray = _unit(np.asarray(new_vectors, np.float32)) @ self.weights + self.bias
        return out.astype(np.float32)

    def meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "new_model": self.new_model,
            "old_model": self.old_model,
            "new_dim": int(self.weights.shape[0]),
            "old_dim": int(self.weights.shape[1]),
            "fit_rows": self.fit_rows,
            "heldout_cosine": round(self.heldout_cosine, 6),
            "alpha": self.alpha,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez(
                fh,
                weights=self.weights,
                bias=self.bias,
                meta=np.frombuffer(json.dumps(self.meta()).encode(), dtype=np.uint8),
            )

    @classmethod
    def load(cls, path: Path) -> LinearAdapter:
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            return cls(
                kind=meta["kind"],
                weights=data["weights"],
                bias=data["bias"],
                new_model=meta["new_model"],
                old_model=meta["old_model"],
                fit_rows=meta["fit_rows"],
                heldout_cosine=meta["heldout_cosine"],
                alpha=meta.get("alpha"),
            )


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc
    scale = float(np.trace(gram)) / gram.shape[0] or 1.0
    w = np.linalg.solve(gram + alpha * scale * np.eye(gram.shape[0]), xc.T @ yc)
    return w, my - mx @ w


def _procrustes(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u, _, vt = np.linalg.svd(x.T @ y, full_matrices=False)
    return u @ vt, np.zeros(y.shape[1])


def fit_adapter(
    new_vectors: np.ndarray,
    old_vectors: np.ndarray,
    *,
    kind: str = "ridge",
    new_model: str = "",
    old_model: str = "",
    seed: int = 0,
) -> LinearAdapter:
    """Fit on documents embedded by both models; a fifth is held out to choose and score."""
    if kind not in KINDS:
        raise ConfigError(f"--adapter-kind {kind!r}: use one of {', '.join(KINDS)}")
    x = _unit(np.asarray(new_vectors, np.float64))
    y = _unit(np.asarray(old_vectors, np.float64))
    if len(x) != len(y) or len(x) < 10:
        raise ConfigError(
            f"an adapter needs at least 10 documents embedded by both models, got {len(x)}"
        )
    order = np.random.default_rng(seed).permutation(len(x))
    cut = max(1, len(x) // 5)
    held, train = order[:cut], order[cut:]
    best: tuple[float, float | None] = (-2.0, None)
    if kind == "ridge":
        for alpha in ALPHAS:
            w, b = _ridge(x[train], y[train], alpha)
            score = _mean_cosine(x[held] @ w + b, y[held])
            if score > best[0]:
                best = (score, alpha)
        weights, bias = _ridge(x, y, best[1] or 1.0)
    else:
        w, b = _procrustes(x[train], y[train])
        best = (_mean_cosine(x[held] @ w + b, y[held]), None)
        weights, bias = _procrustes(x, y)
    return LinearAdapter(
        kind=kind,
        weights=weights.astype(np.float32),
        bias=bias.astype(np.float32),
        new_model=new_model,
        old_model=old_model,
        fit_rows=len(x),
        heldout_cosine=best[0],
        alpha=best[1],
    )


def sample_documents(
    conn: Connector, text_field: str, vector_field: str, size: int, *, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """A uniform sample of (text, stored vector) pairs, rows without text skipped."""
    rng = np.random.default_rng(seed)
    keys = np.zeros(0)
    texts: list[str] = []
    vecs: list[np.ndarray] = []
    for part in conn.partitions(1):
        for sb in conn.scan(part, None, 10_000):
            batch = sb.batch
            if text_field not in batch.schema.names:
                raise DataError("the text field is not in the collection", field=text_field)
            col = batch.column(text_field)
            if not pa.types.is_string(col.type):
                col = pc.cast(col, pa.string())
            usable = pc.fill_null(
                pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), False
            )
            k = rng.random(batch.num_rows)
            k[~usable.to_numpy(zero_copy_only=False)] = np.inf
            bound = np.sort(keys)[size - 1] if len(keys) >= size else np.inf
            pick = np.nonzero(k < bound)[0]
            if not len(pick):
                continue
            idx = pa.array(pick)
            keys = np.concatenate([keys, k[pick]])
            texts += col.take(idx).to_pylist()
            vecs.append(vectors_numpy(batch.column(vector_field).take(idx)))
            if len(keys) > size:
                keep = np.argsort(keys, kind="stable")[:size]
                allv = np.vstack(vecs)
                keys, texts, vecs = keys[keep], [texts[i] for i in keep], [allv[keep]]
    matrix = np.vstack(vecs) if vecs else np.zeros((0, 0), np.float32)
    return [t or "" for t in texts], matrix


def evaluate_adapter(
    adapter: LinearAdapter,
    cmp: ModelComparison,
    source: Connector,
    qrels: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """Old model, adapted new-model queries (both on the old index) and the new model, on the
    same labelled queries; the adapter is accepted only if it beats keeping the old model."""
    k = cmp.k
    adapted = ranked_ids(source, adapter.map(cmp.new_vectors), max(k, 10), cmp.old_field)
    _, base = per_query_metrics(cmp.old_ranked, cmp.queries.ids, qrels, k)
    _, mapped = per_query_metrics(adapted, cmp.queries.ids, qrels, k)
    _, new = per_query_metrics(cmp.new_ranked, cmp.queries.ids, qrels, k)
    b, a, n = summary(base, k), summary(mapped, k), summary(new, k)
    beats = a["ndcg_at_10"] > b["ndcg_at_10"]
    return {
        **adapter.meta(),
        "keep_old_model": b,
        "adapter": a,
        "new_model_on_new_index": n,
        "retention_of_new_ndcg": round(a["ndcg_at_10"] / n["ndcg_at_10"], 4)
        if n["ndcg_at_10"]
        else None,
        "gain_over_old_ndcg": round(a["ndcg_at_10"] - b["ndcg_at_10"], 6),
        "beats_keeping_old_model": beats,
        "verdict": "use" if beats else "refused",
    }
