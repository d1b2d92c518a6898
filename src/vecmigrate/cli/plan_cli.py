"""Plan commands: ``plan``, ``run``, ``status``, ``cutover``, ``rollback``, ``decommission``,
``monitor``. Each takes the ``migration.yaml`` and keeps its state beside it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vecmigrate.cli import output

PlanFile = Annotated[Path, typer.Argument(help="The plan (migration.yaml).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary.")]
Actor = Annotated[
    str | None,
    typer.Option("--actor", help="Who performs this, for the audit log (default: $USER)."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")]


def _runner(plan_file: Path, actor: str | None, quiet: bool, as_json: bool) -> Any:
    from vecmigrate.plan import Plan, PlanRunner

    def say(line: str) -> None:
        if not quiet and not (as_json and not sys.stderr.isatty()):
            output.stderr.print(f"[dim]plan[/]: {line}", highlight=False)

    return PlanRunner(Plan.load(plan_file), actor=actor, say=say)


def _emit(result: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        output.emit_json(result)
        return
    rows: list[tuple[str, Any]] = []
    if result.get("performed"):
        rows.append(("performed", ", ".join(result["performed"])))
    if result.get("stopped_at"):
        rows.append(("stopped at", result["stopped_at"]))
    if result.get("reason"):
        rows.append(("why", result["reason"]))
    if result.get("next_command"):
        rows.append(("next", result["next_command"]))
    evidence = result.get("evidence") or {}
    for key in ("team_must", "error", "router", "alias", "steps_reset", "rounds", "passed"):
        if key in evidence and evidence[key] not in (None, ""):
            rows.append((key.replace("_", " "), evidence[key]))
    output.key_values(title, rows)


def _failed_step(exc: Exception, as_json: bool, command: str) -> None:
    from vecmigrate.plan import StepFailed

    if isinstance(exc, StepFailed) and as_json:
        output.emit_json(
            {
                "command": command,
                "ok": False,
                "error": "StepFailed",
                "message": exc.one_line(),
                "evidence": exc.evidence,
                "exit_code": exc.exit_code,
            }
        )


def _guarded(as_json: bool, command: str, fn: Any) -> Any:
    from vecmigrate.cli.app import _run
    from vecmigrate.plan import StepFailed

    def body() -> Any:
        try:
            return fn()
        except StepFailed as exc:
            _failed_step(exc, as_json, command)
            output.stderr.print(f"[bold red]step failed[/]: {exc.one_line()}", highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return _run(as_json, body)


def plan(
    plan_file: PlanFile,
    fmt: Annotated[str, typer.Option("--format", help="text, md (a runbook) or json.")] = "text",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the runbook/estimate to this file.")
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Connect to nothing: estimate from stated inputs.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check both sides, estimate cost and timeline, and list the steps with pass conditions."""
    from vecmigrate.plan import Plan
    from vecmigrate.plan.checks import inspect_sides
    from vecmigrate.plan.estimate import estimate, measure_read
    from vecmigrate.plan.runbook import runbook
    from vecmigrate.plan.strategies import steps_for

    if fmt not in ("text", "md", "json"):
        output.error(
            f"--format {fmt!r}: use text, md or json",
            as_json=as_json,
            kind="ConfigError",
            exit_code=2,
        )
        raise typer.Exit(2)
    as_json = as_json or fmt == "json"

    def body() -> dict[str, Any]:
        loaded = Plan.load(plan_file)
        checks = None if offline else inspect_sides(loaded)
        measured: dict[str, Any] = {}
        if not offline and checks is not None and checks["source"].get("reachable"):
            measured = measure_read(loaded.source, batch=loaded.copy_.batch_size)
        est = estimate(loaded, measured)
        steps = steps_for(loaded)
        return {
            "command": "plan",
            "ok": not (checks and checks["problems"]),
            "plan": loaded.name,
            "strategy": loaded.kind,
            "checks": checks,
            "measured": measured,
            "estimate": est,
            "steps": [s.describe() for s in steps],
            "_markdown": runbook(loaded, steps, est, checks),
        }

    from vecmigrate.cli.app import _run

    result = _run(as_json, body)
    markdown = result.pop("_markdown")
    if fmt == "md":
        if out is not None:
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(markdown, encoding="utf-8")
            tmp.replace(out)
            output.stderr.print(f"runbook written to {out}")
        else:
            sys.stdout.write(markdown + "\n")
    elif as_json:
        if out is not None:
            import json

            out.write_text(json.dumps(result, indent=2, default=str))
        output.emit_json(result)
    else:
        est = result["estimate"]
        rows: list[tuple[str, Any]] = [("strategy", result["strategy"])]
        checks = result["checks"]
        if checks is not None:
            rows.append(("blocking problems", "; ".join(checks["problems"]) or "none"))
            rows += [("note", n) for n in checks["notes"]]
        rows.append(("duration", f"{est['total_days']:,.1f} days from {est['start']}"))
        rows += [(f"cost: {c['item']}", f"{c['usd']:,.2f} USD ({c['how']})") for c in est["costs"]]
        rows.append(("cost: total", f"{est['total_usd']:,.2f} USD"))
        rows += [
            (f"{i}. {s['name']} [{s['command']}]", s["passes_when"])
            for i, s in enumerate(result["steps"], 1)
        ]
        output.key_values(f"vecmigrate plan {result['plan']}", rows)
    if checks_failed(result):
        raise typer.Exit(3)


def checks_failed(result: dict[str, Any]) -> bool:
    checks = result.get("checks")
    return bool(checks and checks["problems"])


