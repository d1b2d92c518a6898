"""Qdrant connectors: a server (``qdrant://``), qdrant-client local mode (``qdrant+local://``)
and the embedded Rust engine of Qdrant Edge (``qdrant+edge://``)."""
