"""Filesystem and Arrow failures of the dataset folder as vecmigrate errors (one place)."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

import pyarrow as pa

from vecmigrate.errors import (
    DataError,
    NotFoundError,
    TerminalError,
    TransientError,
    VecmigrateError,
)

_TRANSIENT = {errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE}


def translate(exc: BaseException, *, where: str) -> VecmigrateError:
    """The vecmigrate error for a failure while working on ``where`` (a file or folder)."""
    if isinstance(exc, VecmigrateError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"{where}: {exc.filename or 'file'} does not exist")
    if isinstance(exc, PermissionError):
        return TerminalError(f"{where}: permission denied ({exc.filename or ''})")
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return TerminalError(f"{where}: no space left on the device")
        if exc.errno in _TRANSIENT:
            return TransientError(f"{where}: {exc.strerror or exc}")
        return TerminalError(f"{where}: {exc.strerror or exc}")
    if isinstance(exc, pa.ArrowException):
        return DataError(f"cannot read: {exc}", file=where)
    return TerminalError(f"{where}: {exc}")


@contextlib.contextmanager
def mapped(where: str) -> Iterator[None]:
    """Re-raise filesystem and Arrow errors as vecmigrate errors, original as ``__cause__``."""
    try:
        yield
    except VecmigrateError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise translate(exc, where=where) from exc
