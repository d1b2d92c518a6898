"""LanceDB errors -> vecmigrate errors, in one place.

LanceDB raises plain ``ValueError`` / ``RuntimeError`` / ``OSError`` whose message says what
went wrong; the message decides the type.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from vecmigrate.errors import (
    NotFoundError,
    SchemaMismatch,
    TerminalError,
    TransientError,
    VecmigrateError,
)

_TRANSIENT_ERRNO = {errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET}
_TRANSIENT_WORDS = ("commit conflict", "retryable", "timed out", "timeout", "too many open files")
_NOT_FOUND_WORDS = ("was not found", "no longer exists", "not found:")
_SCHEMA_WORDS = ("cannot cast field", "not found in target schema", "schema mismatch")


def translate(exc: BaseException, what: str) -> VecmigrateError:
    """The vecmigrate error for a LanceDB failure while doing ``what`` (names the table)."""
    if isinstance(exc, VecmigrateError):
        return exc
    text = " ".join(str(exc).split())
    low = text.lower()
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
        return TransientError(f"lancedb: {what}: {text}")
    if any(w in low for w in _TRANSIENT_WORDS):
        return TransientError(f"lancedb: {what}: {text}")
    if isinstance(exc, FileNotFoundError) or any(w in low for w in _NOT_FOUND_WORDS):
        hint = ""
        if "no longer exists" in low or "lanceerror(io)" in low:
            hint = " (the table version was cleaned up or compacted away; plan the scan again)"
        return NotFoundError(f"lancedb: {what}: {text}{hint}")
    if any(w in low for w in _SCHEMA_WORDS):
        return SchemaMismatch(f"lancedb: {what}: {text}")
    return TerminalError(f"lancedb: {what}: {text}")


@contextmanager
def lance_errors(what: str) -> Iterator[None]:
    """Translate what LanceDB raises inside the block (the original kept as ``__cause__``)."""
    try:
        yield
    except VecmigrateError:
        raise
    except (ValueError, RuntimeError, OSError) as exc:
        raise translate(exc, what) from exc
