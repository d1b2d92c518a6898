"""weaviate-client errors -> vecmigrate errors, in one place (original kept as ``__cause__``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from vecmigrate.errors import (
    AuthError,
    ConnectorError,
    DataError,
    NotFoundError,
    SchemaMismatch,
    TerminalError,
    TransientError,
    VecmigrateError,
)

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_TEXT = (
    "timeout",
    "timed out",
    "deadline exceeded",
    "unavailable",
    "connection refused",
    "connection reset",
    "too many requests",
    "resource_exhausted",
)


def transient_message(message: str) -> bool:
    """Whether a server message (e.g. one object's batch error) describes a retryable failure."""
    lowered = message.lower()
    return any(t in lowered for t in _TRANSIENT_TEXT)


def translate(exc: BaseException, what: str) -> ConnectorError:
    """The vecmigrate error for a weaviate-client error raised while doing ``what``."""
    from weaviate import exceptions as wx

    message = " ".join(str(getattr(exc, "message", "") or exc).split())
    text = f"weaviate: {what}: {message}"
    if isinstance(exc, wx.AuthenticationFailedError | wx.InsufficientPermissionsError):
        return AuthError(text)
    if isinstance(exc, wx.UnexpectedStatusCodeError):
        status = exc.status_code
        if status in (401, 403):
            return AuthError(text)
        if status == 404:
            return NotFoundError(text)
        if status in _TRANSIENT_STATUS:
            return TransientError(text)
        if status == 422 and ("vector" in message.lower() or "dimension" in message.lower()):
            return SchemaMismatch(text)
        return TerminalError(text)
    if isinstance(
        exc,
        wx.WeaviateConnectionError
        | wx.WeaviateGRPCUnavailableError
        | wx.WeaviateTimeoutError
        | wx.WeaviateStartUpError
        | wx.WeaviateRetryError,
    ):
        return TransientError(text)
    if isinstance(exc, wx.WeaviateInvalidInputError | wx.WeaviateInsertInvalidPropertyError):
        return SchemaMismatch(text)
    if isinstance(exc, wx.WeaviateBaseError):
        if transient_message(message):
            return TransientError(text)
        lowered = message.lower()
        if "not found" in lowered or "could not find" in lowered:
            return NotFoundError(text)
        if "vector lengths don't match" in lowered or "dimension" in lowered:
            return SchemaMismatch(text)
        return TerminalError(text)
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(text)
    return TerminalError(text)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run a block, turning any client error into a vecmigrate error (``from`` the original)."""
    from weaviate.exceptions import WeaviateBaseError

    try:
        yield
    except VecmigrateError:
        raise
    except (WeaviateBaseError, ConnectionError, TimeoutError) as exc:
        raise translate(exc, what) from exc


def refused_objects(
    errors: Mapping[int, str], rows: Sequence[int], ids: Sequence[Any], sent: int
) -> VecmigrateError | None:
    """The error for objects a batch import refused (``errors``: position in the request ->
    message; ``rows``: their rows in the record batch). Transient only if every one is."""
    if not errors:
        return None
    failed = sorted(errors.items())
    shown = "; ".join(f"row {rows[i]} id {ids[rows[i]]!r}: {msg}" for i, msg in failed[:5])
    text = f"weaviate refused {len(failed)} of {sent} objects: {shown}"
    if all(transient_message(msg) for _, msg in failed):
        return TransientError(text)
    first = rows[failed[0][0]]
    return DataError(text, row=first, record_id=ids[first])
