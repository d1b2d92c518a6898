"""Options of ``pgvector://USER@HOST:PORT/DB?table=T``.

The password comes from ``PGPASSWORD``, or ``?password_env=VAR`` / ``?password_file=PATH``;
never from the URI itself.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Any

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI, secret

DEFAULT_PORT = 5432
IDENTIFIER_MAX_BYTES = 63
INDEX_CHOICES = ("auto", "hnsw", "ivfflat", "none")
SEARCH_CHOICES = ("index", "exact")
READER_CHOICES = ("auto", "adbc", "psycopg")  # how scans read: ADBC's COPY into Arrow, or rows


def check_identifier(name: str, what: str) -> str:
    """PostgreSQL silently truncates names past 63 bytes: refuse them instead."""
    if not name:
        raise ConfigError(f"pgvector: the {what} name is empty")
    if len(name.encode()) > IDENTIFIER_MAX_BYTES:
        raise ConfigError(
            f"pgvector: the {what} name {name!r} is longer than {IDENTIFIER_MAX_BYTES} bytes"
        )
    if "\x00" in name:
        raise ConfigError(f"pgvector: the {what} name {name!r} contains a NUL character")
    return name


@dataclass(frozen=True)
class PgvectorConfig:
    host: str
    port: int
    user: str
    database: str
    table: str
    schema: str | None  # None: the first schema of the search path
    id_column: str | None  # None: the primary key (``id`` for tables created here)
    vector_columns: tuple[str, ...]  # empty: every vector column
    document_column: str
    index: str  # auto (as the spec says), hnsw, ivfflat, none
    search: str  # index (approximate once an index exists) or exact
    ef_search: int | None
    probes: int | None
    maintenance_work_mem: str | None
    connect_timeout: int
    sslmode: str | None
    password: str | None
    reader: str = "auto"  # auto (ADBC when installed), adbc or psycopg

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> PgvectorConfig:
        uri.check_options(
            {
                "table",
                "schema",
                "id_column",
                "vector_column",
                "document_column",
                "index",
                "search",
                "ef_search",
                "probes",
                "maintenance_work_mem",
                "connect_timeout",
                "sslmode",
                "reader",
            }
        )
        host, port = uri.address(DEFAULT_PORT)
        database = uri.path.strip("/")
        if not database or "/" in database:
            raise ConfigError(
                f"pgvector:// URI needs one database name as its path "
                f"(pgvector://user@host:5432/DB?table=T): {uri.redacted()}"
            )
        table = check_identifier(uri.require("table", "the table to read or write"), "table")
        schema = uri.option("schema")
        id_column = uri.option("id_column")
        vectors = tuple(v for v in (uri.option("vector_column") or "").split(",") if v)
        document = uri.option("document_column") or "document"
        for name, what in [(schema, "schema"), (id_column, "id column"), (document, "document")]:
            if name is not None:
                check_identifier(name, what)
        for v in vectors:
            check_identifier(v, "vector column")
        index = (uri.option("index") or "auto").lower()
        if index not in INDEX_CHOICES:
            raise ConfigError(f"pgvector: index={index!r}: use one of {', '.join(INDEX_CHOICES)}")
        search = (uri.option("search") or "index").lower()
        if search not in SEARCH_CHOICES:
            raise ConfigError(
                f"pgvector: search={search!r}: use one of {', '.join(SEARCH_CHOICES)}"
            )
        reader = (uri.option("reader") or "auto").lower()
        if reader not in READER_CHOICES:
            raise ConfigError(
                f"pgvector: reader={reader!r}: use one of {', '.join(READER_CHOICES)}"
            )
        ef_search = uri.int_option("ef_search", 0) or None
        probes = uri.int_option("probes", 0) or None
        user = uri.user or os.environ.get("PGUSER") or getpass.getuser()
        return cls(
            host=host,
            port=port,
            user=user,
            database=database,
            table=table,
            schema=schema,
            id_column=id_column,
            vector_columns=vectors,
            document_column=document,
            index=index,
            search=search,
            ef_search=ef_search,
            probes=probes,
            maintenance_work_mem=uri.option("maintenance_work_mem"),
            connect_timeout=uri.int_option("connect_timeout", 10),
            sslmode=uri.option("sslmode"),
            password=secret(uri, "password", env_default="PGPASSWORD"),
            reader=reader,
        )

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` (holds the password: never log it)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.database,
            "connect_timeout": self.connect_timeout,
            "application_name": "vecmigrate",
            "client_encoding": "UTF8",
        }
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslmode:
            kwargs["sslmode"] = self.sslmode
        return kwargs
