"""LlamaIndex's ``ChromaVectorStore`` (llama-index-vector-stores-chroma).

LlamaIndex stores the node's text as the Chroma document and ``node_to_metadata_dict(node,
remove_text=True, flat_metadata=True)`` as its metadata: the node's (flat) metadata plus
``_node_content``, ``_node_type``, ``document_id``, ``doc_id`` and ``ref_doc_id``. It refuses
nested metadata itself; here nested values are JSON text at the top level (so the keys stay
filterable) while the node content keeps them nested, which is what LlamaIndex returns.

``chroma:///abs/dir?layout=llamaindex&collection=NAME`` (or ``chroma+http://HOST:PORT?...``)
"""

from __future__ import annotations

from typing import Any, ClassVar

from vecmigrate.layouts.base import Records
from vecmigrate.layouts.chroma import ChromaLayout
from vecmigrate.layouts.llamaindex import INTERNAL_KEYS, StoredNode, read_node, write_node
from vecmigrate.layouts.metadata import chroma_value, from_chroma_value


class LlamaIndexChroma(ChromaLayout):
    framework: ClassVar[str] = "llamaindex"
    shadowed_keys: ClassVar[frozenset[str]] = INTERNAL_KEYS

    def read_record(
        self, stored: dict[str, Any] | None, document: str | None
    ) -> tuple[dict[str, Any], StoredNode | None]:
        keys = self.json_keys()
        flat = {k: from_chroma_value(v, json_key=k in keys) for k, v in (stored or {}).items()}
        node = read_node(flat, document)
        return node.metadata, node

    def stored_metadata(
        self, records: Records, json_keys: frozenset[str]
    ) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        for i, node_id in enumerate(records.ids):
            metadata = records.metadata[i]
            node = write_node(
                node_id,
                metadata,
                node_content=records.node_content[i],
                node_type=records.node_type[i],
                text=None,
            )
            flat = {k: chroma_value(v, json_key=k in json_keys) for k, v in metadata.items()}
            out.append(node.keys(flat))
        return out
