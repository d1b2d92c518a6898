"""Elasticsearch (``elasticsearch://HOST:PORT?index=I``) and OpenSearch (``opensearch://...``)."""
