"""FAISS and sidecar-file errors -> vecmigrate errors, in one place.

FAISS raises ``RuntimeError`` with the C++ message (``could not open ... No such file or
directory``, ``read error``); the sidecar raises ``OSError`` and Arrow errors. Local files
rarely recover on a retry: only interrupted or busy system calls are transient.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from vecmigrate.errors import (
    NotFoundError,
    TerminalError,
    TransientError,
    Unsupported,
    VecmigrateError,
)

_TRANSIENT_ERRNO = {errno.EAGAIN, errno.EINTR, errno.EBUSY}
_NOT_FOUND_WORDS = ("no such file or directory",)
_UNSUPPORTED_WORDS = ("not implemented", "not supported")


def _first_line(exc: BaseException) -> str:
    """FAISS messages carry the C++ location first; keep what the user can act on."""
    text = " ".join(str(exc).split())
    if "Error: '" in text:
        text = text.split("Error: ", 1)[1]
    elif " at /" in text and ": " in text.split(" at /", 1)[1]:
        text = text.split(" at /", 1)[1].split(": ", 1)[1]
    return text


def translate(exc: BaseException, what: str) -> VecmigrateError:
    """The vecmigrate error for a FAISS or file failure while doing ``what`` (names the file)."""
    if isinstance(exc, VecmigrateError):
        return exc
    text = _first_line(exc)
    low = text.lower()
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
        return TransientError(f"faiss: {what}: {text}")
    if isinstance(exc, FileNotFoundError) or any(w in low for w in _NOT_FOUND_WORDS):
        return NotFoundError(f"faiss: {what}: {text}")
    if isinstance(exc, RuntimeError) and any(w in low for w in _UNSUPPORTED_WORDS):
        return Unsupported(f"faiss: {what}: {text}")
    if isinstance(exc, pa.ArrowException):
        return TerminalError(f"faiss: {what}: sidecar file is unreadable: {text}")
    return TerminalError(f"faiss: {what}: {text}")


@contextmanager
def faiss_errors(what: str) -> Iterator[None]:
    """Translate what FAISS or the file system raises inside the block (original as cause)."""
    try:
        yield
    except VecmigrateError:
        raise
    except (RuntimeError, OSError, ValueError, pa.ArrowException) as exc:
        raise translate(exc, what) from exc
