"""Options of ``parquet:///dir``, ``jsonl:///dir`` and ``csv:///dir``.

``?compression=zstd`` (Parquet: zstd, snappy, gzip, lz4, brotli or none) and ``?verify=false``
(skip the sha256 check of shards on read; sizes and row counts are still checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI

COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")


@dataclass(frozen=True)
class DatasetConfig:
    folder: Path
    shard_format: str  # the format new shards are written in (the URI scheme)
    compression: str
    verify: bool

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> DatasetConfig:
        uri.check_options({"compression", "verify"})
        compression = (uri.option("compression") or "zstd").lower()
        if compression not in COMPRESSIONS:
            raise ConfigError(
                f"{uri.scheme}:// compression={compression!r}: use one of {', '.join(COMPRESSIONS)}"
            )
        verify = (uri.option("verify") or "true").lower()
        if verify not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{uri.scheme}:// verify={verify!r}: use true or false")
        return cls(
            folder=uri.file_path(),
            shard_format=uri.scheme,
            compression=compression,
            verify=verify in ("true", "1", "yes"),
        )
