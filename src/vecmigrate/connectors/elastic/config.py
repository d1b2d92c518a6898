"""Options of ``elasticsearch://[USER@]HOST:PORT?index=I`` and ``opensearch://...``.

Credentials: ``?api_key_env=VAR`` (Elasticsearch API key; default ``ELASTIC_API_KEY``) or a
user in the URI with ``?password_env=VAR`` (default ``ELASTIC_PASSWORD`` /
``OPENSEARCH_PASSWORD``); never in the URI itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI, secret

DEFAULT_PORT = 9200
INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")
ENGINES = ("faiss", "lucene", "nmslib")


@dataclass(frozen=True)
class ElasticConfig:
    url: str
    index: str
    user: str | None
    password: str | None
    api_key: str | None
    verify_certs: bool
    ca_certs: str | None
    sort_field: str | None  # a unique, sortable field: scans resume from any process
    keep_alive: str  # point-in-time / scroll keep-alive
    document_field: str
    id_field: str  # field that keeps the original id in indexes created here
    engine: str  # OpenSearch k-NN engine for indexes created here
    shards: int | None
    replicas: int | None
    max_batch: int
    timeout: int

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> ElasticConfig:
        uri.check_options(
            {
                "index",
                "secure",
                "verify_certs",
                "ca_certs",
                "sort_field",
                "keep_alive",
                "document_field",
                "id_field",
                "engine",
                "shards",
                "replicas",
                "max_batch",
                "timeout",
            }
        )
        host, port = uri.address(DEFAULT_PORT)
        index = uri.require("index", "the index to read or write")
        if not INDEX_NAME.match(index) or index in (".", ".."):
            raise ConfigError(
                f"{uri.scheme}: index name {index!r} must be lowercase and may not contain "
                'spaces or any of \\/*?"<>|,#:'
            )
        secure = (uri.option("secure") or "false").lower()
        verify = (uri.option("verify_certs") or "true").lower()
        for name, value in (("secure", secure), ("verify_certs", verify)):
            if value not in ("true", "false"):
                raise ConfigError(f"{uri.scheme}: {name}={value!r}: use true or false")
        engine = (uri.option("engine") or "faiss").lower()
        if engine not in ENGINES:
            raise ConfigError(f"{uri.scheme}: engine={engine!r}: use one of {', '.join(ENGINES)}")
        max_batch = uri.int_option("max_batch", 500)
        if max_batch <= 0:
            raise ConfigError(f"{uri.scheme}: max_batch must be positive")
        password_env = "OPENSEARCH_PASSWORD" if uri.scheme == "opensearch" else "ELASTIC_PASSWORD"
        shards = uri.option("shards")
        replicas = uri.option("replicas")
        return cls(
            url=f"{'https' if secure == 'true' else 'http'}://{host}:{port}",
            index=index,
            user=uri.user,
            password=secret(uri, "password", env_default=password_env) if uri.user else None,
            api_key=secret(uri, "api_key", env_default="ELASTIC_API_KEY"),
            verify_certs=verify == "true",
            ca_certs=uri.option("ca_certs"),
            sort_field=uri.option("sort_field") or None,
            keep_alive=uri.option("keep_alive") or "10m",
            document_field=uri.option("document_field") or "document",
            id_field=uri.option("id_field") or "vecmigrate_id",
            engine=engine,
            shards=None if shards is None else uri.int_option("shards", 1),
            replicas=None if replicas is None else uri.int_option("replicas", 1),
            max_batch=max_batch,
            timeout=uri.int_option("timeout", 60),
        )
