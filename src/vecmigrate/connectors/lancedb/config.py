"""Options of ``lancedb:///abs/dir?table=T``.

``version=N`` reads that table version instead of the latest; ``id_column`` names the id
column of a table made elsewhere; ``index`` says whether ``finalize`` builds the vector index
the spec asks for (auto: from 100k rows, when exact search stops being fast; always; none);
``search=exact`` bypasses a vector index in ``query``; ``compact=none`` skips merging small
fragments in ``finalize``; ``metadata_cache_mb`` bounds Lance's cache of table manifests
(4 by default; LanceDB's own default, 1 GB, fills up over a long copy: every write is a new
version whose manifest lists every fragment).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI

INDEX_CHOICES = ("auto", "always", "none")
SEARCH_CHOICES = ("index", "exact")
COMPACT_CHOICES = ("auto", "none")


def _choice(uri: ConnectorURI, name: str, choices: tuple[str, ...]) -> str:
    value = (uri.option(name) or choices[0]).lower()
    if value not in choices:
        raise ConfigError(f"lancedb: {name}={value!r}: use one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class LanceDBConfig:
    path: Path  # the database folder (holds one ``<table>.lance`` folder per table)
    table: str
    version: int | None  # read this version; None: the latest when partitions are planned
    id_column: str  # the table's id column ("id" for tables created here)
    index: str  # auto: build the spec's vector index in finalize from 100k rows; always; none
    search: str  # index: use a vector index when one exists; exact: flat search always
    compact: str  # auto: merge small fragments in finalize; none: leave them
    metadata_cache_mb: int = 4  # Lance's manifest cache for this connector's connection

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> LanceDBConfig:
        uri.check_options(
            {"table", "version", "id_column", "index", "search", "compact", "metadata_cache_mb"}
        )
        path = uri.file_path()
        if not path.is_absolute():
            raise ConfigError(
                f"lancedb:// needs an absolute folder path (lancedb:///abs/dir?table=T), "
                f"got {str(path)!r}"
            )
        version = uri.int_option("version", 0) if uri.option("version") is not None else None
        if version is not None and version < 1:
            raise ConfigError(f"lancedb: version={version} must be 1 or more")
        return cls(
            path=path,
            table=uri.require("table", "the LanceDB table to read or write"),
            version=version,
            id_column=uri.option("id_column") or "id",
            index=_choice(uri, "index", INDEX_CHOICES),
            search=_choice(uri, "search", SEARCH_CHOICES),
            compact=_choice(uri, "compact", COMPACT_CHOICES),
            metadata_cache_mb=_at_least_one(uri, "metadata_cache_mb", 4),
        )


def _at_least_one(uri: ConnectorURI, name: str, default: int) -> int:
    value = uri.int_option(name, default)
    if value < 1:
        raise ConfigError(f"lancedb: {name}={value} must be 1 or more")
    return value
