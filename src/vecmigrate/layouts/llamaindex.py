"""LlamaIndex's node storage, as every LlamaIndex vector store writes it.

``node_to_metadata_dict`` (llama-index-core) stores a node as its metadata plus five keys: the
node serialized as JSON without its embedding (``_node_content``, text removed where the
store keeps the text elsewhere), its class (``_node_type``) and the source document's id
three times (``document_id``, ``doc_id``, ``ref_doc_id``; the text ``"None"`` when there is
none). Reading, LlamaIndex rebuilds the node from ``_node_content``, so the metadata an
application sees is the one inside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vecmigrate.layouts.metadata import NODE_CONTENT, NODE_TYPE

REF_DOC_KEYS = ("document_id", "doc_id", "ref_doc_id")
INTERNAL_KEYS = frozenset({NODE_CONTENT, NODE_TYPE, *REF_DOC_KEYS})
SOURCE = "1"  # NodeRelationship.SOURCE
TEXT_NODE = "TextNode"
NO_REF_DOC = "None"


def text_node(node_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """A TextNode as llama-index-core 0.14 dumps it (``model_dump(mode="json")``)."""
    return {
        "id_": node_id,
        "embedding": None,
        "metadata": metadata,
        "excluded_embed_metadata_keys": [],
        "excluded_llm_metadata_keys": [],
        "relationships": {},
        "metadata_template": "{key}: {value}",
        "metadata_separator": "\n",
        "text": "",
        "mimetype": "text/plain",
        "start_char_idx": None,
        "end_char_idx": None,
        "text_template": "{metadata_str}\n\n{content}",
        "class_name": TEXT_NODE,
    }


@dataclass(frozen=True)
class StoredNode:
    """A node as read from a store: its metadata, text, and serialized form (text removed)."""

    node_id: str | None
    metadata: dict[str, Any]
    text: str | None
    node_content: str | None
    node_type: str | None


def read_node(stored: dict[str, Any], text: str | None = None) -> StoredNode:
    """A stored metadata dict (and the text column, where the store has one) as a node.

    Without ``_node_content`` (nodes written by old versions) the metadata is the stored
    dict less LlamaIndex's own keys.
    """
    raw = stored.get(NODE_CONTENT)
    node_type = stored.get(NODE_TYPE)
    if not isinstance(raw, str):
        metadata = {k: v for k, v in stored.items() if k not in INTERNAL_KEYS}
        return StoredNode(None, metadata, text, None, node_type)
    node = json.loads(raw)
    if text is None:
        text = node.get("text")
    if node.get("text") or node.get("embedding") is not None:
        node["text"] = ""
        node["embedding"] = None
        raw = json.dumps(node, ensure_ascii=False)
    node_id = node.get("id_")
    return StoredNode(
        node_id=str(node_id) if node_id is not None else None,
        metadata=dict(node.get("metadata") or {}),
        text=text,
        node_content=raw,
        node_type=node_type if isinstance(node_type, str) else node.get("class_name"),
    )


@dataclass(frozen=True)
class WrittenNode:
    node_content: str
    node_type: str
    ref_doc_id: str

    def keys(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """The stored dict: metadata first, then LlamaIndex's keys (they win, as in LlamaIndex)."""
        out = dict(metadata)
        out[NODE_CONTENT] = self.node_content
        out[NODE_TYPE] = self.node_type
        for key in REF_DOC_KEYS:
            out[key] = self.ref_doc_id
        return out


def write_node(
    node_id: str,
    metadata: dict[str, Any],
    *,
    node_content: str | None,
    node_type: str | None,
    text: str | None,
) -> WrittenNode:
    """What LlamaIndex stores for a node; ``text`` is kept inside only where the store has
    no text column of its own (Qdrant)."""
    node = json.loads(node_content) if node_content else text_node(node_id, metadata)
    changed = node_content is None or text is not None
    if node.get("id_") != node_id:
        node["id_"], changed = node_id, True
    if node.get("metadata") != metadata:
        node["metadata"], changed = metadata, True
    if text is not None:
        node["text"] = text
    node["embedding"] = None
    raw = json.dumps(node, ensure_ascii=False) if changed or not node_content else node_content
    source = (node.get("relationships") or {}).get(SOURCE)
    ref = source.get("node_id") if isinstance(source, dict) else None
    return WrittenNode(
        node_content=raw,
        node_type=node_type or str(node.get("class_name") or TEXT_NODE),
        ref_doc_id=str(ref) if ref else NO_REF_DOC,
    )
