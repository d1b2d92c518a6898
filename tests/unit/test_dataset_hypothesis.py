"""Property: whatever ids, metadata and batch shapes go into a dataset come back unchanged."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_dataset import assert_same_rows, read_all
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import WriteToken
from vecmigrate.records import fixed_size_vectors
from vecmigrate.spec import ID, CollectionSpec, MetadataField, MetadataType, VectorField

DIM = 4
# any Unicode text Arrow can hold (no lone surrogates), including controls and whitespace
TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
IDS = st.one_of(
    TEXT.filter(bool),
    st.text(st.sampled_from(" \t\n\r\u00a0\u2028"), min_size=1, max_size=5),
    st.text(st.characters(codec="utf-8"), min_size=300, max_size=2000),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
VECTOR_VALUES = st.floats(allow_nan=False, allow_infinity=False, width=32)
FIELD_NAMES = st.lists(
    TEXT.filter(lambda s: s not in ("", ID, "document", "vector")),
    min_size=3,
    max_size=3,
    unique=True,
)


@st.composite
def datasets(draw: st.DrawFn) -> tuple[str, CollectionSpec, list[pa.RecordBatch]]:
    fmt = draw(st.sampled_from(["parquet", "jsonl", "csv"]))
    names = draw(FIELD_NAMES)
    spec = CollectionSpec(
        vectors=[VectorField(name="vector", dim=DIM)],
        metadata=[
            MetadataField(name=names[0], type=MetadataType.STRING),
            MetadataField(name=names[1], type=MetadataType.FLOAT64),
            MetadataField(name=names[2], type=MetadataType.LIST_STRING),
        ],
        has_document=True,
    )
    ids = draw(st.lists(IDS, unique=True, max_size=60))
    if draw(st.booleans()):  # sometimes one large batch as well
        ids += [f"bulk-{i}" for i in range(draw(st.integers(1_000, 5_000)))]
    sizes: list[int] = []
    left = len(ids)
    while left:
        n = draw(st.integers(0, min(left, 25))) if left < 1_000 else left
        sizes.append(n)
        left -= n
    sizes.insert(draw(st.integers(0, len(sizes))), 0)  # an empty batch somewhere
    batches = []
    start = 0
    for n in sizes:
        chunk = ids[start : start + n]
        small = min(n, 60)
        vec = np.array(
            draw(st.lists(VECTOR_VALUES, min_size=small * DIM, max_size=small * DIM)),
            dtype=np.float32,
        ).reshape(small, DIM)
        vec = np.resize(vec, (n, DIM)) if small else np.zeros((n, DIM), np.float32)
        texts = draw(st.lists(st.none() | TEXT, min_size=small, max_size=small))
        floats = draw(st.lists(st.none() | FLOATS, min_size=small, max_size=small))
        lists = draw(
            st.lists(
                st.none() | st.lists(st.none() | TEXT, max_size=3), min_size=small, max_size=small
            )
        )

        def fill(values: list[Any], n: int = n) -> list[Any]:
            return (values * (n // max(len(values), 1) + 1))[:n] if values else [None] * n

        cols = {
            ID: pa.array(chunk, pa.string()),
            "vector": fixed_size_vectors(vec),
            "document": pa.array(fill(texts[::-1]), pa.string()),
            names[0]: pa.array(fill(texts), pa.string()),
            names[1]: pa.array(fill(floats), pa.float64()),
            names[2]: pa.array(fill(lists), pa.list_(pa.string())),
        }
        batches.append(pa.RecordBatch.from_pydict(cols).cast(spec.arrow_schema()))
        start += n
    return fmt, spec, batches


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(datasets())
def test_dataset_round_trip(case: tuple[str, CollectionSpec, list[pa.RecordBatch]]) -> None:
    fmt, spec, batches = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ds"
        writer = connect(f"{fmt}://{folder}")
        writer.create(spec, IfExists.FAIL)
        writer.begin("prop", resume=False)
        rows = 0
        for batch in batches:
            writer.upsert(batch, WriteToken("prop", 0, rows))
            rows += batch.num_rows
        writer.finalize(spec)
        reader = connect(f"parquet://{folder}")
        assert reader.count() == rows
        assert reader.describe() == spec
        assert_same_rows(
            read_all(reader, batch_size=97), pa.Table.from_batches(batches, spec.arrow_schema())
        )
