"""Validation against real engines: an approximate index shows its recall drop, damage on a
real target is named exactly, and the HTML report renders in a real browser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.engine.copy import CopyOptions, copy
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import ID, IndexConfig, Metric
from vecmigrate.validate import completeness
from vecmigrate.validate.html import write_report
from vecmigrate.validate.run import Thresholds, ValidateOptions, validate

pytest.importorskip("lancedb")

N = 20_000


def _lance_source(tmp_path: Path, n: int = N, dim: int = 32) -> str:
    uri = f"lancedb://{tmp_path / 'src'}?table=items"
    spec = make_spec(dim=dim, metric=Metric.L2)
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        for start in range(0, n, 5_000):
            conn.upsert(make_batch(spec, start, min(5_000, n - start)))
        conn.finalize(spec)
    return uri


def test_exact_pair_has_perfect_recall_and_hnsw_low_ef_shows_the_drop(
    postgres_engine: Any, tmp_path: Path
) -> None:
    pytest.importorskip("psycopg")
    source = _lance_source(tmp_path)
    exact = postgres_engine.uri("val_exact") + "&search=exact"
    copy(source, exact, CopyOptions(state_dir=tmp_path / "s1"))
    ok = validate(source, exact, ValidateOptions(queries=50, thresholds=Thresholds(min_recall=1.0)))
    assert ok.passed, ok.as_dict()
    assert ok.checks["query_parity"]["recall_at_10"] == 1.0

    approx = postgres_engine.uri("val_hnsw") + "&index=hnsw&ef_search=10"
    spec = make_spec(dim=32, metric=Metric.L2)
    spec.indexes = [IndexConfig(field="vector", kind="hnsw", metric=Metric.L2,
                                params={"m": 4, "ef_construction": 8})]  # fmt: skip
    with connect(approx) as conn:
        conn.create(spec, IfExists.REPLACE)
    copy(source, approx, CopyOptions(state_dir=tmp_path / "s2"))
    low = validate(
        source, approx, ValidateOptions(queries=100, thresholds=Thresholds(min_recall=0.99))
    )
    parity = low.checks["query_parity"]
    assert parity["recall_at_10"] < 1.0, parity  # the measured drop of an approximate index
    assert not parity["passed"] and low.failures == ["query_parity"]
    assert low.checks["completeness"]["passed"]  # every record is there; only search differs
    assert parity["worst_queries"] and parity["worst_queries"][0]["missing"]


def test_damage_on_a_real_target_is_named_exactly(tmp_path: Path) -> None:
    source = _lance_source(tmp_path, n=5_000)
    target = f"parquet://{tmp_path / 'copy'}"
    copy(source, target, CopyOptions(state_dir=tmp_path / "state"))
    with connect(target) as conn:
        table = pa.Table.from_batches(
            [sb.batch for p in conn.partitions(1) for sb in conn.scan(p, None, 10_000)]
        )
    ids = table.column(ID).to_pylist()
    damaged_ids = set(ids[:7])
    table = table.filter(pa.array([i not in damaged_ids for i in ids]))
    damaged = f"lancedb://{tmp_path / 'damaged'}?table=items"
    with connect(damaged) as conn:
        spec = make_spec(dim=32, metric=Metric.L2)
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(table.combine_chunks().to_batches()[0])
        conn.finalize(spec)
    result = validate(source, damaged, ValidateOptions(queries=10))
    comp = result.checks["completeness"]
    assert sorted(comp["missing_in_target"]["ids"]) == sorted(damaged_ids)
    assert not result.passed


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's chromium)")
    source = _lance_source(tmp_path, n=2_000)
    target = f"parquet://{tmp_path / 'copy'}"
    copy(source, target, CopyOptions(state_dir=tmp_path / "state"))
    result = validate(source, target, ValidateOptions(queries=40))
    report = tmp_path / "report.html"
    write_report(result, report)
    html = report.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # offline
    artifacts = Path("test-artifacts")
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "validation-report.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1200,1600",
         f"--screenshot={shot.resolve()}", report.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


@pytest.mark.parametrize("reread", ["fetch", "scan"])
def test_vector_damage_on_a_real_target_is_named_by_fetch_or_by_scan(
    tmp_path: Path, reread: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if reread == "scan":
        monkeypatch.setattr(completeness, "FETCH_BYTES", 0)  # suspects found by a second scan
    monkeypatch.setattr(completeness, "BUCKET_BYTES", 50_000)  # several buckets on disk
    source = _lance_source(tmp_path, n=5_000)
    with connect(source) as conn:
        table = pa.Table.from_batches(
            [sb.batch for p in conn.partitions(1) for sb in conn.scan(p, None, 10_000)]
        )
    vecs = vectors_numpy(table.column("vector")).copy()
    vecs[[17, 2_222], 3] += np.float32(1e-3)
    vecs[4_000, 0] = np.nextafter(vecs[4_000, 0], np.float32(np.inf))  # 1 ulp: Lance is exact
    table = table.set_column(
        table.schema.get_field_index("vector"), "vector", fixed_size_vectors(vecs)
    )
    damaged = f"lancedb://{tmp_path / 'damaged'}?table=items"
    with connect(damaged) as conn:
        spec = make_spec(dim=32, metric=Metric.L2)
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(table.combine_chunks().to_batches()[0])
        conn.finalize(spec)
    result = validate(source, damaged, ValidateOptions(queries=5))
    comp = result.checks["completeness"]
    ids = table.column(ID).to_pylist()
    assert sorted(comp["vectors_differ"]["vector"]["ids"]) == sorted(
        ids[i] for i in (17, 2_222, 4_000)
    )
    assert not comp["missing_in_target"]["count"] and result.checks["metadata"]["passed"]
