"""Options of ``weaviate://HOST:PORT?collection=C``.

The API key comes from ``WEAVIATE_API_KEY`` or ``?api_key_env=VAR`` / ``?api_key_file=PATH``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI, secret

DEFAULT_PORT = 8080
DEFAULT_GRPC_PORT = 50051
INACTIVE_CHOICES = ("fail", "skip", "activate")
VECTORIZER_CHOICES = ("none", "keep")
COLLECTION_NAME = re.compile(r"^[A-Z][_0-9A-Za-z]*$")
PROPERTY_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")
RESERVED_PROPERTIES = frozenset({"_additional", "id", "_id"})


def check_property_name(name: str, what: str = "property") -> str:
    """Weaviate's property-name rule (``/[_A-Za-z][_0-9A-Za-z]*/``, not a reserved word)."""
    if not PROPERTY_NAME.match(name) or name in RESERVED_PROPERTIES:
        raise ConfigError(
            f"weaviate: {what} name {name!r} is not allowed (letters, digits and _, not starting "
            f"with a digit; not {', '.join(sorted(RESERVED_PROPERTIES))})"
        )
    return name


@dataclass(frozen=True)
class WeaviateConfig:
    host: str
    port: int
    grpc_host: str
    grpc_port: int
    secure: bool
    collection: str
    tenant: str | None  # read/write one tenant of a multi-tenant collection
    inactive_tenants: str  # fail, skip or activate inactive tenants when reading all tenants
    tenant_field: str  # column that carries the tenant when all tenants are read or written
    document_property: str  # text property that holds the record's document
    vectorizer: str  # none: create with vectorizer "none"; keep: the source's vectorizers
    max_batch: int
    timeout: int
    init_checks: bool  # the client's start-up checks (meta, gRPC health); off for proxies
    api_key: str | None

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> WeaviateConfig:
        uri.check_options(
            {
                "collection",
                "grpc_host",
                "grpc_port",
                "secure",
                "tenant",
                "inactive_tenants",
                "tenant_field",
                "document_property",
                "vectorizer",
                "max_batch",
                "timeout",
                "init_checks",
            }
        )
        host, port = uri.address(DEFAULT_PORT)
        collection = uri.require("collection", "the Weaviate collection, e.g. Article")
        if not COLLECTION_NAME.match(collection):
            raise ConfigError(
                f"weaviate: collection name {collection!r} must start with an upper-case letter "
                "and hold only letters, digits and _ (e.g. Article)"
            )
        inactive = (uri.option("inactive_tenants") or "fail").lower()
        if inactive not in INACTIVE_CHOICES:
            raise ConfigError(
                f"weaviate: inactive_tenants={inactive!r}: use one of {', '.join(INACTIVE_CHOICES)}"
            )
        vectorizer = (uri.option("vectorizer") or "none").lower()
        if vectorizer not in VECTORIZER_CHOICES:
            raise ConfigError(
                f"weaviate: vectorizer={vectorizer!r}: use one of {', '.join(VECTORIZER_CHOICES)}"
            )
        secure = (uri.option("secure") or "false").lower()
        init_checks = (uri.option("init_checks") or "true").lower()
        for name, value in (("secure", secure), ("init_checks", init_checks)):
            if value not in ("true", "false"):
                raise ConfigError(f"weaviate: {name}={value!r}: use true or false")
        max_batch = uri.int_option("max_batch", 500)
        if max_batch <= 0:
            raise ConfigError("weaviate: max_batch must be positive")
        return cls(
            host=host,
            port=port,
            grpc_host=uri.option("grpc_host") or host,
            grpc_port=uri.int_option("grpc_port", DEFAULT_GRPC_PORT),
            secure=secure == "true",
            collection=collection,
            tenant=uri.option("tenant") or None,
            inactive_tenants=inactive,
            tenant_field=check_property_name(
                uri.option("tenant_field") or "_tenant", "tenant_field"
            ),
            document_property=check_property_name(
                uri.option("document_property") or "document", "document_property"
            ),
            vectorizer=vectorizer,
            max_batch=max_batch,
            timeout=uri.int_option("timeout", 60),
            init_checks=init_checks == "true",
            api_key=secret(uri, "api_key", env_default="WEAVIATE_API_KEY"),
        )
