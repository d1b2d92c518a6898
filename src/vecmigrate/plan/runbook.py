"""``vecmigrate plan --format md``: a runbook the team reviews before anything moves."""

from __future__ import annotations

import time
from typing import Any

from vecmigrate import __version__
from vecmigrate.plan.model import BlueGreen, Phased, Plan, format_duration
from vecmigrate.plan.steps import Step
from vecmigrate.uri import ConnectorURI


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _hours(h: float) -> str:
    if h >= 48:
        return f"{h / 24:,.1f} days"
    if h >= 1:
        return f"{h:,.1f} h"
    return f"{h * 60:,.0f} min"


def runbook(
    plan: Plan, steps: list[Step], est: dict[str, Any], checks: dict[str, Any] | None
) -> str:
    src = ConnectorURI.parse(plan.source).redacted()
    dst = ConnectorURI.parse(plan.target).redacted()
    plan_arg = plan.path.name if plan.path else "migration.yaml"
    inputs = est["inputs"]
    out: list[str] = [
        f"# Migration runbook: {plan.name}",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} by vecmigrate {__version__} from "
        f"`{plan_arg}`. Review it as a team before the first step; every command below is "
        "safe to re-run (steps resume after a crash and refuse to run out of order).",
        "",
        _table(
            ["", ""],
            [
                ["source (old)", f"`{src}`"],
                ["target (new)", f"`{dst}`"],
                ["strategy", plan.kind],
                ["vectors", f"{inputs['vectors']['value']:,} ({inputs['vectors']['source']})"],
                ["dimension", f"{inputs['dim']['value']} ({inputs['dim']['source']})"],
                ["data", f"{est['data_gb']:,.1f} GB raw"],
                ["duration", f"{est['total_days']:,.1f} days from {est['start']}"],
                ["estimated cost", f"{est['total_usd']:,.2f} USD"],
                ["state", f"`{plan.state_path}` (audit log, ledgers, backups, report.html)"],
            ],
        ),
        "",
    ]
    if checks is not None:
        out += ["## Pre-flight checks", ""]
        problems = checks.get("problems", [])
        out.append("Blocking problems: " + ("none" if not problems else ""))
        out += [f"- {p}" for p in problems]
        for note in checks.get("notes", []):
            out.append(f"- note: {note}")
        mapping = checks.get("mapping")
        if mapping:
            out += [
                "",
                _table(
                    ["carries over", "items"],
                    [
                        ["exactly", "; ".join(mapping["exact"]) or "-"],
                        ["converted", "; ".join(mapping["converted"]) or "-"],
                        ["lost", "; ".join(mapping["lost"]) or "-"],
                    ],
                ),
            ]
        drift = (checks.get("target") or {}).get("drift")
        if drift:
            out += [
                "",
                "Existing target differs from the plan:",
                "",
                _table(
                    ["what", "plan", "target", "blocking"],
                    [
                        [d["what"], d["plan"], d["target"], "yes" if d["blocking"] else "no"]
                        for d in drift
                    ],
                ),
            ]
        out.append("")
    out += [
        "## Steps",
        "",
        _table(
            ["#", "step", "performed by", "passes when"],
            [
                [i, f"`{s.name}` {s.title}", f"`vecmigrate {s.command} {plan_arg}`", s.passes_when]
                for i, s in enumerate(steps, 1)
            ],
        ),
        "",
        f"`vecmigrate status {plan_arg}` shows where the plan is; `--until STEP` stops "
        "`run` after a step.",
        "",
    ]
    out += ["## Timeline (week by week)", ""]
    week_rows = []
    for w in est["weeks"]:
        work = "; ".join(f"{x['phase']} ({_hours(x['hours'])})" for x in w["work"])
        week_rows.append([f"week {w['week']}", f"{w['from']} to {w['to']}", work])
    out += [_table(["week", "dates", "work"], week_rows), ""]
    out += [
        _table(
            ["phase", "starts (day)", "takes"],
            [
                [p["phase"], f"{p['starts_at_h'] / 24:,.2f}", _hours(p["hours"])]
                for p in est["phases"]
            ],
        ),
        "",
    ]
    out += [
        "## Cost",
        "",
        _table(
            ["item", "how it is computed", "USD"],
            [[c["item"], c["how"], f"{c['usd']:,.2f}"] for c in est["costs"]]
            + [["**total**", "", f"**{est['total_usd']:,.2f}**"]],
        ),
        "",
    ]
    out += [
        "Inputs:",
        "",
        _table(
            ["input", "value", "from"], [[k, v["value"], v["source"]] for k, v in inputs.items()]
        ),
        "",
    ]
    out += ["## Cutover", "", _cutover_text(plan, src, dst, plan_arg), ""]
    out += ["## Rollback", "", _rollback_text(plan, plan_arg), ""]
    out += [
        "## After the migration",
        "",
        f"- `vecmigrate monitor {plan_arg}` compares {plan.monitor.queries} sampled queries "
        f"(overlap@{plan.monitor.k}) and both counts every "
        f"{format_duration(plan.monitor.interval)} "
        f"for {format_duration(plan.monitor.period)}; a fired trigger "
        + ("rolls back automatically." if plan.monitor.auto_rollback else "is reported."),
        f"- The old side is kept for {format_duration(plan.rollback.keep_old_for)} after the "
        f"switch. `vecmigrate decommission {plan_arg} --confirm {plan.name}` refuses before "
        "then, re-checks parity and counts, writes a final backup of the old side to the "
        "dataset format, and drops it.",
        f"- The report for the team is `{plan.state_path / 'report.html'}` (timeline, "
        "validations, parity over time, incidents, rollbacks).",
        "",
    ]
    return "\n".join(out)


