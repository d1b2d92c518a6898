"""The README's support table and command list match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vecmigrate.cli.app import app
from vecmigrate.cli.systems_cli import describe_systems, support_table_markdown

README = Path(__file__).parents[2] / "README.md"


def test_support_table_is_generated_from_capabilities() -> None:
    rows = describe_systems()
    if not all(r["installed"] for r in rows):
        pytest.skip("every connector client must be installed to compare the whole table")
    text = README.read_text()
    block = re.search(
        r"<!-- support-table:start -->\n(.*?)\n<!-- support-table:end -->", text, re.S
    )
    assert block is not None
    assert block.group(1).strip() == support_table_markdown(rows).strip()


def test_every_command_is_documented_and_has_json() -> None:
    text = README.read_text()
    names = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback]
    assert {"inspect", "copy", "export", "import", "validate", "sync", "serve"} <= set(names)
    for name in names:
        assert f"vecmigrate {name}" in text, f"README does not document 'vecmigrate {name}'"
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0
        assert "--json" in result.output, f"'vecmigrate {name}' has no --json"
