"""Validation catches and names exactly what was damaged (in-memory engines)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from tests.datagen import make_spec, make_table
from vecmigrate.cli.app import app
from vecmigrate.connectors.memory.connector import MemoryStore
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import ID
from vecmigrate.validate import completeness
from vecmigrate.validate.run import ValidateOptions, validate

N = 3_000


@pytest.fixture
def pair() -> pa.Table:
    spec = make_spec(dim=16)
    table = make_table(spec, N)
    MemoryStore.put("src", spec, table)
    MemoryStore.put("dst", spec, table)
    return table


def test_clean_copy_passes_with_perfect_recall(pair: pa.Table) -> None:
    result = validate("memory://src", "memory://dst", ValidateOptions(queries=50))
    assert result.passed, result.as_dict()
    assert result.checks["query_parity"]["recall_at_10"] == 1.0
    assert result.checks["completeness"]["source_count"] == N


def test_damage_is_caught_and_named_exactly(
    pair: pa.Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(completeness, "BUCKET_BYTES", 100_000)  # several buckets on disk
    ids = pair.column(ID).to_pylist()
    deleted = ids[10:17]
    perturbed = ids[100:103]
    changed = ids[200:202]
    damaged = pair.filter(pc.invert(pc.is_in(pair.column(ID), pa.array(deleted))))
    vecs = vectors_numpy(damaged.column("vector")).copy()
    row_of = {v: i for i, v in enumerate(damaged.column(ID).to_pylist())}
    for i in perturbed:
        vecs[row_of[i], 3] += 1e-3
    damaged = damaged.set_column(
        damaged.schema.get_field_index("vector"), "vector", fixed_size_vectors(vecs)
    )
    category = damaged.column("category").to_pylist()
    for i in changed:
        category[row_of[i]] = "tampered"
    damaged = damaged.set_column(
        damaged.schema.get_field_index("category"), "category", pa.array(category)
    )
    extra = make_table(make_spec(dim=16), 5).set_column(
        0, ID, pa.array([f"extra-{i}" for i in range(5)])
    )
    damaged = pa.concat_tables([damaged, extra.cast(damaged.schema)]).drop_columns(["score"])
    spec = MemoryStore.collections["src"].spec
    dropped_spec = spec.model_copy(
        update={"metadata": [m for m in spec.metadata if m.name != "score"]}
    )
    MemoryStore.put("dst", dropped_spec, damaged)

    result = CliRunner().invoke(
        app,
        [
            "validate",
            "memory://src",
            "memory://dst",
            "--json",
            "--report",
            str(tmp_path / "r.html"),
        ],
    )
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "fail"
    comp = data["checks"]["completeness"]
    assert sorted(comp["missing_in_target"]["ids"]) == sorted(deleted)
    assert sorted(comp["extra_in_target"]["ids"]) == [f"extra-{i}" for i in range(5)]
    assert sorted(comp["vectors_differ"]["vector"]["ids"]) == sorted(perturbed)
    meta = data["checks"]["metadata"]
    assert meta["missing_fields"] == ["score"]
    assert sorted(meta["differ"]["category"]["ids"]) == sorted(changed)
    assert set(meta["differ"]) == {"category"}
    html = (tmp_path / "r.html").read_text()
    assert "FAIL" in html and "<svg" in html


def test_one_ulp_drift_passes_only_where_the_engine_declares_it(pair: pa.Table) -> None:
    vecs = vectors_numpy(pair.column("vector")).copy()
    vecs[5, 0] = np.nextafter(vecs[5, 0], np.float32(np.inf))
    drifted = pair.set_column(
        pair.schema.get_field_index("vector"), "vector", fixed_size_vectors(vecs)
    )
    MemoryStore.put("dst", MemoryStore.collections["src"].spec, drifted)
    result = validate("memory://src", "memory://dst", ValidateOptions(queries=5))
    assert result.checks["completeness"]["vectors_differ"]["vector"]["ids"] == [
        pair.column(ID)[5].as_py()
    ]


def test_latency_bound_and_check_commands(pair: pa.Table) -> None:
    result = CliRunner().invoke(
        app,
        [
            "validate", "memory://src", "memory://dst", "--json", "--queries", "20",
            "--max-latency-ratio", "100", "--check-cmd", "true", "--check-cmd", "false",
        ],
    )  # fmt: skip
    data = json.loads(result.stdout)
    assert result.exit_code == 3
    assert data["failed_checks"] == ["integration"]
    assert data["checks"]["latency"]["passed"] is True
