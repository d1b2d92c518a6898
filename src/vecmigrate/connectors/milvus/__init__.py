"""Milvus connector: a Milvus server (``milvus://``) or Milvus Lite (``milvus+lite://``)."""
