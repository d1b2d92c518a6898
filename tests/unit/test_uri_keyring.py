"""Secrets from the system keyring: ``?password_keyring=SERVICE`` or ``SERVICE/USERNAME``.

The keyring is real: keyrings.alt's plaintext file backend (it works headless), in a
temporary folder, set with ``keyring.set_keyring``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vecmigrate.errors import ConfigError, MissingDependency
from vecmigrate.uri import ConnectorURI, secret

keyring = pytest.importorskip("keyring", reason="keyring is not installed (vecmigrate[keyring])")
alt_file = pytest.importorskip("keyrings.alt.file", reason="keyrings.alt is not installed")

SECRET = "kr-Zq7-distinctive-7d2e"


@pytest.fixture
def file_keyring(tmp_path: Path) -> Iterator[Any]:
    backend = alt_file.PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    before = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(before)


def _uri(query: str, user: str | None = "alice") -> ConnectorURI:
    who = f"{user}@" if user else ""
    return ConnectorURI.parse(f"pgvector://{who}127.0.0.1:5432/db?table=t&{query}")


def test_password_from_the_keyring_for_the_uri_user(file_keyring: Any) -> None:
    keyring.set_password("vecmigrate-pg", "alice", SECRET)
    assert secret(_uri("password_keyring=vecmigrate-pg"), "password") == SECRET


def test_password_from_the_keyring_for_a_named_user(file_keyring: Any) -> None:
    keyring.set_password("pg/prod", "svc-reader", SECRET)
    uri = _uri("password_keyring=pg/prod/svc-reader", user=None)
    assert secret(uri, "password") == SECRET  # split at the last "/"
    assert SECRET not in uri.redacted()


def test_the_connector_config_takes_the_keyring_option(file_keyring: Any) -> None:
    from vecmigrate.connectors.pgvector.config import PgvectorConfig

    pytest.importorskip("psycopg")
    keyring.set_password("vecmigrate-pg", "alice", SECRET)
    config = PgvectorConfig.from_uri(_uri("password_keyring=vecmigrate-pg"))
    assert config.password == SECRET


def test_a_missing_entry_names_service_and_user_but_no_secret(file_keyring: Any) -> None:
    keyring.set_password("vecmigrate-pg", "bob", SECRET)
    with pytest.raises(ConfigError) as info:
        secret(_uri("password_keyring=vecmigrate-pg"), "password")
    message = info.value.one_line()
    assert "service 'vecmigrate-pg', user 'alice'" in message
    assert "keyring set vecmigrate-pg alice" in message
    assert SECRET not in message


def test_no_user_anywhere_is_a_config_error(file_keyring: Any) -> None:
    with pytest.raises(ConfigError, match=r"names no user .*=SERVICE/USERNAME"):
        secret(_uri("password_keyring=vecmigrate-pg", user=None), "password")
    with pytest.raises(ConfigError, match="needs a service name"):
        secret(_uri("password_keyring=/alice"), "password")


def test_no_usable_keyring_backend_is_a_config_error() -> None:
    from keyring.backends import fail

    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        with pytest.raises(ConfigError, match="no system keyring is available") as info:
            secret(_uri("password_keyring=vecmigrate-pg"), "password")
    finally:
        keyring.set_keyring(before)
    assert "PYTHON_KEYRING_BACKEND" in info.value.one_line()


def test_without_the_keyring_package_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # `import keyring` raises ImportError
    with pytest.raises(MissingDependency) as info:
        secret(_uri("password_keyring=vecmigrate-pg"), "password")
    assert "pip install 'vecmigrate[keyring]'" in str(info.value)


def test_two_sources_for_one_secret_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="password_env and password_keyring both name"):
        secret(_uri("password_env=X&password_keyring=svc"), "password")


def test_a_secret_in_the_uri_is_refused_with_the_keyring_form_in_the_hint() -> None:
    with pytest.raises(ConfigError, match=r"password_keyring=SERVICE\[/USERNAME\]"):
        _uri(f"password={SECRET}")
