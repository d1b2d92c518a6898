"""pinecone SDK errors -> vecmigrate errors, in one place (original kept as ``__cause__``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from vecmigrate.errors import (
    AuthError,
    ConnectorError,
    NotFoundError,
    SchemaMismatch,
    TerminalError,
    TransientError,
    VecmigrateError,
)

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def translate(exc: BaseException, what: str) -> ConnectorError:
    """The vecmigrate error for a pinecone SDK error raised while doing ``what``."""
    from pinecone.errors import exceptions as px

    text = f"pinecone: {what}: {' '.join(str(exc).split())}"
    if isinstance(exc, px.PineconeTimeoutError | px.PineconeConnectionError):
        return TransientError(text)
    if isinstance(exc, px.ApiError):
        status = exc.status_code
        if status in (401, 403):
            return AuthError(text)
        if status == 404:
            return NotFoundError(text)
        if status in _TRANSIENT_STATUS:
            return TransientError(text)
        lowered = text.lower()
        if status == 400 and "dimension" in lowered:
            return SchemaMismatch(text)
        return TerminalError(text)
    if isinstance(exc, px.PineconeValueError | px.PineconeTypeError):
        return SchemaMismatch(text)
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(text)
    return TerminalError(text)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run a block, turning any SDK error into a vecmigrate error (``from`` the original)."""
    from pinecone.errors import PineconeError

    try:
        yield
    except VecmigrateError:
        raise
    except (PineconeError, ConnectionError, TimeoutError) as exc:
        raise translate(exc, what) from exc
