"""What bounds a copy's memory: in-flight bytes, bytes per batch, no batch kept by a retry."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.datagen import make_spec, make_table
from vecmigrate.connectors.base import Partition, ScanBatch
from vecmigrate.connectors.memory.connector import MemoryConnector, MemoryStore
from vecmigrate.engine import copy as copy_module
from vecmigrate.engine.copy import CopyJob, CopyOptions, copy
from vecmigrate.errors import ConfigError, TransientError
from vecmigrate.spec import ID


def _opts(tmp_path: Path, **kw: object) -> CopyOptions:
    return CopyOptions(state_dir=tmp_path / "state", **kw)  # type: ignore[arg-type]


def _watch_inflight(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the in-flight byte count of jobs made from now on after every change (not of
    a job another test left running: its threads could still be counting)."""
    seen: list[int] = []
    mine: set[int] = set()
    init, add = copy_module._InFlight.__init__, copy_module._InFlight.add

    def made(self: copy_module._InFlight, limit: int) -> None:
        init(self, limit)
        mine.add(id(self))

    def watched(self: copy_module._InFlight, held: list[int], nbytes: int) -> None:
        add(self, held, nbytes)
        if id(self) in mine:
            seen.append(self.used)

    monkeypatch.setattr(copy_module._InFlight, "__init__", made)
    monkeypatch.setattr(copy_module._InFlight, "add", watched)
    return seen


def test_in_flight_bytes_stay_under_the_limit_and_are_all_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(dim=64)
    table = make_table(spec, 8_000)
    MemoryStore.put("src", spec, table)
    batch_bytes = table.slice(0, 250).nbytes
    seen = _watch_inflight(monkeypatch)
    job = CopyJob(
        "memory://src",
        "memory://dst",
        _opts(tmp_path, batch_size=250, workers=2, prefetch=8, inflight_bytes=3 * batch_bytes),
    )
    result = job.run()
    assert result.rows == 8_000
    assert MemoryStore.collections["dst"].table.sort_by(ID).equals(table.sort_by(ID))
    # a partition may go over only with its first batch: at most one batch over the limit
    assert max(seen) <= 4 * batch_bytes * 1.05
    assert job._inflight.used == 0


def test_a_limit_below_one_batch_still_moves_every_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(dim=16)
    table = make_table(spec, 6_000)
    MemoryStore.put("src", spec, table)
    seen = _watch_inflight(monkeypatch)
    result = copy(
        "memory://src",
        "memory://dst",
        _opts(tmp_path, batch_size=300, workers=3, inflight_bytes=1),
    )
    assert result.rows == 6_000
    batch_bytes = table.slice(0, 300).nbytes
    assert max(seen) <= 3 * batch_bytes * 1.05  # one batch per worker, no read-ahead


def test_batches_are_capped_by_the_bytes_of_their_vectors(tmp_path: Path) -> None:
    wide, narrow = make_spec(dim=768), make_spec(dim=8)
    job = CopyJob("memory://a", "memory://b", _opts(tmp_path, batch_size=10_000))
    assert job.batch_rows(wide) == (16 << 20) // (768 * 4) == 5_461
    assert job.batch_rows(narrow) == 10_000
    unlimited = CopyJob("memory://a", "memory://b", _opts(tmp_path, batch_bytes=0))
    assert unlimited.batch_rows(wide) == 5_000
    with pytest.raises(ConfigError):
        _opts(tmp_path, inflight_bytes=-1)


def test_a_wide_copy_asks_the_source_for_smaller_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(dim=512)
    table = make_table(spec, 3_000)
    MemoryStore.put("src", spec, table)
    asked: list[int] = []
    scan = MemoryConnector.scan

    def recorded(
        self: MemoryConnector, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        asked.append(batch_size)
        return scan(self, partition, cursor, batch_size)

    monkeypatch.setattr(MemoryConnector, "scan", recorded)
    options = _opts(tmp_path, batch_size=1_000, batch_bytes=512 * 4 * 400, workers=1)
    result = copy("memory://src", "memory://dst", options)
    assert result.rows == 3_000
    assert set(asked) == {400}
    assert MemoryStore.collections["dst"].table.sort_by(ID).equals(table.sort_by(ID))


class _Payload:
    """Stands for a batch: something only the retried call refers to."""


@pytest.mark.parametrize("failures", [0, 2])
def test_a_retried_call_is_not_kept_alive_by_the_retry_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int
) -> None:
    # the warning's record would hold the exception (and so the call) in pytest's log capture
    monkeypatch.setattr(logging.getLogger("vecmigrate.copy"), "disabled", True)
    job = CopyJob("memory://a", "memory://b", _opts(tmp_path, retry_wait=0.001))
    payload = _Payload()
    ref = weakref.ref(payload)
    left = [failures]

    def write(item: _Payload = payload) -> int:
        if left[0]:
            left[0] -= 1
            raise TransientError("busy")
        return 1

    gc.disable()
    try:
        assert job._retry(write) == 1
        del write, payload
        assert ref() is None  # freed by reference counting, without waiting for a gc pass
    finally:
        gc.enable()


def test_retries_stop_after_max_attempts(tmp_path: Path) -> None:
    job = CopyJob("memory://a", "memory://b", _opts(tmp_path, retry_wait=0.001, max_attempts=3))
    calls = []

    def always() -> None:
        calls.append(1)
        raise TransientError("down")

    with pytest.raises(TransientError):
        job._retry(always)
    assert len(calls) == 3
