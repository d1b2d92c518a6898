"""Moving traffic: the switch, the rollback, and retiring the old side.

Which side serves is recorded in the router state (``routing.state``), which applications
using :class:`vecmigrate.routing.Router` or ``vecmigrate serve`` follow. Where the new system
has aliases (Qdrant, Milvus server, a PostgreSQL view, a Qdrant Edge folder link) the alias is
switched too. vecmigrate cannot change an application's own configuration: the switch says
what the team must change.
"""

from __future__ import annotations

import time
from typing import Any

from vecmigrate.cdc.sync import SyncJob, SyncOptions
from vecmigrate.connectors.registry import connect
from vecmigrate.errors import ConfigError, Unsupported
from vecmigrate.plan.actions import advance, backup, check_not_rolled_back, open_router, probe
from vecmigrate.plan.checks import supports_alias
from vecmigrate.plan.model import BigBang, BlueGreen
from vecmigrate.plan.steps import Context
from vecmigrate.routing.phase import Phase
from vecmigrate.uri import ConnectorURI


def same_system(a: str, b: str) -> bool:
    """Whether an alias made in one collection's system can point at the other."""
    ua, ub = ConnectorURI.parse(a), ConnectorURI.parse(b)
    if ua.scheme != ub.scheme or (ua.host, ua.port) != (ub.host, ub.port):
        return False
    if ua.scheme in ("qdrant+edge",):
        return ua.file_path().parent == ub.file_path().parent
    if ua.scheme in ("qdrant+local", "milvus+lite", "chroma", "lancedb"):
        return ua.file_path() == ub.file_path()
    if ua.scheme == "pgvector":
        return ua.path == ub.path and ua.option("schema") == ub.option("schema")
    return True


def sync_once(ctx: Context) -> dict[str, Any]:
    strategy = ctx.plan.strategy
    assert isinstance(strategy, BlueGreen)
    copy = ctx.plan.copy_
    options = SyncOptions(
        cdc=strategy.sync,
        poll_field=strategy.poll_field,
        tombstone_field=strategy.tombstone_field,
        id_diff_every=0.0 if strategy.sync == "poll" and not strategy.tombstone_field else None,
        once=True,
        batch_size=copy.batch_size,
        workers=copy.workers,
        state_dir=ctx.sub("sync"),
    )
    result = SyncJob(ctx.plan.source, ctx.plan.target, options).run()
    out = result.as_dict()
    return {k: out[k] for k in ("snapshot", "changes_applied", "ids_applied", "lag_s")}


def team_must(ctx: Context, alias: dict[str, Any] | None) -> str:
    source = ConnectorURI.parse(ctx.plan.source).redacted()
    target = ConnectorURI.parse(ctx.plan.target).redacted()
    parts = [
        f"applications using the router state {ctx.plan.router_state} (vecmigrate serve or "
        "vecmigrate.routing.Router) now read the new side"
    ]
    if alias:
        parts.append(f"applications reading alias {alias['name']!r} now read {target}")
    parts.append(
        f"applications configured with {source} directly must be changed to "
        f"{alias['name'] if alias else target}: vecmigrate cannot change their configuration"
    )
    return "; ".join(parts)


def switch(ctx: Context) -> dict[str, Any]:
    """Big bang and blue-green: move all traffic to the new side at once."""
    strategy = ctx.plan.strategy
    evidence: dict[str, Any] = {}
    if isinstance(strategy, BlueGreen) and strategy.sync != "none":
        ctx.say("catching up with the source's changes before the switch")
        evidence["catch_up"] = sync_once(ctx)
    freeze = ctx.state.get("freeze")
    if isinstance(strategy, BigBang) and freeze:
        with connect(ctx.plan.source) as source:
            now_count = source.count()
        evidence["source_count_at_switch"] = now_count
        if now_count != freeze["source_count"]:
            from vecmigrate.plan.steps import StepFailed

            raise StepFailed(
                f"the source changed during the write freeze ({freeze['source_count']} -> "
                f"{now_count} rows): run the plan's import and validation again",
                evidence,
            )
    alias_info: dict[str, Any] | None = None
    name = strategy.alias if isinstance(strategy, BlueGreen) else None
    if name:
        with connect(ctx.plan.target) as target:
            if supports_alias(target):
                previous = target.switch_alias(name)  # type: ignore[attr-defined]
                alias_info = {"name": name, "to": target.uri.redacted(), "previous": previous}
    with open_router(ctx) as router:
        advance(router, Phase.NEW_ONLY, ctx.actor, force=True)
        evidence["router_phase"] = router.phase.value
    evidence["alias"] = alias_info
    evidence["team_must"] = team_must(ctx, alias_info)
    ctx.state.put(
        "switched", {"at": time.time(), "alias": alias_info}, actor=ctx.actor, event="switch"
    )
    ctx.say(evidence["team_must"])
    return evidence


