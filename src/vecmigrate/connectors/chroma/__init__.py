"""Chroma connector: ``chroma:///abs/dir?collection=C`` (a local persistent folder) and
``chroma+http://HOST:PORT?collection=C`` (a ``chroma run`` server)."""
