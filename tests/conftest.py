"""Shared fixtures: engines are started by tests/engines.py (imported as a plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vecmigrate.connectors.memory.connector import MemoryStore

pytest_plugins = ["tests.engines"]


@pytest.fixture(autouse=True)
def _fresh_memory_store() -> Iterator[None]:
    MemoryStore.reset()
    yield
    MemoryStore.reset()
