"""Options of ``qdrant://HOST:PORT?collection=C``, ``qdrant+local:///abs/dir?collection=C`` and
``qdrant+edge:///abs/dir``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI, secret

DEFAULT_PORT = 6333
Mode = Literal["server", "local", "edge"]


@dataclass(frozen=True)
class QdrantConfig:
    mode: Mode
    collection: str  # the shard folder's name for Qdrant Edge
    path: Path | None  # local-mode storage folder, or the Edge shard folder
    url: str | None
    api_key: str | None
    document_key: str  # payload key that holds the document text
    timeout: int
    write_batch: int
    optimize: bool  # Edge: build HNSW indexes in finalize() (slow: ~90 s per 100k x 384)

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> QdrantConfig:
        common = {"document_key", "timeout", "write_batch"}
        timeout = uri.int_option("timeout", 120)
        write_batch = uri.int_option("write_batch", 1_000)
        if write_batch < 1:
            raise ConfigError("qdrant: write_batch must be at least 1")
        document_key = uri.option("document_key") or "document"
        if uri.scheme == "qdrant+edge":
            uri.check_options(common | {"optimize"})
            path = _absolute(uri)
            return cls(
                mode="edge",
                collection=path.name,
                path=path,
                url=None,
                api_key=None,
                document_key=document_key,
                timeout=timeout,
                write_batch=write_batch,
                optimize=uri.option("optimize", "false") == "true",
            )
        uri.check_options(common | {"collection", "secure"})
        collection = uri.require("collection", "the collection to read or write")
        if uri.scheme == "qdrant+local":
            return cls(
                "local",
                collection,
                _absolute(uri),
                None,
                None,
                document_key,
                timeout,
                write_batch,
                False,
            )
        host, port = uri.address(DEFAULT_PORT)
        scheme = "https" if uri.option("secure", "false") == "true" else "http"
        return cls(
            mode="server",
            collection=collection,
            path=None,
            url=f"{scheme}://{host}:{port}",
            api_key=secret(uri, "api_key", env_default="QDRANT_API_KEY"),
            document_key=document_key,
            timeout=timeout,
            write_batch=write_batch,
            optimize=False,
        )


def _absolute(uri: ConnectorURI) -> Path:
    path = uri.file_path()
    if not path.is_absolute():
        raise ConfigError(
            f"{uri.scheme}:// needs an absolute path ({uri.scheme}:///abs/dir): {uri}"
        )
    return path
