"""Migration plans: ``migration.yaml`` run as a resumable state machine with an audit log."""

from vecmigrate.plan.model import Plan
from vecmigrate.plan.runner import Outcome, PlanRunner, Refused
from vecmigrate.plan.steps import Step, StepFailed

__all__ = ["Outcome", "Plan", "PlanRunner", "Refused", "Step", "StepFailed"]
