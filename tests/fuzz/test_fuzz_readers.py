"""Fuzz the dataset readers with mutated bytes of a valid dataset (Hypothesis, bounded).

Whatever the bytes, reading a dataset (manifest, then every shard) must either succeed or
raise a vecmigrate DataError / ConfigError / NotFoundError; never another exception type and
never a hang. Shards are fuzzed twice: with the manifest left as it was (the checksum must
catch the change) and with a manifest that agrees with the new bytes (the shard parser itself
must cope). In CI the examples are derandomized so a run is repeatable.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import WriteToken
from vecmigrate.connectors.dataset.manifest import read_manifest
from vecmigrate.errors import ConfigError, DataError, NotFoundError

FORMATS = ("parquet", "jsonl", "csv")
ALLOWED = (DataError, ConfigError, NotFoundError)
FUZZ = settings(
    max_examples=int(os.environ.get("VECMIGRATE_FUZZ_EXAMPLES", "120")),
    deadline=5_000,  # ms per example: a slow parse is a finding too
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TOKENS = [
    b"NaN", b"Infinity", b"-inf", b"null", b"[]", b"{}", b'"', b",", b"\n", b"\r\n", b"\\",
    b"1e999", b"-0", b"\\ud800", b"\xff\xfe", b"\x00", b"[1,2]", b'"x"', b"true", b"9" * 30,
    b"../", b"/etc/passwd", b"\xe2\x80\xae", b"PAR1",
]  # fmt: skip


def _dataset_bytes(fmt: str) -> dict[str, bytes]:
    """Every file of a small valid dataset, by relative path."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ds"
        spec = make_spec(dim=4)
        with connect(f"{fmt}://{folder}") as conn:
            conn.create(spec, IfExists.FAIL)
            conn.begin("fuzz", resume=False)
            conn.upsert(make_batch(spec, 0, 12), WriteToken("fuzz", 0, 0))
            conn.upsert(make_batch(spec, 12, 5), WriteToken("fuzz", 0, 12))
            conn.finalize(spec)
        return {
            str(p.relative_to(folder)): p.read_bytes()
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        }


VALID = {fmt: _dataset_bytes(fmt) for fmt in FORMATS}


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few byte-level edits: flips, cuts, insertions, splices of odd tokens."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "token", "truncate", "repeat"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 16))]
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "token":
            out[at : at + draw(st.integers(0, 4))] = draw(st.sampled_from(TOKENS))
        elif kind == "truncate":
            del out[at:]
        elif kind == "repeat":
            out[at:at] = out[at : at + draw(st.integers(1, 64))]
    return bytes(out)


def _read_everything(folder: Path) -> None:
    """What import does: manifest, count, partitions, every row of every partition."""
    read_manifest(folder)
    with connect(f"parquet://{folder}") as conn:
        conn.describe()
        conn.count()
        for partition in conn.partitions(3):
            for _ in conn.scan(partition, None, 7):
                pass


def _check(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ds"
        for rel, data in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            _read_everything(folder)
        except ALLOWED as exc:
            text = str(exc)
            assert text and "\n" not in exc.one_line(), text
        # anything else propagates and fails the example


def _agreeing_manifest(files: dict[str, bytes], shard: str, data: bytes) -> bytes:
    manifest = json.loads(files["manifest.json"])
    for entry in manifest["shards"]:
        if entry["path"] == shard:
            entry["bytes"] = len(data)
            entry["sha256"] = hashlib.sha256(data).hexdigest()
    return json.dumps(manifest).encode()


def _shard(fmt: str) -> str:
    return sorted(p for p in VALID[fmt] if p.startswith("data/"))[0]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(data=st.data())
def test_mutated_manifest_bytes(fmt: str, data: st.DataObject) -> None:
    files = dict(VALID[fmt])
    files["manifest.json"] = data.draw(mutated(files["manifest.json"]))
    _check(files)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["../x", "/etc/passwd", "data/../../x", "C:\\x", "~/x", "", "data"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(data=st.data())
def test_mutated_manifest_fields(fmt: str, data: st.DataObject) -> None:
    """Replace or delete any value of the manifest with any JSON value."""
    files = dict(VALID[fmt])
    manifest = json.loads(files["manifest.json"])
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(manifest)[1:]))
        parent: Any = manifest
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON_VALUES)
        if not _paths(manifest)[1:]:
            break
    files["manifest.json"] = json.dumps(manifest, allow_nan=True).encode()
    _check(files)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(data=st.data())
def test_mutated_shard_bytes(fmt: str, data: st.DataObject) -> None:
    files = dict(VALID[fmt])
    shard = _shard(fmt)
    files[shard] = data.draw(mutated(files[shard]))
    if data.draw(st.booleans()):
        files["manifest.json"] = _agreeing_manifest(files, shard, files[shard])
    _check(files)
