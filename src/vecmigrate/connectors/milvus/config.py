"""Options of ``milvus://HOST:PORT?collection=C`` and ``milvus+lite:///abs/file.db?collection=C``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI, secret

DEFAULT_PORT = 19530
# Milvus Lite names its socket after the file and accepts only these names (milvus_lite.server).
_LITE_FILE_NAME = re.compile(r"^[a-zA-Z0-9.\-_]{1,36}$")


@dataclass(frozen=True)
class MilvusConfig:
    collection: str
    lite_path: Path | None  # the Milvus Lite database file; None for a server
    address: str | None  # http(s)://host:port of a server
    token: str | None
    db_name: str | None
    timeout: float  # seconds per call, retries included
    write_batch: int  # rows per insert call (5,000+ is pathologically slow in Lite)
    read_batch_cap: int  # largest page a query may return (offset + limit <= 16,384)

    @property
    def lite(self) -> bool:
        return self.lite_path is not None

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> MilvusConfig:
        uri.check_options({"collection", "db_name", "timeout", "write_batch", "secure"})
        collection = uri.require("collection", "the collection to read or write")
        timeout = float(uri.option("timeout") or 120)
        write_batch = uri.int_option("write_batch", 1000)
        if write_batch < 1:
            raise ConfigError("milvus: write_batch must be at least 1")
        if uri.scheme == "milvus+lite":
            path = uri.file_path()
            if not path.is_absolute():
                raise ConfigError(
                    f"milvus+lite:// needs an absolute path (milvus+lite:///abs/file.db): {uri}"
                )
            if not _LITE_FILE_NAME.match(path.name):
                raise ConfigError(
                    f"Milvus Lite file name {path.name!r} must be at most 36 characters of "
                    "letters, digits, '.', '-' and '_'"
                )
            if not path.parent.is_dir():
                raise ConfigError(f"folder {path.parent} of the Milvus Lite file does not exist")
            return cls(collection, path, None, None, None, timeout, write_batch, 16_383)
        host, port = uri.address(DEFAULT_PORT)
        scheme = "https" if uri.option("secure", "false") == "true" else "http"
        token = secret(uri, "token", env_default="MILVUS_TOKEN")
        if token is None and uri.user:
            password = secret(uri, "password", env_default="MILVUS_PASSWORD") or ""
            token = f"{uri.user}:{password}"
        return cls(
            collection=collection,
            lite_path=None,
            address=f"{scheme}://{host}:{port}",
            token=token,
            db_name=uri.option("db_name"),
            timeout=timeout,
            write_batch=write_batch,
            read_batch_cap=16_383,
        )