def _cutover_text(plan: Plan, src: str, dst: str, plan_arg: str) -> str:
    lines = [
        f"1. `vecmigrate rollback --rehearse {plan_arg}` proves the rollback path on a scratch "
        "copy of the old side"
        + (
            " (required: cutover refuses without a passing rehearsal)."
            if plan.rollback.rehearse == "required"
            else "."
        ),
        f"2. `vecmigrate cutover {plan_arg}`.",
    ]
    strategy = plan.strategy
    alias = strategy.alias if isinstance(strategy, BlueGreen) else None
    if alias:
        lines.append(
            f"3. The alias `{alias}` is switched to the new collection where the new "
            "system has aliases; applications reading the alias follow at once."
        )
    lines.append(
        f"{len(lines) + 1}. Applications using the router state `{plan.router_state}` "
        "(`vecmigrate serve` or `vecmigrate.routing.Router`) follow its phase. **vecmigrate "
        f"cannot change an application's own configuration**: anything that addresses "
        f"`{src}` directly must be changed to `{alias or dst}` by the team at this point."
    )
    if isinstance(strategy, Phased):
        lines.append(
            f"\nSegments move to the new side one by one before the cutover (field "
            f"`{strategy.segment_field}`: {', '.join(s.name for s in strategy.segments)}); "
            "the cutover serves the rest."
        )
    if plan.kind == "parallel-run":
        steps = ", ".join(f"{p:g}%" for p in plan.routing.steps)
        lines.append(
            f"\nReads move in steps ({steps}); each step is gated by the rollback "
            "triggers; the 100% step is the cutover."
        )
    return "\n".join(lines)


def _rollback_text(plan: Plan, plan_arg: str) -> str:
    r = plan.rollback
    bounds = [
        f"error rate > {r.max_error_rate}" if r.max_error_rate is not None else None,
        f"p95 latency ratio > {r.max_latency_ratio}" if r.max_latency_ratio is not None else None,
        f"parity (overlap@k) < {r.min_parity}" if r.min_parity is not None else None,
        f"count drift > {r.max_count_drift}" if r.max_count_drift is not None else None,
    ]
    triggers = "; ".join(b for b in bounds if b)
    return "\n".join(
        [
            f"- Triggers: {triggers} (over {format_duration(r.window)}, at least {r.min_samples} "
            "samples).",
            f"- `vecmigrate rollback {plan_arg}` sends traffic back to the old side (router state, "
            "and the alias where it can point back), and marks the traffic steps pending again. "
            "Traffic does not move again until `vecmigrate run --after-rollback`.",
            "- Writes accepted by the new side after the switch reach the old side only through "
            "the router (dual-write); applications that write the new side directly must replay "
            "them.",
            "- Anything a step would overwrite is exported first to "
            f"`{plan.state_path / 'backups'}` (dataset format, checksummed).",
        ]
    )
