"""Completeness keeps only (id, hashes) per row and re-reads the vectors of rows whose hashes
differ: the verdicts stay exact under every tolerance policy, whether the suspect rows are
fetched by id or found by a second scan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_spec, make_table
from vecmigrate.connectors import connect
from vecmigrate.connectors.base import Connector
from vecmigrate.connectors.memory.connector import MemoryStore
from vecmigrate.errors import Unsupported
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import ID, Metric
from vecmigrate.validate import completeness
from vecmigrate.validate.completeness import CompletenessReport, check_completeness

N = 3_000


def _with_vectors(table: pa.Table, edit: Callable[[np.ndarray], None]) -> pa.Table:
    vecs = vectors_numpy(table.column("vector")).copy()
    edit(vecs)
    index = table.schema.get_field_index("vector")
    return table.set_column(index, "vector", fixed_size_vectors(vecs))


def _check(
    source_caps: dict[str, Any] | None = None,
    target_caps: dict[str, Any] | None = None,
    target_setup: Callable[[Connector], None] | None = None,
) -> CompletenessReport:
    with connect("memory://src") as source, connect("memory://dst") as target:
        if source_caps:
            source.capabilities = replace(source.capabilities, **source_caps)  # type: ignore[misc]
        if target_caps:
            target.capabilities = replace(target.capabilities, **target_caps)  # type: ignore[misc]
        if target_setup is not None:
            target_setup(target)
        return check_completeness(source, target, source.describe())


def _unsupported_fetch(conn: Connector) -> None:
    def fetch(ids: Any) -> pa.RecordBatch:
        raise Unsupported("memory: no fetch in this test")

    conn.fetch = fetch  # type: ignore[method-assign]


@pytest.fixture
def several_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(completeness, "BUCKET_BYTES", 20_000)


@pytest.mark.parametrize("id_type", ["string", "int64"])
@pytest.mark.parametrize("reread", ["fetch", "scan", "fetch-unsupported"])
def test_differing_vectors_are_named_exactly_by_fetch_or_by_scan(
    id_type: str, reread: str, several_buckets: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(dim=16, metric=Metric.L2, id_type=id_type)
    table = make_table(spec, N)
    perturbed, one_ulp, signed_zero = [11, 700, 2_999], [1_500], [42]

    def edit(v: np.ndarray) -> None:
        v[perturbed, 3] += np.float32(1e-3)
        v[one_ulp, 0] = np.nextafter(v[one_ulp, 0], np.float32(np.inf))
        v[signed_zero, 5] = np.float32(-0.0)  # the source has +0.0: equal values, other bits

    MemoryStore.put("src", spec, _with_vectors(table, lambda v: v.__setitem__((42, 5), 0.0)))
    MemoryStore.put("dst", spec, _with_vectors(table, edit))
    if reread == "scan":
        monkeypatch.setattr(completeness, "FETCH_BYTES", 0)
    setup = _unsupported_fetch if reread == "fetch-unsupported" else None
    report = _check(target_setup=setup)
    ids = table.column(ID).to_pylist()
    want = sorted(str(ids[i]) for i in perturbed + one_ulp)
    assert sorted(map(str, report.vector_diffs["vector"].ids)) == want
    assert report.vector_diffs["vector"].count == 4
    assert not report.missing.count and not report.extra.count and not report.metadata_diffs


def test_a_clean_copy_reads_no_vector_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(dim=16)
    table = make_table(spec, N)
    MemoryStore.put("src", spec, table)
    MemoryStore.put("dst", spec, table)

    def no_recheck(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing differs: no row should be read again")

    monkeypatch.setattr(completeness, "_recheck", no_recheck)
    report = _check()
    assert report.passed and report.source_count == report.target_count == N


def test_fingerprints_of_bit_exact_pairs_hold_hashes_not_vectors() -> None:
    spec = make_spec(dim=256)
    batch = make_table(spec, 100).to_batches()[0]
    exact = completeness.TolerancePolicy()
    plan = completeness._Plan(spec, {"vector": exact}, set(batch.schema.names), {"vector"})
    fp = completeness._fingerprints(batch, plan)
    assert "v:vector" not in fp.column_names and fp.column("h:vector").type == pa.uint64()
    assert fp.nbytes < batch.nbytes / 10


def test_declared_ulp_drift_passes_and_more_is_named(several_buckets: None) -> None:
    spec = make_spec(dim=16, metric=Metric.L2)
    table = make_table(spec, N)
    drifted, too_far = list(range(0, N, 37)), [1_234]

    def edit(v: np.ndarray) -> None:
        v[drifted, 2] = np.nextafter(v[drifted, 2], np.float32(np.inf))
        for _ in range(2):
            v[too_far, 7] = np.nextafter(v[too_far, 7], np.float32(-np.inf))

    MemoryStore.put("src", spec, table)
    MemoryStore.put("dst", spec, _with_vectors(table, edit))
    report = _check(target_caps={"exact_float32": False, "max_ulp": 1})
    assert report.vector_diffs["vector"].ids == [table.column(ID)[1_234].as_py()]
    assert "1 ulp" in report.policy


def test_a_normalising_side_is_compared_by_value(
    several_buckets: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(dim=16, metric=Metric.COSINE)
    table = make_table(spec, N)
    perturbed = [5, 2_500]

    def edit(v: np.ndarray) -> None:
        v *= np.float32(3.0)  # every row's bits change; the directions do not
        v[perturbed, 1] += np.float32(0.05)

    def no_recheck(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("vectors compared by value need no second read")

    monkeypatch.setattr(completeness, "_recheck", no_recheck)
    MemoryStore.put("src", spec, table)
    MemoryStore.put("dst", spec, _with_vectors(table, edit))
    report = _check(target_caps={"normalizes_cosine": True})
    ids = table.column(ID).to_pylist()
    assert sorted(report.vector_diffs["vector"].ids) == sorted(ids[i] for i in perturbed)
    assert "normalised" in report.policy
