"""The plan model's errors, the state machine's refusals, and the runbook of a 10M plan."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from tests.datagen import make_batch, make_spec
from vecmigrate.cli.app import app
from vecmigrate.connectors.memory.connector import MemoryStore
from vecmigrate.errors import ConfigError
from vecmigrate.plan import Plan, PlanRunner, Refused
from vecmigrate.plan.estimate import estimate
from vecmigrate.plan.model import parse_duration
from vecmigrate.plan.state import PlanState

GOOD = """\
name: docs
source: memory://old
target: memory://new
strategy:
  kind: phased
  segment_field: tenant
  segments:
    - acme
    - {name: rest, rest: true}
rollback:
  keep_old_for: 7d
"""


def _load(tmp_path: Path, text: str) -> Plan:
    path = tmp_path / "migration.yaml"
    path.write_text(text)
    return Plan.load(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return str(info.value)


# -- model ------------------------------------------------------------------------------------
def test_a_good_plan_loads_with_defaults(tmp_path: Path) -> None:
    plan = _load(tmp_path, GOOD)
    assert plan.kind == "phased"
    assert [s.name for s in plan.strategy.segments] == ["acme", "rest"]  # type: ignore[union-attr]
    assert plan.rollback.keep_old_for == 7 * 86400
    assert plan.state_path == tmp_path / ".vecmigrate" / "plans" / "docs"
    assert plan.router_state == plan.state_path / "router.sqlite"


def test_errors_name_the_yaml_path_and_line(tmp_path: Path) -> None:
    text = GOOD.replace("segment_field: tenant", "segment_feild: tenant")
    msg = _error(tmp_path, text)
    assert "line 6, strategy.segment_feild: unknown setting (a typo?)" in msg
    assert "strategy.segment_field: Field required" in msg

    msg = _error(tmp_path, GOOD.replace("keep_old_for: 7d", "keep_old_for: a week"))
    assert re.search(r"line 11, rollback\.keep_old_for: 'a week' is not a duration", msg)

    msg = _error(tmp_path, GOOD.replace("    - acme\n", "    - {name: acme, from: 1, to: 9}\n"))
    assert "strategy: from/to segments need segment_field: id" in msg

    msg = _error(tmp_path, GOOD.replace("kind: phased", "kind: big-bagn"))
    assert "strategy: unknown strategy kind: use one of big-bang, blue-green" in msg

    routed = GOOD.replace("rollback:", "routing:\n  steps: [10, 5, 100]\nrollback:")
    assert "routing.steps: Value error" not in _error(tmp_path, routed)
    assert "routing.steps: traffic steps must increase" in _error(tmp_path, routed)


def test_secrets_are_refused_in_a_plan(tmp_path: Path) -> None:
    text = GOOD.replace("memory://new", "pgvector://app:hunter2@db:5432/v?table=t")
    msg = _error(tmp_path, text)
    assert "line 3, target:" in msg and "password" in msg and "hunter2" not in msg
    text = GOOD.replace("memory://new", "qdrant://h:6333?collection=c&api_key=abc")
    assert "api_key_env=VARNAME" in _error(tmp_path, text)


def test_durations() -> None:
    assert parse_duration("36h") == 36 * 3600
    assert parse_duration("2w") == 14 * 86400
    assert parse_duration(90) == 90.0
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_a_changed_plan_cannot_reuse_the_state(tmp_path: Path) -> None:
    plan = _load(tmp_path, GOOD)
    with PlanState(plan.state_path) as state:
        state.check_fingerprint(plan.fingerprint(), "tester")
    other = _load(tmp_path, GOOD.replace("memory://new", "memory://elsewhere"))
    with PlanState(other.state_path) as state, pytest.raises(ConfigError, match="target"):
        state.check_fingerprint(other.fingerprint(), "tester")


# -- state machine ----------------------------------------------------------------------------
BIG_BANG = """\
name: bb
source: memory://old
target: memory://new
strategy: {kind: big-bang}
validation: {queries: 10, k: 5}
rollback: {rehearsal_rows: 50, keep_old_for: 1h}
"""


def _memory_source(n: int = 400) -> None:
    spec = make_spec(dim=8)
    MemoryStore.put("old", spec, pa.Table.from_batches([make_batch(spec, 0, n)]))


def test_steps_refuse_to_run_out_of_order(tmp_path: Path) -> None:
    _memory_source()
    runner = PlanRunner(_load(tmp_path, BIG_BANG), actor="tester")
    with pytest.raises(Refused, match="cutover refused: step 'preflight' must pass first"):
        runner.cutover()
    with pytest.raises(Refused, match="decommission refused: step 'preflight' must pass first"):
        runner.decommission("bb")
    with pytest.raises(ConfigError, match="no step 'imprt'; its steps are: preflight, "):
        runner.run(until="imprt")
    with pytest.raises(ConfigError, match="nothing to roll back"):
        runner.rollback("test")

    out = runner.run(until="export")
    assert out.performed == ["preflight", "backup-target", "export"]
    assert out.stopped_at == "export"
    out = runner.run()
    assert out.performed == ["import", "validate"] and out.stopped_at == "switch"
    assert out.next_command == "vecmigrate cutover"
    with pytest.raises(Refused, match="not been rehearsed"):
        runner.cutover()
    with pytest.raises(
        Refused, match="the next step is 'switch', performed by `vecmigrate cutover`"
    ):
        runner.decommission("bb")
    assert runner.rehearse().evidence["passed"] is True
    assert runner.cutover().performed == ["switch"]
    with pytest.raises(Refused, match="backup window is open until"):
        runner.decommission("bb")
    audit = runner.status()["audit"]
    assert all(e["actor"] == "tester" for e in audit)
    assert [e["event"] for e in audit][-2:] == ["step-passed", "switch"] or "switch" in [
        e["event"] for e in audit
    ]

    back = runner.rollback("smoke test failed")
    assert back.evidence["router"] == {"from": "new-only", "to": "old-only"}
    status = runner.status()
    assert status["next_step"] == "validate"  # proven again before traffic moves again
    assert (tmp_path / ".vecmigrate" / "plans" / "bb" / "report.html").exists()


def test_a_second_command_waits_for_the_first(tmp_path: Path) -> None:
    plan = _load(tmp_path, BIG_BANG)
    with PlanState(plan.state_path) as state:
        state.lock("run")
        with PlanState(plan.state_path) as other, pytest.raises(ConfigError, match="pid"):
            other.lock("cutover")


# -- estimate and runbook ---------------------------------------------------------------------
TEN_MILLION = """\
name: catalog
source: pgvector://app@db.internal:5432/shop?table=products
target: qdrant://qdrant.internal:6333?collection=products
strategy: {kind: blue-green, alias: products}
embedding: {model: "openai:text-embedding-3-small"}
rollback: {keep_old_for: 14d}
schedule: {start: 2027-01-04, review_days: 2}
estimate:
  vectors: 10000000
  dim: 768
  metadata_bytes_per_vector: 512
  read_rate: 20000
  write_rate: 5000
  tokens_per_vector: 300
  usd_per_mtok: 0.02
  embed_rate: 2500
  storage_usd_per_gb_month: 0.25
  new_instance_usd_per_hour: 2.5
  worker_usd_per_hour: 0.8
  index_overhead: 1.5
