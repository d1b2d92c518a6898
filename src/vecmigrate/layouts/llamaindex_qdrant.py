"""LlamaIndex's ``QdrantVectorStore`` (llama-index-vector-stores-qdrant), dense mode.

One unnamed dense vector (LlamaIndex's legacy/default layout without hybrid search; a
collection with a ``text-dense`` named vector is read too) and the payload
``node_to_metadata_dict(node, remove_text=False)``: the node's metadata nested as it is,
``_node_content`` with the text inside, ``_node_type``, ``document_id``, ``doc_id`` and
``ref_doc_id``. On a server a keyword payload index on ``doc_id`` is created, as LlamaIndex
does.

``qdrant+local:///abs/dir?layout=llamaindex&collection=NAME`` or
``qdrant://HOST:6333?layout=llamaindex&collection=NAME``
"""

from __future__ import annotations

from typing import Any, ClassVar

from vecmigrate.connectors.qdrant.errors import translated
from vecmigrate.errors import ConfigError
from vecmigrate.layouts.base import Records
from vecmigrate.layouts.llamaindex import INTERNAL_KEYS, StoredNode, read_node, write_node
from vecmigrate.layouts.metadata import NODE_CONTENT
from vecmigrate.layouts.qdrant import QdrantLayout
from vecmigrate.spec import Metric

DENSE_VECTOR_NAME = "text-dense"
LEGACY_UNNAMED_VECTOR = ""
DOCUMENT_ID_KEY = "doc_id"
TEXT_KEY = "text"  # where LlamaIndex looks for the text of a node without _node_content


class LlamaIndexQdrant(QdrantLayout):
    framework: ClassVar[str] = "llamaindex"
    shadowed_keys: ClassVar[frozenset[str]] = INTERNAL_KEYS

    def pick_vector(self, named: dict[str, Any]) -> str:
        for name in (DENSE_VECTOR_NAME, LEGACY_UNNAMED_VECTOR):
            if name in named:
                return name
        raise ConfigError(
            f"{self.where} has neither a {DENSE_VECTOR_NAME!r} nor an unnamed dense vector "
            f"(it has {', '.join(map(repr, named))})"
        )

    def vectors_config(self, dim: int, metric: Metric) -> Any:
        from qdrant_client import models

        return models.VectorParams(size=dim, distance=self.distance(metric))

    def after_create(self) -> None:
        if self.config.mode != "server":
            return  # local mode has no payload indexes (and warns)
        from qdrant_client import models

        with translated(f"indexing {DOCUMENT_ID_KEY!r} of {self.where}"):
            self.client.create_payload_index(
                self.name, DOCUMENT_ID_KEY, field_schema=models.PayloadSchemaType.KEYWORD
            )

    def read_point(
        self, payload: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any], StoredNode | None]:
        if NODE_CONTENT not in payload:  # written by an old LlamaIndex: text under "text"
            text = payload.get(TEXT_KEY)
            rest = {k: v for k, v in payload.items() if k != TEXT_KEY}
            node = read_node(rest, text if isinstance(text, str) else None)
        else:
            node = read_node(payload)
        return node.text, node.metadata, node

    def payloads(self, records: Records) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, node_id in enumerate(records.ids):
            metadata = records.metadata[i]
            node = write_node(
                node_id,
                metadata,
                node_content=records.node_content[i],
                node_type=records.node_type[i],
                text=records.documents[i] or "",
            )
            out.append(node.keys(metadata))
        return out
