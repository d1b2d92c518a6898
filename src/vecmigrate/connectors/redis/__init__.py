"""Redis 8 vector sets (``redis://HOST:PORT?key=K``): one vector set per collection."""
