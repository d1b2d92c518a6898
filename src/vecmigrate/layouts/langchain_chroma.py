"""LangChain's ``Chroma`` (langchain-chroma): documents and flat metadata, as Chroma holds them.

LangChain stores ``page_content`` as the Chroma document and the metadata dict as the
record's metadata (no metadata at all for an empty dict). Nested values cannot be stored:
they are JSON text under their key (see :mod:`vecmigrate.layouts.metadata`).

``chroma:///abs/dir?layout=langchain&collection=NAME`` (or ``chroma+http://HOST:PORT?...``)
"""

from __future__ import annotations

from typing import Any, ClassVar

from vecmigrate.layouts.base import Records
from vecmigrate.layouts.chroma import ChromaLayout
from vecmigrate.layouts.llamaindex import StoredNode
from vecmigrate.layouts.metadata import chroma_value, from_chroma_value


class LangChainChroma(ChromaLayout):
    framework: ClassVar[str] = "langchain"

    def read_record(
        self, stored: dict[str, Any] | None, document: str | None
    ) -> tuple[dict[str, Any], StoredNode | None]:
        keys = self.json_keys()
        return {
            k: from_chroma_value(v, json_key=k in keys) for k, v in (stored or {}).items()
        }, None

    def stored_metadata(
        self, records: Records, json_keys: frozenset[str]
    ) -> list[dict[str, Any] | None]:
        return [
            {k: chroma_value(v, json_key=k in json_keys) for k, v in m.items()} or None
            for m in records.metadata
        ]
