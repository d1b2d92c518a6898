"""Shared fixtures: engines are started by tests/engines.py (imported as a plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.crashes import CrashingSource
from vecmigrate.connectors import registry
from vecmigrate.connectors.memory.connector import MemoryStore

pytest_plugins = ["tests.engines"]


@pytest.fixture(autouse=True)
def _fresh_memory_store() -> Iterator[None]:
    MemoryStore.reset()
    yield
    MemoryStore.reset()


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    """Schemes a test registers (fault-injecting connectors) do not outlive it."""
    saved = dict(registry._registered)
    yield
    registry._registered.clear()
    registry._registered.update(saved)


@pytest.fixture
def crashing_source() -> type[CrashingSource]:
    """``crashmem://NAME`` registered for this test: set ``budget`` to crash after N batches."""
    registry.register(CrashingSource.scheme, CrashingSource)
    CrashingSource.budget = 0
    return CrashingSource
