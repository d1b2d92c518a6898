"""Translate pymilvus errors into vecmigrate's error tree (one place, original kept)."""

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
    Unsupported,
    VecmigrateError,
)

# Server error codes (milvus pkg/util/merr) that a retry can fix.
_TRANSIENT_CODES = frozenset({2, 3, 5, 8, 11, 12, 101, 103, 201, 202, 503})
_NOT_FOUND_CODES = frozenset({100, 200, 700, 800, 1600})
_AUTH_CODES = frozenset({1400, 1401, 1402, 1403, 1404})
_SCHEMA_CODES = frozenset({105, 1100, 1101})
_TRANSIENT_GRPC = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})
_AUTH_GRPC = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


def _grpc_error(code: str, text: str) -> ConnectorError:
    if code in _TRANSIENT_GRPC:
        return TransientError(text)
    if code in _AUTH_GRPC:
        return AuthError(text)
    if code == "UNIMPLEMENTED":
        return Unsupported(
            text + " (not implemented by this Milvus; Milvus Lite has no partitions or aliases)"
        )
    if code == "NOT_FOUND":
        return NotFoundError(text)
    return TerminalError(text)


def translate(exc: Exception, what: str) -> ConnectorError:
    """The vecmigrate error for a pymilvus (or gRPC) error raised while doing ``what``."""
    import grpc
    from pymilvus.exceptions import (
        CollectionNotExistException,
        ConnectError,
        DataNotMatchException,
        MilvusException,
        MilvusUnavailableException,
        ParamError,
    )

    text = f"milvus: {what}: {_message(exc)}"
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        return _grpc_error(getattr(code, "name", str(code)), text)
    if isinstance(exc, CollectionNotExistException):
        return NotFoundError(text)
    if isinstance(exc, MilvusUnavailableException | ConnectError):
        return TransientError(text)
    if isinstance(exc, DataNotMatchException | ParamError):
        return SchemaMismatch(text)
    if isinstance(exc, MilvusException):
        code = exc.code
        if callable(code):  # a gRPC status code passed through by pymilvus' retry decorator
            code = getattr(code(), "name", str(code()))
        if isinstance(code, str):
            return _grpc_error(code, text)
        lowered = exc.message.lower()
        if code in _NOT_FOUND_CODES or "not found" in lowered or "not exist" in lowered:
            return NotFoundError(text)
        if code in _AUTH_CODES or "permission" in lowered or "auth" in lowered:
            return AuthError(text)
        if code in _TRANSIENT_CODES or "rate limit" in lowered or "timeout" in lowered:
            return TransientError(text)
        if code in _SCHEMA_CODES or "dimension" in lowered or "schema" in lowered:
            return SchemaMismatch(text)
        return TerminalError(text)
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(text)
    return TerminalError(text)


def _message(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    if callable(details) and details():
        return " ".join(str(details()).split())
    message = getattr(exc, "message", None)
    return " ".join(str(message if isinstance(message, str) and message else exc).split())


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run a block, turning any client error into a vecmigrate error (``from`` the original)."""
    import grpc
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except VecmigrateError:
        raise
    except (MilvusException, grpc.RpcError, ConnectionError, TimeoutError) as exc:
        raise translate(exc, what) from exc
