"""Systems under test for the conformance suite.

Each system is a factory that returns a fresh connector URI for a new collection; a system
whose engine is not available here is skipped with the reason. Server engines are started by
session fixtures in ``tests/engines.py`` (bound to 127.0.0.1 on free ports, torn down after).
Add a system by adding one ``System`` to ``SYSTEMS``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

UriFactory = Callable[[Path, str], str]


@dataclass(frozen=True)
class System:
    name: str
    needs: tuple[str, ...]  # Python modules that must import
    engine_fixture: str | None  # a session fixture giving a server address, or None
    make_uri: Callable[..., str]  # (tmp_path, collection_name, engine) -> uri

    def skip_reason(self) -> str | None:
        missing = [m for m in self.needs if importlib.util.find_spec(m) is None]
        return f"{self.name}: client not installed ({', '.join(missing)})" if missing else None


SYSTEMS: list[System] = [
    System("memory", (), None, lambda tmp, name, engine: f"memory://{tmp.name}-{name}"),
]


def system_params() -> list[object]:
    return [pytest.param(s, id=s.name) for s in SYSTEMS]
