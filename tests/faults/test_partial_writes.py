"""A target that applies half a batch and then fails: the engine re-sends, nothing doubles.

Each real target connector is wrapped in a subclass whose ``upsert`` writes the first half of
some batches through the real connector and then raises ``TransientError`` (a connection that
dropped after the server took part of the write). The copy must retry the whole batch and end
with every row exactly once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest

from tests.conformance.systems import SYSTEMS, System
from tests.datagen import make_spec, make_table
from vecmigrate.connectors import IfExists, connect, registry
from vecmigrate.connectors.base import Connector, WriteToken
from vecmigrate.engine.copy import CopyOptions, copy
from vecmigrate.errors import TransientError
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import ID, Metric
from vecmigrate.uri import ConnectorURI

N = 1_200
BATCH = 150
TARGETS = (
    "memory",
    "parquet",
    "jsonl",
    "csv",
    "lancedb",
    "chroma",
    "faiss",
    "sqlitevec",
    "milvus+lite",
    "qdrant+edge",
    "redis",
    "pgvector",
    "chroma+http",
)


def half_accepting(base: type[Connector]) -> type[Connector]:
    """``base`` whose first send of every other batch stops half way with a TransientError."""

    class HalfAccepting(base):  # type: ignore[valid-type,misc]
        half_writes: ClassVar[int] = 0
        seen: ClassVar[set[tuple[int, int]]] = set()
        lock: ClassVar[threading.Lock] = threading.Lock()

        def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
            assert token is not None
            key = (token.partition_index, token.rows_before)
            with self.lock:
                first_send = key not in self.seen
                self.seen.add(key)
                fail = first_send and (token.rows_before // BATCH) % 2 == 0
                if fail:
                    type(self).half_writes += 1
            if fail and batch.num_rows > 1:
                super().upsert(batch.slice(0, batch.num_rows // 2), token)
                raise TransientError("the target took half the batch, then the connection dropped")
            super().upsert(batch, token)

    return HalfAccepting


def _systems() -> list[Any]:
    chosen = [s for s in SYSTEMS if s.name in TARGETS]
    return [pytest.param(s, id=s.name) for s in chosen]


@pytest.fixture(params=_systems())
def target_system(request: pytest.FixtureRequest) -> tuple[System, Any]:
    system: System = request.param
    reason = system.skip_reason()
    if reason:
        pytest.skip(reason)
    engine = request.getfixturevalue(system.engine_fixture) if system.engine_fixture else None
    return system, engine


def _source(name: str) -> tuple[str, pa.Table]:
    spec = make_spec(dim=8, metric=Metric.COSINE)  # the one metric every target has
    table = make_table(spec, N, batch=400)
    uri = f"memory://{name}"
    with connect(uri) as conn:
        conn.create(spec, IfExists.REPLACE)
        for b in table.to_batches():
            conn.upsert(b)
        conn.finalize(spec)
    return uri, table


def _read_all(uri: str) -> pa.Table:
    with connect(uri) as conn:
        spec = conn.describe()
        batches = [sb.batch for p in conn.partitions(4) for sb in conn.scan(p, None, 10_000)]
    return pa.Table.from_batches(batches, spec.arrow_schema())


def _assert_same_rows(got: pa.Table, want: pa.Table) -> None:
    ids = got.column(ID).to_pylist()
    assert len(ids) == len(set(ids)), "a row was written twice"
    assert sorted(map(str, ids)) == sorted(map(str, want.column(ID).to_pylist()))
    got = got.sort_by(ID) if pa.types.is_string(got.schema.field(ID).type) else got
    by_id = {str(i): k for k, i in enumerate(got.column(ID).to_pylist())}
    order = [by_id[str(i)] for i in want.column(ID).to_pylist()]
    g = vectors_numpy(got.column("vector").combine_chunks())[order]
    w = vectors_numpy(want.column("vector").combine_chunks())
    # some targets store cosine vectors normalised: compare directions
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    assert np.allclose(g, w, rtol=1e-5, atol=1e-6)


def test_half_accepted_batches_are_resent_without_duplicates(
    target_system: tuple[System, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, engine = target_system
    source, table = _source(f"partial-{tmp_path.name}")
    target = system.make_uri(tmp_path, "partial", engine)
    scheme = ConnectorURI.parse(target).scheme
    flaky = half_accepting(registry.connector_class(scheme))
    monkeypatch.setitem(registry._registered, scheme, flaky)
    options = CopyOptions(
        batch_size=BATCH,
        workers=2,
        state_dir=tmp_path / "state",
        retry_wait=0.01,
        target_process="shared",  # the half-accepting class lives in this process
    )
    result = copy(source, target, options)
    assert flaky.half_writes >= N // BATCH // 2 - 1  # type: ignore[attr-defined]
    assert result.rows == N and result.skipped == 0
    monkeypatch.delitem(registry._registered, scheme)
    got = _read_all(target)
    _assert_same_rows(got, table)
    if result.target_count is not None:
        assert result.target_count == N


def test_a_silently_half_accepted_batch_shows_in_the_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target that drops rows without an error cannot hide it: the counts disagree."""
    source, _ = _source(f"silent-{tmp_path.name}")
    base = registry.connector_class("memory")

    class Lossy(base):  # type: ignore[valid-type,misc]
        def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
            if token is not None and token.rows_before == BATCH:
                batch = batch.slice(0, batch.num_rows // 2)
            super().upsert(batch, token)

    monkeypatch.setitem(registry._registered, "memory", Lossy)
    result = copy(
        source,
        f"memory://lossy-{tmp_path.name}",
        CopyOptions(batch_size=BATCH, workers=1, state_dir=tmp_path / "state"),
    )
    assert result.as_dict()["counts_match"] is False
    assert result.target_count is not None and result.target_count < N
