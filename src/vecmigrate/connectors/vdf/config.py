"""Options of ``vdf:///dir?index=NAME&namespace=NS&metric=M``.

``index`` and ``namespace`` pick one of the folder's collections (needed only when it holds
several); ``metric`` overrides the metric in ``VDF_META.json`` (vdf-io wrote "Cosine" for
some systems whatever the index used).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vecmigrate.spec import Metric
from vecmigrate.uri import ConnectorURI


@dataclass(frozen=True)
class VdfConfig:
    folder: Path
    index: str | None
    namespace: str | None
    metric: Metric | None

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> VdfConfig:
        uri.check_options({"index", "namespace", "metric"})
        metric = uri.option("metric")
        return cls(
            folder=uri.file_path(),
            index=uri.option("index"),
            namespace=uri.option("namespace"),
            metric=Metric.parse(metric) if metric else None,
        )
