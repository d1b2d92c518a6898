"""One suite every connector passes against its real engine (capabilities skip the rest).

Write 10k records, count, scan (interrupted and resumed), fetch by ids, kNN exact top-1,
idempotent re-write, delete, describe round trip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.conformance.systems import System, system_params
from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import Connector, IfExists, connect
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import ID, CollectionSpec, MetadataType, Metric

N = 10_000
BATCH = 1_000


@pytest.fixture(params=system_params())
def system(request: pytest.FixtureRequest) -> System:
    s: System = request.param
    reason = s.skip_reason()
    if reason:
        pytest.skip(reason)
    return s


@pytest.fixture
def engine(system: System, request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(system.engine_fixture) if system.engine_fixture else None


@pytest.fixture
def open_collection(system: System, engine: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    opened: list[Connector] = []

    def _open(name: str) -> Connector:
        conn = connect(system.make_uri(tmp_path, name, engine))
        opened.append(conn)
        return conn

    yield _open
    for conn in opened:
        conn.close()


def _spec_for(conn: Connector, metric: Metric = Metric.COSINE) -> CollectionSpec:
    caps = conn.capabilities
    return make_spec(
        dim=32,
        metric=metric if metric in caps.metrics else sorted(caps.metrics)[0],
        id_type="string" if caps.string_ids else "int64",
        documents=caps.documents,
    )


def _filled(open_collection: Any, name: str = "conf") -> tuple[Connector, CollectionSpec, pa.Table]:
    conn = open_collection(name)
    spec = _spec_for(conn)
    conn.create(spec, IfExists.REPLACE)
    batches = [make_batch(spec, s, BATCH) for s in range(0, N, BATCH)]
    for b in batches:
        conn.upsert(b)
    conn.finalize(spec)
    return conn, spec, pa.Table.from_batches(batches)


def _scan_all(conn: Connector, batch_size: int = 700) -> pa.Table:
    out = []
    for p in conn.partitions(3):
        out += [sb.batch for sb in conn.scan(p, None, batch_size)]
    return pa.Table.from_batches(out) if out else pa.table({})


def _assert_vectors_equal(
    conn: Connector, got: np.ndarray, want: np.ndarray, metric: Metric
) -> None:
    caps = conn.capabilities
    if caps.normalizes_cosine and metric is Metric.COSINE:
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    elif caps.exact_float32:
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    else:  # documented float32 drift (e.g. Chroma: up to 2 ulp on cosine collections)
        np.testing.assert_array_max_ulp(got, want, maxulp=max(caps.max_ulp, 1))


def test_write_count_and_full_scan(open_collection: Any) -> None:
    conn, spec, source = _filled(open_collection)
    assert conn.count() == N
    got = _scan_all(conn)
    assert got.num_rows == N
    assert len(set(got.column(ID).to_pylist())) == N
    got = got.sort_by(ID)
    want = source.sort_by(ID)
    assert got.column(ID).to_pylist() == want.column(ID).to_pylist()
    _assert_vectors_equal(
        conn,
        vectors_numpy(got.column("vector")),
        vectors_numpy(want.column("vector")),
        spec.vector().metric,
    )
    for m in spec.metadata:
        g, w = got.column(m.name).to_pylist(), want.column(m.name).to_pylist()
        if m.type is MetadataType.FLOAT64 and not conn.capabilities.exact_float64:
            # documented float64 drift (Chroma rounds to 16 significant digits: <= 4 ulp)
            np.testing.assert_array_max_ulp(np.array(g), np.array(w), maxulp=4)
        else:
            assert g == w, m.name
    if spec.has_document:
        assert got.column("document").to_pylist() == want.column("document").to_pylist()


def test_scan_resumes_from_cursor(open_collection: Any) -> None:
    conn, _, _ = _filled(open_collection)
    seen: list[Any] = []
    for part in conn.partitions(2):
        cursor = None
        # read two batches, "crash", then resume from the last cursor
        it = conn.scan(part, None, 600)
        for _ in range(2):
            sb = next(it, None)
            if sb is None:
                break
            seen += sb.batch.column(ID).to_pylist()
            cursor = sb.cursor
        it.close()  # type: ignore[attr-defined]
        if cursor is not None:
            for sb in conn.scan(part, cursor, 600):
                seen += sb.batch.column(ID).to_pylist()
    assert len(seen) == N
    assert len(set(seen)) == N


def test_fetch_by_ids(open_collection: Any) -> None:
    conn, spec, source = _filled(open_collection)
    if not conn.capabilities.fetch:
        pytest.skip("fetch not supported")
    want = source.slice(1234, 50)
    ids = want.column(ID).to_pylist()
    got = pa.Table.from_batches(
        [conn.fetch([*ids, "no-such-id" if spec.id_type == "string" else 10**12])]
    )
    assert got.num_rows == 50
    got = got.sort_by(ID)
    want = want.sort_by(ID)
    assert got.column(ID).to_pylist() == want.column(ID).to_pylist()
    _assert_vectors_equal(
        conn,
        vectors_numpy(got.column("vector")),
        vectors_numpy(want.column("vector")),
        spec.vector().metric,
    )


def test_knn_finds_stored_vector_first(open_collection: Any) -> None:
    conn, _, source = _filled(open_collection)
    if not conn.capabilities.query:
        pytest.skip("kNN query not supported")
    picks = [0, 17, 4321, 9999]
    queries = vectors_numpy(source.column("vector"))[picks]
    result = conn.query(queries, 5)
    assert [row[0] for row in result.ids] == [source.column(ID)[i].as_py() for i in picks]
    assert all(len(row) == 5 for row in result.ids)


def test_rewrite_is_idempotent(open_collection: Any) -> None:
    conn, spec, _ = _filled(open_collection)
    again = make_batch(spec, 2000, BATCH)
    conn.upsert(again)
    conn.upsert(again)
    conn.finalize(spec)
    assert conn.count() == N


def test_upsert_replaces_values(open_collection: Any) -> None:
    conn, spec, _ = _filled(open_collection)
    if not conn.capabilities.fetch:
        pytest.skip("fetch not supported")
    changed = make_batch(spec, 0, 10, seed=99)
    conn.upsert(changed)
    conn.finalize(spec)
    got = pa.Table.from_batches([conn.fetch(changed.column(ID).to_pylist())]).sort_by(ID)
    _assert_vectors_equal(
        conn,
        vectors_numpy(got.column("vector")),
        vectors_numpy(changed.column("vector")),
        spec.vector().metric,
    )
    assert conn.count() == N


def test_delete(open_collection: Any) -> None:
    conn, spec, source = _filled(open_collection)
    if not conn.capabilities.delete:
        pytest.skip("delete not supported")
    ids = source.column(ID).to_pylist()[100:110]
    conn.delete(ids)
    conn.finalize(spec)
    assert conn.count() == N - 10
    if conn.capabilities.fetch:
        assert conn.fetch(ids).num_rows == 0


def test_describe_round_trip(open_collection: Any) -> None:
    conn, spec, _ = _filled(open_collection)
    got = conn.describe()
    assert got.vector().dim == spec.vector().dim
    assert got.vector().metric == spec.vector().metric
    assert got.id_type == spec.id_type
    assert {m.name for m in spec.metadata} <= {m.name for m in got.metadata}
    assert got.has_document == spec.has_document


def test_reopen_sees_the_data(system: System, engine: Any, tmp_path: Path) -> None:
    uri = system.make_uri(tmp_path, "persist", engine)
    with connect(uri) as conn:
        spec = _spec_for(conn)
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(make_batch(spec, 0, 500))
        conn.finalize(spec)
    if system.name == "memory":
        pass  # memory lives as long as the process
    with connect(uri) as again:
        assert again.count() == 500


def test_dimension_mismatch_with_existing_target_is_refused(open_collection: Any) -> None:
    from vecmigrate.errors import SchemaMismatch

    conn, _, _ = _filled(open_collection)
    other = make_spec(
        dim=16, id_type=conn.describe().id_type, documents=conn.capabilities.documents
    )
    with pytest.raises(SchemaMismatch):
        conn.create(other, IfExists.REUSE)
