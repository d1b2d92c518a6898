"""The four strategies as ordered step lists. Every action is idempotent and resumable."""

from __future__ import annotations

import time
from typing import Any

from vecmigrate.connectors.registry import connect
from vecmigrate.plan import actions, traffic
from vecmigrate.plan.checks import inspect_sides
from vecmigrate.plan.model import BigBang, BlueGreen, Phased, Plan, Segment, format_duration
from vecmigrate.plan.segments import SegmentFilter
from vecmigrate.plan.steps import CUTOVER, DECOMMISSION, Context, Step, StepFailed
from vecmigrate.routing.phase import ORDER, Phase


def _preflight(ctx: Context) -> dict[str, Any]:
    found = inspect_sides(ctx.plan)
    found.pop("planned_spec", None)
    if found["problems"]:
        raise StepFailed("pre-flight found problems: " + "; ".join(found["problems"]), found)
    return found


def _freeze(ctx: Context) -> dict[str, Any]:
    with connect(ctx.plan.source) as source:
        count = source.count()
    freeze = {"source_count": count, "frozen_at": time.time()}
    ctx.state.put("freeze", freeze, actor=ctx.actor, event="write-freeze")
    ctx.say(f"write freeze recorded at {count:,} source rows: stop the applications' writes now")
    return freeze


def _export_dir(ctx: Context) -> str:
    return f"parquet://{ctx.sub('export').resolve()}"


def _export(ctx: Context) -> dict[str, Any]:
    return actions.run_copy(ctx, ctx.plan.source, _export_dir(ctx), "export", throttle=False)


def _import(ctx: Context) -> dict[str, Any]:
    created = actions.create_target(ctx)
    copied = actions.run_copy(ctx, _export_dir(ctx), ctx.plan.target, "import", reembed=True)
    return {"created": {k: created[k] for k in ("existed", "if_exists")}, **copied}


def _copy(ctx: Context) -> dict[str, Any]:
    strategy = ctx.plan.strategy
    if isinstance(strategy, BlueGreen) and strategy.sync != "none":
        return {"sync": traffic.sync_once(ctx)}
    return actions.run_copy(ctx, ctx.plan.source, ctx.plan.target, "copy", reembed=True)


def _validate(ctx: Context) -> dict[str, Any]:
    evidence = actions.run_validation(ctx, "validate")
    freeze = ctx.state.get("freeze")
    if freeze:
        with connect(ctx.plan.source) as source:
            now = source.count()
        evidence["source_count_since_freeze"] = now
        if now != freeze["source_count"]:
            raise StepFailed(
                f"the source changed during the write freeze ({freeze['source_count']} -> "
                f"{now} rows)",
                evidence,
            )
    return evidence


def _dual_write(ctx: Context) -> dict[str, Any]:
    with actions.open_router(ctx) as router:
        if ORDER.index(router.phase) < ORDER.index(Phase.DUAL_WRITE):
            actions.advance(router, Phase.DUAL_WRITE, ctx.actor)
        phase = router.phase.value
    ctx.say("dual-write on: applications must write through the router from now on")
    return {"router_phase": phase, "router_state": str(ctx.plan.router_state)}


def _shadow(ctx: Context) -> dict[str, Any]:
    with actions.open_router(ctx) as router:
        actions.check_not_rolled_back(ctx, router)
        if ORDER.index(router.phase) < ORDER.index(Phase.SHADOW):
            actions.advance(router, Phase.SHADOW, ctx.actor)
        return actions.probe(ctx, router, "shadow")


def _segment_copy(seg: Segment, strategy: Phased) -> Any:
    def act(ctx: Context) -> dict[str, Any]:
        where = SegmentFilter(strategy.segment_field, seg, strategy.segments)
        return actions.run_copy(
            ctx,
            ctx.plan.source,
            ctx.plan.target,
            f"segment-{seg.name}",
            transform=where,
            reembed=True,
        )

    return act


def _segment_validate(seg: Segment) -> Any:
    def act(ctx: Context) -> dict[str, Any]:
        return actions.run_validation(ctx, f"validate:{seg.name}", segment=seg)

    return act


def _segment_route(seg: Segment, strategy: Phased) -> Any:
    def act(ctx: Context) -> dict[str, Any]:
        names = [s.name for s in strategy.segments]
        routed = names[: names.index(seg.name) + 1]
        with actions.open_router(ctx, whole_collection=False) as router:
            actions.check_not_rolled_back(ctx, router)
            # the router's queries are not filtered by segment, so shadow comparisons would
            # compare a segment with the whole collection: segments are proven by their exact
            # validation, and query parity on the whole collection by validate-all
            actions.advance(router, Phase.CANARY, ctx.actor, segments=routed, percent=0.0)
            evidence = actions.probe(ctx, router, f"route-{seg.name}", segment=seg)
            evidence["segments_on_new"] = routed
            return evidence

    return act


def _phased_cutover(ctx: Context) -> dict[str, Any]:
    with actions.open_router(ctx) as router:
        actions.check_not_rolled_back(ctx, router)
        actions.advance(router, Phase.NEW_ONLY, ctx.actor)
        evidence = actions.probe(ctx, router, "cutover")
    ctx.state.put("switched", {"at": time.time(), "alias": None}, actor=ctx.actor, event="switch")
    return evidence


def _common_head(plan: Plan) -> list[Step]:
    return [
        Step(
            "preflight",
            "Check both sides",
            "both sides reachable; the target can hold every feature (or mapping.allow_loss); "
            "an existing target fits the plan",
            _preflight,
        ),
        Step(
            "backup-target",
            "Back up what the plan would overwrite",
            "an existing, non-empty target is exported to STATE_DIR/backups/target-before "
            "(dataset format, checksummed)",
            actions.backup_target,
        ),
    ]


