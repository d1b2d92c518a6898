"""``--apply-access`` in the engine and the CLI, with targets that cannot apply access entries.

(pgvector, which can, is tested against PostgreSQL in tests/security/test_secrets.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.datagen import make_spec, make_table
from vecmigrate.cli.app import app
from vecmigrate.connectors.base import Capabilities, Connector
from vecmigrate.connectors.memory.connector import MemoryStore
from vecmigrate.engine.copy import CopyOptions, copy
from vecmigrate.errors import ConfigError, Unsupported
from vecmigrate.spec import AccessEntry


def _source(access: list[AccessEntry]) -> None:
    spec = make_spec(dim=4).model_copy(update={"access": access})
    MemoryStore.put("src", spec, make_table(spec, 200))


def test_the_contract_defaults_to_unsupported() -> None:
    assert Capabilities().apply_access is False
    assert Capabilities().rejects_bad_rows is False
    with pytest.raises(Unsupported, match="access entries cannot be applied"):
        Connector.__new__(Connector).apply_access([])


def test_entries_for_a_target_that_cannot_apply_them_stop_before_any_row(tmp_path: Path) -> None:
    _source([AccessEntry(principal="reader", privileges=["SELECT"], resource="public.t")])
    options = CopyOptions(state_dir=tmp_path / "state", apply_access=True)
    with pytest.raises(ConfigError, match=r"memory:// cannot apply access entries.*has 1"):
        copy("memory://src", "memory://dst", options)
    assert "dst" not in MemoryStore.collections, "the target was created"
    done = copy("memory://src", "memory://dst", CopyOptions(state_dir=tmp_path / "state"))
    assert done.rows == 200 and done.access is None  # without the flag: copied, not applied
    assert "access" not in done.as_dict()


def test_no_entries_means_nothing_to_apply_and_the_copy_goes_on(tmp_path: Path) -> None:
    _source([])
    options = CopyOptions(state_dir=tmp_path / "state", apply_access=True)
    result = copy("memory://src", "memory://dst", options)
    assert result.rows == 200
    assert result.as_dict()["access"] == {
        "requested": True,
        "entries": 0,
        "applied": [],
        "not_applied": [],
        "note": "the source has no access entries: nothing to apply",
    }


def test_the_cli_says_it_in_one_line(tmp_path: Path) -> None:
    _source([AccessEntry(principal="reader", privileges=["SELECT"])])
    args = ["copy", "memory://src", "memory://dst", "--state-dir", str(tmp_path), "--quiet"]
    refused = CliRunner().invoke(app, [*args, "--apply-access", "--json"])
    assert refused.exit_code == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: --apply-access: memory:// cannot apply access entries")
    assert json.loads(refused.stdout)["error"] == "ConfigError"

    _source([])
    warned = CliRunner().invoke(app, [*args, "--apply-access", "--restart"])
    assert warned.exit_code == 0, warned.stderr
    assert "warning: --apply-access: the source has no access entries" in warned.stderr
    assert "access applied" in warned.stdout


def test_import_has_the_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["import", "--help"])
    assert "--apply-access" in result.output
