"""chroma -> lancedb -> parquet -> jsonl -> csv -> chroma on 20k x 128 through the CLI.

Every stage keeps all ids once, metadata and documents equal and the spec's dimension and
metric. Vectors are bit-exact wherever the engine stores float32 exactly (LanceDB, Parquet,
JSONL, CSV); Chroma may return a component 1 float32 ulp off, and rounds float64 metadata to 16
significant digits (up to 4 float64 ulps), which the test allows there only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tests.datagen import make_batch, make_spec
from vecmigrate.cli.app import app
from vecmigrate.connectors import IfExists, connect
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import ID, Metric

pytest.importorskip("chromadb")
pytest.importorskip("lancedb")

N = 20_000
DIM = 128


def _read_all(uri: str) -> pa.Table:
    with connect(uri) as conn:
        batches = [sb.batch for p in conn.partitions(4) for sb in conn.scan(p, None, 5_000)]
    return pa.Table.from_batches(batches).sort_by(ID)


def _cli(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, [*args, "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    payload: dict[str, object] = json.loads(result.stdout)
    return payload


def _assert_same(got: pa.Table, want: pa.Table, *, max_ulp: int, float_ulp: int = 0) -> None:
    assert got.num_rows == N
    assert got.column(ID).to_pylist() == want.column(ID).to_pylist()
    g, w = vectors_numpy(got.column("vector")), vectors_numpy(want.column("vector"))
    if max_ulp == 0:
        assert np.array_equal(g.view(np.uint32), w.view(np.uint32))
    else:
        np.testing.assert_array_max_ulp(g, w, maxulp=max_ulp)
    for name in ("document", "category", "rank", "active"):
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    g_score = got.column("score").to_numpy()
    w_score = want.column("score").to_numpy()
    if float_ulp:
        np.testing.assert_array_max_ulp(g_score, w_score, maxulp=float_ulp)
    else:
        assert np.array_equal(g_score.view(np.int64), w_score.view(np.int64))


def test_round_trip_through_every_format(tmp_path: Path) -> None:
    spec = make_spec(dim=DIM, metric=Metric.L2)
    original = pa.Table.from_batches([make_batch(spec, s, 5_000) for s in range(0, N, 5_000)])
    original = original.sort_by(ID)
    chroma_src = f"chroma://{tmp_path / 'chroma-src'}?collection=items"
    with connect(chroma_src) as conn:
        conn.create(spec, IfExists.REPLACE)
        for batch in original.to_batches(max_chunksize=4_000):
            conn.upsert(batch)
        conn.finalize(spec)

    state = str(tmp_path / "state")
    lance = f"lancedb://{tmp_path / 'lance'}?table=items"
    summary = _cli("copy", chroma_src, lance, "--state-dir", state)
    assert summary["rows"] == N and summary["counts_match"] is True
    from_chroma = _read_all(chroma_src)
    _assert_same(from_chroma, original, max_ulp=1, float_ulp=4)
    _assert_same(_read_all(lance), from_chroma, max_ulp=0)

    _cli("export", lance, str(tmp_path / "pq"), "--format", "parquet", "--state-dir", state)
    _assert_same(_read_all(f"parquet://{tmp_path / 'pq'}"), from_chroma, max_ulp=0)

    jsonl = f"jsonl://{tmp_path / 'js'}"
    _cli("copy", f"parquet://{tmp_path / 'pq'}", jsonl, "--state-dir", state)
    _assert_same(_read_all(jsonl), from_chroma, max_ulp=0)

    csv = f"csv://{tmp_path / 'csv'}"
    _cli("copy", jsonl, csv, "--state-dir", state)
    _assert_same(_read_all(csv), from_chroma, max_ulp=0)

    chroma_back = f"chroma://{tmp_path / 'chroma-back'}?collection=items"
    summary = _cli("import", str(tmp_path / "csv"), chroma_back, "--state-dir", state)
    assert summary["target_count"] == N
    back = _read_all(chroma_back)
    _assert_same(back, from_chroma, max_ulp=1, float_ulp=4)

    for uri in (lance, f"parquet://{tmp_path / 'pq'}", jsonl, csv, chroma_back):
        with connect(uri) as conn:
            got = conn.describe()
        assert (got.vector().dim, got.vector().metric) == (DIM, Metric.L2), uri
        assert got.has_document, uri
