"""The copy engine against the in-memory connector: plan, stream, retry, resume."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from tests.crashes import CrashingSource
from tests.datagen import make_spec, make_table
from vecmigrate.connectors import connect
from vecmigrate.connectors.base import Partition
from vecmigrate.connectors.memory.connector import MemoryConnector, MemoryStore
from vecmigrate.connectors.registry import register
from vecmigrate.engine import copy as copy_module
from vecmigrate.engine.copy import CopyJob, CopyOptions, copy
from vecmigrate.engine.ledger import Ledger
from vecmigrate.errors import ConfigError, DataError, SchemaMismatch, TransientError
from vecmigrate.hashing import set_hash
from vecmigrate.spec import ID, Metric


def _source(n: int = 5_000, **kw: object) -> pa.Table:
    spec = make_spec(**kw)  # type: ignore[arg-type]
    table = make_table(spec, n)
    MemoryStore.put("src", spec, table)
    return table


def _target_table() -> pa.Table:
    return MemoryStore.collections["dst"].table


def _opts(tmp_path: Path, **kw: object) -> CopyOptions:
    return CopyOptions(state_dir=tmp_path / "state", **kw)  # type: ignore[arg-type]


def test_copy_moves_every_row_once(tmp_path: Path) -> None:
    table = _source()
    result = copy("memory://src", "memory://dst", _opts(tmp_path, batch_size=333, workers=3))
    got = _target_table()
    assert result.rows == 5_000 == got.num_rows
    assert result.as_dict()["counts_match"] is True
    phases = result.as_dict()["phases_s"]
    assert list(phases) == ["connect", "plan", "stream", "finalize"]
    assert all(v >= 0 for v in phases.values())
    assert sum(phases.values()) <= result.elapsed_s + 0.01
    assert got.sort_by(ID).equals(table.sort_by(ID))
    want_hash = sum(set_hash(b) for b in table.to_batches()) % 2**64
    assert result.content_hash == f"{want_hash:016x}"


def test_rerun_of_a_finished_copy_does_nothing(tmp_path: Path) -> None:
    _source()
    copy("memory://src", "memory://dst", _opts(tmp_path))
    again = copy("memory://src", "memory://dst", _opts(tmp_path))
    assert again.already_complete and again.rows_this_run == 0
    restarted = copy("memory://src", "memory://dst", _opts(tmp_path, restart=True))
    assert restarted.rows_this_run == 5_000
    assert _target_table().num_rows == 5_000


def test_transient_errors_are_retried(tmp_path: Path) -> None:
    table = _source()
    result = copy(
        "memory://src",
        "memory://dst?fail_every=3",
        _opts(tmp_path, batch_size=500, retry_wait=0.001),
    )
    assert result.rows == 5_000
    assert _target_table().sort_by(ID).equals(table.sort_by(ID))


@pytest.mark.parametrize(("workers_first", "workers_then"), [(1, 3), (3, 1), (2, 2)])
def test_resume_after_crash_never_duplicates_or_skips(
    crashing_source: type[CrashingSource], tmp_path: Path, workers_first: int, workers_then: int
) -> None:
    table = _source(7_000)
    crashing_source.budget = 9
    with pytest.raises(RuntimeError, match="simulated crash"):
        copy(
            "crashmem://src", "memory://dst", _opts(tmp_path, batch_size=250, workers=workers_first)
        )
    partial = _target_table().num_rows
    assert 0 < partial < 7_000
    crashing_source.budget = 10**9
    result = copy(
        "crashmem://src", "memory://dst", _opts(tmp_path, batch_size=400, workers=workers_then)
    )
    assert result.resumed
    got = _target_table()
    assert got.num_rows == 7_000
    assert got.sort_by(ID).equals(table.sort_by(ID))


def test_plan_is_persisted_before_writes_and_not_resampled(
    crashing_source: type[CrashingSource], tmp_path: Path
) -> None:
    _source(4_000)
    crashing_source.budget = 2
    with pytest.raises(RuntimeError):
        copy("crashmem://src", "memory://dst", _opts(tmp_path, batch_size=100, workers=1))
    ledger_file = next((tmp_path / "state").glob("copy-*.sqlite"))
    ledger = Ledger(ledger_file)
    first = [s.partition for s in ledger.states()]
    ledger.close()
    crashing_source.budget = 10**9
    copy("crashmem://src", "memory://dst", _opts(tmp_path, batch_size=100, workers=4))
    ledger = Ledger(ledger_file)
    assert [s.partition for s in ledger.states()] == first
    assert all(s.done for s in ledger.states())
    ledger.close()


def test_bad_vector_names_partition_row_and_field(tmp_path: Path) -> None:
    table = _source(1_000)
    vectors = table.column("vector").combine_chunks()
    flat = vectors.flatten().to_numpy().copy()
    flat[32 * 517 + 3] = float("nan")
    bad = table.set_column(
        table.schema.get_field_index("vector"),
        "vector",
        pa.FixedSizeListArray.from_arrays(pa.array(flat), 32),
    )
    MemoryStore.put("src", MemoryStore.collections["src"].spec, bad)
    with pytest.raises(DataError) as err:
        copy("memory://src", "memory://dst", _opts(tmp_path, batch_size=100))
    msg = str(err.value)
    assert "row 517" in msg and "'vector'" in msg and "NaN" in msg and "doc-0000517" in msg


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    table = _source(300)
    ids = table.column(ID).to_pylist()
    ids[200] = ids[100]
    dup = table.set_column(0, ID, pa.array(ids))
    MemoryStore.put("src", MemoryStore.collections["src"].spec, dup)
    with pytest.raises(DataError, match="duplicate id"):
        copy("memory://src", "memory://dst", _opts(tmp_path, batch_size=1000))


def test_dimension_mismatch_with_existing_target(tmp_path: Path) -> None:
    _source(100)
    connect("memory://dst").create(make_spec(dim=8))
    with pytest.raises(SchemaMismatch, match="dim 8"):
        copy("memory://src", "memory://dst", _opts(tmp_path))


def test_same_source_and_target_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="same collection"):
        CopyJob("memory://a", "memory://a", _opts(tmp_path))


def test_each_pair_has_its_own_checkpoint(tmp_path: Path) -> None:
    _source(10)
    copy("memory://src", "memory://dst", _opts(tmp_path))
    copy("memory://src", "memory://other", _opts(tmp_path))
    assert len(list((tmp_path / "state").glob("copy-*.sqlite"))) == 2


def test_unknown_metric_and_scheme_are_clear() -> None:
    with pytest.raises(ConfigError, match="unknown metric 'hamming'"):
        Metric.parse("hamming")
    with pytest.raises(ConfigError, match="unknown URI scheme 'nosuch'"):
        connect("nosuch://x")


def test_transient_scan_errors_reopen_from_cursor(tmp_path: Path) -> None:
    table = _source(2_000)

    class Flaky(MemoryConnector):
        scheme = "flaky"
        failures = 0

        def scan(self, partition: Partition, cursor: str | None, batch_size: int):  # type: ignore[no-untyped-def]
            for i, sb in enumerate(super().scan(partition, cursor, batch_size)):
                if i == 1 and Flaky.failures < 3:
                    Flaky.failures += 1
                    raise TransientError("connection reset")
                yield sb

    register("flaky", Flaky)
    copy("flaky://src", "memory://dst", _opts(tmp_path, batch_size=100, retry_wait=0.001))
    assert Flaky.failures == 3
    assert _target_table().sort_by(ID).equals(table.sort_by(ID))


def test_on_error_skip_sends_bad_rows_to_the_dead_letter_file(tmp_path: Path) -> None:
    import json

    spec = make_spec(dim=4)
    good = make_table(spec, 50)
    raw = pa.table(
        {
            "id": pa.array(["ok-1", "", "dup", "dup", "nan", "short", None]),
            "vector": pa.array(
                [[1.0, 2, 3, 4], [1.0, 2, 3, 4], [1.0, 2, 3, 4], [5.0, 6, 7, 8],
                 [float("nan"), 1, 1, 1], [1.0, 2], [1.0, 2, 3, 4]],
                pa.list_(pa.float32()),
            ),
        }
    )  # fmt: skip
    from vecmigrate.connectors.memory.connector import MemoryCollection

    table = pa.concat_tables([good.select(["id", "vector"]).cast(raw.schema), raw])
    MemoryStore.collections["src"] = MemoryCollection(
        spec=make_spec(dim=4, metadata=(), documents=False), table=table
    )
    with pytest.raises(DataError, match=r"^memory://src partition rows-0-57, row 55, id 'short'"):
        copy("memory://src", "memory://dst", _opts(tmp_path))
    dead = tmp_path / "dead.jsonl"
    result = copy(
        "memory://src",
        "memory://dst2",
        _opts(tmp_path, on_error="skip", dead_letter=dead),
    )
    assert result.rows == 52 and result.skipped == 5
    lines = [json.loads(x) for x in dead.read_text().splitlines()]
    reasons = {(x["row"], x["field"], x["reason"].split(" (")[0]) for x in lines}
    assert reasons == {
        (51, "id", "id is empty"),
        (53, "id", "duplicate id"),
        (54, "vector", "vector contains NaN or inf"),
        (55, "vector", "vector has 2 dimensions, expected 4"),
        (56, "id", "id is null"),
    }
    assert result.as_dict()["dead_letter"] == str(dead)


def test_a_checkpoint_resumes_with_the_hash_scheme_it_began_with(
    crashing_source: type[CrashingSource], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint made before hash schemes were recorded hashed with scheme 1: its resumed
    run goes on with scheme 1, so the partial sums it kept still add up; a scheme this version
    does not know is refused with what to do."""
    table = _source(3_000)
    crashing_source.budget = 4
    with monkeypatch.context() as old_version, pytest.raises(RuntimeError, match="crash"):
        old_version.setattr(copy_module, "HASH_SCHEME", 1)
        copy("crashmem://src", "memory://dst", _opts(tmp_path, batch_size=250, workers=1))
    ledger = Ledger(next((tmp_path / "state").glob("copy-*.sqlite")))
    assert ledger.info("hash_scheme") == 1
    ledger._db.execute("DELETE FROM meta WHERE key = 'hash_scheme'")  # as older versions left it
    ledger.close()
    crashing_source.budget = 10**9
    result = copy("crashmem://src", "memory://dst", _opts(tmp_path, batch_size=400, workers=2))
    assert result.resumed and result.rows == 3_000
    want = sum(set_hash(b, scheme=1) for b in table.to_batches()) % 2**64
    assert result.content_hash == f"{want:016x}"

    fresh = copy("memory://src", "memory://dst", _opts(tmp_path / "new"))
    want = sum(set_hash(b, scheme=2) for b in table.to_batches()) % 2**64
    assert fresh.content_hash == f"{want:016x}"

    ledger = Ledger(next((tmp_path / "new" / "state").glob("copy-*.sqlite")))
    ledger.set("hash_scheme", "99")
    ledger.set("status", "running")
    ledger.close()
    with pytest.raises(ConfigError, match=r"scheme 99.*--restart"):
        copy("memory://src", "memory://dst", _opts(tmp_path / "new"))


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("memory://dst", "memory:// collection lives in the process"),
        ("faiss://{tmp}/f.index", "FAISS index is held in one process"),
        ("qdrant+edge://{tmp}/edge", "WAL is locked"),
        ("qdrant+local://{tmp}/q?collection=items", "qdrant://"),
        ("milvus+lite://{tmp}/m.db?collection=items", "milvus://"),
        ("chroma://{tmp}/c?collection=items", "chroma+http://"),
    ],
)
def test_ray_refuses_a_collection_one_process_holds_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, says: str
) -> None:
    """Worker processes could not open it (or, for Chroma, would corrupt it): refused up front,
    before Ray starts or anything is written."""
    from vecmigrate.engine import ray_executor

    def no_ray(*_: object) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray_executor, "RayLaunch", no_ray)
    _source(200)
    target = target.format(tmp=tmp_path)
    with pytest.raises(ConfigError, match="--executor ray") as err:
        copy("memory://src", target, _opts(tmp_path, executor="ray"))
    assert "source" in str(err.value) and "memory://" in str(err.value)  # the source first
    with pytest.raises(ConfigError, match=f"target in every worker.*{re.escape(says)}"):
        copy(f"parquet://{tmp_path / 'src-ds'}", target, _opts(tmp_path, executor="ray"))
    assert not (tmp_path / "f.index").exists() and not (tmp_path / "edge").exists()
