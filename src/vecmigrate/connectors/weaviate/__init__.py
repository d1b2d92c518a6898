"""Weaviate (``weaviate://HOST:PORT?collection=C``), through weaviate-client v4 (REST + gRPC)."""
