"""LangChain's ``QdrantVectorStore`` (langchain-qdrant), dense retrieval mode.

One unnamed dense vector (LangChain's ``vector_name=""``, created as ``{"": VectorParams}``)
and the payload ``{"page_content": text, "metadata": {...}}`` with the metadata nested as it
is. LangChain adds ``_id`` and ``_collection_name`` to the metadata it returns; they are not
stored.

``qdrant+local:///abs/dir?layout=langchain&collection=NAME`` or
``qdrant://HOST:6333?layout=langchain&collection=NAME``; ``vector_name=``,
``content_payload_key=`` and ``metadata_payload_key=`` name what a store was constructed with.
"""

from __future__ import annotations

from typing import Any, ClassVar

from vecmigrate.errors import ConfigError, DataError
from vecmigrate.layouts.base import Records
from vecmigrate.layouts.llamaindex import StoredNode
from vecmigrate.layouts.qdrant import QdrantLayout
from vecmigrate.spec import Metric
from vecmigrate.uri import ConnectorURI

CONTENT_KEY = "page_content"
METADATA_KEY = "metadata"


class LangChainQdrant(QdrantLayout):
    framework: ClassVar[str] = "langchain"
    own_options: ClassVar[set[str]] = {"vector_name", "content_payload_key", "metadata_payload_key"}

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.wanted_vector = uri.option("vector_name") or ""
        self.content_key = uri.option("content_payload_key") or CONTENT_KEY
        self.metadata_key = uri.option("metadata_payload_key") or METADATA_KEY

    def pick_vector(self, named: dict[str, Any]) -> str:
        if self.wanted_vector in named:
            return self.wanted_vector
        raise ConfigError(
            f"{self.where} has no dense vector named {self.wanted_vector!r} "
            f"(it has {', '.join(map(repr, named))}): pass ?vector_name="
        )

    def vectors_config(self, dim: int, metric: Metric) -> Any:
        from qdrant_client import models

        return {self.wanted_vector: models.VectorParams(size=dim, distance=self.distance(metric))}

    def read_point(
        self, payload: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any], StoredNode | None]:
        metadata = payload.get(self.metadata_key)
        if metadata is not None and not isinstance(metadata, dict):
            raise DataError(
                f"payload {self.metadata_key!r} is not a dict: {metadata!r}",
                field=self.metadata_key,
            )
        doc = payload.get(self.content_key)
        return (
            (doc if isinstance(doc, str) or doc is None else str(doc)),
            dict(metadata or {}),
            None,
        )

    def payloads(self, records: Records) -> list[dict[str, Any]]:
        return [
            {self.content_key: doc if doc is not None else "", self.metadata_key: md}
            for doc, md in zip(records.documents, records.metadata, strict=True)
        ]
