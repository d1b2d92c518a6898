"""FAISS indexes: building the ones vecmigrate writes, describing and reading any of them.

Indexes written here are ``IndexIDMap2`` around ``Flat``, ``HNSW<M>,Flat`` or ``IVF<n>,Flat``:
labels are stable int64s, and every layout keeps float32 vectors exactly, so they can be read
back (IVF keeps an array direct map, stored in the file, for ``reconstruct``). FAISS has no
cosine: cosine collections are stored as inner product over L2-normalised vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from vecmigrate.connectors.faiss.config import IndexLayout
from vecmigrate.errors import DataError, Unsupported
from vecmigrate.spec import IndexConfig, Metric


def faiss_metric(metric: Metric) -> int:
    """The FAISS metric that implements ``metric`` (cosine: inner product, normalised)."""
    return faiss.METRIC_L2 if metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT


def index_metric(index: Any, where: str) -> Metric:
    """The metric an index computes: L2 (squared) or inner product."""
    if index.metric_type == faiss.METRIC_L2:
        return Metric.L2
    if index.metric_type == faiss.METRIC_INNER_PRODUCT:
        return Metric.IP
    raise Unsupported(
        f"faiss: {where} uses FAISS metric type {index.metric_type}, which has no vecmigrate "
        "equivalent (only L2 and inner product)"
    )


def normalized(vectors: np.ndarray) -> np.ndarray:
    """A unit-length float32 copy of each row (zero rows stay zero)."""
    out = np.array(vectors, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(out)
    return out


def inner(index: Any) -> Any:
    """The index an ``IndexIDMap``/``IndexIDMap2`` wraps, or the index itself."""
    if isinstance(index, faiss.IndexIDMap):
        return faiss.downcast_index(index.index)
    return index


def build(
    layout: IndexLayout,
    dim: int,
    metric: Metric,
    *,
    ef_construction: int | None,
    ef_search: int | None,
    nprobe: int | None,
) -> Any:
    """An empty ``IndexIDMap2`` of ``layout`` for vectors of ``dim`` and ``metric``."""
    base = faiss.index_factory(dim, layout.factory, faiss_metric(metric))
    index = faiss.IndexIDMap2(base)  # keeps a reference to ``base``
    tune(index, ef_construction=ef_construction, ef_search=ef_search, nprobe=nprobe)
    sub = inner(index)
    if isinstance(sub, faiss.IndexIVF):
        sub.make_direct_map()
    return index


def tune(
    index: Any, *, ef_construction: int | None, ef_search: int | None, nprobe: int | None
) -> None:
    """Set the HNSW and IVF parameters given (they are stored in the index file)."""
    sub = inner(index)
    if isinstance(sub, faiss.IndexHNSW):
        if ef_construction is not None:
            sub.hnsw.efConstruction = ef_construction
        if ef_search is not None:
            sub.hnsw.efSearch = ef_search
    if isinstance(sub, faiss.IndexIVF) and nprobe is not None:
        sub.nprobe = nprobe


@dataclass(frozen=True)
class IndexFacts:
    """What can be known about an index file."""

    config: IndexConfig
    exact: bool  # vectors read back are the float32 values written
    faiss_class: str
    labels: str  # "id_map" | "ivf" | "positions": where the int64 labels come from


def describe(index: Any, field: str, metric: Metric) -> IndexFacts:
    """Kind, parameters and exactness of an index (looking through an ID map)."""
    outer = type(index).__name__
    sub = inner(index)
    labels = "id_map" if isinstance(index, faiss.IndexIDMap) else "positions"
    params: dict[str, Any] = {}
    if isinstance(sub, faiss.IndexFlat):
        kind, exact = "flat", True
    elif isinstance(sub, faiss.IndexHNSW):
        storage = faiss.downcast_index(sub.storage)
        exact = isinstance(storage, faiss.IndexFlat)
        kind = "hnsw" if exact else f"hnsw_{type(storage).__name__.removeprefix('Index').lower()}"
        params = {
            "M": int(sub.hnsw.nb_neighbors(1)),  # type: ignore[attr-defined]
            "efConstruction": int(sub.hnsw.efConstruction),
            "efSearch": int(sub.hnsw.efSearch),
        }
    elif isinstance(sub, faiss.IndexIVF):
        exact = isinstance(sub, faiss.IndexIVFFlat)
        if isinstance(sub, faiss.IndexIVFPQ):
            kind = "ivf_pq"
            params = {"m": int(sub.pq.M), "nbits": int(sub.pq.nbits)}
        elif isinstance(sub, faiss.IndexIVFScalarQuantizer):
            kind = "ivf_sq"
        else:
            kind = "ivf_flat" if exact else "ivf"
        params = {"nlist": int(sub.nlist), "nprobe": int(sub.nprobe), **params}
        if labels == "positions":
            labels = "ivf"
    elif isinstance(sub, faiss.IndexPQ):
        kind, exact = "pq", False
        params = {"m": int(sub.pq.M), "nbits": int(sub.pq.nbits)}
    else:
        kind, exact = type(sub).__name__.removeprefix("Index").lower(), False
    if outer != type(sub).__name__:
        params["wrapper"] = outer
    return IndexFacts(
        config=IndexConfig(field=field, kind=kind, metric=metric, params=params),
        exact=exact,
        faiss_class=type(sub).__name__,
        labels=labels,
    )


class VectorReader:
    """The labels of an index in a fixed internal order, and its vectors by position.

    ``IndexIDMap``: positions are the wrapped index's sequential ids, labels the id map. A bare
    IVF: labels are what its inverted lists hold, list by list. Anything else: labels are the
    positions. IVF vectors need a direct map; one is made in memory when the file has none.
    """

    def __init__(self, index: Any) -> None:
        self.index = index
        self.sub = inner(index)
        self._by_label = False
        if isinstance(index, faiss.IndexIDMap):
            self.labels = faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
            if isinstance(self.sub, faiss.IndexIVF) and self.sub.direct_map.type == 0:
                self.sub.make_direct_map()
        elif isinstance(index, faiss.IndexIVF):
            self.labels = _ivf_labels(index)
            self._by_label = True
            if index.direct_map.type == 0:
                index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        else:
            self.labels = np.arange(index.ntotal, dtype=np.int64)
        self._contiguous = not isinstance(self.sub, faiss.IndexIVF)

    def __len__(self) -> int:
        return len(self.labels)

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        """Vectors at these positions (float32, n x d)."""
        keys = np.ascontiguousarray(positions, dtype=np.int64)
        if not len(keys):
            return np.zeros((0, self.index.d), dtype=np.float32)
        if self._by_label:
            return np.asarray(self.index.reconstruct_batch(self.labels[keys]), dtype=np.float32)
        return np.asarray(self.sub.reconstruct_batch(keys), dtype=np.float32)

    def range(self, start: int, stop: int) -> np.ndarray:
        """Vectors at positions start..stop (a block copy where the layout allows)."""
        if stop <= start:
            return np.zeros((0, self.index.d), dtype=np.float32)
        if self._contiguous:
            return np.asarray(self.sub.reconstruct_n(start, stop - start), dtype=np.float32)
        return self.vectors(np.arange(start, stop, dtype=np.int64))


def _ivf_labels(index: Any) -> np.ndarray:
    invlists = index.invlists
    parts = []
    for list_no in range(index.nlist):
        size = invlists.list_size(list_no)
        if size:
            parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def replace_rows(
    index: Any,
    reader: VectorReader,
    keep: np.ndarray | None,
    vectors: np.ndarray,
    labels: np.ndarray,
) -> None:
    """Drop the positions ``keep`` marks False, then add ``vectors`` under ``labels`` at the end.

    Flat removes in place; HNSW cannot remove and IVF (behind an ID map) must stay sequential,
    so they are rebuilt from the kept vectors. An untrained IVF trains on all the vectors.
    """
    sub = inner(index)
    if keep is not None and not keep.all():
        if isinstance(sub, faiss.IndexFlat):
            index.remove_ids(np.ascontiguousarray(reader.labels[~keep]))
        else:
            kept = reader.range(0, len(reader))[keep]
            kept_labels = reader.labels[keep]
            index.reset()
            vectors = np.concatenate([kept, vectors]) if len(vectors) else kept
            labels = np.concatenate([kept_labels, labels])
    if not len(labels):
        return
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if not index.is_trained:
        nlist = int(sub.nlist) if isinstance(sub, faiss.IndexIVF) else 1
        if index.ntotal == 0 and len(x) < nlist:
            raise DataError(
                f"an IVF index with nlist={nlist} needs at least {nlist} vectors to train; "
                f"{len(x)} were written (use a smaller nlist or index=Flat)"
            )
        index.train(x)
    index.add_with_ids(x, np.ascontiguousarray(labels, dtype=np.int64))
