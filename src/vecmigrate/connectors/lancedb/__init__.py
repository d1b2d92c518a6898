"""LanceDB connector (``lancedb:///abs/dir?table=T``): a local LanceDB database folder."""
