"""``import --on-error skip`` over the bad-input corpus, many bad rows, and a resumed import.

Row-level problems of a dataset (a malformed line or record, a wrong dimension, NaN/inf, a bad
cell, a duplicate id) go to the dead-letter file with the same location and reason that
``--on-error fail`` stops with; problems of the whole dataset (manifest, header, checksum)
still stop the import, with the same line as without skipping.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tests.badinput.cases import CASES, Case, Context, parquet_bytes
from tests.badinput.test_corpus import snapshot
from tests.datagen import make_batch, make_spec
from vecmigrate.cli.app import app
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import WriteToken
from vecmigrate.engine.copy import CopyJob, CopyOptions
from vecmigrate.errors import DataError
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import ID, CollectionSpec

# case -> (rows imported, rows skipped) with --on-error skip
ROW_LEVEL = {
    "parquet_duplicate_ids": (5, 1),
    "parquet_null_id": (5, 1),
    "parquet_wrong_dimension": (0, 6),
    "parquet_mixed_dimensions": (5, 1),
    "parquet_empty_vector": (5, 1),
    "parquet_non_numeric_vector": (0, 6),
    "parquet_inf_in_vector": (5, 1),
    "parquet_metadata_of_wrong_type": (0, 6),
    "jsonl_malformed_line": (5, 1),
    "jsonl_record_not_an_object": (5, 1),
    "jsonl_first_record_null": (5, 1),
    "jsonl_record_null_after_others": (5, 1),
    "jsonl_unknown_field": (5, 1),
    "jsonl_metadata_of_wrong_type": (5, 1),
    "jsonl_mixed_dimensions": (5, 1),
    "jsonl_nan_in_vector": (5, 1),
    "jsonl_invalid_utf8_id": (5, 1),
    "jsonl_empty_vector": (5, 1),
    "jsonl_non_numeric_vector": (5, 1),
    "jsonl_not_utf8": (5, 1),
    "jsonl_empty_line": (6, 1),
    "jsonl_empty_id": (5, 1),
    "jsonl_id_of_wrong_type": (5, 1),
    "jsonl_field_name_in_other_unicode_form": (5, 1),
    "jsonl_id_with_lone_surrogate": (5, 1),
    "csv_cell_of_wrong_type": (5, 1),
    "csv_vector_not_an_array": (5, 1),
    "csv_inf_in_vector": (5, 1),
}
# case -> the line skipping stops with instead: the record that has no closing quote is a 7th
# record, which the manifest (6 rows) does not count
OTHER_LINE = {"csv_unterminated_quote": "shard holds 7 rows, the manifest says 6"}
IMPORT_CASES = [c for c in CASES if not c.name.startswith("pg_")]  # no server cases


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _as_error(entry: dict[str, Any]) -> str:
    """A dead-letter entry as the one-line error ``--on-error fail`` would print."""
    err = DataError(
        entry["reason"],
        file=entry["file"],
        row=entry["file_row"],
        record_id=entry["id"],
        field=entry["field"],
    )
    return err.one_line()


def test_every_row_level_case_is_in_the_corpus() -> None:
    assert set(ROW_LEVEL) <= {c.name for c in CASES}


@pytest.mark.parametrize("case", IMPORT_CASES, ids=lambda c: c.name)
def test_skipping_sets_bad_rows_aside_and_still_stops_on_bad_datasets(
    case: Case, tmp_path: Path
) -> None:
    run = case.build(Context(tmp_path))
    assert run.args[0] == "import"
    before = snapshot(run.source)
    dead = tmp_path / "dead.jsonl"
    skip = [*run.args, "--on-error", "skip", "--dead-letter", str(dead)]
    result = CliRunner().invoke(app, [*skip, "--json"], env=run.env)
    try:
        if case.name in ROW_LEVEL:
            assert result.exit_code == 0, result.stderr
            summary = json.loads(result.stdout)
            rows, skipped = ROW_LEVEL[case.name]
            assert (summary["rows"], summary["skipped"]) == (rows, skipped)
            entries = _lines(dead)
            assert len(entries) == skipped
            line = _as_error(entries[0])
            for text in run.expect:  # the same place and reason as without skipping
                assert text in line, f"{text!r} is not in: {line}"
            assert all(e["file"] and e["file_row"] is not None for e in entries)
        else:
            assert result.exit_code != 0, result.stdout
            refused = CliRunner().invoke(app, run.args, env=run.env)
            skip_line = result.stderr.strip().splitlines()
            assert len(skip_line) == 1
            if case.name in OTHER_LINE:
                assert OTHER_LINE[case.name] in skip_line[0]
            else:
                assert skip_line == refused.stderr.strip().splitlines()
                assert _lines(dead) == []
        assert snapshot(run.source) == before, "the input changed"
    finally:
        if run.after is not None:
            run.after()


# -- many bad rows in every format -------------------------------------------------------------

DIM = 8
N = 3_000


def _dataset(folder: Path, fmt: str, spec: CollectionSpec, shards: int = 1) -> list[Path]:
    """A valid dataset of N rows in ``shards`` shards; the shard paths in manifest order."""
    per = N // shards
    with connect(f"{fmt}://{folder}") as conn:
        conn.create(spec, IfExists.FAIL)
        conn.begin("run-1", resume=False)
        for k in range(shards):
            conn.upsert(make_batch(spec, k * per, per), WriteToken("run-1", 0, k * per))
        conn.finalize(spec)
    manifest = json.loads((folder / "manifest.json").read_text())
    return [folder / s["path"] for s in manifest["shards"]]


def _agree(folder: Path, shard: Path) -> None:
    """Make the manifest agree with a shard edited by hand."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    data = shard.read_bytes()
    for entry in manifest["shards"]:
        if folder / entry["path"] == shard:
            entry["bytes"] = len(data)
            entry["sha256"] = hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(manifest))