def traffic_step(ctx: Context, percent: float) -> dict[str, Any]:
    """Parallel run: serve ``percent`` of reads from the new side, gated by the triggers."""
    with open_router(ctx) as router:
        check_not_rolled_back(ctx, router)
        if percent >= 100:
            advance(router, Phase.NEW_ONLY, ctx.actor)
        else:
            advance(router, Phase.CANARY, ctx.actor, percent=percent, segments=[])
        evidence = probe(ctx, router, f"traffic-{percent:g}")
    if percent >= 100:
        ctx.state.put(
            "switched", {"at": time.time(), "alias": None}, actor=ctx.actor, event="switch"
        )
    return evidence


def roll_back(ctx: Context, reason: str, evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send traffic back to the old side and mark the steps that had moved it pending again."""
    from vecmigrate.plan.state import PENDING
    from vecmigrate.plan.strategies import steps_for

    steps = steps_for(ctx.plan)
    moved = [
        i
        for i, s in enumerate(steps)
        if s.moves_traffic and ctx.state.step(s.name).status != PENDING
    ]
    out: dict[str, Any] = {"reason": reason, **(evidence or {})}
    with open_router(ctx) as router:
        before = router.phase
        if not moved and before in (Phase.OLD_ONLY, Phase.DUAL_WRITE):
            raise ConfigError("nothing to roll back: no traffic has moved to the new side")
        if before is Phase.OLD_RETIRED:
            raise ConfigError("the old side is retired (decommissioned): there is no rollback")
        if ctx.plan.kind in ("big-bang", "blue-green"):
            if before is not Phase.OLD_ONLY:
                router.set_phase(Phase.OLD_ONLY, actor=ctx.actor, force=True)
        else:
            router.rollback(actor=ctx.actor)
        out["router"] = {"from": before.value, "to": router.phase.value}
    switched = ctx.state.get("switched") or {}
    alias = switched.get("alias")
    if alias:
        if same_system(ctx.plan.source, ctx.plan.target):
            with connect(ctx.plan.source) as blue:
                if supports_alias(blue):
                    blue.switch_alias(alias["name"])  # type: ignore[attr-defined]
                    out["alias"] = {"name": alias["name"], "to": blue.uri.redacted()}
        else:
            out["alias"] = (
                f"alias {alias['name']!r} stays on the new side: the old side is another "
                "system; applications read the old side through the router or their own config"
            )
    if moved:
        # traffic steps go back to pending, and so does the whole-collection validation:
        # traffic does not move again before the data is proven again
        again = [
            s
            for i, s in enumerate(steps)
            if i >= moved[0] or s.name in ("validate", "validate-all")
        ]
        names = [s.name for s in again if ctx.state.step(s.name).status != PENDING]
        ctx.state.reset(names, ctx.actor, reason)
        out["steps_reset"] = names
    ctx.state.put("switched", None)
    ctx.state.put("rolled_back", {"at": time.time(), **out}, actor=ctx.actor, event="rollback")
    return out


def retire_old(ctx: Context) -> dict[str, Any]:
    """Decommission: keep a final backup of the old side, stop writing it, then drop it."""
    evidence: dict[str, Any] = {}
    with connect(ctx.plan.source) as old:
        exists = old.exists()
        rows = old.count() if exists else 0
    export = ctx.state.step("export").evidence
    if exists and export and export.get("rows") == rows:
        evidence["backup"] = {
            "reused": "the big-bang export",
            "rows": rows,
            "ledger": export.get("ledger"),
        }
    elif exists:
        evidence["backup"] = backup(ctx, ctx.plan.source, "old-final")
    with open_router(ctx) as router:
        advance(router, Phase.OLD_RETIRED, ctx.actor, force=True)
        evidence["router_phase"] = router.phase.value
    if exists:
        with connect(ctx.plan.source) as old:
            try:
                old.drop()
                evidence["dropped"] = old.uri.redacted()
            except Unsupported as exc:
                evidence["dropped"] = None
                evidence["note"] = f"drop the old collection by hand: {exc.one_line()}"
    ctx.state.put(
        "decommissioned", {"at": time.time(), **evidence}, actor=ctx.actor, event="decommissioned"
    )
    return evidence
