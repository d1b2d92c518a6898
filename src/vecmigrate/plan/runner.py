"""The plan's state machine: which step is next, who may perform it, and the refusals.

``run`` performs ``run`` steps in order until a step needs another command (``cutover``,
``decommission``), a step holds, a pass condition fails, or ``--until`` is reached. A crashed
step is simply performed again (actions are idempotent and copies resume from their ledgers).
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vecmigrate.errors import ConfigError, VecmigrateError
from vecmigrate.plan.model import Plan, format_duration
from vecmigrate.plan.state import FAILED, HOLDING, PASSED, RUNNING, PlanState
from vecmigrate.plan.steps import CUTOVER, DECOMMISSION, RUN, Context, Step, StepFailed
from vecmigrate.plan.strategies import steps_for


class Refused(ConfigError):
    """The command is out of order or a safety rule forbids it now; nothing was changed."""


def default_actor() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@dataclass
class Outcome:
    """Where a command left the plan."""

    command: str
    performed: list[str] = field(default_factory=list)
    stopped_at: str | None = None
    reason: str = ""
    next_command: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": True, **self.__dict__}


class PlanRunner:
    """Commands on one plan; each takes the plan's lock for its duration."""

    def __init__(
        self, plan: Plan, *, actor: str | None = None, say: Callable[[str], None] | None = None
    ) -> None:
        self.plan = plan
        self.steps = steps_for(plan)
        self.actor = actor or default_actor()
        self.say = say or (lambda line: None)

    # -- helpers ------------------------------------------------------------------------
    def _open(self, command: str, *, lock: bool = True) -> Context:
        state = PlanState(self.plan.state_path)
        try:
            if lock:
                state.lock(command)
            state.check_fingerprint(self.plan.fingerprint(), self.actor)
        except BaseException:
            state.close()
            raise
        return Context(self.plan, state, self.actor, self.say)

    def _close(self, ctx: Context) -> None:
        try:
            from vecmigrate.plan.report import write_report

            write_report(self.plan, ctx.state)
        finally:
            ctx.state.close()

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise ConfigError(
            f"plan {self.plan.name!r} has no step {name!r}; its steps are: "
            + ", ".join(s.name for s in self.steps)
        )

    def _next(self, ctx: Context) -> Step | None:
        return next((s for s in self.steps if ctx.state.step(s.name).status != PASSED), None)

    def _perform(self, ctx: Context, step: Step, *, recheck: bool = False) -> str:
        """Run one step's action; the state records start, pass/hold or failure."""
        ctx.state.begin(step.name, self.actor)
        self.say(f"step {step.name}: {step.title}")
        action = (step.recheck or step.action) if recheck else step.action
        try:
            evidence = action(ctx)
        except StepFailed as exc:
            ctx.state.failed(step.name, self.actor, exc.one_line(), exc.evidence)
            raise
        except VecmigrateError as exc:
            ctx.state.failed(step.name, self.actor, exc.one_line(), {"error": type(exc).__name__})
            raise
        if step.hold > 0 and not recheck:
            until = time.time() + step.hold
            ctx.state.holding(step.name, self.actor, until, evidence)
            return HOLDING
        ctx.state.passed(step.name, self.actor, evidence)
        return PASSED

    # -- run ----------------------------------------------------------------------------
    def run(self, until: str | None = None, *, after_rollback: bool = False) -> Outcome:
        if until is not None:
            self.step(until)
        ctx = self._open("run")
        ctx.after_rollback = after_rollback
        out = Outcome("run")
        try:
            for step in self.steps:
                rec = ctx.state.step(step.name)
                if rec.status == PASSED:
                    continue
                if step.command != RUN:
                    out.stopped_at = step.name
                    out.next_command = f"vecmigrate {step.command}"
                    out.reason = f"step {step.name!r} is performed by `vecmigrate {step.command}`"
                    if step.command == CUTOVER:
                        out.reason += " after the team's review (and a passing rollback rehearsal)"
                    return out
                if rec.status == HOLDING:
                    assert rec.hold_until is not None
                    if time.time() < rec.hold_until:
                        out.stopped_at = step.name
                        out.reason = (
                            f"step {step.name!r} holds until {_when(rec.hold_until)}; "
                            "run again after that"
                        )
                        out.next_command = "vecmigrate run"
                        return out
                    self._perform(ctx, step, recheck=True)
                else:
                    if rec.status == RUNNING:
                        self.say(f"step {step.name} was interrupted: performing it again")
                    if self._perform(ctx, step) == HOLDING:
                        out.performed.append(step.name)
                        out.stopped_at = step.name
                        out.reason = (
                            f"step {step.name!r} holds for "
                            f"{format_duration(step.hold)}; run again after that"
                        )
                        out.next_command = "vecmigrate run"
                        return out
                out.performed.append(step.name)
                if until == step.name:
                    out.stopped_at = step.name
                    out.reason = f"stopped after {step.name!r} (--until)"
                    out.next_command = "vecmigrate run"
                    return out
            out.reason = "every step has passed"
            return out
        finally:
            self._close(ctx)

    # -- cutover ------------------------------------------------------------------------
    def _refuse_out_of_order(self, ctx: Context, command: str) -> Step:
        nxt = self._next(ctx)
        if nxt is None:
            raise Refused(f"plan {self.plan.name!r} is complete: every step has passed")
        if nxt.command == command:
            return nxt
        rec = ctx.state.step(nxt.name)
        state = {FAILED: f"failed ({rec.error})", HOLDING: "holding", RUNNING: "interrupted"}
        status = state.get(rec.status, "not done yet")
        if nxt.command == RUN:
            raise Refused(
                f"{command} refused: step {nxt.name!r} must pass first (it is {status}); "
                f"run: vecmigrate run {self._plan_arg()}"
            )
        raise Refused(
            f"{command} refused: the next step is {nxt.name!r}, performed by "
            f"`vecmigrate {nxt.command}`"
        )

    def _plan_arg(self) -> str:
        return str(self.plan.path) if self.plan.path else "PLAN"

    def cutover(self) -> Outcome:
        ctx = self._open("cutover")
        try:
            step = self._refuse_out_of_order(ctx, CUTOVER)
            if self.plan.rollback.rehearse == "required":
                rehearsal = ctx.state.get("rehearsal")
                if rehearsal is None:
                    raise Refused(
                        "cutover refused: the rollback path has not been rehearsed; run "
                        f"vecmigrate rollback --rehearse {self._plan_arg()} first"
                    )
                if not rehearsal.get("passed"):
                    raise Refused(
                        f"cutover blocked: the rollback rehearsal of {_when(rehearsal['at'])} "
                        f"failed ({rehearsal.get('error')}); fix it and run vecmigrate rollback "
                        f"--rehearse {self._plan_arg()} again"
                    )
            ctx.after_rollback = True  # an explicit cutover is the operator's decision
            self._perform(ctx, step)
            out = Outcome(
                "cutover", performed=[step.name], evidence=ctx.state.step(step.name).evidence
            )
            following = self._next(ctx)
            if following is not None:
                out.stopped_at = following.name
                out.next_command = f"vecmigrate {following.command}"
                if following.command == DECOMMISSION:
                    window = format_duration(self.plan.rollback.keep_old_for)
                    out.reason = (
                        f"the old side is kept as the rollback path for {window}; "
                        "watch with vecmigrate monitor"
                    )
            return out
        finally:
            self._close(ctx)

    # -- rollback -----------------------------------------------------------------------
    def rollback(self, reason: str) -> Outcome:
        from vecmigrate.plan.traffic import roll_back

        ctx = self._open("rollback")
        try:
            evidence = roll_back(ctx, reason)
            return Outcome(
                "rollback",
                evidence=evidence,
                next_command="vecmigrate run",
                reason="traffic is back on the old side",
            )
        finally:
            self._close(ctx)

    def rehearse(self) -> Outcome:
        from vecmigrate.plan.rehearsal import rehearse

        ctx = self._open("rollback --rehearse")
        try:
            record = rehearse(ctx)
            if not record["passed"]:
                raise StepFailed(f"rollback rehearsal failed: {record.get('error')}", record)
            return Outcome("rollback --rehearse", evidence=record, reason="the rollback path works")
        finally:
            self._close(ctx)

    # -- decommission -------------------------------------------------------------------
    def decommission(self, confirm: str | None) -> Outcome:
        from vecmigrate.plan.monitor import monitor_round

        ctx = self._open("decommission")
        try:
            step = self._refuse_out_of_order(ctx, DECOMMISSION)
            switched = ctx.state.get("switched")
            if not switched:
                raise Refused("decommission refused: traffic has not been switched to the new side")
            opens_until = float(switched["at"]) + self.plan.rollback.keep_old_for
            if time.time() < opens_until:
                raise Refused(
                    f"decommission refused: the backup window is open until {_when(opens_until)} "
                    f"(rollback.keep_old_for = {format_duration(self.plan.rollback.keep_old_for)}"
                    "); the old side stays as the rollback path until then"
                )
            if confirm != self.plan.name:
                raise Refused(
                    "decommission drops the old side after a final backup: confirm with "
                    f"--confirm {self.plan.name}"
                )
            check = monitor_round(ctx)
            if not check["passed"]:
                ctx.state.log(self.actor, "decommission-refused", check, step.name)
                raise Refused(
                    f"decommission refused: the final check failed ({check['fired']}); the old "
                    "side is kept"
                )
            self._perform(ctx, step)
            return Outcome(
                "decommission", performed=[step.name], evidence=ctx.state.step(step.name).evidence
            )
        finally:
            self._close(ctx)

    # -- monitor ------------------------------------------------------------------------
    def monitor(
        self,
        *,
        duration: float | None = None,
        interval: float | None = None,
        once: bool = False,
        on_round: Callable[[dict[str, Any]], None] = lambda r: None,
    ) -> Outcome:
        from vecmigrate.plan.monitor import monitor

        ctx = self._open("monitor")
        try:
            if ctx.state.get("decommissioned"):
                raise Refused("the old side is decommissioned: there is nothing to compare")
            if not ctx.state.get("switched"):
                raise Refused("monitor runs after the switch (vecmigrate cutover)")
            mon = self.plan.monitor
            result = monitor(
                ctx,
                duration=0.0 if once else (duration if duration is not None else mon.period),
                interval=interval if interval is not None else mon.interval,
                on_round=on_round,
            )
            out = Outcome("monitor", evidence=result)
            if result["rolled_back"]:
                out.reason = "a rollback trigger fired: traffic is back on the old side"
                out.next_command = "vecmigrate run --after-rollback"
            return out
        finally:
            self._close(ctx)

    # -- status -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        ctx = self._open("status", lock=False)
        try:
            rows = []
            for s in self.steps:
                rec = ctx.state.step(s.name)
                rows.append(
                    {
                        **s.describe(),
                        "status": rec.status,
                        "started": rec.started,
                        "finished": rec.finished,
                        "hold_until": rec.hold_until,
                        "attempts": rec.attempts,
                        "error": rec.error,
                        "evidence": rec.evidence,
                    }
                )
            nxt = self._next(ctx)
            switched = ctx.state.get("switched")
            phase = None
            if self.plan.router_state.exists():
                from vecmigrate.routing.state import RouterState

                rs = RouterState(self.plan.router_state)
                try:
                    phase = rs.phase.value
                finally:
                    rs.close()
            return {
                "ok": True,
                "plan": self.plan.name,
                "strategy": self.plan.kind,
                "state": str(ctx.state.path),
                "steps": rows,
                "next_step": nxt.name if nxt else None,
                "next_command": f"vecmigrate {nxt.command}" if nxt else None,
                "router_phase": phase,
                "switched": switched,
                "backup_window_until": (float(switched["at"]) + self.plan.rollback.keep_old_for)
                if switched
                else None,
                "rehearsal": ctx.state.get("rehearsal"),
                "rolled_back": ctx.state.get("rolled_back"),
                "decommissioned": ctx.state.get("decommissioned"),
                "monitor_rounds": len(ctx.state.monitor_rounds()),
                "audit": ctx.state.audit()[-20:],
            }
        finally:
            ctx.state.close()
