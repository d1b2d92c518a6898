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
        tables = ("secret_src", "secret_dst", "secret_dst2", "secret_dst3", "secret_dst4")
        for table in (*tables, "secret_dst5"):
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


def _exported(pg: Any, table: str, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """Export ``table`` to a dataset (state dir, dataset dir, the env that authenticates)."""
    state, dataset = tmp_path / "state", tmp_path / "dataset"
    env = _env(SECRET)
    export = _cli(
        ["export", _uri(pg, table), str(dataset), "--state-dir", str(state)], env, tmp_path
    )
    assert export.returncode == 0, export.stderr
    return state, dataset, env


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


def test_a_password_from_the_keyring_leaves_no_trace(
    secret_role: Any, source_table: str, tmp_path: Path
) -> None:
    """A real copy and export logged in with a password from the system keyring."""
    pytest.importorskip("keyring", reason="keyring is not installed (vecmigrate[keyring])")
    alt_file = pytest.importorskip("keyrings.alt.file", reason="keyrings.alt is not installed")
    pg = secret_role
    data_home = tmp_path / "keyring-data"  # outside the searched folder: it holds the secret
    backend = alt_file.PlaintextKeyring()
    backend.file_path = str(data_home / "python_keyring" / backend.filename)
    backend.set_password("vecmigrate-test", ROLE, SECRET)
    env = {
        **_env(None),
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "XDG_DATA_HOME": str(data_home),
        "XDG_CONFIG_HOME": str(tmp_path / "keyring-config"),
    }
    work = tmp_path / "work"
    work.mkdir()
    state, dataset = work / "state", work / "dataset"
    source = _uri(pg, source_table, password_keyring="vecmigrate-test")
    target = _uri(pg, "secret_dst5", password_keyring=f"vecmigrate-test/{ROLE}")
    runs = [
        _cli(["copy", source, target, "--state-dir", str(state), "--json"], env, work),
        _cli(["export", source, str(dataset), "--state-dir", str(state), "--json"], env, work),
        _cli(["validate", source, target, "--queries", "5", "--report", str(work / "r.html"),
              "--json"], env, work),
    ]  # fmt: skip
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert SECRET not in run.stdout + run.stderr
    copied = json.loads(runs[0].stdout)
    assert copied["rows"] == copied["target_count"] == 3_000
    assert "password_keyring=vecmigrate-test" in copied["source"]  # the reference, not the secret
    assert (dataset / "manifest.json").exists() and any(state.glob("*.sqlite"))
    assert _leaks(work, SECRET) == []

    missing = _cli(
        ["inspect", _uri(pg, source_table, password_keyring="vecmigrate-test/nobody"), "--json"],
        env,
        work,
    )
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["error"] == "ConfigError"
    line = missing.stderr.strip()
    assert "\n" not in line and "service 'vecmigrate-test', user 'nobody'" in line
    assert SECRET not in missing.stdout + missing.stderr


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
    state, dataset, env = _exported(pg, source_table, tmp_path)
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


def test_grants_are_reapplied_on_request(
    secret_role: Any, source_table: str, tmp_path: Path
) -> None:
    pg = secret_role
    state, dataset, env = _exported(pg, source_table, tmp_path)
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
    assert "access applied" in run.stdout and f"SELECT to {READER}" in run.stdout
    assert SECRET not in run.stdout + run.stderr


def _with_access(dataset: Path, access: list[dict[str, Any]]) -> None:
    """Give an exported dataset other access entries (as a manifest from elsewhere might)."""
    path = dataset / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["access"] = manifest["spec"]["access"] = access
    path.write_text(json.dumps(manifest))


def test_a_role_missing_on_the_target_is_a_warning_not_a_crash(
    secret_role: Any, source_table: str, tmp_path: Path
) -> None:
    pg = secret_role
    state, dataset, env = _exported(pg, source_table, tmp_path)
    _with_access(
        dataset,
        [
            {"principal": READER, "privileges": ["SELECT"], "resource": "public.secret_src"},
            {"principal": "ghost_role", "privileges": ["SELECT", "UPDATE"]},
            {"principal": 'odd"; DROP TABLE secret_src; --', "privileges": ["SELECT"]},
            {"principal": READER, "privileges": ["FLY"]},
        ],
    )
    run = _cli(
        ["import", str(dataset), _uri(pg, "secret_dst4"), "--state-dir", str(state),
         "--apply-access", "--json"], env, tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["rows"] == 3_000
    access = summary["access"]
    assert [(g["principal"], g["privilege"]) for g in access["applied"]] == [(READER, "SELECT")]
    missing = {(g["principal"], g["privilege"]): g["reason"] for g in access["not_applied"]}
    assert missing == {
        ("ghost_role", "SELECT"): "the role does not exist on the target",
        ("ghost_role", "UPDATE"): "the role does not exist on the target",
        ('odd"; DROP TABLE secret_src; --', "SELECT"): "the role does not exist on the target",
        (READER, "FLY"): "not a PostgreSQL table privilege",
    }
    warnings = [w for w in run.stderr.splitlines() if w.startswith("warning: access not applied")]
    assert len(warnings) == 4
    assert any("SELECT to role 'ghost_role'" in w and "does not exist" in w for w in warnings)
    kwargs = {"host": pg.host, "port": pg.port, "user": ROLE, "dbname": pg.database}
    with psycopg.connect(**kwargs, password=SECRET, autocommit=True) as conn:
        alive = conn.execute("SELECT to_regclass('secret_src')").fetchone()
        granted = conn.execute(
            "SELECT has_table_privilege(%s, 'secret_dst4', 'SELECT')", (READER,)
        ).fetchone()
    assert alive is not None and alive[0] is not None, "an identifier reached SQL unquoted"
    assert granted is not None and granted[0] is True


def test_a_grant_the_connected_user_may_not_give_is_reported(secret_role: Any) -> None:
    """PostgreSQL only warns when a non-owner grants: the warning must not pass for success."""
    from vecmigrate.connectors.pgvector.access import grant_entries
    from vecmigrate.spec import AccessEntry

    pg = secret_role
    admin = {"host": pg.host, "port": pg.port, "user": pg.user, "dbname": pg.database}
    with psycopg.connect(**admin, password=pg.password, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS secret_not_mine")
        conn.execute("CREATE TABLE secret_not_mine (id text PRIMARY KEY)")
        conn.execute(f"GRANT SELECT ON secret_not_mine TO {ROLE}")  # without GRANT OPTION
    try:
        kwargs = {**admin, "user": ROLE}
        with psycopg.connect(**kwargs, password=SECRET, autocommit=True) as conn:
            report = grant_entries(
                conn,
                "public",
                "secret_not_mine",
                [AccessEntry(principal=READER, privileges=["SELECT", "select"])],
                secret=SECRET,
            )
        (grant,) = report.grants  # "select" is the same privilege
        assert (grant.principal, grant.privilege, grant.applied) == (READER, "SELECT", False)
        assert grant.reason is not None and "may not grant it" in grant.reason
        assert "no privileges were granted" in grant.reason
    finally:
        with psycopg.connect(**admin, password=pg.password, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS secret_not_mine")


def test_apply_access_to_a_target_that_cannot_is_refused_before_any_row_moves(
    secret_role: Any, source_table: str, tmp_path: Path
) -> None:
    pg = secret_role
    state, out = tmp_path / "state", tmp_path / "out"
    run = _cli(
        ["copy", _uri(pg, source_table), f"parquet://{out}", "--state-dir", str(state),
         "--apply-access"], _env(SECRET), tmp_path,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --apply-access: parquet:// cannot apply access entries")
    assert "stopped before copying any row" in line
    assert not out.exists(), "the target was touched"
