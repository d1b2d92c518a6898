"""Translate qdrant-client and Qdrant Edge errors into vecmigrate's error tree."""

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
_TRANSIENT_GRPC = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})
_SCHEMA_WORDS = (
    "dimension",
    "wrong input",
    "not existing vector name",
    "bad request",
    "format error",
)


def translate(exc: Exception, what: str) -> ConnectorError:
    """The vecmigrate error for a Qdrant client (or Edge) error raised while doing ``what``."""
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    message = " ".join(str(getattr(exc, "content", b"") or exc).split())
    if isinstance(exc, UnexpectedResponse):
        content = exc.content.decode("utf-8", "replace") if exc.content else exc.reason_phrase
        text = f"qdrant: {what}: HTTP {exc.status_code}: {' '.join(content.split())}"
        if exc.status_code == 404:
            return NotFoundError(text)
        if exc.status_code in (401, 403):
            return AuthError(text)
        if exc.status_code in _TRANSIENT_STATUS:
            return TransientError(text)
        if exc.status_code in (400, 422):
            return SchemaMismatch(text)
        return TerminalError(text)
    text = f"qdrant: {what}: {message}"
    if isinstance(exc, ResponseHandlingException | httpx.TransportError):
        return TransientError(text)
    code = _grpc_code(exc)
    if code is not None:
        if code in _TRANSIENT_GRPC:
            return TransientError(text)
        if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return AuthError(text)
        if code == "NOT_FOUND":
            return NotFoundError(text)
        if code == "INVALID_ARGUMENT":
            return SchemaMismatch(text)
        return TerminalError(text)
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(text)
    lowered = message.lower()
    if "not found" in lowered or "does not exist" in lowered:
        return NotFoundError(text)
    if any(word in lowered for word in _SCHEMA_WORDS):
        return SchemaMismatch(text)
    if locked_elsewhere(message):
        return TerminalError(text + " (the folder is open in another process or client)")
    return TerminalError(text)


def locked_elsewhere(message: str) -> bool:
    """Whether an error's text says another process holds the folder (Edge's WAL lock, local
    mode's folder lock)."""
    lowered = message.lower()
    return "wouldblock" in lowered or "already accessed" in lowered


def _grpc_code(exc: Exception) -> str | None:
    try:
        import grpc
    except ImportError:  # pragma: no cover - grpcio comes with qdrant-client
        return None
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return str(getattr(exc.code(), "name", exc.code()))
    return None


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run a client call, turning its errors into vecmigrate errors (``from`` the original).

    Qdrant Edge and local mode raise plain ``Exception``/``ValueError``, so any non-vecmigrate
    exception from the wrapped call is translated; keep the block around the call only.
    """
    try:
        yield
    except VecmigrateError:
        raise
    except Exception as exc:
        raise translate(exc, what) from exc
