"""Application frameworks' own layouts (LangChain, LlamaIndex) as connectors."""

from __future__ import annotations

from vecmigrate.connectors.base import Connector
from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI


def layout_connector(layout: str, uri: ConnectorURI) -> Connector:
    """The connector reading/writing ``layout``'s tables or collections on ``uri.scheme``."""
    raise ConfigError(f"the {layout} layout is not available for {uri.scheme}:// yet")
