"""Completeness: every id on both sides once, every vector and metadata value equal.

Both sides are streamed once. Each row becomes a fingerprint (id, its vectors, one hash per
metadata field) written to hash-partitioned Parquet runs on disk; buckets are then compared one
at a time, so memory depends on the bucket size, not on the collection size. Vectors are
compared under the tolerance policy that the two engines' declared behaviour allows.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vecmigrate.connectors.base import Connector
from vecmigrate.errors import Unsupported
from vecmigrate.hashing import column_hash
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import DOCUMENT, ID, CollectionSpec, MetadataType
from vecmigrate.validate.policy import TolerancePolicy, float64_equal

BUCKET_BYTES = 48 * 2**20  # fingerprint bytes per bucket and side, compared in memory
PENDING_BYTES = 32 * 2**20  # fingerprint bytes buffered before the largest bucket is flushed
MAX_LISTED = 1_000


@dataclass
class FieldDiff:
    name: str
    ids: list[Any] = field(default_factory=list)
    count: int = 0

    def add(self, ids: list[Any]) -> None:
        self.count += len(ids)
        room = MAX_LISTED - len(self.ids)
        if room > 0:
            self.ids.extend(ids[:room])


@dataclass
class CompletenessReport:
    source_count: int = 0
    target_count: int = 0
    missing: FieldDiff = field(default_factory=lambda: FieldDiff("id"))
    extra: FieldDiff = field(default_factory=lambda: FieldDiff("id"))
    duplicates_in_target: FieldDiff = field(default_factory=lambda: FieldDiff("id"))
    vector_diffs: dict[str, FieldDiff] = field(default_factory=dict)
    metadata_diffs: dict[str, FieldDiff] = field(default_factory=dict)
    fields_missing: list[str] = field(default_factory=list)
    fields_converted: dict[str, str] = field(default_factory=dict)
    policy: str = ""

    @property
    def passed(self) -> bool:
        return not (
            self.missing.count
            or self.extra.count
            or self.duplicates_in_target.count
            or any(d.count for d in self.vector_diffs.values())
            or any(d.count for d in self.metadata_diffs.values())
            or self.fields_missing
        )

    def as_dict(self) -> dict[str, Any]:
        def diff(d: FieldDiff) -> dict[str, Any]:
            return {"count": d.count, "ids": d.ids}

        return {
            "passed": self.passed,
            "source_count": self.source_count,
            "target_count": self.target_count,
            "missing_in_target": diff(self.missing),
            "extra_in_target": diff(self.extra),
            "duplicates_in_target": diff(self.duplicates_in_target),
            "vectors_differ": {k: diff(v) for k, v in self.vector_diffs.items() if v.count},
            "metadata_differ": {k: diff(v) for k, v in self.metadata_diffs.items() if v.count},
            "metadata_fields_missing": self.fields_missing,
            "metadata_fields_converted": self.fields_converted,
            "tolerance": self.policy,
        }


def _key(ids: pa.Array) -> pa.Array:
    return ids if pa.types.is_string(ids.type) else ids.cast(pa.string())


def _canonical(col: pa.Array, mtype: MetadataType | None) -> pa.Array:
    """A column in a form both sides share, whatever type each system stored it with."""
    if mtype is None:
        return col
    target = mtype.arrow()
    if col.type == target:
        return col
    if mtype in (MetadataType.JSON, MetadataType.STRING) and not pa.types.is_string(col.type):
        import json

        return pa.array(
            [None if v is None else json.dumps(v) for v in col.to_pylist()], pa.string()
        )
    try:
        return col.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())


class _Spill:
    """Hash-partitioned fingerprint runs of one side, on disk."""

    def __init__(self, root: Path, side: str, buckets: int) -> None:
        self.root, self.side, self.buckets = root, side, buckets
        self.pending: dict[int, list[pa.Table]] = {}
        self.pending_bytes: dict[int, int] = {}
        self.files: dict[int, list[Path]] = {}

    def add(self, fingerprints: pa.Table) -> None:
        keys = column_hash(fingerprints.column(ID).combine_chunks())
        bucket_of = (keys % np.uint64(self.buckets)).astype(np.int64)
        for b in np.unique(bucket_of):
            part = fingerprints.filter(pa.array(bucket_of == b))
            self.pending.setdefault(int(b), []).append(part)
            self.pending_bytes[int(b)] = self.pending_bytes.get(int(b), 0) + part.nbytes
        while sum(self.pending_bytes.values()) > PENDING_BYTES:
            self._flush(max(self.pending_bytes, key=lambda k: self.pending_bytes[k]))

    def _flush(self, b: int) -> None:
        tables = self.pending.pop(b, [])
        self.pending_bytes.pop(b, None)
        if not tables:
            return
        files = self.files.setdefault(b, [])
        path = self.root / f"{self.side}-{b:05d}-{len(files):05d}.parquet"
        pq.write_table(pa.concat_tables(tables, promote_options="permissive"), path)
        files.append(path)

    def close(self) -> None:
        for b in list(self.pending):
            self._flush(b)

    def read(self, b: int) -> pa.Table | None:
        files = self.files.get(b)
        if not files:
            return None
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")


def _fingerprints(
    batch: pa.RecordBatch,
    spec: CollectionSpec,
    policies: dict[str, TolerancePolicy],
    present: set[str],
) -> pa.Table:
    cols: dict[str, pa.Array] = {ID: _key(batch.column(ID))}
    for vf in spec.vectors:
        if vf.sparse or vf.name not in present:
            continue
        cols[f"v:{vf.name}"] = fixed_size_vectors(vectors_numpy(batch.column(vf.name)))
    if spec.has_document and DOCUMENT in present:
        cols["m:document"] = pa.array(column_hash(batch.column(DOCUMENT)))
    for m in spec.metadata:
        if m.name not in present:
            continue
        value = _canonical(batch.column(m.name), m.type)
        if m.type is MetadataType.FLOAT64:  # kept as values: compared within a tolerance
            cols[f"f:{m.name}"] = value
        else:
            cols[f"m:{m.name}"] = pa.array(column_hash(value))
    return pa.table(cols)


def _stream(
    conn: Connector, spill: _Spill, spec: CollectionSpec, policies: dict[str, TolerancePolicy],
    present: set[str], batch_size: int, on_batch: Callable[[pa.RecordBatch], None],
) -> int:  # fmt: skip
    rows = 0
    for part in conn.partitions(1):
        for sb in conn.scan(part, None, batch_size):
            spill.add(_fingerprints(sb.batch, spec, policies, present))
            on_batch(sb.batch)
            rows += sb.batch.num_rows
    spill.close()
    return rows


def check_completeness(
    source: Connector,
    target: Connector,
    spec: CollectionSpec,
    *,
    batch_size: int = 10_000,
    work_dir: Path | None = None,
    on_source_batch: Callable[[pa.RecordBatch], None] = lambda b: None,
    on_target_batch: Callable[[pa.RecordBatch], None] = lambda b: None,
) -> CompletenessReport:
    """Compare every record of ``target`` with ``source`` (both described by ``spec``)."""
    report = CompletenessReport()
    target_spec = target.describe()
    expected = {m.name: m for m in spec.metadata}
    have = {m.name: m for m in target_spec.metadata}
    report.fields_missing = [n for n in expected if n not in have]
    if spec.has_document and not target_spec.has_document:
        report.fields_missing.append(DOCUMENT)
    report.fields_converted = {
        n: f"{expected[n].type.value} -> {have[n].type.value}"
        for n in expected
        if n in have and have[n].type is not expected[n].type
    }
    policies = {
        vf.name: TolerancePolicy.between(source.capabilities, target.capabilities, vf)
        for vf in spec.vectors
        if not vf.sparse
    }
    report.policy = "; ".join(f"{k}: {p.reason}" for k, p in policies.items())
    src_present = {ID, DOCUMENT, *(v.name for v in spec.vectors), *expected}
    dst_present = {ID, *(v.name for v in target_spec.vectors), *have}
    if target_spec.has_document:
        dst_present.add(DOCUMENT)
    total = max(_safe_count(source), _safe_count(target), 1)
    row_bytes = 64 + 8 * len(spec.metadata) + sum(4 * v.dim for v in spec.vectors if not v.sparse)
    buckets = max(1, math.ceil(total * row_bytes / BUCKET_BYTES))
    with tempfile.TemporaryDirectory(prefix="vecmigrate-validate-", dir=work_dir) as tmp:
        root = Path(tmp)
        src_spill, dst_spill = _Spill(root, "s", buckets), _Spill(root, "t", buckets)
        report.source_count = _stream(
            source, src_spill, spec, policies, src_present, batch_size, on_source_batch
        )
        report.target_count = _stream(
            target, dst_spill, spec, policies, dst_present, batch_size, on_target_batch
        )
        ulps = TolerancePolicy.float64_ulps(source.capabilities, target.capabilities)
        for b in range(buckets):
            _compare_bucket(report, src_spill.read(b), dst_spill.read(b), policies, ulps)
    return report


def _safe_count(conn: Connector) -> int:
    try:
        return conn.count()
    except Unsupported:
        return 0


def _empty_like(other: pa.Table | None) -> pa.Table:
    return other.slice(0, 0) if other is not None else pa.table({ID: pa.array([], pa.string())})


def _compare_bucket(
    report: CompletenessReport,
    src: pa.Table | None,
    dst: pa.Table | None,
    policies: dict[str, TolerancePolicy],
    float_ulps: int = 0,
) -> None:
    if src is None and dst is None:
        return
    src = src if src is not None else _empty_like(dst).select([ID])
    dst = dst if dst is not None else _empty_like(src).select([ID])
    src_ids = src.column(ID).combine_chunks()
    dst_ids = dst.column(ID).combine_chunks()
    counts = pc.value_counts(dst_ids)
    report.duplicates_in_target.add(
        pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1)).to_pylist()
    )
    report.missing.add(pc.filter(src_ids, pc.invert(pc.is_in(src_ids, dst_ids))).to_pylist())
    report.extra.add(pc.filter(dst_ids, pc.invert(pc.is_in(dst_ids, src_ids))).to_pylist())
    position = pc.index_in(src_ids, value_set=dst_ids)
    matched = pc.is_valid(position)
    src_rows = pc.indices_nonzero(matched)
    dst_rows = pc.filter(position, matched)
    ids = src_ids.take(src_rows)
    for col in src.column_names:
        if col == ID or col not in dst.column_names:
            continue
        a = src.column(col).combine_chunks().take(src_rows)
        b = dst.column(col).combine_chunks().take(dst_rows)
        kind, name = col.split(":", 1)
        if kind == "v":
            ok = policies[name].equal_rows(vectors_numpy(a), vectors_numpy(b))
            bad = pc.filter(ids, pa.array(~ok)).to_pylist()
            if bad or name not in report.vector_diffs:
                report.vector_diffs.setdefault(name, FieldDiff(name)).add(bad)
        elif kind == "f":
            a_null = a.is_null().to_numpy(zero_copy_only=False)
            b_null = b.is_null().to_numpy(zero_copy_only=False)
            av = pc.fill_null(a, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
            bv = pc.fill_null(b, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
            ok = (a_null == b_null) & (a_null | float64_equal(av, bv, float_ulps))
            bad = pc.filter(ids, pa.array(~ok)).to_pylist()
            if bad:
                report.metadata_diffs.setdefault(name, FieldDiff(name)).add(bad)
        else:
            differs = pc.fill_null(pc.not_equal(a, b), True)
            bad = pc.filter(ids, differs).to_pylist()
            if bad:
                report.metadata_diffs.setdefault(name, FieldDiff(name)).add(bad)
