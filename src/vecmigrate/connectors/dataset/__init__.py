"""The portable dataset (``parquet:///dir``, ``jsonl:///dir``, ``csv:///dir``): a folder with
``manifest.json`` and checksummed shards under ``data/``. See docs/dataset-format.md."""
