"""A step of a plan: a name, the condition it must meet to pass, and an idempotent action.

Actions return evidence (a JSON-able dict) that goes into the step record and the audit log.
An action that finds its pass condition unmet raises :class:`StepFailed` with the evidence;
re-running it after a crash or a failure is always safe (copies resume from their ledgers,
creates reuse, phase changes that are already in place do nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vecmigrate.errors import ValidationFailed
from vecmigrate.plan.model import Plan
from vecmigrate.plan.state import PlanState

RUN, CUTOVER, DECOMMISSION = "run", "cutover", "decommission"


class StepFailed(ValidationFailed):
    """A step's pass condition does not hold; the plan stops before the next step."""

    def __init__(self, message: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evidence = evidence or {}


@dataclass
class Context:
    """What a step's action may use: the plan, its state, who runs it, and a way to speak."""

    plan: Plan
    state: PlanState
    actor: str
    say: Callable[[str], None] = lambda line: None
    after_rollback: bool = False
    cache: dict[str, Any] = field(default_factory=dict)

    def sub(self, *parts: str) -> Path:
        path = self.plan.state_path.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


Action = Callable[[Context], dict[str, Any]]


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    passes_when: str
    action: Action
    command: str = RUN  # the command that performs it: run, cutover or decommission
    moves_traffic: bool = False
    hold: float = 0.0  # seconds the pass condition must keep holding before the step passes
    recheck: Action | None = None  # the gate checked again when the hold ends

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "passes_when": self.passes_when,
            "command": self.command,
            "moves_traffic": self.moves_traffic,
            "hold_s": self.hold,
        }
