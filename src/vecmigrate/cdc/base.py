"""What a change source yields, and the contract every change source keeps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class ChangeSet:
    """Ids touched by changes up to ``position`` (in source order), and when they committed.

    Changes are applied by re-reading each touched id's current state from the source: a row
    that still exists is upserted, one that does not is deleted. That makes applying
    idempotent and order-safe per id, whatever the change stream repeats.
    """

    position: str
    ids: list[Any] = field(default_factory=list)
    changes: int = 0
    oldest_commit: float | None = None  # unix time of the oldest change in this set


class ChangeSource(Protocol):
    """A source's change feed, positioned by an opaque, ordered token."""

    name: str

    def start(self) -> str:
        """Begin capturing (before the snapshot) and return the position to stream from."""
        ...

    def changes(self, position: str, max_changes: int) -> Iterator[ChangeSet]:
        """Change sets after ``position`` up to the source's current position, then stop."""
        ...

    def acknowledge(self, position: str) -> None:
        """Everything up to ``position`` is applied; the source may discard it."""
        ...

    def backlog(self, position: str) -> dict[str, Any]:
        """How far behind ``position`` is: pending changes/bytes and seconds, as known."""
        ...

    def cleanup(self) -> None:
        """Stop capturing: drop slots, triggers and change tables this source created."""
        ...

    def close(self) -> None: ...
