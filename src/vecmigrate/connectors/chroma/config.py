"""Options of ``chroma:///abs/dir?collection=C`` and ``chroma+http://HOST:PORT?collection=C``.

Over HTTP: ``tenant`` and ``database`` (Chroma's defaults otherwise), ``ssl=true``, and a token
from ``?token_env=VAR`` / ``?token_file=PATH`` (else ``CHROMA_TOKEN``), sent as
``Authorization: Bearer ...`` or, with ``token_header=x-chroma-token``, as that header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI, secret

DEFAULT_PORT = 8000
DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
TOKEN_HEADERS = ("authorization", "x-chroma-token")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


@dataclass(frozen=True)
class ChromaConfig:
    collection: str
    path: Path | None  # persistent folder (chroma://); None over HTTP
    host: str | None
    port: int | None
    ssl: bool
    tenant: str
    database: str
    token: str | None
    token_header: str

    @property
    def http(self) -> bool:
        return self.path is None

    def where(self) -> str:
        """Where the collection lives, for messages (no secret in it)."""
        if self.path is not None:
            return f"chroma collection {self.collection!r} in {self.path}"
        scheme = "https" if self.ssl else "http"
        return (
            f"chroma collection {self.collection!r} at {scheme}://{self.host}:{self.port} "
            f"(tenant {self.tenant}, database {self.database})"
        )

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> ChromaConfig:
        http = uri.scheme == "chroma+http"
        allowed = {"collection"} | (
            {"tenant", "database", "ssl", "token_header"} if http else set()
        )
        uri.check_options(allowed)
        collection = uri.require("collection", "the Chroma collection to read or write")
        if not _NAME.match(collection) or ".." in collection:
            raise ConfigError(
                f"chroma: collection name {collection!r} is not valid: 3-512 characters from "
                "[a-zA-Z0-9._-], starting and ending with a letter or digit"
            )
        if not http:
            path = uri.file_path()
            if not path.is_absolute():
                raise ConfigError(
                    f"chroma:// needs an absolute folder path (chroma:///abs/dir?collection=C), "
                    f"got {str(path)!r}"
                )
            return cls(collection, path, None, None, False, DEFAULT_TENANT, DEFAULT_DATABASE,
                       None, "authorization")  # fmt: skip
        host, port = uri.address(DEFAULT_PORT)
        ssl = (uri.option("ssl") or "false").lower()
        if ssl not in ("true", "false"):
            raise ConfigError(f"chroma+http: ssl={ssl!r}: use true or false")
        header = (uri.option("token_header") or "authorization").lower()
        if header not in TOKEN_HEADERS:
            raise ConfigError(
                f"chroma+http: token_header={header!r}: use one of {', '.join(TOKEN_HEADERS)}"
            )
        return cls(
            collection=collection,
            path=None,
            host=host,
            port=port,
            ssl=ssl == "true",
            tenant=uri.option("tenant") or DEFAULT_TENANT,
            database=uri.option("database") or DEFAULT_DATABASE,
            token=secret(uri, "token", env_default="CHROMA_TOKEN"),
            token_header=header,
        )

    def headers(self) -> dict[str, str]:
        if not self.token:
            return {}
        if self.token_header == "x-chroma-token":
            return {"X-Chroma-Token": self.token}
        return {"Authorization": f"Bearer {self.token}"}
