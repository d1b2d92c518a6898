"""Query parity and latency: the same queries on both sides, compared top-k by top-k."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from vecmigrate.connectors.base import Connector
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import ID


class QuerySample:
    """A uniform random sample of stored vectors (reservoir by random keys), bounded in size."""

    def __init__(self, size: int, vector_field: str, seed: int = 0) -> None:
        self.size = size
        self.field = vector_field
        self._rng = np.random.default_rng(seed)
        self._keys = np.zeros(0)
        self._vectors: np.ndarray | None = None
        self._ids: list[Any] = []

    def add(self, batch: pa.RecordBatch) -> None:
        if self.size <= 0 or batch.num_rows == 0:
            return
        keys = self._rng.random(batch.num_rows)
        cutoff = np.sort(keys)[: self.size][-1]
        if len(self._keys) >= self.size:
            cutoff = min(cutoff, float(self._keys.max()))
        pick = np.nonzero(keys <= cutoff)[0]
        mats = vectors_numpy(batch.column(self.field))[pick]
        ids = batch.column(ID).take(pa.array(pick)).to_pylist()
        all_keys = np.concatenate([self._keys, keys[pick]])
        all_vecs = mats if self._vectors is None else np.concatenate([self._vectors, mats])
        all_ids = self._ids + ids
        keep = np.argsort(all_keys, kind="stable")[: self.size]
        self._keys, self._vectors = all_keys[keep], all_vecs[keep]
        self._ids = [all_ids[i] for i in keep]

    @property
    def ids(self) -> list[Any]:
        return self._ids

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors if self._vectors is not None else np.zeros((0, 0), np.float32)


@dataclass
class Latency:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    qps: float
    samples_ms: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        ms = np.array(seconds) * 1000 if seconds else np.zeros(1)
        total = float(np.sum(seconds)) or 1e-9
        return cls(
            p50_ms=round(float(np.percentile(ms, 50)), 3),
            p95_ms=round(float(np.percentile(ms, 95)), 3),
            p99_ms=round(float(np.percentile(ms, 99)), 3),
            qps=round(len(seconds) / total, 1),
            samples_ms=[round(float(x), 3) for x in ms],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "qps": self.qps,
        }


@dataclass
class ParityReport:
    k: int
    queries: int
    recall: list[float]
    rank_correlation: list[float]
    worst: list[dict[str, Any]]
    source_latency: Latency
    target_latency: Latency

    @property
    def mean_recall(self) -> float:
        return float(np.mean(self.recall)) if self.recall else 1.0

    @property
    def latency_ratio(self) -> float:
        return self.target_latency.p95_ms / max(self.source_latency.p95_ms, 1e-6)

    def as_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "queries": self.queries,
            f"recall_at_{self.k}": round(self.mean_recall, 6),
            f"min_recall_at_{self.k}": round(min(self.recall), 6) if self.recall else 1.0,
            f"overlap_at_{self.k}": round(self.mean_recall, 6),
            "rank_correlation": round(float(np.mean(self.rank_correlation)), 6)
            if self.rank_correlation
            else 1.0,
            "recall_distribution": [round(r, 4) for r in self.recall],
            "worst_queries": self.worst,
            "latency": {
                "source": self.source_latency.as_dict(),
                "target": self.target_latency.as_dict(),
                "p95_ratio": round(self.latency_ratio, 3),
            },
        }


def _spearman(a: list[Any], b: list[Any]) -> float:
    """Spearman correlation of the ranks of the ids both lists share (1.0 when < 2 shared)."""
    pos_b = {x: i for i, x in enumerate(b)}
    shared = [(i, pos_b[x]) for i, x in enumerate(a) if x in pos_b]
    if len(shared) < 2:
        return 1.0
    ra = np.argsort(np.argsort([s[0] for s in shared]))
    rb = np.argsort(np.argsort([s[1] for s in shared]))
    n = len(shared)
    return float(1 - 6 * np.sum((ra - rb) ** 2) / (n * (n * n - 1)))


def _timed_queries(
    conn: Connector, queries: np.ndarray, k: int, vector_field: str | None
) -> tuple[list[list[Any]], list[float]]:
    ids: list[list[Any]] = []
    times: list[float] = []
    for q in queries:
        t0 = time.perf_counter()
        res = conn.query(q[None, :], k, vector_field=vector_field)
        times.append(time.perf_counter() - t0)
        ids.append([str(x) for x in res.ids[0]])
    return ids, times


def check_parity(
    source: Connector,
    target: Connector,
    queries: np.ndarray,
    query_ids: list[Any],
    *,
    k: int = 10,
    vector_field: str | None = None,
    worst: int = 10,
) -> ParityReport:
    """Run the same kNN queries on both sides; recall@k of target against source."""
    src_ids, src_t = _timed_queries(source, queries, k, vector_field)
    dst_ids, dst_t = _timed_queries(target, queries, k, vector_field)
    recall: list[float] = []
    corr: list[float] = []
    rows: list[tuple[float, dict[str, Any]]] = []
    for qi, (s, t) in enumerate(zip(src_ids, dst_ids, strict=True)):
        want, got = set(s), set(t)
        r = len(want & got) / len(want) if want else 1.0
        recall.append(r)
        corr.append(_spearman(s, t))
        detail = {
            "query": str(query_ids[qi]) if qi < len(query_ids) else str(qi),
            f"recall_at_{k}": r,
            "missing": [x for x in s if x not in got],
            "unexpected": [x for x in t if x not in want],
        }
        rows.append((r, detail))
    rows.sort(key=lambda row: row[0])
    return ParityReport(
        k=k,
        queries=len(queries),
        recall=recall,
        rank_correlation=corr,
        worst=[d for r, d in rows[:worst] if r < 1.0],
        source_latency=Latency.of(src_t),
        target_latency=Latency.of(dst_t),
    )
