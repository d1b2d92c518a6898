"""The portable dataset as a source and a target: ``parquet:///dir``, ``jsonl:///dir``, ``csv:///dir``.

Writing: one shard per ``upsert`` under ``data/``, named after the write token so a batch re-sent
after a crash replaces its shard. Records are upserted by id when the dataset is finalized: if
an id was written more than once, the last write wins and older copies are dropped from their
shards. Until ``finalize()`` the manifest says ``complete: false`` and readers refuse the folder.

Reading: any of the three schemes reads any dataset (each shard's format is in the manifest).
Every shard's size and sha256 are checked before its rows are used.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.connectors.base import (
    Capabilities,
    Connector,
    IfExists,
    Partition,
    QueryResult,
    RejectedRow,
    ScanBatch,
    WriteToken,
)
from vecmigrate.connectors.dataset.codec import ShardCodec, at
from vecmigrate.connectors.dataset.config import DatasetConfig
from vecmigrate.connectors.dataset.errors import mapped
from vecmigrate.connectors.dataset.formats import codec_for
from vecmigrate.connectors.dataset.manifest import (
    DATA_DIR,
    MANIFEST,
    Manifest,
    ShardEntry,
    now,
    read_manifest,
    require_manifest,
    resolve_inside,
    write_manifest,
)
from vecmigrate.connectors.dataset.rejecting import (
    ShardChunk,
    check_text,
    decode_rejecting,
    drop_seen_ids,
)
from vecmigrate.connectors.dataset.scanning import (
    fetch_by_scan,
    file_partitions,
    knn_by_scan,
    parse_cursor,
    partition_files,
)
from vecmigrate.connectors.dataset.shards import (
    ShardName,
    ShardSum,
    file_sha256,
    is_ours,
    list_shards,
    read_sum,
    remove_shard,
    remove_temps,
    run_tag,
    write_shard,
    write_sum,
)
from vecmigrate.errors import ConfigError, DataError, NotFoundError, SchemaMismatch, Unsupported
from vecmigrate.records import check_batch, conform
from vecmigrate.spec import ID, CollectionSpec
from vecmigrate.uri import ConnectorURI, redact_text

_FORMAT_OF_EXT = {"parquet": "parquet", "jsonl": "jsonl", "csv": "csv"}


class DatasetConnector(Connector):
    scheme = "parquet"
    capabilities = Capabilities(
        query=True,
        fetch=True,
        delete=False,
        sparse_vectors=True,
        named_vectors=True,
        access_control=True,
        rejects_bad_rows=True,
        notes=(
            "a dataset folder is written by one copy run; resending a batch with the same "
            "write token replaces its shard",
            "upsert by id is applied when the dataset is finalized (the last write of an id "
            "wins); until then the manifest is marked incomplete and readers refuse the folder",
            "fetch and kNN query read every shard (exact, brute force): for validation",
            "with --on-error skip, rows that cannot be read (malformed lines or records, wrong "
            "dimensions, NaN/inf, duplicate ids in a shard) go to the dead-letter file; a bad "
            "manifest, header or checksum still stops the import",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = DatasetConfig.from_uri(uri)
        self.folder = self.config.folder
        self.data = self.folder / DATA_DIR
        self.codec = codec_for(self.config.shard_format, compression=self.config.compression)
        self._lock = threading.Lock()
        self._source: str | None = None
        self._spec: CollectionSpec | None = None
        self._run = run_tag("w" + uuid.uuid4().hex[:12])
        self._seq: int | None = None
        self._in_progress = False
        self._verified: set[tuple[str, int, int, str]] = set()
        self._reject = False  # reject_bad_rows(): hand bad rows over instead of raising

    def set_source(self, redacted_uri: str) -> None:
        """Record where the data comes from (a redacted URI) in the manifest."""
        self._source = redact_text(redacted_uri)

    def exists(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    def reject_bad_rows(self) -> None:
        """Scans hand rows that cannot be read to ``ScanBatch.rejected`` with the reason."""
        self._reject = True

    # -- source -------------------------------------------------------------------------
    def _manifest(self) -> Manifest:
        with mapped(str(self.folder)):
            if not self.folder.is_dir():
                raise NotFoundError(f"no dataset at {self.folder}: the folder does not exist")
            return require_manifest(self.folder)

    def _complete(self) -> Manifest:
        manifest = self._manifest()
        if not manifest.complete:
            raise DataError(
                "the dataset is incomplete: the copy writing it has not finished "
                "(resume that copy, or export again)",
                file=str(self.folder / MANIFEST),
            )
        return manifest

    def describe(self) -> CollectionSpec:
        manifest = self._manifest()
        spec = manifest.spec.model_copy(deep=True)
        for vf in spec.vectors:
            if vf.embedding_model is None:
                vf.embedding_model = manifest.embedding_models.get(vf.name)
        if not spec.access and manifest.access:  # kept beside the spec by older writers
            spec.access = list(manifest.access)
        return spec

    def count(self) -> int:
        return self._complete().row_count

    def partitions(self, hint: int) -> list[Partition]:
        manifest = self._complete()
        return file_partitions([(s.path, s.rows) for s in manifest.shards], hint)

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        manifest = self._complete()
        entries = {s.path: s for s in manifest.shards}
        files = partition_files(partition, [s.path for s in manifest.shards])
        first_file, first_row = parse_cursor(cursor)
        for index in range(first_file, len(files)):
            entry = entries.get(files[index])
            if entry is None:
                raise DataError(
                    "partition names a shard the manifest does not list", file=files[index]
                )
            start = first_row if index == first_file else 0
            if start and start == entry.rows:
                continue
            if self._reject:
                for chunk in self._read_shard_rejecting(manifest.spec, entry, start, batch_size):
                    yield ScanBatch(
                        batch=chunk.batch,
                        cursor=f"{index}:{chunk.first_row + chunk.consumed}",
                        rejected=tuple(RejectedRow(i, err, rec) for i, err, rec in chunk.rejected),
                    )
                continue
            for row, batch in self._read_shard(manifest.spec, entry, start, batch_size):
                yield ScanBatch(batch=batch, cursor=f"{index}:{row + batch.num_rows}")

    def _all_batches(self, manifest: Manifest, batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
        for entry in manifest.shards:
            for _, batch in self._read_shard(manifest.spec, entry, 0, batch_size):
                yield batch

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        manifest = self._complete()
        return fetch_by_scan(self._all_batches(manifest), ids, manifest.spec.arrow_schema())

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        manifest = self._complete()
        vf = manifest.spec.vector(vector_field)
        if vf.sparse:
            raise Unsupported(f"dataset: kNN over the sparse field {vf.name!r} is not supported")
        return knn_by_scan(self._all_batches(manifest), vectors, k, vf)

    def _read_shard(
        self, spec: CollectionSpec, entry: ShardEntry, start: int, batch_size: int
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Verified, checked batches of one shard from row ``start``."""
        label = entry.path
        with mapped(label):
            path, codec = self._open_shard(entry)
            seen: set[Any] = set()
            end = start
            for row, batch in codec.decode(
                path, spec, label=label, start=start, batch_size=batch_size
            ):
                try:
                    check_text(batch)
                    check_batch(batch, spec)
                except DataError as err:
                    line = codec.line_of(path, row + err.row) if err.row is not None else None
                    raise at(err, file=label, row_offset=row, line=line) from err
                ids = batch.column(ID).to_pylist()
                if not seen.isdisjoint(ids):
                    j = next(j for j, v in enumerate(ids) if v in seen)
                    line = codec.line_of(path, row + j)
                    raise at(
                        DataError("duplicate id in the shard", row=j, record_id=ids[j], field=ID),
                        file=label,
                        row_offset=row,
                        line=line,
                    )
                seen.update(ids)
                end = row + batch.num_rows
                yield row, batch
            if end != entry.rows:
                raise DataError(
                    f"shard holds {end} rows, the manifest says {entry.rows}", file=label
                )

    def _read_shard_rejecting(
        self, spec: CollectionSpec, entry: ShardEntry, start: int, batch_size: int
    ) -> Iterator[ShardChunk]:
        """Verified chunks of one shard from row ``start``, bad rows set aside with why."""
        label = entry.path
        with mapped(label):
            path, codec = self._open_shard(entry)
            seen: dict[Any, int] = {}
            end = start
            for chunk in decode_rejecting(
                codec, path, spec, label=label, start=start, batch_size=batch_size
            ):
                drop_seen_ids(chunk, seen, label=label)
                end = chunk.first_row + chunk.consumed
                yield chunk
            if end != entry.rows:
                raise DataError(
                    f"shard holds {end} rows, the manifest says {entry.rows}", file=label
                )

    def _open_shard(self, entry: ShardEntry) -> tuple[Path, ShardCodec]:
        """The shard's file, checked against the manifest, and the codec that reads it."""
        path = resolve_inside(self.folder, entry.path)
        if not path.is_file():
            raise DataError("shard file is missing", file=entry.path)
        self._verify(path, entry)
        return path, codec_for(entry.format)

    def _verify(self, path: Path, entry: ShardEntry) -> None:
        stat = path.stat()
        if stat.st_size != entry.bytes:
            raise DataError(
                f"shard is {stat.st_size} bytes, the manifest says {entry.bytes} "
                "(truncated or changed after it was written)",
                file=entry.path,
            )
        key = (entry.path, stat.st_size, stat.st_mtime_ns, entry.sha256)
        if not self.config.verify or key in self._verified:
            return
        digest, _ = file_sha256(path)
        if digest != entry.sha256:
            raise DataError(
                f"sha256 mismatch: the file hashes to {digest[:16]}…, the manifest says "
                f"{entry.sha256[:16]}… (corrupted or changed after it was written)",
                file=entry.path,
            )
        self._verified.add(key)

    # -- target -------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        with mapped(str(self.folder)):
            if self.folder.exists() and not self.folder.is_dir():
                raise ConfigError(f"{self.folder} exists and is not a folder")
            try:
                existing = read_manifest(self.folder)
            except DataError:
                if if_exists is not IfExists.REPLACE:
                    raise
                existing = None
                self._wipe()
            if existing is not None:
                if if_exists is IfExists.FAIL:
                    raise SchemaMismatch(
                        f"a dataset already exists at {self.folder}: use --overwrite to replace it"
                    )
                if if_exists is IfExists.REPLACE:
                    self._wipe()
                    existing = None
                else:
                    _check_compatible(existing.spec, spec, self.folder)
            self.data.mkdir(parents=True, exist_ok=True)
            if existing is None:
                manifest = Manifest.new(
                    spec, shard_format=self.config.shard_format, source=self._source
                )
                write_manifest(self.folder, manifest)
            elif not existing.complete:  # an interrupted copy: describe the collection now
                write_manifest(self.folder, existing.with_spec(spec))
            self._spec = spec

    def _wipe(self) -> None:
        """Remove the manifest and this connector's files in ``data/``; nothing else."""
        with contextlib.suppress(FileNotFoundError):
            (self.folder / MANIFEST).unlink()
        if self.data.is_dir():
            for p in self.data.iterdir():
                if p.is_file() and is_ours(p.name):
                    p.unlink()
            with contextlib.suppress(OSError):
                self.data.rmdir()
        self._verified.clear()

    def drop(self) -> None:
        with mapped(str(self.folder)):
            self._wipe()

    def begin(self, run_id: str, *, resume: bool) -> None:
        with self._lock, mapped(str(self.folder)):
            self._run = run_tag(run_id)
            self._seq = None
            manifest = read_manifest(self.folder)
            reusable = resume and manifest is not None and manifest.run_id == self._run
            if manifest is not None and manifest.complete and not reusable:
                raise SchemaMismatch(
                    f"{self.folder} already holds a complete dataset "
                    f"({manifest.row_count} rows, written {manifest.completed_at}): use "
                    "--overwrite to replace it, or export to another folder"
                )
            for name in list_shards(self.data):
                if name.run != self._run:
                    remove_shard(self.data, name)
            remove_temps(self.data)
            self._mark_in_progress(manifest)

    def _mark_in_progress(self, manifest: Manifest | None) -> None:
        """Say in the manifest that a copy is writing (before the first shard changes)."""
        if manifest is None:
            if self._spec is None:
                return
            manifest = Manifest.new(
                self._spec, shard_format=self.config.shard_format, source=self._source
            )
        if manifest.complete or manifest.run_id != self._run:
            update: dict[str, Any] = {"complete": False, "completed_at": None, "run_id": self._run}
            if self._source is not None:
                update["source"] = self._source
            write_manifest(self.folder, manifest.model_copy(update=update))
        self._in_progress = True

    def _writing_spec(self) -> CollectionSpec:
        if self._spec is None:
            manifest = read_manifest(self.folder) if self.folder.is_dir() else None
            if manifest is None:
                raise NotFoundError(f"no dataset at {self.folder}: call create() before writing")
            self._spec = manifest.spec
        return self._spec

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        """Write the batch as one shard (replacing the shard of an earlier send of ``token``)."""
        with mapped(str(self.folder)):
            spec = self._writing_spec()
            if batch.num_rows == 0:
                return
            batch = conform(batch, spec)
            check_batch(batch, spec)
            ext = self.codec.extension
            with self._lock:
                if not self._in_progress:
                    self._mark_in_progress(read_manifest(self.folder))
                if token is not None:
                    name = ShardName.for_token(self._run, token, ext)
                else:
                    name = ShardName.counted(self._run, self._next_seq(), ext)
                self.data.mkdir(parents=True, exist_ok=True)
        with mapped(f"{self.folder}/{name.path}"):
            write_shard(self.data, name, self.codec.pieces(batch, spec), batch.num_rows)

    def _next_seq(self) -> int:
        if self._seq is None:
            used = [n.seq for n in list_shards(self.data) if n.run == self._run and n.seq >= 0]
            self._seq = max(used, default=-1) + 1
        seq = self._seq
        self._seq += 1
        return seq

    def delete(self, ids: Sequence[Any]) -> None:
        raise Unsupported(
            "dataset: delete is not supported (a dataset is a snapshot: export it again)"
        )

    def finalize(self, spec: CollectionSpec) -> None:
        """List the shards, apply upsert-by-id, and write the complete manifest."""
        with self._lock, mapped(str(self.folder)):
            manifest = read_manifest(self.folder)
            if manifest is None:
                manifest = Manifest.new(
                    spec, shard_format=self.config.shard_format, source=self._source
                )
            remove_temps(self.data)
            names = list_shards(self.data)
            sums = [self._shard_sum(name, spec) for name in names]
            names, sums = self._keep_last_writes(names, sums, spec)
            entries = [
                ShardEntry(
                    path=n.path,
                    format=_FORMAT_OF_EXT[n.ext],  # type: ignore[arg-type]
                    rows=s.rows,
                    bytes=s.bytes,
                    sha256=s.sha256,
                )
                for n, s in zip(names, sums, strict=True)
            ]
            from vecmigrate import __version__

            done = manifest.with_spec(spec).model_copy(
                update={
                    "complete": True,
                    "completed_at": now(),
                    "run_id": self._run,
                    "tool_version": __version__,
                    "source": self._source if self._source is not None else manifest.source,
                    "shards": entries,
                    "row_count": sum(s.rows for s in sums),
                }
            )
            write_manifest(self.folder, done)
            self._spec = spec
            self._in_progress = False

    def _shard_sum(self, name: ShardName, spec: CollectionSpec) -> ShardSum:
        """The write-time checksum of a shard, or a fresh one when its sidecar is stale."""
        path = self.data / name.name
        summary = read_sum(path)
        if summary is not None:
            return summary
        digest, size = file_sha256(path)
        rows = len(codec_for(name.ext).read_ids(path, spec, label=name.path))
        summary = ShardSum(rows=rows, bytes=size, sha256=digest, written_ns=path.stat().st_mtime_ns)
        write_sum(path, summary)
        return summary

    def _keep_last_writes(
        self, names: list[ShardName], sums: list[ShardSum], spec: CollectionSpec
    ) -> tuple[list[ShardName], list[ShardSum]]:
        """Drop every id's older copies (last write wins); rewrite or remove affected shards."""
        if len(names) < 2:
            return names, sums
        newest_first = sorted(
            range(len(names)), key=lambda i: (sums[i].written_ns, names[i]), reverse=True
        )
        ids = [
            codec_for(names[i].ext).read_ids(self.data / names[i].name, spec, label=names[i].path)
            for i in newest_first
        ]
        every = pa.chunked_array(ids, type=spec.arrow_schema().field(ID).type)
        if pc.count_distinct(every).as_py() == len(every):
            return names, sums
        codes = pc.dictionary_encode(every).combine_chunks().indices.to_numpy()
        keep = np.zeros(len(every), dtype=bool)
        keep[np.unique(codes, return_index=True)[1]] = True
        new_sums = list(sums)
        dropped: set[int] = set()
        offset = 0
        for i, shard_ids in zip(newest_first, ids, strict=True):
            mask = keep[offset : offset + len(shard_ids)]
            offset += len(shard_ids)
            if mask.all():
                continue
            if not mask.any():
                remove_shard(self.data, names[i])
                dropped.add(i)
                continue
            new_sums[i] = self._rewrite(names[i], sums[i], mask, spec)
        kept = [i for i in range(len(names)) if i not in dropped]
        return [names[i] for i in kept], [new_sums[i] for i in kept]

    def _rewrite(
        self, name: ShardName, summary: ShardSum, mask: np.ndarray, spec: CollectionSpec
    ) -> ShardSum:
        codec = codec_for(name.ext, compression=self.config.compression)
        path = self.data / name.name
        batches = [
            b for _, b in codec.decode(path, spec, label=name.path, start=0, batch_size=1 << 20)
        ]
        table = pa.Table.from_batches(batches, spec.arrow_schema()).filter(pa.array(mask))
        batch = table.combine_chunks().to_batches()[0]
        return write_shard(
            self.data,
            name,
            codec.pieces(batch, spec),
            batch.num_rows,
            written_ns=summary.written_ns,
        )


def _check_compatible(old: CollectionSpec, new: CollectionSpec, folder: Path) -> None:
    """Refuse to add records of ``new`` to a dataset holding ``old`` unless they fit."""
    if old.id_type != new.id_type:
        raise SchemaMismatch(
            f"the dataset at {folder} has {old.id_type} ids, the source has {new.id_type} ids"
        )
    old_v = {v.name: v for v in old.vectors}
    new_v = {v.name: v for v in new.vectors}
    if set(old_v) != set(new_v):
        raise SchemaMismatch(
            f"the dataset at {folder} has vector fields {sorted(old_v)}, the source has "
            f"{sorted(new_v)}"
        )
    for name, ov in old_v.items():
        nv = new_v[name]
        if (ov.dim, ov.metric, ov.sparse) != (nv.dim, nv.metric, nv.sparse):
            raise SchemaMismatch(
                f"the dataset at {folder} has {name!r} vectors of dim {ov.dim} ({ov.metric}), "
                f"the source has dim {nv.dim} ({nv.metric})"
            )
