"""Routing for applications during a migration: dual-write, shadow reads, canary, rollback."""

from vecmigrate.routing.phase import Phase
from vecmigrate.routing.router import Router, RouterConfig
from vecmigrate.routing.triggers import TriggerConfig

__all__ = ["Phase", "Router", "RouterConfig", "TriggerConfig"]
