"""Migration phases and which side serves reads and takes writes in each."""

from __future__ import annotations

from enum import StrEnum

from vecmigrate.errors import ConfigError


class Phase(StrEnum):
    OLD_ONLY = "old-only"
    DUAL_WRITE = "dual-write"
    SHADOW = "shadow"
    CANARY = "canary"
    NEW_ONLY = "new-only"
    OLD_RETIRED = "old-retired"

    @property
    def writes_new(self) -> bool:
        return self is not Phase.OLD_ONLY

    @property
    def writes_old(self) -> bool:
        return self is not Phase.OLD_RETIRED

    @property
    def primary(self) -> str:
        """The side whose write must succeed for the user's write to succeed."""
        return "new" if self in (Phase.NEW_ONLY, Phase.OLD_RETIRED) else "old"

    @property
    def rollback_target(self) -> Phase | None:
        """Where a fired trigger sends this phase (None: nothing to roll back)."""
        if self in (Phase.SHADOW, Phase.CANARY, Phase.NEW_ONLY):
            return Phase.DUAL_WRITE
        return None

    @classmethod
    def parse(cls, text: str) -> Phase:
        try:
            return cls(text)
        except ValueError as exc:
            known = ", ".join(p.value for p in cls)
            raise ConfigError(f"unknown phase {text!r}: use one of {known}") from exc


ORDER = list(Phase)


def check_transition(current: Phase, new: Phase, *, force: bool = False) -> None:
    """Phases move one step forward, or back to any earlier one (a rollback)."""
    if force or ORDER.index(new) <= ORDER.index(current) + 1:
        if current is Phase.OLD_RETIRED and new is not Phase.OLD_RETIRED and not force:
            raise ConfigError("old-retired is final: the old side no longer receives writes")
        return
    raise ConfigError(
        f"cannot go from {current.value} to {new.value}: the next phase is "
        f"{ORDER[ORDER.index(current) + 1].value}"
    )