def _decommission(plan: Plan) -> Step:
    keep = format_duration(plan.rollback.keep_old_for)
    return Step(
        "decommission",
        "Retire the old side",
        f"the backup window ({keep} after the switch) has passed; a fresh parity and count "
        "check passes; confirmed with --confirm NAME; a final backup of the old side exists",
        traffic.retire_old,
        command=DECOMMISSION,
    )


def _validate_step(name: str = "validate") -> Step:
    return Step(
        name,
        "Validate the target against the source",
        "completeness (every id, vector and metadata value), query parity "
        "(recall@k >= validation.min_recall), latency and smoke commands pass",
        _validate,
    )


def steps_for(plan: Plan) -> list[Step]:
    """The ordered steps of a plan's strategy."""
    strategy = plan.strategy
    steps = _common_head(plan)
    switch = Step(
        "switch",
        "Switch traffic to the new side",
        "a passing rollback rehearsal (rollback.rehearse); the router state (and the alias, "
        "where the system has aliases) points at the new side; the team changes what "
        "addresses the old side directly",
        traffic.switch,
        command=CUTOVER,
        moves_traffic=True,
    )
    if isinstance(strategy, BigBang):
        if strategy.write_freeze:
            steps.append(
                Step(
                    "freeze-writes",
                    "Freeze writes to the source",
                    "the source's row count at the freeze is recorded; it must not "
                    "change until the switch",
                    _freeze,
                )
            )
        steps += [
            Step(
                "export",
                "Export the source to the dataset format",
                "every source row is in STATE_DIR/export (checksummed shards)",
                _export,
            ),
            Step(
                "import",
                "Import the dataset into the target",
                "every exported row is in the target (created from the mapped spec)",
                _import,
            ),
            _validate_step(),
            switch,
        ]
    elif isinstance(strategy, BlueGreen):
        follow = strategy.sync != "none"
        steps += [
            Step(
                "create-green",
                "Create green from the mapped spec",
                "the target exists with the mapped spec",
                actions.create_target,
            ),
            Step(
                "copy",
                "Copy blue into green" + (" and follow its changes" if follow else ""),
                "every blue row is in green (the copy ledger is complete)",
                _copy,
            ),
            _validate_step(),
            switch,
        ]
    elif isinstance(strategy, Phased):
        steps += [
            Step(
                "create-target",
                "Create the target from the mapped spec",
                "the target exists with the mapped spec",
                actions.create_target,
            ),
            Step(
                "dual-write",
                "Write to both sides through the router",
                "the router state is at dual-write",
                _dual_write,
            ),
        ]
        for seg in strategy.segments:
            steps += [
                Step(
                    f"copy:{seg.name}",
                    f"Copy segment {seg.name}",
                    f"every source row of segment {seg.name} is in the target",
                    _segment_copy(seg, strategy),
                ),
                Step(
                    f"validate:{seg.name}",
                    f"Validate segment {seg.name}",
                    f"segment {seg.name} is complete and equal on both sides",
                    _segment_validate(seg),
                ),
                Step(
                    f"route:{seg.name}",
                    f"Route segment {seg.name} to the new side",
                    f"reads of segment {seg.name} are served by the new side and no rollback "
                    "trigger fires on probe queries",
                    _segment_route(seg, strategy),
                    moves_traffic=True,
                    hold=plan.routing.hold,
                ),
            ]
        steps += [
            _validate_step("validate-all"),
            Step(
                "cutover",
                "Serve every read from the new side",
                "a passing rollback rehearsal; the router is at new-only and no trigger "
                "fires on probe queries",
                _phased_cutover,
                command=CUTOVER,
                moves_traffic=True,
            ),
        ]
    else:  # parallel run
        steps += [
            Step(
                "create-target",
                "Create the target from the mapped spec",
                "the target exists with the mapped spec",
                actions.create_target,
            ),
            Step(
                "dual-write",
                "Write to both sides through the router",
                "the router state is at dual-write",
                _dual_write,
            ),
            Step(
                "copy",
                "Copy the source into the target",
                "every source row is in the target (the copy ledger is complete)",
                _copy,
            ),
            Step(
                "reconcile",
                "Re-read rows that changed during the copy",
                "ids missing or different in the target are re-read from the source",
                actions.reconcile,
            ),
            _validate_step(),
            Step(
                "shadow",
                "Shadow reads on the new side",
                "reads mirrored to the new side agree (overlap@k >= rollback.min_parity) and "
                "no trigger fires"
                + (
                    f", for {format_duration(plan.routing.shadow_for)}"
                    if plan.routing.shadow_for
                    else ""
                ),
                _shadow,
                moves_traffic=True,
                hold=plan.routing.shadow_for,
            ),
        ]
        for p in plan.routing.steps:
            is_last = p >= 100
            steps.append(
                Step(
                    f"traffic-{p:g}",
                    f"Serve {p:g}% of reads from the new side",
                    (
                        ("a passing rollback rehearsal; " if is_last else "")
                        + f"{p:g}% of reads go to the new side and no rollback trigger fires"
                        + (
                            f" for {format_duration(plan.routing.hold)}"
                            if plan.routing.hold and not is_last
                            else ""
                        )
                    ),
                    _traffic(p),
                    command=CUTOVER if is_last else "run",
                    moves_traffic=True,
                    hold=0.0 if is_last else plan.routing.hold,
                )
            )
    steps.append(_decommission(plan))
    return steps


def _traffic(percent: float) -> Any:
    def act(ctx: Context) -> dict[str, Any]:
        return traffic.traffic_step(ctx, percent)

    return act
