"""Qdrant point ids: small batches (a router's single rows) and large ones map ids alike."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecmigrate.connectors.qdrant.points import SMALL, point_id, point_ids

IDS = [
    "doc-1",
    str(uuid.UUID(int=7)),  # canonical: kept
    str(uuid.UUID(int=7)).upper(),  # not canonical (upper case): mapped
    str(uuid.UUID(int=8)) + "\n",  # a final newline is not a UUID: mapped
    "",
    "ünïcode",
]


@pytest.mark.parametrize("repeat", [1, SMALL // len(IDS) + 1])
def test_point_ids_agree_with_point_id_in_small_and_large_batches(repeat: int) -> None:
    values = IDS * repeat
    assert (len(values) <= SMALL) == (repeat == 1)
    mapped, originals = point_ids(pa.array(values))
    assert mapped == [point_id(v) for v in values]
    kept = [v == str(uuid.UUID(int=7)) for v in values]
    assert [o is None for o in originals] == kept
    assert [m == v for m, v in zip(mapped, values, strict=True)] == kept


def test_integer_ids_map_only_negatives() -> None:
    mapped, originals = point_ids(pa.array([1, -1, 2], pa.int64()))
    assert mapped[0] == 1 and mapped[2] == 2 and mapped[1] == point_id(-1)
    assert originals == [None, -1, None]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_mapped_id_is_uuid5_of_the_text(text: str) -> None:
    """The hand-rolled uuid5 (no UUID object) is the standard one, for any text."""
    from vecmigrate.connectors.qdrant.points import ID_NAMESPACE, mapped_id

    try:
        want = str(uuid.uuid5(ID_NAMESPACE, text))
    except UnicodeEncodeError:  # lone surrogates: neither can encode them
        with pytest.raises(UnicodeEncodeError):
            mapped_id(text)
        return
    assert mapped_id(text) == want
