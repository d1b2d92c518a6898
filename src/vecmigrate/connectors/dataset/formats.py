"""The shard formats by name."""

from __future__ import annotations

from typing import Literal

from vecmigrate.connectors.dataset.codec import ShardCodec
from vecmigrate.errors import ConfigError

Format = Literal["parquet", "jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("parquet", "jsonl", "csv")


def codec_for(fmt: str, *, compression: str = "zstd") -> ShardCodec:
    if fmt == "parquet":
        from vecmigrate.connectors.dataset.parquetformat import ParquetCodec

        return ParquetCodec(compression)
    if fmt == "jsonl":
        from vecmigrate.connectors.dataset.jsonlformat import JsonlCodec

        return JsonlCodec()
    if fmt == "csv":
        from vecmigrate.connectors.dataset.csvformat import CsvCodec

        return CsvCodec()
    raise ConfigError(f"unknown shard format {fmt!r}: use one of {', '.join(FORMATS)}")