"""


def test_estimate_of_a_ten_million_plan(tmp_path: Path) -> None:
    plan = _load(tmp_path, TEN_MILLION)
    est = estimate(plan)
    hours = {p["phase"]: p["hours"] for p in est["phases"]}
    copy_h = 10_000_000 / 2_500 / 3600  # bounded by the embedding rate
    validate_h = 2 * 10_000_000 / 20_000 / 3600
    assert hours["copy with re-embedding"] == pytest.approx(copy_h, abs=1e-3)
    assert hours["validate"] == pytest.approx(validate_h, abs=1e-3)
    assert hours["backup window (old side kept); monitor"] == 14 * 24
    costs = {c["item"]: c["usd"] for c in est["costs"]}
    assert costs["re-embedding"] == 60.00  # 3e9 tokens x 0.02 USD per 1M
    overlap_h = est["total_hours"] - 48  # from the end of the review to the drop
    assert costs["double infrastructure"] == pytest.approx(2.5 * overlap_h, abs=0.01)
    machine_h = sum(p["hours"] for p in est["phases"] if p["machine"])
    assert costs["compute"] == pytest.approx(0.8 * machine_h, abs=0.01)
    gb = 10_000_000 * (768 * 4 + 512) / 1e9
    assert costs["storage"] == pytest.approx(gb * 1.5 * 0.25 * overlap_h / 24 / 30, abs=0.01)
    assert est["total_usd"] == pytest.approx(sum(costs.values()), abs=0.01)
    assert est["inputs"]["vectors"] == {"value": 10_000_000, "source": "stated"}


def test_plan_writes_a_runbook_for_a_ten_million_plan(tmp_path: Path) -> None:
    path = tmp_path / "migration.yaml"
    path.write_text(TEN_MILLION)
    out = tmp_path / "runbook.md"
    result = CliRunner().invoke(
        app, ["plan", str(path), "--format", "md", "--offline", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    md = out.read_text()
    assert md.startswith("# Migration runbook: catalog")
    weeks = re.findall(r"^\| week (\d+) \| (\S+) to (\S+) \|", md, re.M)
    assert [w[0] for w in weeks] == [str(i) for i in range(1, len(weeks) + 1)]
    assert len(weeks) >= 3 and weeks[0][1] == "2027-01-04" and weeks[1][1] == "2027-01-11"
    assert "| week 1 | 2027-01-04 to 2027-01-10 | review the runbook" in md
    for item in ("double infrastructure", "re-embedding", "compute", "storage"):
        assert re.search(rf"^\| {item} \| .+ \| [\d,]+\.\d\d \|$", md, re.M), item
    assert "| re-embedding | 3,000,000,000 tokens x 0.02 USD per 1M tokens | 60.00 |" in md
    assert "| **total** |" in md
    assert "`switch` Switch traffic to the new side" in md
    assert "`vecmigrate cutover migration.yaml`" in md
    assert "The alias `products` is switched" in md
    assert "cannot change an application's own configuration" in md
    assert "| vectors | 10000000 | stated |" in md


def test_plan_json_lists_steps_with_pass_conditions(tmp_path: Path) -> None:
    path = tmp_path / "migration.yaml"
    path.write_text(TEN_MILLION)
    result = CliRunner().invoke(app, ["plan", str(path), "--offline", "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = yaml.safe_load(result.output)
    names = [s["name"] for s in data["steps"]]
    assert names == [
        "preflight",
        "backup-target",
        "create-green",
        "copy",
        "validate",
        "switch",
        "decommission",
    ]
    assert all(s["passes_when"] for s in data["steps"])
    assert data["checks"] is None


PARALLEL = """\
name: pr
source: memory://old
target: memory://new
strategy: {kind: parallel-run}
validation: {queries: 10, k: 5}
routing: {steps: [100], shadow_for: 1s, probe_queries: 25}
rollback: {rehearsal_rows: 50, min_samples: 5, max_latency_ratio: null}
"""


def test_holds_and_the_rollback_acknowledgement(tmp_path: Path) -> None:
    import time

    from vecmigrate.plan import StepFailed

    _memory_source()
    runner = PlanRunner(_load(tmp_path, PARALLEL), actor="tester")
    out = runner.run()
    assert out.stopped_at == "shadow" and "holds for 1s" in out.reason
    assert runner.run().reason.startswith("step 'shadow' holds until")
    time.sleep(1.1)
    out = runner.run()
    assert out.performed == ["shadow"] and out.stopped_at == "traffic-100"
    shadow = runner.status()["steps"][7]
    assert shadow["name"] == "shadow" and shadow["evidence"]["metrics"]["parity_mean_overlap"] == 1

    back = runner.rollback("latency seen by the team")
    assert back.evidence["router"] == {"from": "shadow", "to": "dual-write"}
    assert back.evidence["steps_reset"] == ["validate", "shadow"]
    with pytest.raises(StepFailed, match="run again with --after-rollback"):
        runner.run()
    out = runner.run(after_rollback=True)
    assert out.stopped_at == "shadow"


def test_re_embedding_is_refused_where_dual_writes_carry_old_vectors(tmp_path: Path) -> None:
    text = PARALLEL + 'embedding: {model: "openai:text-embedding-3-small"}\n'
    assert "re-embed with big-bang or blue-green" in _error(tmp_path, text)


def test_a_target_with_rows_is_backed_up_before_the_plan_writes_into_it(tmp_path: Path) -> None:
    _memory_source()
    spec = make_spec(dim=8)
    MemoryStore.put("new", spec, pa.Table.from_batches([make_batch(spec, 1_000, 50)]))
    runner = PlanRunner(_load(tmp_path, BIG_BANG), actor="tester")
    runner.run(until="backup-target")
    evidence = runner.status()["steps"][1]["evidence"]
    assert evidence["rows"] == 50
    folder = Path(evidence["backup"])
    assert folder == tmp_path / ".vecmigrate" / "plans" / "bb" / "backups" / "target-before"
    assert (folder / "manifest.json").exists()


def test_plan_reports_drift_of_an_existing_target(tmp_path: Path) -> None:
    from vecmigrate.plan.checks import inspect_sides

    _memory_source()
    other = make_spec(dim=4)
    MemoryStore.put("new", other, pa.Table.from_batches([make_batch(other, 0, 10)]))
    found = inspect_sides(_load(tmp_path, BIG_BANG))
    drift = {d["what"]: d for d in found["target"]["drift"]}
    assert drift["vector vector dimension"] == {
        "what": "vector vector dimension",
        "plan": 8,
        "target": 4,
        "blocking": True,
    }
    assert any(
        "does not fit the plan: vector vector dimension: plan 8, target 4" in p
        for p in found["problems"]
    )


BLUE_GREEN_SYNC = """\
name: bg
source: {source}
target: memory://green
strategy: {{kind: blue-green, sync: {sync}}}
"""


@pytest.mark.parametrize(
    ("source", "sync", "expected"),
    [
        ("memory://blue", "logical", "memory:// has none (sources with one: pgvector"),
        ("lancedb:///{tmp}/db?table=t", "logical", "lancedb:// offers lance, poll"),
        ("lancedb:///{tmp}/db?table=t", "poll", "sync: poll needs poll_field"),
    ],
)
def test_plan_checks_the_sync_kind_against_the_source(
    tmp_path: Path, source: str, sync: str, expected: str
) -> None:
    from vecmigrate.connectors.registry import connect
    from vecmigrate.plan.checks import inspect_sides

    source = source.format(tmp=tmp_path.as_posix().lstrip("/"))
    with connect(source) as conn:
        conn.create(make_spec(dim=4))
        conn.upsert(make_batch(make_spec(dim=4), 0, 3))
    plan = _load(tmp_path, BLUE_GREEN_SYNC.format(source=source, sync=sync))
    problems = inspect_sides(plan)["problems"]
    assert any(expected in p for p in problems), problems
