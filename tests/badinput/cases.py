"""The bad-input corpus: one small case per entry, each built in a fresh temporary folder.

A case builds its input (a dataset folder edited by hand, a URI, a server address with the
wrong secret, ...) and says how to run the CLI on it and which text the one-line error must
hold. The runner (test_corpus.py) checks the exit code, that stderr is one line, the expected
text, that no secret leaks, and that the input's bytes did not change.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import WriteToken
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import ID, CollectionSpec, MetadataField, MetadataType, VectorField

ROWS = 6
DIM = 3
SECRET = "s3cr3t-Hunter2-bad-input"


@dataclass
class Context:
    """What a case may use: its own folder and, for server cases, the test PostgreSQL."""

    tmp: Path
    postgres: Any = None  # tests.engines.PostgresAddress


@dataclass
class Run:
    """How to run the CLI on a case, and what must come out."""

    args: list[str]
    expect: tuple[str, ...]
    source: Path | None = None  # a file or folder whose bytes must not change
    env: dict[str, str] = field(default_factory=dict)
    forbid: tuple[str, ...] = ()  # texts that must not appear anywhere in the output
    after: Callable[[], None] | None = None  # more checks after the run


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Context], Run]
    needs: str | None = None  # "postgres": the case talks to the test server


CASES: list[Case] = []


def case(name: str, *, needs: str | None = None) -> Callable[[Callable[[Context], Run]], Any]:
    def register(build: Callable[[Context], Run]) -> Callable[[Context], Run]:
        CASES.append(Case(name, build, needs))
        return build

    return register


# -- building blocks ---------------------------------------------------------------------------


def dataset(
    folder: Path, fmt: str = "parquet", *, spec: CollectionSpec | None = None, rows: int = ROWS
) -> Path:
    """A valid one-shard dataset written by vecmigrate; returns the shard's path."""
    spec = spec or make_spec(dim=DIM)
    with connect(f"{fmt}://{folder}") as conn:
        conn.create(spec, IfExists.FAIL)
        conn.begin("run-1", resume=False)
        conn.upsert(make_batch(spec, 0, rows), WriteToken("run-1", 0, 0))
        conn.finalize(spec)
    return next((folder / "data").glob(f"part-*.{fmt}"))


