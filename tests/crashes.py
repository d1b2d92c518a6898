"""A source that crashes mid-copy, for resume tests."""

from __future__ import annotations

from collections.abc import Iterator

from vecmigrate.connectors.base import Partition, ScanBatch
from vecmigrate.connectors.memory.connector import MemoryConnector


class CrashingSource(MemoryConnector):
    """``crashmem://NAME``: a memory source that raises once ``budget`` batches were read."""

    scheme = "crashmem"
    budget = 0

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        for sb in super().scan(partition, cursor, batch_size):
            if CrashingSource.budget <= 0:
                raise RuntimeError("simulated crash")
            CrashingSource.budget -= 1
            yield sb
