"""Migration plans end to end on real engines, each with a crash injected mid-copy.

Each strategy runs as the user would run it: ``python -m vecmigrate run plan.yaml`` in a
subprocess, SIGKILLed while its copy step is writing, then ``run`` again to finish, then the
rehearsal, the cutover and (where the window allows) the decommission. The safety behaviours
(a failed validation stops the plan, a failed rehearsal blocks the cutover, a trigger after
the switch rolls back) run on the same engines.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from tests.datagen import make_batch, make_spec
from tests.engines import PostgresAddress
from vecmigrate.connectors import IfExists, connect
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType, Metric

DIM = 16
TENANTS = ["acme", "globex", "initech", "umbrella"]


# -- helpers -----------------------------------------------------------------------------------
def _spec(tenant: bool = False) -> CollectionSpec:
    spec = make_spec(dim=DIM, metric=Metric.COSINE)
    if tenant:
        spec.metadata.append(MetadataField(name="tenant", type=MetadataType.STRING))
    return spec


def _batch(spec: CollectionSpec, start: int, n: int) -> pa.RecordBatch:
    batch = make_batch(spec.model_copy(update={"metadata": spec.metadata[:4]}), start, n)
    if spec.metadata_field("tenant") is not None:
        tenants = pa.array([TENANTS[i % len(TENANTS)] for i in range(start, start + n)])
        batch = batch.append_column("tenant", tenants)
    return batch.cast(spec.arrow_schema())


def _fill(uri: str, n: int, *, tenant: bool = False, chunk: int = 5_000) -> None:
    spec = _spec(tenant)
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        for start in range(0, n, chunk):
            conn.upsert(_batch(spec, start, min(chunk, n - start)))
        conn.finalize(spec)


KEEP_OLD_S = 20  # the big-bang test's backup window


def _plan(path: Path, body: dict[str, Any]) -> Path:
    base: dict[str, Any] = {
        "copy": {"batch_size": 500, "workers": 2},
        "validation": {"queries": 20, "k": 5},
        "rollback": {
            "rehearsal_rows": 500,
            "keep_old_for": "3s",
            "max_latency_ratio": None,
            "min_samples": 10,
            "window": "5m",
        },
        "routing": {"probe_queries": 30},
        "monitor": {"queries": 20, "k": 5},
    }
    for key, value in body.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    base.setdefault("state_dir", str(path.parent / "state"))
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def _cli(*args: str, expect: int | None = 0, timeout: float = 300) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vecmigrate",
            *args,
            "--json",
            *(["--quiet"] if args[0] not in ("status", "plan") else []),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if expect is not None:
        assert proc.returncode == expect, (
            f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    lines = proc.stdout.strip()
    data: dict[str, Any] = json.loads(lines[lines.index("{") :]) if "{" in lines else {}
    data["_exit"] = proc.returncode
    data["_stderr"] = proc.stderr
    return data


def _ledger_rows(folder: Path) -> int:
    total = 0
    for ledger in folder.glob("copy-*.sqlite"):
        try:
            with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1) as db:
                total += int(
                    db.execute("SELECT COALESCE(SUM(rows), 0) FROM partitions").fetchone()[0]
                )
        except sqlite3.Error:
            continue
    return total


def _run_and_kill(plan: Path, ledgers: Path, at_rows: int, timeout: float = 120) -> None:
    """Start ``vecmigrate run``; SIGKILL it once the copy's ledger shows ``at_rows`` rows."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vecmigrate", "run", str(plan), "--quiet", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"run ended (exit {proc.returncode}) before the kill: {err}")
            if _ledger_rows(ledgers) >= at_rows:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                return
            time.sleep(0.01)
        raise AssertionError("the copy did not progress in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _steps(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in status["steps"]}


def _count(uri: str) -> int:
    with connect(uri) as conn:
        return conn.count()


# -- big bang: Chroma -> pgvector ---------------------------------------------------------------
def test_big_bang_chroma_to_pgvector(
    tmp_path: Path, chroma_server: Any, postgres_engine: PostgresAddress
) -> None:
    pytest.importorskip("chromadb")
    n = 6_000
    source = chroma_server.uri("bigbang_docs")
    target = postgres_engine.uri("bigbang_docs")
    _fill(source, n)
    plan = _plan(
        tmp_path / "migration.yaml",
        {
            "name": "bigbang",
            "source": source,
            "target": target,
            "strategy": {"kind": "big-bang", "write_freeze": True},
            "copy": {"max_rows_per_s": 2_000},
            # long enough that the refusal below is still inside it on a loaded machine
            "rollback": {"keep_old_for": f"{KEEP_OLD_S}s"},
        },
    )
    _run_and_kill(plan, tmp_path / "state" / "copies" / "export", at_rows=1_500)
    status = _cli("status", str(plan))
    assert _steps(status)["export"]["status"] == "running"  # the crash left it in progress

    done = _cli("run", str(plan))
    assert done["stopped_at"] == "switch" and done["next_command"] == "vecmigrate cutover"
    steps = _steps(_cli("status", str(plan)))
    assert steps["export"]["evidence"]["resumed"] is True
    assert steps["export"]["evidence"]["rows"] == n
    assert steps["validate"]["evidence"]["verdict"] == "pass"
    assert _count(target) == n

    refused = _cli("cutover", str(plan), expect=2)
    assert "rehears" in refused["message"]
    rehearsal = _cli("rollback", str(plan), "--rehearse")
    assert rehearsal["evidence"]["passed"] is True
    switched = _cli("cutover", str(plan))
    window_ends = time.time() + KEEP_OLD_S  # the switch happened before this moment
    assert "cannot change their configuration" in switched["evidence"]["team_must"]
    assert switched["evidence"]["router_phase"] == "new-only"

    early = _cli("decommission", str(plan), "--confirm", "bigbang", expect=2)
    assert "backup window is open" in early["message"]
    time.sleep(max(0.0, window_ends - time.time()) + 0.2)
    unconfirmed = _cli("decommission", str(plan), expect=2)
    assert "--confirm bigbang" in unconfirmed["message"]
    gone = _cli("decommission", str(plan), "--confirm", "bigbang")
    assert gone["evidence"]["dropped"]
    with connect(source) as conn:
        assert not conn.exists()
    final = _cli("status", str(plan))
    assert final["next_step"] is None and final["router_phase"] == "old-retired"
    events = [e["event"] for e in final["audit"]]
    assert "switch" in events and "decommissioned" in events
    assert (tmp_path / "state" / "report.html").read_text().count("Validations") == 1


# -- blue-green: pgvector -> Qdrant Edge with an alias switch; a trigger after it rolls back ----
def test_blue_green_pgvector_to_qdrant_edge(
    tmp_path: Path, postgres_engine: PostgresAddress
) -> None:
    pytest.importorskip("qdrant_edge")
    n = 20_000
    source = postgres_engine.uri("bg_items")
    edge = tmp_path / "edge"
    edge.mkdir()
    target = f"qdrant+edge://{edge}/items-green"
    _fill(source, n)
    plan = _plan(
        tmp_path / "migration.yaml",
        {
            "name": "bluegreen",
            "source": source,
            "target": target,
            "strategy": {"kind": "blue-green", "alias": "items"},
            "copy": {"max_rows_per_s": 8_000, "batch_size": 1_000},
            "rollback": {"max_count_drift": 0.01},
        },
    )
    checked = _cli("plan", str(plan))
    assert checked["checks"]["problems"] == [] and checked["checks"]["target"]["alias_support"]
    assert checked["measured"]["read_rate"] > 0 and checked["estimate"]["inputs"]["vectors"] == {
        "value": n,
        "source": "counted",
    }
    _run_and_kill(plan, tmp_path / "state" / "copies" / "copy", at_rows=4_000)
    done = _cli("run", str(plan))
    assert done["stopped_at"] == "switch"
    steps = _steps(_cli("status", str(plan)))
    assert steps["copy"]["evidence"]["resumed"] is True
    assert steps["copy"]["evidence"]["rows"] == n
    assert _cli("rollback", str(plan), "--rehearse")["evidence"]["passed"] is True
    switched = _cli("cutover", str(plan))
    assert switched["evidence"]["alias"]["name"] == "items"
    assert (edge / "items").is_symlink() and os.readlink(edge / "items") == "items-green"
    assert _count(f"qdrant+edge://{edge}/items") == n  # the alias opens green

    # green loses rows after the switch: the monitor's count-drift trigger rolls back
    with connect(target) as green:
        green.delete([f"doc-{i:07d}" for i in range(500)])
    watched = _cli("monitor", str(plan), "--once", expect=3)
    assert watched["evidence"]["rolled_back"]["router"]["to"] == "old-only"
    status = _cli("status", str(plan))
    assert status["router_phase"] == "old-only" and status["rolled_back"]
    assert _steps(status)["switch"]["status"] == "pending"
    assert _steps(status)["validate"]["status"] == "pending"  # must validate again
    # re-validation finds the lost rows: the plan stops before the switch
    again = _cli("run", str(plan), expect=3)
    assert "validation failed" in again["message"]
    assert "must pass first" in _cli("cutover", str(plan), expect=2)["message"]
    report = (tmp_path / "state" / "report.html").read_text()
    assert "Parity over time" in report and "Rollbacks" in report and "Incidents" in report


# -- aliases: a PostgreSQL view, a Qdrant alias (local mode) ----------------------------------
def test_alias_switches(tmp_path: Path, postgres_engine: PostgresAddress) -> None:
    blue, green = postgres_engine.uri("alias_blue"), postgres_engine.uri("alias_green")
    _fill(blue, 300)
    _fill(green, 200)
    with connect(green) as conn:
        assert conn.switch_alias("alias_items") is None  # type: ignore[attr-defined]
    assert _count(postgres_engine.uri("alias_items")) == 200
    with connect(blue) as conn:
        previous = conn.switch_alias("alias_items")  # type: ignore[attr-defined]
    assert previous is not None and previous.endswith("alias_green")
    assert _count(postgres_engine.uri("alias_items")) == 300
    with connect(blue) as conn, pytest.raises(Exception, match="not an alias view"):
        conn.switch_alias("alias_green")  # type: ignore[attr-defined]

    pytest.importorskip("qdrant_client")
    root = tmp_path / "qdrant"
    for name, n in (("blue", 30), ("green", 20)):
        _fill(f"qdrant+local://{root}?collection={name}", n)
    with connect(f"qdrant+local://{root}?collection=green") as conn:
        assert conn.switch_alias("items") is None  # type: ignore[attr-defined]
        assert conn.describe().aliases == ["items"]
        conn.close()
    with connect(f"qdrant+local://{root}?collection=blue") as conn:
        assert conn.switch_alias("items") == "green"  # type: ignore[attr-defined]
        assert conn.describe().aliases == ["items"]
        conn.drop_alias("items")  # type: ignore[attr-defined]
        assert conn.describe().aliases == []


# -- parallel run: pgvector -> Milvus Lite with traffic steps -----------------------------------
def test_parallel_run_pgvector_to_milvus(tmp_path: Path, postgres_engine: PostgresAddress) -> None:
    pytest.importorskip("pymilvus")
    n = 8_000
    source = postgres_engine.uri("pr_items")
    target = f"milvus+lite://{tmp_path}/pr.db?collection=items"
    _fill(source, n)
    plan = _plan(
        tmp_path / "migration.yaml",
        {
            "name": "parallel",
            "source": source,
            "target": target,
            "strategy": {"kind": "parallel-run"},
            "copy": {"max_rows_per_s": 3_000},
            "routing": {"steps": [10, 50, 100]},
        },
    )
    _run_and_kill(plan, tmp_path / "state" / "copies" / "copy", at_rows=2_000)
    done = _cli("run", str(plan))
    assert done["stopped_at"] == "traffic-100"
    status = _cli("status", str(plan))
    steps = _steps(status)
    assert steps["copy"]["evidence"]["resumed"] is True
    assert status["router_phase"] == "canary"
    for name in ("shadow", "traffic-10", "traffic-50"):
        metrics = steps[name]["evidence"]["metrics"]
        assert metrics["totals"]["new_errors"] == 0
    assert steps["shadow"]["evidence"]["metrics"]["parity_mean_overlap"] >= 0.9
    assert _cli("rollback", str(plan), "--rehearse")["evidence"]["passed"] is True
    _cli("cutover", str(plan))
    final = _cli("status", str(plan))
    assert final["router_phase"] == "new-only" and final["next_step"] == "decommission"
    phases = [e["evidence"].get("to") for e in _router_audit(tmp_path / "state" / "router.sqlite")]
    assert phases == ["dual-write", "shadow", "canary", "canary", "new-only"]


def _router_audit(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT event, evidence FROM audit ORDER BY seq").fetchall()
    return [{"event": r[0], "evidence": json.loads(r[1])} for r in rows if r[0] == "phase"]


# -- phased: LanceDB -> pgvector by a tenant field ----------------------------------------------
def test_phased_lancedb_to_pgvector_by_tenant(
    tmp_path: Path, postgres_engine: PostgresAddress
) -> None:
    pytest.importorskip("lancedb")
    n = 12_000
    source = f"lancedb://{tmp_path}/lance?table=items"
    target = postgres_engine.uri("phased_items")
    _fill(source, n, tenant=True)
    plan = _plan(
        tmp_path / "migration.yaml",
        {
            "name": "phased",
            "source": source,
            "target": target,
            "strategy": {
                "kind": "phased",
                "segment_field": "tenant",
                "segments": [
                    "acme",
                    {"name": "big-two", "values": ["globex", "initech"]},
                    {"name": "rest", "rest": True},
                ],
            },
            "copy": {"max_rows_per_s": 4_000},
            "rollback": {"max_count_drift": None},
        },
    )
    # acme holds 3,000 rows: killed half-way (at 3,000 the kill raced the step's end)
    _run_and_kill(plan, tmp_path / "state" / "copies" / "segment-acme", at_rows=1_500)
    done = _cli("run", str(plan))
    assert done["stopped_at"] == "cutover"
    status = _cli("status", str(plan))
    steps = _steps(status)
    assert steps["copy:acme"]["evidence"]["resumed"] is True
    for seg in ("acme", "big-two", "rest"):
        assert steps[f"validate:{seg}"]["evidence"]["verdict"] == "pass"
    assert steps["route:rest"]["evidence"]["segments_on_new"] == ["acme", "big-two", "rest"]
    assert status["router_phase"] == "canary"
    with connect(target) as conn:
        assert conn.count() == n
    assert _cli("rollback", str(plan), "--rehearse")["evidence"]["passed"] is True
    _cli("cutover", str(plan))
    assert _cli("status", str(plan))["router_phase"] == "new-only"


# -- safety: a failed validation stops the plan; a failed rehearsal blocks the cutover ----------
def test_failed_validation_and_failed_rehearsal_block_the_switch(
    tmp_path: Path, postgres_engine: PostgresAddress
) -> None:
    pytest.importorskip("lancedb")
    import psycopg
    from psycopg import sql

    from vecmigrate.errors import ConfigError
    from vecmigrate.plan import Plan, PlanRunner, StepFailed

    pg = postgres_engine
    _fill(pg.uri("ro_items"), 2_000)
    with psycopg.connect(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        dbname=pg.database,
        password=pg.password,
        autocommit=True,
    ) as conn:
        conn.execute("DROP ROLE IF EXISTS plan_reader")
        conn.execute(
            sql.SQL("CREATE ROLE plan_reader LOGIN PASSWORD {}").format(
                sql.Literal("reader-secret")
            )
        )
        conn.execute("GRANT SELECT ON ro_items TO plan_reader")
    os.environ["PLAN_READER_PW"] = "reader-secret"
    source = f"pgvector://plan_reader@{pg.host}:{pg.port}/{pg.database}?table=ro_items&password_env=PLAN_READER_PW"
    target = f"lancedb://{tmp_path}/lance?table=items"
    failing_check = f"{sys.executable} -c 'raise SystemExit(1)'"
    body = {
        "name": "safety",
        "source": source,
        "target": target,
        "strategy": {"kind": "big-bang"},
        "validation": {"check_cmds": [failing_check]},
    }
    path = _plan(tmp_path / "migration.yaml", body)
    runner = PlanRunner(Plan.load(path), actor="tester")
    with pytest.raises(StepFailed, match="validation failed: integration"):
        runner.run()
    status = runner.status()
    assert _steps(status)["validate"]["status"] == "failed"
    with pytest.raises(ConfigError, match="'validate' must pass first"):
        runner.cutover()

    body["validation"] = {"check_cmds": []}  # the smoke command is fixed
    runner = PlanRunner(Plan.load(_plan(path, body)), actor="tester")
    assert runner.run().stopped_at == "switch"
    # the old side is read-only for this role: the rollback path cannot be proven
    with pytest.raises(StepFailed, match="rollback rehearsal failed: scratch copy"):
        runner.rehearse()
    with pytest.raises(ConfigError, match="cutover blocked: the rollback rehearsal"):
        runner.cutover()
    audit = runner.status()["audit"]
    assert {"tester"} == {e["actor"] for e in audit}
    assert any(e["event"] == "rollback-rehearsal" and not e["evidence"]["passed"] for e in audit)
