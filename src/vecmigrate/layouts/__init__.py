"""Application frameworks' own layouts (LangChain, LlamaIndex) as connectors.

``?layout=langchain|llamaindex`` on a connector URI opens the framework's layout of that
system: its records are canonical (id, vector, document, one column per metadata key; see
:mod:`vecmigrate.layouts.base`), so any source can be written as a framework would have
written it, and a framework's collection can be moved anywhere.
"""

from __future__ import annotations

import importlib

from vecmigrate.connectors.base import Connector
from vecmigrate.connectors.registry import connector_class
from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI

# (layout, scheme) -> "module:Class"; the module is imported only when used
LAYOUTS: dict[tuple[str, str], str] = {
    ("langchain", "pgvector"): "langchain_pgvector:LangChainPgvector",
    ("langchain", "chroma"): "langchain_chroma:LangChainChroma",
    ("langchain", "chroma+http"): "langchain_chroma:LangChainChroma",
    ("langchain", "qdrant"): "langchain_qdrant:LangChainQdrant",
    ("langchain", "qdrant+local"): "langchain_qdrant:LangChainQdrant",
    ("langchain", "milvus"): "langchain_milvus:LangChainMilvus",
    ("langchain", "milvus+lite"): "langchain_milvus:LangChainMilvus",
    ("llamaindex", "pgvector"): "llamaindex_pgvector:LlamaIndexPgvector",
    ("llamaindex", "chroma"): "llamaindex_chroma:LlamaIndexChroma",
    ("llamaindex", "chroma+http"): "llamaindex_chroma:LlamaIndexChroma",
    ("llamaindex", "qdrant"): "llamaindex_qdrant:LlamaIndexQdrant",
    ("llamaindex", "qdrant+local"): "llamaindex_qdrant:LlamaIndexQdrant",
}


def supported() -> list[tuple[str, str]]:
    """Every (layout, scheme) pair that has a layout connector."""
    return sorted(LAYOUTS)


def layout_connector(layout: str, uri: ConnectorURI) -> Connector:
    """The connector reading/writing ``layout``'s tables or collections on ``uri.scheme``."""
    target = LAYOUTS.get((layout, uri.scheme))
    if target is None:
        have = ", ".join(s for (lay, s) in LAYOUTS if lay == layout)
        raise ConfigError(
            f"the {layout} layout is not available for {uri.scheme}:// (it is for: {have})"
        )
    connector_class(uri.scheme)  # the system's client library, or an install hint
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(f"vecmigrate.layouts.{module_name}")
    cls: type[Connector] = getattr(module, attr)
    return cls(uri)
