"""elasticsearch-py / opensearch-py errors -> vecmigrate errors, in one place.

Both clients carry the HTTP status on their API errors (``status_code`` or ``meta.status``);
connection-level errors have none. The original is kept as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vecmigrate.errors import (
    AuthError,
    ConnectorError,
    NotFoundError,
    SchemaMismatch,
    TerminalError,
    TransientError,
    VecmigrateError,
)

TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})
_SCHEMA_TYPES = ("mapper_parsing_exception", "illegal_argument_exception", "document_parsing")


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a client error (None for connection failures)."""
    meta = getattr(exc, "meta", None)
    status = getattr(meta, "status", None)
    if isinstance(status, int):
        return status
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _reason(exc: BaseException) -> str:
    info: Any = getattr(exc, "info", None) or getattr(exc, "body", None)
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        err = info["error"]
        root = (err.get("root_cause") or [{}])[0]
        kind = str(err.get("type", ""))
        if root.get("type") and root["type"] != kind:
            kind = f"{kind} ({root['type']})"
        return f"{kind}: {root.get('reason') or err.get('reason', '')}"
    return " ".join(str(exc).split())


def translate(exc: BaseException, what: str, system: str) -> ConnectorError:
    """The vecmigrate error for an Elasticsearch/OpenSearch client error while doing ``what``."""
    reason = _reason(exc)
    text = f"{system}: {what}: {reason}"
    status = status_of(exc)
    name = type(exc).__name__
    if status is None:
        if (
            "Timeout" in name
            or "Connection" in name
            or isinstance(exc, ConnectionError | TimeoutError)
        ):
            return TransientError(text)
        return TerminalError(text)
    if status in (401, 403):
        return AuthError(text)
    if status == 404:
        if "search_context_missing" in reason or "No search context" in reason:
            return TerminalError(text)
        return NotFoundError(text)
    if status in TRANSIENT_STATUS:
        return TransientError(text)
    if status == 400 and any(t in reason for t in _SCHEMA_TYPES):
        return SchemaMismatch(text)
    return TerminalError(text)


def client_errors() -> tuple[type[BaseException], ...]:
    """The base error classes of whichever clients are installed."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from elastic_transport import TransportError as ElasticTransportError
        from elasticsearch import ApiError

        found += [ApiError, ElasticTransportError]
    except ImportError:
        pass
    try:
        from opensearchpy.exceptions import OpenSearchException

        found.append(OpenSearchException)
    except ImportError:
        pass
    return tuple(found)


@contextmanager
def translated(what: str, system: str) -> Iterator[None]:
    """Run a block, turning any client error into a vecmigrate error (``from`` the original)."""
    try:
        yield
    except VecmigrateError:
        raise
    except client_errors() as exc:
        raise translate(exc, what, system) from exc
