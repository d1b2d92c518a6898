"""``--on-error skip`` through the CLI: bad rows go to the dead-letter file and are counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tests.badinput.cases import (
    DIM,
    ROWS,
    Context,
    _csv_bytes,
    _csv_rows,
    _jsonl_nan_in_vector,
    replace_shard,
    shard_dataset,
)
from tests.datagen import make_spec, make_table
from vecmigrate.cli.app import app
from vecmigrate.connectors import connect
from vecmigrate.connectors.memory.connector import MemoryCollection, MemoryStore
from vecmigrate.spec import ID

BAD = {  # id -> (field, reason) of the rows that must be skipped
    "": ("id", "id is empty"),
    "nan": ("vector", "vector contains NaN or inf"),
    "short": ("vector", "vector has 2 dimensions, expected 4"),
}


def _source_with_bad_rows() -> str:
    spec = make_spec(dim=4, metadata=(), documents=False)
    good = make_table(spec, 40)
    raw = pa.table(
        {
            ID: pa.array(["ok-1", "", "dup", "dup", "nan", "short"]),
            "vector": pa.array(
                [[1.0, 2, 3, 4], [1.0, 2, 3, 4], [1.0, 2, 3, 4], [5.0, 6, 7, 8],
                 [float("nan"), 1, 1, 1], [1.0, 2]],
                pa.list_(pa.float32()),
            ),
        }
    )  # fmt: skip
    table = pa.concat_tables([good.cast(raw.schema), raw])
    MemoryStore.collections["bad-rows"] = MemoryCollection(spec=spec, table=table)
    return "memory://bad-rows"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("command", ["copy", "export"])
def test_bad_rows_are_dead_lettered_and_counted(tmp_path: Path, command: str) -> None:
    source = _source_with_bad_rows()
    out = tmp_path / "out"
    target = [f"parquet://{out}"] if command == "copy" else [str(out)]
    dead = tmp_path / "dead.jsonl"
    common = [command, source, *target, "--state-dir", str(tmp_path / "state"), "--quiet"]

    refused = CliRunner().invoke(app, common)
    assert refused.exit_code != 0
    line = refused.stderr.strip()
    assert "\n" not in line and "memory://bad-rows partition" in line
    assert "row 45" in line and "field 'vector'" in line

    skip = [*common, "--on-error", "skip", "--dead-letter", str(dead), "--restart", "--overwrite"]
    done = CliRunner().invoke(app, [*skip, "--json"])
    assert done.exit_code == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["skipped"] == 4 and summary["rows"] == 42
    assert summary["dead_letter"] == str(dead)
    lines = _lines(dead)
    assert len(lines) == 4
    got = {(x["id"], x["field"], str(x["reason"]).split(" (")[0]) for x in lines}
    assert got == {(i, f, r) for i, (f, r) in BAD.items()} | {("dup", "id", "duplicate id")}
    assert all("record" in x and "row" in x and "partition" in x for x in lines)
    with connect(f"parquet://{out}") as conn:
        assert conn.count() == 42

    again = CliRunner().invoke(app, skip)  # human output names the count and the file
    assert again.exit_code == 0, again.stderr
    assert "skipped (bad rows)" in again.stdout and "4 ->" in again.stdout
    assert len(_lines(dead)) == 4, "--restart must start a new dead-letter file"


def test_on_error_takes_fail_or_skip(tmp_path: Path) -> None:
    source = _source_with_bad_rows()
    result = CliRunner().invoke(
        app, ["copy", source, f"parquet://{tmp_path}", "--on-error", "ignore"]
    )
    assert result.exit_code != 0
    assert "ignore" in result.stderr


def test_import_skips_bad_rows_of_a_dataset(tmp_path: Path) -> None:
    run = _jsonl_nan_in_vector(Context(tmp_path))
    dead = tmp_path / "dead.jsonl"
    result = CliRunner().invoke(
        app, [*run.args, "--on-error", "skip", "--dead-letter", str(dead), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["skipped"] == 1 and summary["rows"] == ROWS - 1
    lines = _lines(dead)
    assert len(lines) == 1
    (line,) = lines
    assert (line["file_row"], line["field"], line["id"]) == (2, "vector", "doc-0000002")
    assert line["file"].startswith("data/part-") and line["reason"].startswith(
        "vector contains NaN"
    )
    assert line["record"]["vector"][0] == "nan"  # the row as read, NaN spelled out
    with connect(f"parquet://{tmp_path / 'out'}") as conn:
        assert conn.count() == ROWS - 1


def _import_skipping(folder: Path, tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    dead = tmp_path / "dead.jsonl"
    args = ["import", str(folder), f"parquet://{tmp_path / 'out'}", "--quiet",
            "--state-dir", str(tmp_path / "state"), "--on-error", "skip",
            "--dead-letter", str(dead)]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), _lines(dead)


def test_import_skips_a_malformed_jsonl_line(tmp_path: Path) -> None:
    folder, shard = shard_dataset(Context(tmp_path), "jsonl")
    lines = shard.read_bytes().splitlines(keepends=True)
    broken = lines[3][:40]
    lines[3] = broken + b"\n"
    replace_shard(folder, shard, b"".join(lines))
    summary, dead = _import_skipping(folder, tmp_path)
    assert summary["rows"] == ROWS - 1 and summary["skipped"] == 1
    (line,) = dead
    assert line["file_row"] == 3 and line["field"] is None
    assert line["reason"].startswith("malformed JSON") and line["reason"].endswith("(line 4)")
    assert line["record"] == broken.decode()  # the raw text: it is not JSON
    with connect(f"parquet://{tmp_path / 'out'}") as conn:
        got = conn.fetch([f"doc-{i:07d}" for i in range(ROWS)])
    assert sorted(got.column("id").to_pylist()) == [f"doc-{i:07d}" for i in range(ROWS) if i != 3]


def test_import_skips_a_csv_row_of_the_wrong_dimension(tmp_path: Path) -> None:
    folder, shard = shard_dataset(Context(tmp_path), "csv")
    rows = _csv_rows(shard)
    col = rows[0].index("vector")
    rows[5][col] = json.dumps([*json.loads(rows[5][col]), 0.5])  # record 4, line 6
    replace_shard(folder, shard, _csv_bytes(rows))
    summary, dead = _import_skipping(folder, tmp_path)
    assert summary["rows"] == ROWS - 1 and summary["skipped"] == 1
    (line,) = dead
    assert (line["file_row"], line["field"], line["id"]) == (4, "vector", "doc-0000004")
    assert line["reason"] == f"vector has {DIM + 1} dimensions, expected {DIM} (line 6)"
    assert line["record"]["id"] == "doc-0000004"  # the cells of the record, as text


def test_import_with_on_error_fail_still_stops_at_the_bad_row(tmp_path: Path) -> None:
    folder, shard = shard_dataset(Context(tmp_path), "csv")
    rows = _csv_rows(shard)
    col = rows[0].index("vector")
    rows[5][col] = json.dumps([*json.loads(rows[5][col]), 0.5])
    replace_shard(folder, shard, _csv_bytes(rows))
    args = ["import", str(folder), f"parquet://{tmp_path / 'out'}", "--state-dir",
            str(tmp_path / "state"), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "row 4" in line and f"{DIM + 1} dimensions, expected {DIM} (line 6)" in line