def _corrupt_jsonl(shard: Path, rows: list[int]) -> None:
    lines = shard.read_bytes().splitlines(keepends=True)
    for k, i in enumerate(rows):
        record = json.loads(lines[i])
        kind = k % 5
        if kind == 0:
            lines[i] = lines[i][:25] + b"\n"  # malformed JSON
        elif kind == 1:
            record["vector"] = record["vector"][:-1]  # wrong dimension
        elif kind == 2:
            record["colour"] = "red"  # unknown field
        elif kind == 3:
            record["rank"] = "high"  # wrong type
        else:
            record["id"] = ""  # empty id
        if kind:
            lines[i] = (json.dumps(record) + "\n").encode()
    shard.write_bytes(b"".join(lines))


def _corrupt_csv(shard: Path, rows: list[int]) -> None:
    import csv
    import io

    records = list(csv.reader(io.StringIO(shard.read_text(), newline="")))
    header = records[0]
    vec, rank = header.index("vector"), header.index("rank")
    for k, i in enumerate(rows):
        record = records[i + 1]
        kind = k % 4
        if kind == 0:
            record[vec] = json.dumps(json.loads(record[vec])[:-1])  # wrong dimension
        elif kind == 1:
            record[rank] = "twelve"  # not an int64
        elif kind == 2:
            record.append("extra")  # one cell too many
        else:
            record[vec] = "[1.0,NaN" + ",0.5" * (DIM - 2) + "]"  # NaN
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows(records)
    shard.write_text(out.getvalue())


