"""sqlite-vec ``vec0`` tables (``sqlitevec:///abs/file.db?table=T``)."""