def run(
    plan_file: PlanFile,
    until: Annotated[
        str | None, typer.Option("--until", help="Stop after this step (a step name).")
    ] = None,
    after_rollback: Annotated[
        bool,
        typer.Option("--after-rollback", help="Move traffic again after a rollback was fixed."),
    ] = False,
    actor: Actor = None,
    quiet: Quiet = False,
    as_json: JsonFlag = False,
) -> None:
    """Perform the plan's steps in order from where it stopped (safe to re-run after a crash)."""
    result = _guarded(
        as_json,
        "run",
        lambda: _runner(plan_file, actor, quiet, as_json).run(until, after_rollback=after_rollback),
    )
    _emit({"command": "run", **result.as_dict()}, as_json, "vecmigrate run")


def status(
    plan_file: PlanFile,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the HTML report here.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Where the plan is: every step's status, the next command, traffic, rehearsal, window."""
    from vecmigrate.cli.app import _run

    def body() -> dict[str, Any]:
        runner = _runner(plan_file, None, True, as_json)
        info: dict[str, Any] = runner.status()
        if report is not None:
            from vecmigrate.plan.report import write_report
            from vecmigrate.plan.state import PlanState

            with PlanState(runner.plan.state_path) as state:
                write_report(runner.plan, state, report)
        return info

    info = _run(as_json, body)
    if as_json:
        output.emit_json({"command": "status", **info})
        return
    from vecmigrate.plan.runner import _when

    rows: list[tuple[str, Any]] = []
    for s in info["steps"]:
        extra = s["error"] or (f"holds until {_when(s['hold_until'])}" if s["hold_until"] else "")
        rows.append((f"{s['name']} [{s['command']}]", f"{s['status']} {extra}".strip()))
    rows.append(
        (
            "next",
            f"{info['next_command']} ({info['next_step']})"
            if info["next_step"]
            else "nothing: the plan is complete",
        )
    )
    rows.append(("router phase", info["router_phase"] or "-"))
    reh = info["rehearsal"]
    rows.append(
        (
            "rollback rehearsal",
            "-"
            if reh is None
            else ("passed" if reh.get("passed") else f"FAILED: {reh.get('error')}")
            + f" at {_when(reh['at'])}",
        )
    )
    if info["backup_window_until"]:
        rows.append(("old side kept until", _when(info["backup_window_until"])))
    if info["rolled_back"]:
        rows.append(("rolled back", _when(info["rolled_back"]["at"])))
    output.key_values(f"vecmigrate status {info['plan']} ({info['strategy']})", rows)


def cutover(
    plan_file: PlanFile, actor: Actor = None, quiet: Quiet = False, as_json: JsonFlag = False
) -> None:
    """Switch traffic to the new side (needs every earlier step passed and a passing rehearsal)."""
    result = _guarded(
        as_json, "cutover", lambda: _runner(plan_file, actor, quiet, as_json).cutover()
    )
    _emit({"command": "cutover", **result.as_dict()}, as_json, "vecmigrate cutover")


def rollback(
    plan_file: PlanFile,
    rehearse: Annotated[
        bool,
        typer.Option(
            "--rehearse", help="Prove the rollback path on a scratch copy; no traffic moves."
        ),
    ] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log.")] = "operator",
    actor: Actor = None,
    quiet: Quiet = False,
    as_json: JsonFlag = False,
) -> None:
    """Send traffic back to the old side, or (--rehearse) prove that doing so works."""
    command = "rollback --rehearse" if rehearse else "rollback"

    def body() -> Any:
        runner = _runner(plan_file, actor, quiet, as_json)
        return runner.rehearse() if rehearse else runner.rollback(reason)

    result = _guarded(as_json, command, body)
    _emit({"command": command, **result.as_dict()}, as_json, f"vecmigrate {command}")


def decommission(
    plan_file: PlanFile,
    confirm: Annotated[
        str | None, typer.Option("--confirm", help="The plan's name, to confirm the drop.")
    ] = None,
    actor: Actor = None,
    quiet: Quiet = False,
    as_json: JsonFlag = False,
) -> None:
    """Retire the old side after the backup window: final check, final backup, drop."""
    result = _guarded(
        as_json,
        "decommission",
        lambda: _runner(plan_file, actor, quiet, as_json).decommission(confirm),
    )
    _emit({"command": "decommission", **result.as_dict()}, as_json, "vecmigrate decommission")


def monitor(
    plan_file: PlanFile,
    duration: Annotated[
        str | None,
        typer.Option("--duration", help="How long (e.g. 14d, 2h); default monitor.period."),
    ] = None,
    interval: Annotated[
        str | None, typer.Option("--interval", help="Between rounds (e.g. 1h, 30s).")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    actor: Actor = None,
    quiet: Quiet = False,
    as_json: JsonFlag = False,
) -> None:
    """Keep comparing both sides after the switch; roll back when a trigger fires."""
    from vecmigrate.plan.model import parse_duration

    def on_round(r: dict[str, Any]) -> None:
        if not quiet and not as_json:
            output.stderr.print(
                f"monitor: parity {r['parity']}, drift {r['drift']:.4g}, "
                f"{'ok' if r['passed'] else 'TRIGGER ' + str(r['fired'])}",
                highlight=False,
            )

    def body() -> Any:
        try:
            d = None if duration is None else parse_duration(duration)
            i = None if interval is None else parse_duration(interval)
        except ValueError as exc:
            from vecmigrate.errors import ConfigError

            raise ConfigError(str(exc)) from None
        runner = _runner(plan_file, actor, quiet, as_json)
        return runner.monitor(duration=d, interval=i, once=once, on_round=on_round)

    result = _guarded(as_json, "monitor", body)
    _emit({"command": "monitor", **result.as_dict()}, as_json, "vecmigrate monitor")
    if result.evidence.get("rolled_back"):
        raise typer.Exit(3)
