"""Shard files under ``data/``: deterministic names, atomic writes, write-time checksums.

A shard written for a :class:`WriteToken` is named after it, so a batch re-sent after a crash
replaces its shard instead of adding one. Next to each shard a small hidden sidecar keeps the
rows, size, sha256 and write time measured while writing, so ``finalize()`` does not re-read
the data. A sidecar is removed before its shard is replaced and written after the rename, and
is trusted only while the shard's size matches it; otherwise the shard is hashed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vecmigrate.connectors.base import WriteToken
from vecmigrate.connectors.dataset.manifest import DATA_DIR, fsync_dir, write_atomic

_NAME = re.compile(
    r"^part-(?P<run>.+?)-(?:(?P<part>\d{5,})-(?P<rows>\d{12,})|n(?P<seq>\d{6,}))"
    r"\.(?P<ext>parquet|jsonl|csv)$"
)
_SAFE = re.compile(r"[^A-Za-z0-9_.]")
TEMP_MARK = ".tmp-"
SIDECAR_SUFFIX = ".sum"
HASH_CHUNK = 1 << 20


def run_tag(run_id: str) -> str:
    """A run id as it can appear in a file name (other characters folded, a hash added)."""
    tag = _SAFE.sub("_", run_id)[:48]
    if tag != run_id:
        tag += "_" + hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:8]
    return tag or "run"


@dataclass(frozen=True, order=True)
class ShardName:
    """A parsed shard file name. Sorts by partition, then rows before, then counter."""

    partition: int
    rows_before: int
    seq: int
    run: str
    ext: str

    @property
    def name(self) -> str:
        if self.seq >= 0:
            return f"part-{self.run}-n{self.seq:06d}.{self.ext}"
        return f"part-{self.run}-{self.partition:05d}-{self.rows_before:012d}.{self.ext}"

    @property
    def path(self) -> str:
        return f"{DATA_DIR}/{self.name}"

    @classmethod
    def for_token(cls, run: str, token: WriteToken, ext: str) -> ShardName:
        return cls(token.partition_index, token.rows_before, -1, run, ext)

    @classmethod
    def counted(cls, run: str, seq: int, ext: str) -> ShardName:
        return cls(1 << 62, 0, seq, run, ext)  # after every token-named shard

    @classmethod
    def parse(cls, name: str) -> ShardName | None:
        m = _NAME.match(name)
        if m is None:
            return None
        if m["seq"] is not None:
            return cls.counted(m["run"], int(m["seq"]), m["ext"])
        return cls(int(m["part"]), int(m["rows"]), -1, m["run"], m["ext"])


@dataclass(frozen=True)
class ShardSum:
    """What a sidecar records about a shard."""

    rows: int
    bytes: int
    sha256: str
    written_ns: int


def sidecar_path(shard: Path) -> Path:
    return shard.with_name(f".{shard.name}{SIDECAR_SUFFIX}")


def list_shards(data: Path) -> list[ShardName]:
    """Shard files in ``data/`` (sorted), ignoring anything that is not named like one."""
    if not data.is_dir():
        return []
    names = (ShardName.parse(p.name) for p in data.iterdir())
    return sorted(n for n in names if n is not None)


def is_ours(name: str) -> bool:
    """Whether a file in ``data/`` was made by this connector (shard, sidecar or temp)."""
    if ShardName.parse(name) is not None:
        return True
    if name.startswith(".") and (TEMP_MARK in name or name.endswith(SIDECAR_SUFFIX)):
        return (
            ShardName.parse(name[1:].split(TEMP_MARK, maxsplit=1)[0].removesuffix(SIDECAR_SUFFIX))
            is not None
        )
    return False


def remove_temps(data: Path) -> None:
    if data.is_dir():
        for p in data.iterdir():
            if p.name.startswith(".") and TEMP_MARK in p.name and is_ours(p.name):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


def remove_shard(data: Path, name: ShardName) -> None:
    for p in (data / name.name, sidecar_path(data / name.name)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def write_shard(
    data: Path,
    name: ShardName,
    pieces: Iterable[bytes | memoryview],
    rows: int,
    written_ns: int | None = None,
) -> ShardSum:
    """Write (or replace) one shard atomically, from its consecutive ``pieces``, and record
    its size and checksum in the sidecar."""
    target = data / name.name
    side = sidecar_path(target)
    with contextlib.suppress(FileNotFoundError):
        side.unlink()
    tmp = data / f".{name.name}{TEMP_MARK}{os.getpid()}-{os.urandom(4).hex()}"
    digest = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as fh:
            for piece in pieces:
                fh.write(piece)
                digest.update(piece)
                size += memoryview(piece).nbytes
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(data)
    summary = ShardSum(
        rows=rows,
        bytes=size,
        sha256=digest.hexdigest(),
        written_ns=written_ns if written_ns is not None else time.time_ns(),
    )
    write_sum(target, summary)
    return summary


def write_sum(shard: Path, summary: ShardSum) -> None:
    write_atomic(sidecar_path(shard), json.dumps(summary.__dict__).encode(), durable=False)


def read_sum(shard: Path) -> ShardSum | None:
    """The shard's sidecar if it still describes the file on disk, else None."""
    try:
        raw = json.loads(sidecar_path(shard).read_bytes())
        summary = ShardSum(
            int(raw["rows"]), int(raw["bytes"]), str(raw["sha256"]), int(raw["written_ns"])
        )
        size = shard.stat().st_size
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return summary if summary.bytes == size else None


def file_sha256(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
