"""Retrieval accuracy with labelled queries: recall@k, nDCG@10 and MRR on each side."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vecmigrate.connectors.base import Connector
from vecmigrate.errors import DataError
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import ID


@dataclass(frozen=True)
class LabelledQueries:
    ids: list[str]
    vectors: np.ndarray
    relevant: dict[str, dict[str, float]]  # query id -> {doc id: grade}


def load_queries(path: Path, vector_field: str = "vector") -> tuple[list[str], np.ndarray]:
    """Query vectors from Parquet or JSONL rows with ``id`` and ``vector``."""
    if not path.exists():
        raise DataError("query file does not exist", file=str(path))
    if path.suffix == ".parquet":
        table = pq.read_table(path)
    else:
        rows = []
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"not JSON: {exc.msg}", file=str(path), row=line_no) from exc
        table = pa.Table.from_pylist(rows)
    for col in (ID, vector_field):
        if col not in table.column_names:
            raise DataError(f"query file has no {col!r} column", file=str(path), field=col)
    ids = [str(x) for x in table.column(ID).to_pylist()]
    return ids, vectors_numpy(table.column(vector_field).combine_chunks())


def load_qrels(path: Path) -> dict[str, dict[str, float]]:
    """Relevance labels: JSONL ``{"query": q, "id": d, "grade": g}`` or TSV ``q<TAB>d[<TAB>g]``."""
    if not path.exists():
        raise DataError("qrels file does not exist", file=str(path))
    out: dict[str, dict[str, float]] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
                q, d, g = str(row["query"]), str(row["id"]), float(row.get("grade", 1))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DataError(f"bad qrels line: {exc}", file=str(path), row=line_no) from exc
        else:
            parts = line.split("\t")
            if len(parts) < 2:
                raise DataError("expected query<TAB>id[<TAB>grade]", file=str(path), row=line_no)
            q, d = parts[0], parts[1]
            g = float(parts[2]) if len(parts) > 2 else 1.0
        out.setdefault(q, {})[d] = g
    return out


def _metrics(ranked: list[str], rel: dict[str, float], k: int) -> tuple[float, float, float]:
    relevant = {d for d, g in rel.items() if g > 0}
    if not relevant:
        return 1.0, 1.0, 1.0
    recall = len(relevant & set(ranked[:k])) / len(relevant)
    dcg = sum((2 ** rel.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(rel.values(), reverse=True)[:10]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal)) or 1.0
    mrr = next((1.0 / (i + 1) for i, d in enumerate(ranked) if d in relevant), 0.0)
    return recall, dcg / idcg, mrr


def accuracy(conn: Connector, queries: LabelledQueries, k: int = 10) -> dict[str, float]:
    """Mean recall@k, nDCG@10 and MRR of one system on labelled queries."""
    res = conn.query(queries.vectors, max(k, 10))
    scores = [
        _metrics([str(x) for x in ranked], queries.relevant.get(q, {}), k)
        for q, ranked in zip(queries.ids, res.ids, strict=True)
    ]
    arr = np.array(scores) if scores else np.ones((1, 3))
    return {
        f"recall_at_{k}": round(float(arr[:, 0].mean()), 6),
        "ndcg_at_10": round(float(arr[:, 1].mean()), 6),
        "mrr": round(float(arr[:, 2].mean()), 6),
    }


def compare_accuracy(
    source: Connector, target: Connector, queries: LabelledQueries, *, k: int, max_drop: float
) -> dict[str, Any]:
    before, after = accuracy(source, queries, k), accuracy(target, queries, k)
    drops = {m: round(before[m] - after[m], 6) for m in before}
    return {
        "source": before,
        "target": after,
        "drop": drops,
        "max_drop": max_drop,
        "passed": all(d <= max_drop + 1e-12 for d in drops.values()),
    }