def _corrupt_parquet(shard: Path, rows: list[int], spec: CollectionSpec) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(shard)
    ids = table.column(ID).to_pylist()
    m = vectors_numpy(table.column("vector")).copy()
    for k, i in enumerate(rows):
        kind = k % 3
        if kind == 0:
            m[i, 0] = np.nan
        elif kind == 1:
            ids[i] = None
        else:
            ids[i] = ids[i - 1]  # a duplicate of the row before (the later one is skipped)
    table = table.set_column(0, ID, pa.array(ids, pa.string()))
    table = table.set_column(
        table.schema.get_field_index("vector"), "vector", fixed_size_vectors(m)
    )
    shard.write_bytes(parquet_bytes(table))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_many_bad_rows_are_skipped_and_every_good_row_imported(tmp_path: Path, fmt: str) -> None:
    spec = make_spec(dim=DIM)
    folder = tmp_path / "ds"
    (shard,) = _dataset(folder, fmt, spec)
    rng = np.random.default_rng(11)
    bad = sorted(int(i) for i in rng.choice(np.arange(1, N), 60, replace=False))
    if fmt == "parquet":
        bad = [i for i in bad if i - 1 not in bad]  # a duplicate's first copy stays good
        _corrupt_parquet(shard, bad, spec)
    elif fmt == "jsonl":
        _corrupt_jsonl(shard, bad)
    else:
        _corrupt_csv(shard, bad)
    _agree(folder, shard)
    dead = tmp_path / "dead.jsonl"
    options = CopyOptions(
        state_dir=tmp_path / "state", batch_size=500, on_error="skip", dead_letter=dead
    )
    result = CopyJob(f"{fmt}://{folder}", f"parquet://{tmp_path / 'out'}", options).run()
    assert (result.rows, result.skipped) == (N - len(bad), len(bad))
    entries = _lines(dead)
    assert sorted(e["file_row"] for e in entries) == bad
    with connect(f"parquet://{tmp_path / 'out'}") as conn:
        got = set(conn.fetch([f"doc-{i:07d}" for i in range(N)]).column(ID).to_pylist())
    assert got == {f"doc-{i:07d}" for i in range(N) if i not in bad}


# -- resuming ----------------------------------------------------------------------------------


class _StopAfter:
    """Progress that asks the job to stop after a number of batches."""

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.job: CopyJob | None = None

    def start(self, total: int | None, done: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        self.batches -= 1
        if self.batches <= 0 and self.job is not None:
            self.job.stop()

    def finish(self) -> None:
        pass


def test_a_resumed_import_neither_repeats_nor_loses_a_row(tmp_path: Path) -> None:
    spec = make_spec(dim=DIM)
    folder = tmp_path / "ds"
    shards = _dataset(folder, "jsonl", spec, shards=3)
    per = N // 3
    bad: list[int] = []  # ids (numbers) of the bad rows
    for k, shard in enumerate(shards):
        rows = [3 + k, 150 + k, 151 + k, per - 1]
        _corrupt_jsonl(shard, rows)
        _agree(folder, shard)
        bad += [k * per + r for r in rows]
    dead = tmp_path / "dead.jsonl"
    source, target = f"jsonl://{folder}", f"parquet://{tmp_path / 'out'}"

    def job(stop_after: int | None) -> CopyJob:
        options = CopyOptions(
            state_dir=tmp_path / "state",
            batch_size=100,
            workers=1,
            on_error="skip",
            dead_letter=dead,
        )
        progress = _StopAfter(stop_after) if stop_after else None
        copy_job = CopyJob(source, target, options, progress)
        if progress is not None:
            progress.job = copy_job
        return copy_job

    for stop_after in (2, 13):  # stop inside the first shard, then inside the second
        with pytest.raises(BaseException) as stopped:
            job(stop_after).run()
        assert type(stopped.value).__name__ in ("KeyboardInterrupt", "_Stopped")
    assert 0 < len(_lines(dead)) < len(bad)
    result = job(None).run()
    assert result.resumed
    assert (result.rows, result.skipped) == (N - len(bad), len(bad))
    entries = _lines(dead)
    rows = [(e["file"], e["file_row"]) for e in entries]
    assert len(rows) == len(set(rows)) == len(bad), "a bad row was dead-lettered twice"
    with connect(target) as conn:
        got = conn.fetch([f"doc-{i:07d}" for i in range(N)]).column(ID).to_pylist()
    assert sorted(got) == [f"doc-{i:07d}" for i in range(N) if i not in bad]
