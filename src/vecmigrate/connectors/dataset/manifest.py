"""``manifest.json``: what a dataset folder holds, written atomically.

A manifest with ``complete: false`` (or none at all) means a copy into the folder is in
progress or was interrupted; readers refuse it. Only ``finalize()`` writes ``complete: true``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vecmigrate.errors import DataError, NotFoundError
from vecmigrate.spec import AccessEntry, CollectionSpec

MANIFEST = "manifest.json"
DATA_DIR = "data"
FORMAT_NAME = "vecmigrate-dataset"
FORMAT_VERSION = 1


class ShardEntry(BaseModel):
    """One shard: its path relative to the folder, how it is encoded, and its checksum."""

    model_config = ConfigDict(extra="forbid")

    path: str
    format: Literal["parquet", "jsonl", "csv"]
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    """The dataset's description. Unknown keys are kept so newer minor additions still read."""

    model_config = ConfigDict(extra="allow")

    format: Literal["vecmigrate-dataset"] = "vecmigrate-dataset"
    format_version: int = FORMAT_VERSION
    tool_version: str
    created_at: str
    completed_at: str | None = None
    complete: bool = False
    run_id: str | None = None
    source: str | None = None
    shard_format: Literal["parquet", "jsonl", "csv"] = "parquet"
    spec: CollectionSpec
    embedding_models: dict[str, str | None] = Field(default_factory=dict)
    row_count: int = 0
    shards: list[ShardEntry] = Field(default_factory=list)
    id_mapping: str | None = None
    access: list[AccessEntry] = Field(default_factory=list)

    @classmethod
    def new(cls, spec: CollectionSpec, *, shard_format: str, source: str | None) -> Manifest:
        from vecmigrate import __version__

        return cls(
            tool_version=__version__,
            created_at=now(),
            source=source,
            shard_format=shard_format,  # type: ignore[arg-type]
            spec=spec,
        ).with_spec(spec)

    def with_spec(self, spec: CollectionSpec) -> Manifest:
        """This manifest describing ``spec`` (models, id mapping and access copied out)."""
        return self.model_copy(
            update={
                "spec": spec,
                "embedding_models": {v.name: v.embedding_model for v in spec.vectors},
                "id_mapping": spec.id_mapping,
                "access": list(spec.access),
            }
        )

    def to_json(self) -> str:
        data: dict[str, Any] = json.loads(self.model_dump_json())
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest, or None when it has none."""
    path = folder / MANIFEST
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError as exc:
        raise DataError("is a directory, expected a JSON file", file=str(path)) from exc
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"manifest is not valid JSON: {exc}", file=str(path)) from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise DataError(
            f'not a vecmigrate dataset manifest (no "format": "{FORMAT_NAME}")', file=str(path)
        )
    version = raw.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(
            f"dataset format version {version!r} is newer than this vecmigrate reads "
            f"({FORMAT_VERSION}): upgrade vecmigrate",
            file=str(path),
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DataError(f"manifest field {where}: {first['msg']}", file=str(path)) from exc
    for shard in manifest.shards:
        check_relative(shard.path)
    return manifest


def require_manifest(folder: Path) -> Manifest:
    manifest = read_manifest(folder)
    if manifest is None:
        raise NotFoundError(f"no dataset at {folder}: {MANIFEST} is missing")
    return manifest


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Replace ``manifest.json`` atomically: temp file, fsync, rename, fsync of the folder."""
    write_atomic(folder / MANIFEST, manifest.to_json().encode("utf-8"))


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_relative(path: str) -> PurePosixPath:
    """A shard path from a manifest, refused when it could point outside the folder."""
    p = PurePosixPath(path)
    if (
        not path
        or p.is_absolute()
        or path.startswith(("\\", "~"))
        or "\\" in path
        or ":" in p.parts[0]
        or any(part in ("..", "") for part in p.parts)
    ):
        raise DataError("shard path must be relative and stay inside the dataset folder", file=path)
    return p


def resolve_inside(folder: Path, path: str) -> Path:
    """The file a manifest path names, refused if it (or a symlink on the way) leaves the folder."""
    rel = check_relative(path)
    root = folder.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(root):
        raise DataError(f"shard path resolves outside the dataset folder (to {target})", file=path)
    return target
