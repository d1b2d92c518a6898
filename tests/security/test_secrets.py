"""Secrets never land anywhere, and access control moves as data only.

A real export (pgvector -> Parquet), import (Parquet -> pgvector) and ``validate --report``
run as separate processes with ``--verbose``, logged in as a role whose password is a
distinctive secret (from PGPASSWORD, then from ``?password_file=``). Every byte they leave
behind (stdout, stderr, the checkpoint folder, the dataset's manifest and shards, the HTML
report) is searched for the secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect

psycopg = pytest.importorskip("psycopg")

SECRET = "Zq7-distinctive-SECRET-4f1c9e"
WRONG = "Wr0ng-distinctive-GUESS-88aa"
ROLE = "secret_tester"
READER = "secret_reader"


@pytest.fixture(scope="module")
def secret_role(postgres_engine: Any) -> Iterator[Any]:
    """A login role whose password is SECRET, allowed to create tables in public."""
    pg = postgres_engine
    kwargs = {"host": pg.host, "port": pg.port, "user": pg.user, "dbname": pg.database}
    with psycopg.connect(**kwargs, password=pg.password, autocommit=True) as conn:
        for role in (ROLE, READER):
            conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(
            psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                psycopg.sql.Identifier(ROLE), psycopg.sql.Literal(SECRET)
            )
        )
        conn.execute(f"CREATE ROLE {READER} NOLOGIN")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {ROLE}")
    yield pg
    with psycopg.connect(**kwargs, password=pg.password, autocommit=True) as conn:
        for table in ("secret_src", "secret_dst", "secret_dst2"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"REVOKE ALL ON SCHEMA public FROM {ROLE}")
        for role in (ROLE, READER):
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def _uri(pg: Any, table: str, **options: str) -> str:
    query = "&".join([f"table={table}", *(f"{k}={quote(v)}" for k, v in options.items())])
    return f"pgvector://{ROLE}@{pg.host}:{pg.port}/{pg.database}?{query}"


def _env(password: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    if password is not None:
        env["PGPASSWORD"] = password
    return env


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vecmigrate", "--verbose", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def _leaks(root: Path, secret: str) -> list[str]:
    """Files under ``root`` holding the secret (plain or URL-quoted), as relative paths."""
    needles = {secret.encode(), quote(secret, safe="").encode()}
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(n in data for n in needles):
                found.append(str(path.relative_to(root)))
    return found


@pytest.fixture(scope="module")
def source_table(secret_role: Any) -> str:
    pg = secret_role
    spec = make_spec(dim=8)
    os.environ["VECMIGRATE_TEST_SECRET"] = SECRET
    try:
        with connect(_uri(pg, "secret_src", password_env="VECMIGRATE_TEST_SECRET")) as conn:
            conn.create(spec, IfExists.REPLACE)
            conn.upsert(make_batch(spec, 0, 3_000))
            conn.finalize(spec)
    finally:
        del os.environ["VECMIGRATE_TEST_SECRET"]
    kwargs = {"host": pg.host, "port": pg.port, "user": ROLE, "dbname": pg.database}
    with psycopg.connect(**kwargs, password=SECRET, autocommit=True) as conn:
        conn.execute(f"GRANT SELECT ON secret_src TO {READER}")
    return "secret_src"


def test_no_artifact_of_a_run_holds_the_password(
    secret_role: Any, source_table: str, tmp_path: Path
) -> None:
    pg = secret_role
    work = tmp_path / "work"
    work.mkdir()
    state, dataset, report = work / "state", work / "dataset", work / "report.html"
    env = _env(SECRET)
    runs = [
        _cli(["export", _uri(pg, source_table), str(dataset), "--state-dir", str(state),
              "--json"], env, work),
        _cli(["import", str(dataset), _uri(pg, "secret_dst"), "--state-dir", str(state),
              "--json"], env, work),
        _cli(["validate", _uri(pg, source_table), _uri(pg, "secret_dst"), "--queries", "10",
              "--report", str(report), "--json"], env, work),
        _cli(["inspect", _uri(pg, source_table), "--json"], env, work),
    ]  # fmt: skip
    secret_file = tmp_path / "pg-password"  # outside the searched folder: it holds the secret
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    from_file = _uri(pg, source_table, password_file=str(secret_file))
    runs.append(
        _cli(["export", from_file, str(work / "dataset2"), "--state-dir", str(state), "--json"],
             _env(None), work)
    )  # fmt: skip
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert SECRET not in run.stdout + run.stderr
    assert report.exists() and (dataset / "manifest.json").exists()
    assert any(state.iterdir())
    assert any(" INFO " in run.stderr for run in runs), "--verbose logged nothing"
    assert _leaks(work, SECRET) == []
    (work / "planted").write_text(f"x{SECRET}x")  # the search does find a secret
    assert _leaks(work, SECRET) == ["planted"]
    # the tests' own view of what was written: redacted URIs only
    summary = json.loads(runs[0].stdout)
    assert "password" not in summary["source"]


def test_refused_credentials_are_not_echoed(
    secret_role: Any, source_table: str, tmp_path: Path
) -> None:
    pg = secret_role
    state = tmp_path / "state"
    out = tmp_path / "out"
    run = _cli(
        ["export", _uri(pg, source_table), str(out), "--state-dir", str(state), "--json"],
        _env(WRONG),
        tmp_path,
    )
    assert run.returncode != 0
    assert "credentials refused" in run.stderr
    assert WRONG not in run.stdout + run.stderr
    assert json.loads(run.stdout)["error"] == "AuthError"
    assert _leaks(tmp_path, WRONG) == []


def test_grants_are_exported_as_data_and_not_applied_unasked(
    secret_role: Any, source_table: str, tmp_path: Path
) -> None:
    pg = secret_role
    state, dataset = tmp_path / "state", tmp_path / "dataset"
    env = _env(SECRET)
    export = _cli(
        ["export", _uri(pg, source_table), str(dataset), "--state-dir", str(state)], env, tmp_path
    )
    assert export.returncode == 0, export.stderr
    manifest = json.loads((dataset / "manifest.json").read_text())
    access = {a["principal"]: a["privileges"] for a in manifest["access"]}
    assert "SELECT" in access.get(READER, []), manifest["access"]
    assert ROLE in access  # the owner's own privileges are described too
    assert SECRET not in json.dumps(manifest)

    imported = _cli(
        ["import", str(dataset), _uri(pg, "secret_dst2"), "--state-dir", str(state)],
        env,
        tmp_path,
    )
    assert imported.returncode == 0, imported.stderr
    kwargs = {"host": pg.host, "port": pg.port, "user": ROLE, "dbname": pg.database}
    with psycopg.connect(**kwargs, password=SECRET, autocommit=True) as conn:
        row = conn.execute(
            "SELECT has_table_privilege(%s, 'secret_dst2', 'SELECT')", (READER,)
        ).fetchone()
    assert row is not None and row[0] is False, "a grant was applied without being asked for"


@pytest.mark.xfail(
    reason="re-applying access entries (--apply-access) is not implemented: the connector "
    "contract has no operation for it yet (pgvector describes grants, applies none)",
    strict=True,
)
def test_grants_are_reapplied_on_request(
    secret_role: Any, source_table: str, tmp_path: Path
) -> None:
    pg = secret_role
    state, dataset = tmp_path / "state", tmp_path / "dataset"
    env = _env(SECRET)
    _cli(["export", _uri(pg, source_table), str(dataset), "--state-dir", str(state)], env, tmp_path)
    run = _cli(
        ["import", str(dataset), _uri(pg, "secret_dst3"), "--state-dir", str(state),
         "--apply-access"], env, tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    kwargs = {"host": pg.host, "port": pg.port, "user": ROLE, "dbname": pg.database}
    with psycopg.connect(**kwargs, password=SECRET, autocommit=True) as conn:
        row = conn.execute(
            "SELECT has_table_privilege(%s, 'secret_dst3', 'SELECT')", (READER,)
        ).fetchone()
    assert row is not None and row[0] is True