def edit_manifest(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")


def replace_shard(folder: Path, shard: Path, data: bytes, *, rows: int | None = None) -> None:
    """New bytes for a shard, with a manifest that agrees (a dataset edited by hand)."""
    shard.write_bytes(data)

    def agree(m: dict[str, Any]) -> None:
        entry = m["shards"][0]
        entry["bytes"] = len(data)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        if rows is not None:
            entry["rows"] = rows
            m["row_count"] = rows

    edit_manifest(folder, agree)


def edit_lines(
    folder: Path, shard: Path, line: int, change: Callable[[dict[str, Any]], Any]
) -> None:
    """Change one JSONL record (0-based line) and make the manifest agree."""
    lines = shard.read_text(encoding="utf-8").splitlines(keepends=True)
    record = json.loads(lines[line])
    out = change(record)
    lines[line] = (out if isinstance(out, str) else json.dumps(record, ensure_ascii=False)) + "\n"
    replace_shard(folder, shard, "".join(lines).encode("utf-8"))


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def good_table(spec: CollectionSpec | None = None, rows: int = ROWS) -> pa.Table:
    return pa.Table.from_batches([make_batch(spec or make_spec(dim=DIM), 0, rows)])


def with_vectors(table: pa.Table, vectors: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index("vector"), "vector", vectors)


def import_run(ctx: Context, folder: Path, *expect: str, **kw: Any) -> Run:
    """``vecmigrate import FOLDER parquet://OUT``."""
    args = ["import", str(folder), f"parquet://{ctx.tmp / 'out'}"]
    return Run([*args, *state(ctx)], tuple(expect), source=folder, **kw)


def state(ctx: Context) -> list[str]:
    return ["--state-dir", str(ctx.tmp / "state"), "--quiet"]


def shard_dataset(ctx: Context, fmt: str = "parquet") -> tuple[Path, Path]:
    folder = ctx.tmp / "ds"
    return folder, dataset(folder, fmt)


# -- manifests ---------------------------------------------------------------------------------


@case("manifest_not_json")
def _manifest_not_json(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    (folder / "manifest.json").write_bytes(b'{"format": "vecmigrate-dataset", "spec": ')
    return import_run(ctx, folder, "manifest.json", "not valid JSON")


@case("manifest_not_a_dataset")
def _manifest_not_a_dataset(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    (folder / "manifest.json").write_text('{"hello": "world"}')
    return import_run(ctx, folder, "manifest.json", "not a vecmigrate dataset manifest")


@case("manifest_newer_format")
def _manifest_newer_format(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    edit_manifest(folder, lambda m: m.update(format_version=99))
    return import_run(ctx, folder, "manifest.json", "format version 99", "upgrade")


@case("manifest_without_spec")
def _manifest_without_spec(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    edit_manifest(folder, lambda m: m.pop("spec"))
    return import_run(ctx, folder, "manifest.json", "manifest field spec")


@case("manifest_bad_checksum_text")
def _manifest_bad_checksum_text(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    edit_manifest(folder, lambda m: m["shards"][0].update(sha256="not-a-hash"))
    return import_run(ctx, folder, "manifest.json", "shards.0.sha256")


@case("manifest_unsupported_metadata_type")
def _manifest_unsupported_metadata_type(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    edit_manifest(folder, lambda m: m["spec"]["metadata"][0].update(type="complex128"))
    return import_run(ctx, folder, "manifest.json", "spec.metadata.0.type")


@case("manifest_path_traversal")
def _manifest_path_traversal(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    (ctx.tmp / "outside.parquet").write_bytes(shard.read_bytes())
    edit_manifest(folder, lambda m: m["shards"][0].update(path="../outside.parquet"))
    return import_run(ctx, folder, "../outside.parquet", "stay inside the dataset folder")


@case("manifest_absolute_path")
def _manifest_absolute_path(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    outside = ctx.tmp / "outside.parquet"
    outside.write_bytes(shard.read_bytes())
    edit_manifest(folder, lambda m: m["shards"][0].update(path=str(outside)))
    return import_run(ctx, folder, str(outside), "stay inside the dataset folder")


@case("manifest_symlink_out_of_folder")
def _manifest_symlink_out_of_folder(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    outside = ctx.tmp / "elsewhere.parquet"
    outside.write_bytes(shard.read_bytes())
    shard.unlink()
    os.symlink(outside, shard)
    return import_run(ctx, folder, shard.name, "outside the dataset folder")


@case("manifest_incomplete_dataset")
def _manifest_incomplete_dataset(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    edit_manifest(folder, lambda m: m.update(complete=False))
    return import_run(ctx, folder, "manifest.json", "incomplete")


@case("manifest_row_count_wrong")
def _manifest_row_count_wrong(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    edit_manifest(folder, lambda m: m["shards"][0].update(rows=ROWS + 1))
    return import_run(ctx, folder, shard.name, f"holds {ROWS} rows, the manifest says {ROWS + 1}")


@case("dataset_folder_missing")
def _dataset_folder_missing(ctx: Context) -> Run:
    folder = ctx.tmp / "nothing-here"
    return import_run(ctx, folder, str(folder), "does not exist")


# -- shards ------------------------------------------------------------------------------------


@case("shard_missing")
def _shard_missing(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    shard.unlink()
    return import_run(ctx, folder, shard.name, "shard file is missing")


@case("shard_checksum_mismatch")
def _shard_checksum_mismatch(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    return import_run(ctx, folder, shard.name, "sha256 mismatch")


@case("shard_truncated")
def _shard_truncated(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    shard.write_bytes(shard.read_bytes()[:100])
    return import_run(ctx, folder, shard.name, "truncated")


@case("parquet_truncated_with_agreeing_manifest")
def _parquet_truncated_with_agreeing_manifest(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    replace_shard(folder, shard, shard.read_bytes()[:-40])
    return import_run(ctx, folder, shard.name, "not a readable Parquet file")


@case("parquet_garbage")
def _parquet_garbage(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    replace_shard(folder, shard, b"PAR1 this is not parquet at all PAR1")
    return import_run(ctx, folder, shard.name, "not a readable Parquet file")


@case("parquet_duplicate_ids")
def _parquet_duplicate_ids(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    table = good_table()
    ids = table.column(ID).to_pylist()
    ids[4] = ids[1]
    replace_shard(folder, shard, parquet_bytes(table.set_column(0, ID, pa.array(ids))))
    return import_run(ctx, folder, shard.name, "duplicate id", "row 4", "doc-0000001")


@case("parquet_null_id")
def _parquet_null_id(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    table = good_table()
    ids = table.column(ID).to_pylist()
    ids[2] = None
    replace_shard(folder, shard, parquet_bytes(table.set_column(0, ID, pa.array(ids, pa.string()))))
    return import_run(ctx, folder, shard.name, "id is null", "row 2")


@case("parquet_unknown_column")
def _parquet_unknown_column(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    table = good_table().append_column("colour", pa.array(["red"] * ROWS))
    replace_shard(folder, shard, parquet_bytes(table))
    return import_run(ctx, folder, shard.name, "'colour'", "not in the manifest")


@case("parquet_wrong_dimension")
def _parquet_wrong_dimension(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    vectors = fixed_size_vectors(np.ones((ROWS, DIM + 1), np.float32))
    replace_shard(folder, shard, parquet_bytes(with_vectors(good_table(), vectors)))
    return import_run(ctx, folder, shard.name, "field 'vector'", f"{DIM + 1} dimensions")


@case("parquet_mixed_dimensions")
def _parquet_mixed_dimensions(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    rows = [[0.5] * DIM for _ in range(ROWS)]
    rows[3] = [0.5] * (DIM + 2)
    vectors = pa.array(rows, pa.list_(pa.float32()))
    replace_shard(folder, shard, parquet_bytes(with_vectors(good_table(), vectors)))
    return import_run(ctx, folder, shard.name, "row 3", f"{DIM + 2} dimensions, expected {DIM}")


@case("parquet_empty_vector")
def _parquet_empty_vector(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    rows: list[list[float]] = [[0.5] * DIM for _ in range(ROWS)]
    rows[1] = []
    vectors = pa.array(rows, pa.list_(pa.float32()))
    replace_shard(folder, shard, parquet_bytes(with_vectors(good_table(), vectors)))
    return import_run(ctx, folder, shard.name, "row 1", f"0 dimensions, expected {DIM}")


@case("parquet_non_numeric_vector")
def _parquet_non_numeric_vector(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    vectors = pa.array([["a", "b", "c"]] * ROWS, pa.list_(pa.string()))
    replace_shard(folder, shard, parquet_bytes(with_vectors(good_table(), vectors)))
    return import_run(ctx, folder, shard.name, "field 'vector'", "numbers")


@case("parquet_inf_in_vector")
def _parquet_inf_in_vector(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    table = good_table()
    m = vectors_numpy(table.column("vector")).copy()
    m[5, 1] = np.inf
    replace_shard(folder, shard, parquet_bytes(with_vectors(table, fixed_size_vectors(m))))
    return import_run(ctx, folder, shard.name, "row 5", "field 'vector'", "inf")


@case("parquet_metadata_of_wrong_type")
def _parquet_metadata_of_wrong_type(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    table = good_table()
    i = table.schema.get_field_index("rank")
    table = table.set_column(i, "rank", pa.array(["high"] * ROWS))
    replace_shard(folder, shard, parquet_bytes(table))
    return import_run(ctx, folder, shard.name, "field 'rank'", "cannot convert")


# -- JSONL -------------------------------------------------------------------------------------


@case("jsonl_malformed_line")
def _jsonl_malformed_line(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    lines = shard.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3][:40] + b"\n"
    replace_shard(folder, shard, b"".join(lines))
    return import_run(ctx, folder, shard.name, "row 3", "malformed JSON", "(line 4)")


@case("jsonl_record_not_an_object")
def _jsonl_record_not_an_object(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    edit_lines(folder, shard, 2, lambda r: json.dumps(list(r.values())))
    return import_run(ctx, folder, shard.name, "row 2", "expected a JSON object, got an array")


@case("jsonl_first_record_null")
def _jsonl_first_record_null(ctx: Context) -> Run:
    """A first line of ``null`` crashed Arrow's JSON reader (a segfault in pyarrow 26)."""
    folder, shard = shard_dataset(ctx, "jsonl")
    edit_lines(folder, shard, 0, lambda r: "null")
    return import_run(ctx, folder, shard.name, "row 0", "expected a JSON object, got null")


@case("jsonl_record_null_after_others")
def _jsonl_record_null_after_others(ctx: Context) -> Run:
    """Arrow's reader took a later ``null`` line for a record of nulls."""
    folder, shard = shard_dataset(ctx, "jsonl")
    edit_lines(folder, shard, 3, lambda r: "null")
    return import_run(ctx, folder, shard.name, "row 3", "expected a JSON object, got null")


@case("jsonl_unknown_field")
def _jsonl_unknown_field(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    edit_lines(folder, shard, 4, lambda r: r.update(colour="red"))
    return import_run(ctx, folder, shard.name, "row 4", "field 'colour'", "unknown field")


@case("jsonl_metadata_of_wrong_type")
def _jsonl_metadata_of_wrong_type(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    edit_lines(folder, shard, 2, lambda r: r.update(rank="high"))
    return import_run(ctx, folder, shard.name, "row 2", "field 'rank'", "(line 3)")


@case("jsonl_mixed_dimensions")
def _jsonl_mixed_dimensions(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    edit_lines(folder, shard, 4, lambda r: r.update(vector=[*r["vector"], 0.25]))
    return import_run(ctx, folder, shard.name, "row 4", f"{DIM + 1} dimensions, expected {DIM}")


@case("jsonl_nan_in_vector")
def _jsonl_nan_in_vector(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    lines = shard.read_text(encoding="utf-8").splitlines(keepends=True)
    record = json.loads(lines[2])
    vec = ",".join(["NaN", *(repr(v) for v in record["vector"][1:])])
    lines[2] = lines[2].replace(json.dumps(record["vector"]).replace(" ", ""), f"[{vec}]")
    assert "NaN" in lines[2]
    replace_shard(folder, shard, "".join(lines).encode("utf-8"))
    return import_run(ctx, folder, shard.name, "row 2", "field 'vector'", "NaN")


@case("jsonl_invalid_utf8_id")
def _jsonl_invalid_utf8_id(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    data = bytearray(shard.read_bytes())
    lines = data.split(b"\n")
    at = lines[1].index(b'"id":"') + len(b'"id":"')
    lines[1][at] = 0xE4  # a lead byte with no continuation: not UTF-8 (found by the fuzzer)
    replace_shard(folder, shard, b"\n".join(lines))
    return import_run(ctx, folder, shard.name, "row 1", "field 'id'", "not valid UTF-8")


@case("jsonl_empty_vector")
def _jsonl_empty_vector(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    edit_lines(folder, shard, 1, lambda r: r.update(vector=[]))
    return import_run(ctx, folder, shard.name, "row 1", f"0 dimensions, expected {DIM}")


@case("jsonl_non_numeric_vector")
def _jsonl_non_numeric_vector(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    edit_lines(folder, shard, 3, lambda r: r.update(vector=["a", "b", "c"]))
    return import_run(ctx, folder, shard.name, "row 3", "field 'vector'")


@case("jsonl_not_utf8")
def _jsonl_not_utf8(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    lines = shard.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"document", b"docum\xff\xfent", 1)
    replace_shard(folder, shard, b"".join(lines))
    return import_run(ctx, folder, shard.name, "row 1", "not UTF-8")


@case("jsonl_empty_line")
def _jsonl_empty_line(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    lines = shard.read_bytes().splitlines(keepends=True)
    replace_shard(folder, shard, b"".join([*lines[:2], b"\n", *lines[2:]]), rows=ROWS + 1)
    return import_run(ctx, folder, shard.name, "row 2", "empty line")


@case("jsonl_empty_id")
def _jsonl_empty_id(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    edit_lines(folder, shard, 5, lambda r: r.update(id=""))
    return import_run(ctx, folder, shard.name, "row 5", "id is empty")


@case("jsonl_id_of_wrong_type")
def _jsonl_id_of_wrong_type(ctx: Context) -> Run:
    folder = ctx.tmp / "ds"
    shard = dataset(folder, "jsonl", spec=make_spec(dim=DIM, id_type="int64"))
    edit_lines(folder, shard, 2, lambda r: r.update(id="seven"))
    return import_run(ctx, folder, shard.name, "row 2", "field 'id'")


def _unicode_spec() -> CollectionSpec:
    return CollectionSpec(
        name="unicode",
        vectors=[VectorField(name="vector", dim=DIM)],
        metadata=[
            MetadataField(name=unicodedata.normalize("NFC", "názov"), type=MetadataType.STRING)
        ],
    )


@case("jsonl_field_name_in_other_unicode_form")
def _jsonl_field_name_in_other_unicode_form(ctx: Context) -> Run:
    folder = ctx.tmp / "ds"
    shard = dataset(folder, "jsonl", spec=_unicode_spec())
    nfd = unicodedata.normalize("NFD", "názov")

    def decompose(r: dict[str, Any]) -> None:
        r[nfd] = r.pop(unicodedata.normalize("NFC", "názov"))

    edit_lines(folder, shard, 3, decompose)
    return import_run(ctx, folder, shard.name, "row 3", "unknown field", repr(nfd))


@case("jsonl_id_with_lone_surrogate")
def _jsonl_id_with_lone_surrogate(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "jsonl")
    edit_lines(folder, shard, 1, lambda r: json.dumps({**r, "id": "bad-\ud800-id"}))
    return import_run(ctx, folder, shard.name, "row 1", "field 'id'")


# -- CSV ---------------------------------------------------------------------------------------


def _csv_rows(shard: Path) -> list[list[str]]:
    import csv
    import io

    return list(csv.reader(io.StringIO(shard.read_text(encoding="utf-8"), newline="")))


def _csv_bytes(rows: list[list[str]]) -> bytes:
    import csv
    import io

    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL).writerows(rows)
    return out.getvalue().encode("utf-8")


@case("csv_cell_of_wrong_type")
def _csv_cell_of_wrong_type(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "csv")
    rows = _csv_rows(shard)
    rows[4][rows[0].index("rank")] = "twelve"
    replace_shard(folder, shard, _csv_bytes(rows))
    return import_run(ctx, folder, shard.name, "row 3", "field 'rank'", "'twelve'")


@case("csv_vector_not_an_array")
def _csv_vector_not_an_array(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "csv")
    rows = _csv_rows(shard)
    rows[2][rows[0].index("vector")] = "0.1;0.2;0.3"
    replace_shard(folder, shard, _csv_bytes(rows))
    return import_run(ctx, folder, shard.name, "row 1", "field 'vector'", "JSON array")


@case("csv_inf_in_vector")
def _csv_inf_in_vector(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "csv")
    rows = _csv_rows(shard)
    rows[3][rows[0].index("vector")] = "[1.0,inf,2.0]"
    replace_shard(folder, shard, _csv_bytes(rows))
    return import_run(ctx, folder, shard.name, "row 2", "field 'vector'", "inf")


@case("csv_unterminated_quote")
def _csv_unterminated_quote(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "csv")
    data = shard.read_bytes()
    replace_shard(folder, shard, data + b'"doc-9999999,[1,2,3]\n')
    return import_run(ctx, folder, shard.name, "row 6", "(line 8)")


@case("csv_header_names_unknown_column")
def _csv_header_names_unknown_column(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx, "csv")
    rows = _csv_rows(shard)
    rows[0][rows[0].index("rank")] = "rang"
    replace_shard(folder, shard, _csv_bytes(rows))
    return import_run(ctx, folder, shard.name, "'rang'")


# -- targets and URIs --------------------------------------------------------------------------


@case("ids_of_wrong_type_for_the_target")
def _ids_of_wrong_type_for_the_target(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)  # string ids
    target = ctx.tmp / "target"
    dataset(target, spec=make_spec(dim=DIM, id_type="int64"))
    run = import_run(ctx, folder, "int64 ids", "string ids")
    run.args[2] = f"parquet://{target}"
    return run


@case("target_of_other_dimension")
def _target_of_other_dimension(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    target = ctx.tmp / "target"
    dataset(target, spec=make_spec(dim=DIM + 5))
    run = import_run(ctx, folder, f"dim {DIM + 5}", f"dim {DIM}")
    run.args[2] = f"parquet://{target}"
    return run


@case("unknown_uri_scheme")
def _unknown_uri_scheme(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    run = import_run(ctx, folder, "unknown URI scheme 'vectordb9000'")
    run.args[2] = "vectordb9000://somewhere/x"
    return run


@case("unknown_uri_option")
def _unknown_uri_option(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    run = import_run(ctx, folder, "unknown option 'compresion'")
    run.args[2] = f"parquet://{ctx.tmp / 'out'}?compresion=zstd"
    return run


@case("bad_uri_option_value")
def _bad_uri_option_value(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    run = import_run(ctx, folder, "compression='zip'")
    run.args[2] = f"parquet://{ctx.tmp / 'out'}?compression=zip"
    return run


@case("not_a_uri")
def _not_a_uri(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    run = import_run(ctx, folder, "not a connector URI")
    run.args[2] = "just/a/path"
    return run


@case("password_in_uri")
def _password_in_uri(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    run = import_run(ctx, folder, "contains a password", forbid=(SECRET,))
    run.args[2] = f"pgvector://alice:{SECRET}@127.0.0.1:5432/db?table=t"
    return run


@case("secret_as_uri_option")
def _secret_as_uri_option(ctx: Context) -> Run:
    folder, _ = shard_dataset(ctx)
    run = import_run(ctx, folder, "would put a secret in the URI", forbid=(SECRET,))
    run.args[2] = f"pgvector://alice@127.0.0.1:5432/db?table=t&password={SECRET}"
    return run


# -- servers: credentials, TLS, timeouts, identifiers -------------------------------------------


def _pg_export(ctx: Context, uri: str, *expect: str, **kw: Any) -> Run:
    args = ["export", uri, str(ctx.tmp / "export"), *state(ctx)]
    return Run(args, tuple(expect), **kw)


@case("pg_bad_credentials", needs="postgres")
def _pg_bad_credentials(ctx: Context) -> Run:
    uri = ctx.postgres.uri("items")
    return _pg_export(ctx, uri, "credentials refused", env={"PGPASSWORD": SECRET}, forbid=(SECRET,))


@case("pg_password_file_missing", needs="postgres")
def _pg_password_file_missing(ctx: Context) -> Run:
    uri = ctx.postgres.uri("items") + f"&password_file={ctx.tmp / 'no-such-file'}"
    return _pg_export(ctx, uri, "password_file", "cannot read")


@case("pg_password_env_unset", needs="postgres")
def _pg_password_env_unset(ctx: Context) -> Run:
    uri = ctx.postgres.uri("items") + "&password_env=VECMIGRATE_TEST_UNSET_VAR"
    return _pg_export(ctx, uri, "VECMIGRATE_TEST_UNSET_VAR", "is not set")


@case("pg_tls_required_but_not_offered", needs="postgres")
def _pg_tls_required_but_not_offered(ctx: Context) -> Run:
    uri = ctx.postgres.uri("items") + "&sslmode=require"
    return _pg_export(ctx, uri, "SSL")


@case("pg_bad_sslmode", needs="postgres")
def _pg_bad_sslmode(ctx: Context) -> Run:
    uri = ctx.postgres.uri("items") + "&sslmode=sometimes"
    return _pg_export(ctx, uri, "sslmode")


@case("pg_connection_refused")
def _pg_connection_refused(ctx: Context) -> Run:
    with socket.socket() as s:  # a port nothing listens on (closed again at once)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"pgvector://alice@127.0.0.1:{port}/db?table=items"
    return Run(["inspect", uri], ("127.0.0.1", str(port), "refused"))


@case("pg_connect_timeout")
def _pg_connect_timeout(ctx: Context) -> Run:
    # a socket that accepts connections into its backlog but never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    uri = f"pgvector://alice@127.0.0.1:{port}/db?table=items&connect_timeout=2"
    return Run(["inspect", uri], ("timeout",), after=silent.close)


@case("pg_sql_like_table_name", needs="postgres")
def _pg_sql_like_table_name(ctx: Context) -> Run:
    import psycopg

    pg = ctx.postgres
    conninfo = {"host": pg.host, "port": pg.port, "user": pg.user, "dbname": pg.database}
    with psycopg.connect(**conninfo, password=pg.password, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS badinput_canary (x int)")
    name = 'items"; DROP TABLE badinput_canary; --'

    def canary_alive() -> None:
        with psycopg.connect(**conninfo, password=pg.password, autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass('badinput_canary')").fetchone()
        assert row is not None and row[0] is not None, "the canary table was dropped"

    from urllib.parse import quote

    uri = f"pgvector://{pg.user}@{pg.host}:{pg.port}/{pg.database}?table={quote(name)}"
    return _pg_export(ctx, uri, "does not exist", "DROP TABLE badinput_canary", after=canary_alive)


def _pg_import(ctx: Context, folder: Path, table: str, *expect: str) -> Run:
    run = import_run(ctx, folder, *expect)
    run.args[2] = ctx.postgres.uri(table)
    return run


@case("pg_oversized_id", needs="postgres")
def _pg_oversized_id(ctx: Context) -> Run:
    folder, shard = shard_dataset(ctx)
    table = good_table()
    ids = table.column(ID).to_pylist()
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    # more than a btree key can hold, even compressed (a repeated letter would compress)
    ids[2] = "".join(np.random.default_rng(7).choice(letters, 12_000))
    replace_shard(folder, shard, parquet_bytes(table.set_column(0, ID, pa.array(ids))))
    return _pg_import(ctx, folder, f"oversized_{ctx.tmp.name[-12:]}", "index row", "line 3")


@case("pg_metadata_name_too_long", needs="postgres")
def _pg_metadata_name_too_long(ctx: Context) -> Run:
    folder = ctx.tmp / "ds"
    long_name = "ü" * 40  # 80 bytes: PostgreSQL would cut it to 63 without a word
    spec = CollectionSpec(
        name="long",
        vectors=[VectorField(name="vector", dim=DIM)],
        metadata=[MetadataField(name=long_name, type=MetadataType.STRING)],
    )
    dataset(folder, spec=spec)
    return _pg_import(ctx, folder, "long_names", long_name, "longer than 63 bytes")
