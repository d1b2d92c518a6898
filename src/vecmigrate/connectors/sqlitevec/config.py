"""Options of ``sqlitevec:///abs/file.db?table=T&metadata=auto&partition_key=field``.

``metadata`` says where metadata fields of a new table go: ``columns`` makes text, integer,
float and boolean fields vec0 metadata columns (filterable in KNN queries, but they cannot
hold NULL: a NULL is refused with the row named); ``auxiliary`` makes every field an
auxiliary ``+column`` (any value, NULL included, not filterable); ``auto`` (default) makes
non-nullable scalar fields metadata columns and the rest auxiliary. ``partition_key`` names
text or integer fields to declare as vec0 partition keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI

METADATA_CHOICES = ("auto", "columns", "auxiliary")


@dataclass(frozen=True)
class SqliteVecConfig:
    path: Path  # the SQLite database file
    table: str  # the vec0 virtual table
    metadata: str  # auto | columns | auxiliary (for tables created here)
    partition_keys: tuple[str, ...]

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> SqliteVecConfig:
        uri.check_options({"table", "metadata", "partition_key"})
        path = uri.file_path()
        if not path.is_absolute():
            raise ConfigError(
                "sqlitevec:// needs an absolute database path (sqlitevec:///abs/file.db?table=T), "
                f"got {str(path)!r}"
            )
        metadata = (uri.option("metadata") or "auto").lower()
        if metadata not in METADATA_CHOICES:
            raise ConfigError(
                f"sqlitevec: metadata={metadata!r}: use one of {', '.join(METADATA_CHOICES)}"
            )
        keys = tuple(k for k in (uri.option("partition_key") or "").split(",") if k)
        return cls(
            path=path,
            table=uri.require("table", "the vec0 virtual table to read or write"),
            metadata=metadata,
            partition_keys=keys,
        )
