"""Setting bad rows aside: the splitting that finds each bad row of a chunk."""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from vecmigrate.connectors.dataset.rejecting import split_readable
from vecmigrate.errors import DataError


def _reader(
    bad: set[int], first_row: int, *, name_row: bool = True, calls: list[int] | None = None
) -> Callable[[int, int], pa.RecordBatch]:
    """Reads rows lo:hi as a batch of their numbers; fails naming the first bad row."""

    def read(lo: int, hi: int) -> pa.RecordBatch:
        if calls is not None:
            calls.append(hi - lo)
        hit = sorted(i for i in bad if lo <= i < hi)
        if hit:
            row = first_row + hit[0] if name_row else None
            raise DataError(f"row {hit[0]} is bad", row=row)
        return pa.record_batch({"n": pa.array(range(lo, hi))})

    return read


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    data=st.data(),
    first_row=st.integers(0, 10_000),
    name_row=st.booleans(),
)
def test_every_good_row_is_kept_in_order_and_every_bad_one_named(
    n: int, data: st.DataObject, first_row: int, name_row: bool
) -> None:
    bad = set(data.draw(st.lists(st.integers(0, n - 1), max_size=n)))
    pieces, rejected = split_readable(n, _reader(bad, first_row, name_row=name_row), first_row)
    kept = [v for _, b in pieces for v in b.column("n").to_pylist()]
    assert kept == [i for i in range(n) if i not in bad]
    assert [i for i, _ in rejected] == sorted(bad)
    assert all(err.reason == f"row {i} is bad" for i, err in rejected)


def test_a_row_bad_only_in_company_is_kept() -> None:
    """Like a duplicate id: rows 3 and 7 clash; each alone reads, so both stay."""

    def read(lo: int, hi: int) -> pa.RecordBatch:
        if lo <= 3 < hi and lo <= 7 < hi:
            raise DataError("duplicate id", row=7)
        return pa.record_batch({"n": pa.array(range(lo, hi))})

    pieces, rejected = split_readable(10, read, 0)
    assert rejected == []
    assert [v for _, b in pieces for v in b.column("n").to_pylist()] == list(range(10))


def test_good_chunks_are_read_once_and_bad_rows_cost_little() -> None:
    calls: list[int] = []
    split_readable(5_000, _reader(set(), 0, calls=calls), 0)
    assert calls == [5_000]
    calls.clear()
    bad = set(range(0, 5_000, 7))  # 715 bad rows
    started = time.monotonic()
    _, rejected = split_readable(5_000, _reader(bad, 0, calls=calls), 0)
    assert len(rejected) == len(bad)
    assert len(calls) <= 3 * len(bad) + 1  # the whole, each bad row alone, what follows it
    assert time.monotonic() - started < 5
