"""Options of ``faiss:///abs/path.index?index=Flat&metric=cosine``.

``index`` is the FAISS factory string of a new index: ``Flat``, ``HNSW<M>[,Flat]`` or
``IVF<nlist>[,Flat]`` (only layouts that keep float32 vectors exactly, so reading gives back
what was written). ``metric`` overrides the spec's metric for a new index. ``nprobe``,
``ef_search`` and ``ef_construction`` tune IVF and HNSW; ``nprobe`` and ``ef_search`` are
stored in the index and used by ``query``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vecmigrate.errors import ConfigError
from vecmigrate.spec import Metric
from vecmigrate.uri import ConnectorURI

_FACTORY = re.compile(r"^(?:(?P<flat>Flat)|HNSW(?P<m>\d+)(?:,Flat)?|IVF(?P<nlist>\d+)(?:,Flat)?)$")


@dataclass(frozen=True)
class IndexLayout:
    """A parsed factory string of an index vecmigrate can write."""

    kind: str  # flat | hnsw | ivf_flat
    factory: str  # canonical FAISS factory string
    m: int = 0  # HNSW neighbours per node
    nlist: int = 0  # IVF lists

    @classmethod
    def parse(cls, text: str) -> IndexLayout:
        match = _FACTORY.match(text.strip().replace(" ", ""))
        if match is None:
            raise ConfigError(
                f"faiss: index={text!r} is not supported for writing: use Flat, HNSW<M> "
                "(e.g. HNSW32) or IVF<nlist>,Flat (e.g. IVF256,Flat)"
            )
        if match.group("flat"):
            return cls(kind="flat", factory="Flat")
        if match.group("m"):
            m = int(match.group("m"))
            if m < 2:
                raise ConfigError(f"faiss: HNSW needs M >= 2, got index={text!r}")
            return cls(kind="hnsw", factory=f"HNSW{m},Flat", m=m)
        nlist = int(match.group("nlist"))
        if nlist < 1:
            raise ConfigError(f"faiss: IVF needs nlist >= 1, got index={text!r}")
        return cls(kind="ivf_flat", factory=f"IVF{nlist},Flat", nlist=nlist)


def _positive(uri: ConnectorURI, name: str) -> int | None:
    if uri.option(name) is None:
        return None
    value = uri.int_option(name, 0)
    if value < 1:
        raise ConfigError(f"faiss: {name}={value} must be 1 or more")
    return value


@dataclass(frozen=True)
class FaissConfig:
    path: Path  # the .index file; the sidecar folder is ``<path>.vecmigrate``
    layout: IndexLayout  # for a new index
    metric: Metric | None  # overrides the spec's metric for a new index
    nprobe: int | None
    ef_search: int | None
    ef_construction: int | None

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> FaissConfig:
        uri.check_options({"index", "metric", "nprobe", "ef_search", "ef_construction"})
        path = uri.file_path()
        if not path.is_absolute():
            raise ConfigError(
                f"faiss:// needs an absolute file path (faiss:///abs/path.index), got {str(path)!r}"
            )
        metric = uri.option("metric")
        return cls(
            path=path,
            layout=IndexLayout.parse(uri.option("index") or "Flat"),
            metric=Metric.parse(metric) if metric else None,
            nprobe=_positive(uri, "nprobe"),
            ef_search=_positive(uri, "ef_search"),
            ef_construction=_positive(uri, "ef_construction"),
        )

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(self.path.name + ".vecmigrate")
