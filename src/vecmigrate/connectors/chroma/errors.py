"""Chroma errors -> vecmigrate errors, in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import chromadb.errors as cerr
import httpx

from vecmigrate.errors import (
    AuthError,
    NotFoundError,
    SchemaMismatch,
    TerminalError,
    TransientError,
    VecmigrateError,
)

_TRANSIENT_WORDS = (
    "could not connect",
    "connection refused",
    "connection reset",
    "timed out",
    "timeout",
    "temporarily unavailable",
    "server disconnected",
    "database is locked",
)


def translate(exc: BaseException, what: str) -> VecmigrateError:
    """The vecmigrate error for a Chroma failure while doing ``what`` (names the collection)."""
    if isinstance(exc, VecmigrateError):
        return exc
    text = " ".join(str(exc).split()) or type(exc).__name__
    low = text.lower()
    message = f"{what}: {text}"
    if isinstance(exc, httpx.TransportError) or any(w in low for w in _TRANSIENT_WORDS):
        return TransientError(message)
    if isinstance(exc, cerr.RateLimitError):
        return TransientError(message)
    if isinstance(exc, cerr.NotFoundError) or "does not exist" in low:
        return NotFoundError(message)
    if isinstance(exc, cerr.AuthorizationError | cerr.ChromaAuthError):
        return AuthError(message)
    if "unauthorized" in low or "forbidden" in low or "permission denied" in low:
        return AuthError(message)
    if isinstance(exc, cerr.InvalidDimensionException) or "dimension" in low:
        return SchemaMismatch(message)
    return TerminalError(message)


@contextmanager
def chroma_errors(what: str) -> Iterator[None]:
    """Translate what Chroma raises inside the block (the original kept as ``__cause__``)."""
    try:
        yield
    except VecmigrateError:
        raise
    except Exception as exc:  # Chroma's HTTP client raises bare Exception for HTTP errors
        raise translate(exc, what) from exc
