"""redis-py errors -> vecmigrate errors, in one place (the original is kept as ``__cause__``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from vecmigrate.errors import (
    AuthError,
    SchemaMismatch,
    TerminalError,
    TransientError,
    Unsupported,
    VecmigrateError,
)

# Redis error codes (the reply's first word) a retry can fix.
_TRANSIENT_CODES = frozenset(
    {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "READONLY", "NOREPLICAS"}
)
_AUTH_CODES = frozenset({"NOAUTH", "WRONGPASS", "NOPERM"})


def translate(exc: Exception, key: str) -> VecmigrateError:
    """The vecmigrate error for a redis-py exception raised while working on ``key``."""
    from redis import exceptions as rex

    what = f"redis vector set {key!r}"
    text = str(exc).strip()
    code = text.split(" ", 1)[0].upper() if text else ""
    if isinstance(exc, rex.AuthenticationError | rex.AuthenticationWrongNumberOfArgsError):
        return AuthError(f"{what}: credentials refused: {text}")
    if isinstance(exc, rex.NoPermissionError) or code in _AUTH_CODES:
        return AuthError(f"{what}: not allowed: {text}")
    transient = rex.ConnectionError | rex.TimeoutError | rex.InvalidResponse
    if isinstance(exc, transient) or code in _TRANSIENT_CODES:
        return TransientError(f"{what}: {type(exc).__name__}: {text}")
    if isinstance(exc, rex.ResponseError):
        lowered = text.lower()
        if code == "WRONGTYPE":
            return TerminalError(f"{what}: the key holds another type than a vector set")
        if "unknown command" in lowered:
            return Unsupported(
                f"{what}: this server has no vector sets (Redis 8 or later is needed): {text}"
            )
        if "dimension mismatch" in lowered or "mismatch with existing" in lowered:
            return SchemaMismatch(f"{what}: {text}")
        return TerminalError(f"{what}: {text}")
    return TerminalError(f"{what}: {type(exc).__name__}: {text}")


@contextmanager
def redis_errors(key: str) -> Iterator[None]:
    """Translate redis-py errors raised inside the block."""
    from redis import exceptions as rex

    try:
        yield
    except rex.RedisError as exc:
        raise translate(exc, key) from exc
