"""Connector URIs: ``scheme://[user@]host[:port]/path?option=value``.

File-based systems take an absolute path after ``scheme://`` (``lancedb:///abs/dir?table=t``).
Passwords never appear in a URI: they come from an environment variable, a file or the system
keyring (see :func:`secret`), and :meth:`ConnectorURI.redacted` is what logs, manifests and
ledgers keep.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from vecmigrate.errors import ConfigError, MissingDependency

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
SECRET_OPTIONS = frozenset({"password", "api_key", "apikey", "token", "secret", "key_value"})
SECRET_SOURCES = ("env", "file", "keyring")  # NAME_env=VAR, NAME_file=PATH, NAME_keyring=...


@dataclass(frozen=True)
class ConnectorURI:
    """A parsed connector address. ``options`` are the query parameters."""

    scheme: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    path: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ConnectorURI:
        if "://" not in text:
            raise ConfigError(
                f"not a connector URI: {text!r} (expected scheme://..., e.g. lancedb:///data/db?table=t)"
            )
        scheme = text.split("://", 1)[0].lower()
        if not _SCHEME.match(scheme):
            raise ConfigError(f"bad URI scheme {scheme!r} in {redact_text(text)!r}")
        parts = urlsplit(text)
        if parts.password:
            raise ConfigError(
                f"{scheme}:// URI contains a password: pass it in an environment variable "
                "instead (see the README, 'Credentials')"
            )
        options: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in options:
                raise ConfigError(f"URI option {key!r} given twice")
            if key.lower() in SECRET_OPTIONS:
                raise ConfigError(
                    f"URI option {key!r} would put a secret in the URI: use {key}_env=VARNAME, "
                    f"{key}_file=PATH or {key}_keyring=SERVICE[/USERNAME]"
                )
            options[key] = value
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"bad port in {redact_text(text)!r}") from exc
        return cls(
            scheme=scheme,
            host=parts.hostname,
            port=port,
            user=unquote(parts.username) if parts.username else None,
            path=unquote(parts.path),
            options=options,
        )

    # -- access -------------------------------------------------------------------------
    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def require(self, name: str, what: str = "") -> str:
        value = self.options.get(name)
        if not value:
            hint = f" ({what})" if what else ""
            raise ConfigError(f"{self.scheme}:// URI needs ?{name}=...{hint}: {self.redacted()}")
        return value

    def int_option(self, name: str, default: int) -> int:
        raw = self.options.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigError(f"URI option {name}={raw!r} is not a whole number") from exc

    def check_options(self, allowed: set[str]) -> None:
        """Refuse options the connector does not know (a typo must not be ignored)."""
        secret_refs = {f"{s}_{k}" for s in SECRET_OPTIONS for k in SECRET_SOURCES}
        unknown = sorted(set(self.options) - allowed - secret_refs)
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(
                f"unknown option {unknown[0]!r} for {self.scheme}:// (known: {known})"
            )

    def file_path(self) -> Path:
        """The filesystem path of a file-based URI (``scheme:///abs/path``)."""
        if self.host and self.path:
            raw = f"{self.host}{self.path}"  # scheme://relative/dir
        else:
            raw = self.path or (self.host or "")
        if not raw:
            raise ConfigError(
                f"{self.scheme}:// URI has no path: use {self.scheme}:///absolute/path"
            )
        return Path(raw).expanduser()

    def address(self, default_port: int | None = None) -> tuple[str, int]:
        if not self.host:
            raise ConfigError(f"{self.scheme}:// URI needs a host: {self.redacted()}")
        port = self.port or default_port
        if port is None:
            raise ConfigError(f"{self.scheme}:// URI needs a port: {self.redacted()}")
        return self.host, port

    def redacted(self) -> str:
        """The URI as it may be logged and stored: no secret can be in it by construction."""
        netloc = ""
        if self.user:
            netloc += quote(self.user, safe="") + "@"
        if self.host:
            netloc += self.host
        if self.port:
            netloc += f":{self.port}"
        query = "&".join(f"{k}={quote(v, safe='/:,')}" for k, v in sorted(self.options.items()))
        return f"{self.scheme}://{netloc}{quote(self.path, safe='/')}" + (
            f"?{query}" if query else ""
        )

    def __str__(self) -> str:
        return self.redacted()


def secret(uri: ConnectorURI, name: str, *, env_default: str | None = None) -> str | None:
    """A secret named by ``?NAME_env=VAR``, ``?NAME_file=PATH`` or ``?NAME_keyring=SERVICE``
    (``SERVICE/USERNAME``), else the default environment variable.

    ``NAME_keyring`` reads the system keyring (the ``keyring`` package) for SERVICE and the
    URI's user, or the USERNAME after the last ``/``. At most one of the three may be given.
    """
    given = [k for k in SECRET_SOURCES if uri.option(f"{name}_{k}") is not None]
    if len(given) > 1:
        named = " and ".join(f"{name}_{k}" for k in given)
        raise ConfigError(f"{named} both name the {name}: give one of them")
    env_name = uri.option(f"{name}_env")
    file_name = uri.option(f"{name}_file")
    keyring_ref = uri.option(f"{name}_keyring")
    if file_name:
        try:
            return Path(file_name).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the {name} file named by {name}_file: {exc.strerror}"
            ) from exc
    if env_name:
        value = os.environ.get(env_name)
        if value is None:
            raise ConfigError(f"environment variable {env_name} (named by {name}_env) is not set")
        return value
    if keyring_ref is not None:
        return _from_keyring(uri, name, keyring_ref)
    if env_default:
        return os.environ.get(env_default)
    return None


def _from_keyring(uri: ConnectorURI, name: str, ref: str) -> str:
    """The secret stored in the system keyring under ``SERVICE`` or ``SERVICE/USERNAME``."""
    service, slash, user = ref.rpartition("/")
    if not slash:
        service, user = ref, uri.user or ""
    if not service:
        raise ConfigError(f"{name}_keyring needs a service name: {name}_keyring=SERVICE[/USERNAME]")
    if not user:
        raise ConfigError(
            f"{name}_keyring={ref!r} names no user and the URI has none: use "
            f"{name}_keyring=SERVICE/USERNAME"
        )
    try:
        import keyring
        from keyring import errors as keyring_errors
    except ImportError as exc:
        raise MissingDependency("keyring", "keyring") from exc
    where = f"service {service!r}, user {user!r}"
    try:
        value = keyring.get_password(service, user)
    except keyring_errors.NoKeyringError as exc:
        raise ConfigError(
            f"{name}_keyring: no system keyring is available here ({_one_line(exc)}); choose a "
            f"backend with PYTHON_KEYRING_BACKEND, or use {name}_env / {name}_file"
        ) from exc
    except keyring_errors.KeyringError as exc:
        raise ConfigError(
            f"{name}_keyring: the keyring refused to read the {name} of {where}: "
            f"{type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    if value is None:
        raise ConfigError(
            f"{name}_keyring: the keyring holds no {name} for {where} "
            f"(store one with: keyring set {service} {user})"
        )
    return str(value)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


_CRED = re.compile(r"(://[^/@\s:]*:)[^@/\s]+@")


def redact_text(text: str) -> str:
    """Remove a ``user:password@`` from any text that might carry one."""
    return _CRED.sub(r"\1***@", text)
