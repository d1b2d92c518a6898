"""One error tree for the whole tool.

Connectors translate their SDK's errors into these in one place (their ``errors.py``), keeping
the original as ``__cause__``. The type says whether a retry can help: the copy engine retries
``TransientError`` only.
"""

from __future__ import annotations


class VecmigrateError(Exception):
    """Root of every error vecmigrate raises on purpose."""

    exit_code = 1

    def one_line(self) -> str:
        """The message on one line, for terminals and JSON summaries."""
        return " ".join(str(self).split())


class ConfigError(VecmigrateError):
    """A flag, URI, option or plan is wrong; nothing was read or written."""

    exit_code = 2


class DataError(VecmigrateError):
    """A record or file is malformed. Names where: file, row and field when known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        record_id: object = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.row = row
        self.record_id = record_id
        self.field = field
        where = []
        if file is not None:
            where.append(file if "://" in file else f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if record_id is not None:
            where.append(f"id {record_id!r}")
        if field is not None:
            where.append(f"field {field!r}")
        self.reason = message
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def located(self, *, file: str | None = None, row_offset: int = 0) -> DataError:
        """A copy of this error placed in a file and shifted by the rows before this batch."""
        return DataError(
            self.reason,
            file=file if file is not None else self.file,
            row=None if self.row is None else self.row + row_offset,
            record_id=self.record_id,
            field=self.field,
        )


class ConnectorError(VecmigrateError):
    """A system refused or failed an operation."""


class TransientError(ConnectorError):
    """A failure a retry can fix: timeouts, connection resets, overload, server restarts."""


class TerminalError(ConnectorError):
    """A failure a retry cannot fix: bad credentials, missing collection, schema conflict."""


class NotFoundError(TerminalError):
    """The collection, table, index or file does not exist."""


class AuthError(TerminalError):
    """Credentials were refused."""


class SchemaMismatch(TerminalError):
    """An existing target cannot hold the source's data (dimension, metric, id type)."""


class Unsupported(TerminalError):
    """The connector declares it cannot do this (see its Capabilities)."""


class ValidationFailed(VecmigrateError):
    """A validation threshold failed; the report says which."""

    exit_code = 3


class MissingDependency(ConfigError):
    """A connector's client library is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"the Python package {module!r} is needed for this system: "
            f"pip install 'vecmigrate[{extra}]'"
        )
