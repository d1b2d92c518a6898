"""Reader for folders written by vdf-io (``VDF_META.json`` + Parquet files): ``vdf:///dir``."""
