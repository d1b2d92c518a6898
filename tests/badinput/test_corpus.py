"""Run every bad-input case through the CLI: one clear line, a non-zero exit, input untouched."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.badinput.cases import CASES, Case, Context
from vecmigrate.cli.app import app


def snapshot(root: Path | None) -> dict[str, str]:
    """Every entry under ``root`` (files by content, symlinks by where they point)."""
    if root is None or not root.exists():
        return {}
    paths = [root] if not root.is_dir() else sorted(root.rglob("*"))
    out: dict[str, str] = {}
    for p in paths:
        key = str(p.relative_to(root)) if p != root else "."
        if p.is_symlink():
            out[key] = "link:" + str(p.readlink())
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_gives_one_clear_line(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pg = request.getfixturevalue("postgres_engine") if case.needs == "postgres" else None
    run = case.build(Context(tmp_path, pg))
    before = snapshot(run.source)
    started = time.monotonic()
    result = CliRunner().invoke(app, run.args, env=run.env)
    elapsed = time.monotonic() - started
    try:
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"an exception escaped: {result.exception!r}\n{result.stderr}"
        )
        assert result.exit_code != 0, result.stdout
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
        line = lines[0]
        assert line.startswith("error: "), line
        for text in run.expect:
            assert text in line, f"{text!r} is not in: {line}"
        for text in run.forbid:
            assert text not in result.stdout + result.stderr, f"{text!r} leaked: {line}"
        assert snapshot(run.source) == before, "the input changed"
        # a mistake no retry can fix must not be retried (6 attempts take about 15 s)
        assert elapsed < 10, f"took {elapsed:.1f}s: retried an error that is not transient?"
    finally:
        if run.after is not None:
            run.after()


@pytest.mark.parametrize("name", ["jsonl_malformed_line", "unknown_uri_option", "password_in_uri"])
def test_json_output_carries_the_same_error(name: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == name)
    run = case.build(Context(tmp_path))
    result = CliRunner().invoke(app, [*run.args, "--json"], env=run.env)
    assert result.exit_code != 0
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and payload["exit_code"] == result.exit_code
    assert "\n" not in payload["message"]
    for text in run.expect:
        assert text in payload["message"]
    for text in run.forbid:
        assert text not in result.stdout + result.stderr
