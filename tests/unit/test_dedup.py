"""Repeated ids found from their hashes in bounded memory, counted exactly in the end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecmigrate import dedup
from vecmigrate.dedup import repeated_ids


def _scan(values: list[Any], batch: int, type_: pa.DataType | None = None) -> Any:
    def scan() -> Iterator[pa.Array]:
        for start in range(0, len(values), batch):
            yield pa.array(values[start : start + batch], type_)

    return scan


def _want(values: list[Any]) -> list[Any]:
    return sorted(v for v, n in Counter(v for v in values if v is not None).items() if n > 1)


@pytest.mark.parametrize("part_rows", [1_000_000, 7, 1])
def test_string_and_integer_ids_in_one_part_or_many_on_disk(
    monkeypatch: pytest.MonkeyPatch, part_rows: int
) -> None:
    monkeypatch.setattr(dedup, "FLUSH_BYTES", 64)  # parts go to their files early
    strings = [f"doc-{i % 90}" for i in range(100)] + ["ünï", "", "ünï"]
    assert sorted(repeated_ids(_scan(strings, 9), len(strings), part_rows=part_rows)) == _want(
        strings
    )
    ints = [i % 37 for i in range(50)] + [-1, 2**62, 2**62]
    got = repeated_ids(_scan(ints, 11, pa.int64()), len(ints), part_rows=part_rows)
    assert sorted(got) == _want(ints)


def test_nothing_repeated_reads_the_column_once() -> None:
    scans = 0
    values = [f"id-{i}" for i in range(5_000)]

    def scan() -> Iterator[pa.Array]:
        nonlocal scans
        scans += 1
        yield from _scan(values, 700)()

    assert repeated_ids(scan, len(values), part_rows=1_000) == []
    assert scans == 1


def test_a_hash_collision_is_not_reported_as_a_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Suspects are only hashes; the values behind them are counted exactly."""

    def by_length(column: pa.Array) -> np.ndarray:  # collides for every pair of one length
        return np.asarray([len(v) for v in column.to_pylist()], dtype=np.uint64)

    monkeypatch.setattr(dedup, "column_hash", by_length)
    values = ["aa", "bb", "cc", "abc", "xyz", "abc", "q"]
    assert repeated_ids(_scan(values, 3), len(values)) == ["abc"]


def test_null_ids_are_not_repeats() -> None:
    values = [None, "a", None, "b", "a"]
    assert repeated_ids(_scan(values, 2, pa.string()), 5) == ["a"]
    assert repeated_ids(_scan([None, 1, None], 2, pa.int64()), 3) == []


def test_an_empty_column() -> None:
    assert repeated_ids(lambda: iter([pa.array([], pa.string())]), 0) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(max_size=4) | st.none(), max_size=80),
    st.integers(1, 20),
    st.integers(1, 30),
)
def test_matches_counting(values: list[str | None], batch: int, part_rows: int) -> None:
    got = repeated_ids(_scan(values, batch, pa.string()), len(values), part_rows=part_rows)
    assert sorted(got) == _want(values)
