"""SQLite and sqlite-vec errors -> vecmigrate errors, in one place.

Errors come from ``pysqlite3`` (used because the standard ``sqlite3`` often cannot load
extensions) or the standard module; both follow DB-API, and the message says what happened.
A locked or busy database is transient; everything else needs a person.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from vecmigrate.errors import (
    DataError,
    NotFoundError,
    SchemaMismatch,
    TerminalError,
    TransientError,
    VecmigrateError,
)

_TRANSIENT_ERRNO = {errno.EAGAIN, errno.EINTR, errno.EBUSY}
_TRANSIENT_WORDS = ("database is locked", "database table is locked", "database is busy")
_NOT_FOUND_WORDS = ("no such table", "unable to open database file")
_SCHEMA_WORDS = ("dimension mismatch", "no such column", "has no column")
_DATA_WORDS = ("metadata column", "unique constraint failed", "primary key", "datatype mismatch")


def error_types() -> tuple[type[BaseException], ...]:
    """DB-API error classes of every SQLite module that may be in use, and ``OSError``."""
    types: list[type[BaseException]] = [sqlite3.Error, OSError]
    try:
        from pysqlite3 import dbapi2
    except ImportError:
        pass
    else:
        types.append(dbapi2.Error)
    return tuple(types)


def translate(exc: BaseException, what: str) -> VecmigrateError:
    """The vecmigrate error for a SQLite failure while doing ``what`` (names file and table)."""
    if isinstance(exc, VecmigrateError):
        return exc
    text = " ".join(str(exc).split())
    low = text.lower()
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
        return TransientError(f"sqlitevec: {what}: {text}")
    if any(w in low for w in _TRANSIENT_WORDS):
        return TransientError(f"sqlitevec: {what}: {text}")
    if isinstance(exc, FileNotFoundError) or any(w in low for w in _NOT_FOUND_WORDS):
        return NotFoundError(f"sqlitevec: {what}: {text}")
    if any(w in low for w in _SCHEMA_WORDS):
        return SchemaMismatch(f"sqlitevec: {what}: {text}")
    if any(w in low for w in _DATA_WORDS):
        return DataError(f"{what}: {text}")
    return TerminalError(f"sqlitevec: {what}: {text}")


@contextmanager
def sqlite_errors(what: str) -> Iterator[None]:
    """Translate what SQLite raises inside the block (the original kept as ``__cause__``)."""
    try:
        yield
    except VecmigrateError:
        raise
    except error_types() as exc:
        raise translate(exc, what) from exc
