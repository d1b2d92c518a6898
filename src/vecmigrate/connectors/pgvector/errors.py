"""psycopg errors -> vecmigrate errors, in one place (the original kept as ``__cause__``).

Connection failures carry no SQLSTATE in psycopg, so those are told apart by libpq's message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pgerr

from vecmigrate.errors import (
    AuthError,
    ConnectorError,
    NotFoundError,
    SchemaMismatch,
    TerminalError,
    TransientError,
    VecmigrateError,
)

_AUTH_TEXT = re.compile(
    r"password authentication failed|authentication failed|no pg_hba\.conf entry|"
    r"role \S+ does not exist|password is required|fe_sendauth: no password supplied",
    re.IGNORECASE,
)
# settings and TLS failures that no retry can fix (libpq gives them no SQLSTATE either)
_TERMINAL_TEXT = re.compile(
    r"SSL was required|does not support SSL|certificate verify failed|SSL error: certificate|"
    r"root certificate file|sslmode value|invalid connection option|invalid (integer )?value for",
    re.IGNORECASE,
)
_NO_DATABASE = re.compile(r'database "[^"]*" does not exist', re.IGNORECASE)
_TRANSIENT_TEXT = re.compile(
    r"connection refused|timeout expired|timed out|could not connect|server closed the "
    r"connection|connection reset|could not receive data|could not send data|"
    r"the database system is (starting up|shutting down|in recovery)|too many clients|"
    r"no route to host|network is unreachable|could not translate host name|"
    r"the connection is (closed|lost)|consuming input failed|SSL SYSCALL error",
    re.IGNORECASE,
)
_TRANSIENT_STATES = (
    pgerr.SerializationFailure,
    pgerr.DeadlockDetected,
    pgerr.AdminShutdown,
    pgerr.CrashShutdown,
    pgerr.CannotConnectNow,
    pgerr.TooManyConnections,
    pgerr.QueryCanceled,
    pgerr.LockNotAvailable,
    pgerr.ConnectionException,
    pgerr.InsufficientResources,
)
_DIMENSIONS = re.compile(r"expected \d+ dimensions, not \d+|different (vector|halfvec) dimensions")


def scrubbed(text: str, secret: str | None) -> str:
    """``text`` on one line, without the secret."""
    text = " ".join(text.split())
    if secret:
        text = text.replace(secret, "***")
    return text


def translate(
    exc: BaseException, *, where: str, what: str, secret: str | None = None
) -> VecmigrateError:
    """The vecmigrate error for a psycopg error met while doing ``what`` on ``where``."""
    if isinstance(exc, VecmigrateError):
        return exc
    detail = scrubbed(str(exc), secret)
    message = f"pgvector {where}: {what} failed: {detail}"
    if isinstance(exc, pgerr.InvalidPassword | pgerr.InvalidAuthorizationSpecification):
        return AuthError(f"pgvector {where}: credentials refused: {detail}")
    if isinstance(exc, pgerr.InsufficientPrivilege):
        return AuthError(f"pgvector {where}: permission denied while {what}: {detail}")
    if isinstance(exc, pgerr.UndefinedTable):
        return NotFoundError(f"pgvector: table {where} does not exist ({detail})")
    if isinstance(exc, pgerr.InvalidCatalogName | pgerr.InvalidSchemaName):
        return NotFoundError(message)
    if isinstance(exc, pgerr.UndefinedColumn):
        return SchemaMismatch(message)
    if isinstance(exc, psycopg.DataError) and _DIMENSIONS.search(detail):
        return SchemaMismatch(f"pgvector {where}: vector dimension mismatch: {detail}")
    if isinstance(exc, _TRANSIENT_STATES):
        return TransientError(message)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        if _AUTH_TEXT.search(detail):
            return AuthError(f"pgvector {where}: credentials refused: {detail}")
        if _NO_DATABASE.search(detail):
            return NotFoundError(message)
        if _TERMINAL_TEXT.search(detail):
            return TerminalError(message)
        if _TRANSIENT_TEXT.search(detail) or getattr(exc, "sqlstate", None) is None:
            return TransientError(message)
    if isinstance(exc, psycopg.Error | OSError):
        return TerminalError(message)
    return ConnectorError(message)


@contextmanager
def translated(where: str, what: str, secret: str | None = None) -> Iterator[None]:
    """Run a block, raising psycopg errors as vecmigrate errors (``raise ... from exc``)."""
    try:
        yield
    except VecmigrateError:
        raise
    except (psycopg.Error, OSError) as exc:
        raise translate(exc, where=where, what=what, secret=secret) from exc
