"""In-memory connector (``memory://NAME``): first class, used by fast engine tests."""
