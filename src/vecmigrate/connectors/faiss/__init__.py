"""FAISS index files (``faiss:///abs/path.index``) with a sidecar for ids and metadata."""
