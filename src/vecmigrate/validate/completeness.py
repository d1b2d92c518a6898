"""Completeness: every id on both sides once, every vector and metadata value equal.

Both sides are streamed once. Each row becomes a small fingerprint (its id, one hash per
metadata field and per vector) written to hash-partitioned Parquet runs on disk; buckets are
then compared one at a time, so memory depends on the bucket size, not on the collection size.

Vectors are compared under the tolerance policy the two engines' declared behaviour allows.
Where that policy is an ulp bound (bit-exact included), identical float32 bits are equal under
it, so only rows whose vector hashes differ are read again, with their vectors, and compared
value by value: by id when both sides can fetch and they are few, else by a second scan that
keeps only those rows. Where the policy normalises or allows an absolute tolerance (almost no
row keeps its bits), the vectors themselves go into the fingerprint instead.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
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

BUCKET_BYTES = 16 * 2**20  # fingerprint bytes per bucket and side, compared in memory
PENDING_BYTES = 16 * 2**20  # fingerprint bytes buffered per side before buckets are flushed
SCAN_BYTES = 16 * 2**20  # vector bytes per scan batch (fewer rows than batch_size if wide)
FETCH_BYTES = 32 * 2**20  # vector bytes of differing rows re-read by id (more: re-scanned)
COMPARE_ROWS = 4_096  # vectors compared per step
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


def _release() -> None:
    """Hand memory Arrow no longer uses back to the system (its allocator keeps it)."""
    pa.default_memory_pool().release_unused()


class Spill:
    """Hash-partitioned fingerprint runs of one side, on disk."""

    def __init__(self, root: Path, side: str, buckets: int) -> None:
        self.root, self.side, self.buckets = root, side, buckets
        self.pending: dict[int, list[pa.Table]] = {}
        self.pending_bytes: dict[int, int] = {}
        self.files: dict[int, list[Path]] = {}

    def add(self, fingerprints: pa.Table) -> None:
        if fingerprints.num_rows == 0:
            return
        keys = column_hash(fingerprints.column(ID).combine_chunks())
        bucket_of = (keys % np.uint64(self.buckets)).astype(np.int64)
        order = np.argsort(bucket_of, kind="stable")
        grouped = fingerprints.take(pa.array(order))
        bounds = np.searchsorted(bucket_of[order], np.arange(self.buckets + 1))
        for b in np.nonzero(np.diff(bounds))[0]:
            part = grouped.slice(int(bounds[b]), int(bounds[b + 1] - bounds[b]))
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
        del tables
        _release()

    def close(self) -> None:
        for b in list(self.pending):
            self._flush(b)

    def read(self, b: int) -> pa.Table | None:
        files = self.files.get(b)
        if not files:
            return None
        tables = [pq.read_table(f, use_threads=False) for f in files]
        return pa.concat_tables(tables, promote_options="permissive")


@dataclass
class _Plan:
    """What goes into each side's fingerprints."""

    spec: CollectionSpec
    policies: dict[str, TolerancePolicy]
    present: set[str]
    hashed: set[str]  # vector fields fingerprinted by hash (else by value)

    def row_bytes(self) -> int:
        """About how many bytes one fingerprint row takes."""
        scalars = len(self.spec.metadata) + int(self.spec.has_document) + len(self.hashed)
        values = sum(4 * self.dim(n) for n in self.policies if n not in self.hashed)
        return 64 + 8 * scalars + values

    def dim(self, name: str) -> int:
        return self.spec.vector(name).dim


def _fingerprints(batch: pa.RecordBatch, plan: _Plan) -> pa.Table:
    cols: dict[str, pa.Array] = {ID: _key(batch.column(ID))}
    for name in plan.policies:
        if name not in plan.present:
            continue
        vectors = fixed_size_vectors(vectors_numpy(batch.column(name)))
        if name in plan.hashed:
            cols[f"h:{name}"] = pa.array(column_hash(vectors))
        else:
            cols[f"v:{name}"] = vectors
    if plan.spec.has_document and DOCUMENT in plan.present:
        cols["m:document"] = pa.array(column_hash(batch.column(DOCUMENT)))
    for m in plan.spec.metadata:
        if m.name not in plan.present:
            continue
        value = _canonical(batch.column(m.name), m.type)
        if m.type is MetadataType.FLOAT64:  # kept as values: compared within a tolerance
            cols[f"f:{m.name}"] = value
        else:
            cols[f"m:{m.name}"] = pa.array(column_hash(value))
    return pa.table(cols)


def _vectors_of(batch: pa.RecordBatch, names: list[str]) -> pa.Table:
    """Id and the named vector columns, by value (rows read again to compare vectors)."""
    cols: dict[str, pa.Array] = {ID: _key(batch.column(ID))}
    for name in names:
        if name in batch.schema.names:
            cols[f"v:{name}"] = fixed_size_vectors(vectors_numpy(batch.column(name)))
    return pa.table(cols)


def _scan(conn: Connector, batch_size: int) -> Iterator[pa.RecordBatch]:
    for part in conn.partitions(1):
        for sb in conn.scan(part, None, batch_size):
            yield sb.batch


def _stream(
    conn: Connector, spill: Spill, plan: _Plan, batch_size: int,
    on_batch: Callable[[pa.RecordBatch], None],
) -> int:  # fmt: skip
    rows = 0
    for batch in _scan(conn, batch_size):
        spill.add(_fingerprints(batch, plan))
        on_batch(batch)
        rows += batch.num_rows
        del batch
        _release()
    spill.close()
    return rows


class _Suspects:
    """Rows whose vector hashes differ on the two sides: read again and compared by value."""

    def __init__(self, fetch_rows: int) -> None:
        self.fetch_rows = fetch_rows
        self.ids: list[pa.Array] | None = []  # kept while few enough to fetch by id
        self.keys: list[np.ndarray] = []
        self.count = 0

    def add(self, ids: pa.Array) -> None:
        if len(ids) == 0:
            return
        self.count += len(ids)
        self.keys.append(column_hash(ids))
        if self.ids is not None:
            self.ids.append(ids)
            if self.count > self.fetch_rows:
                self.ids = None

    def sorted_keys(self) -> np.ndarray:
        return np.unique(np.concatenate(self.keys)) if self.keys else np.zeros(0, np.uint64)


def _batch_size(batch_size: int, spec: CollectionSpec) -> int:
    width = sum(4 * v.dim for v in spec.vectors if not v.sparse)
    return max(1, min(batch_size, SCAN_BYTES // max(width, 1)))


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
    for name in policies:
        if name in dst_present:
            report.vector_diffs[name] = FieldDiff(name)
    hashed = {n for n, p in policies.items() if p.hash_first}
    src_plan = _Plan(spec, policies, src_present, hashed)
    dst_plan = _Plan(spec, policies, dst_present, hashed)
    total = max(_safe_count(source), _safe_count(target), 1)
    buckets = max(1, math.ceil(total * src_plan.row_bytes() / BUCKET_BYTES))
    step = _batch_size(batch_size, spec)
    width = sum(4 * src_plan.dim(n) for n in hashed)
    suspects = _Suspects(FETCH_BYTES // max(width, 1))
    with tempfile.TemporaryDirectory(prefix="vecmigrate-validate-", dir=work_dir) as tmp:
        root = Path(tmp)
        src_spill, dst_spill = Spill(root, "s", buckets), Spill(root, "t", buckets)
        report.source_count = _stream(source, src_spill, src_plan, step, on_source_batch)
        report.target_count = _stream(target, dst_spill, dst_plan, step, on_target_batch)
        ulps = TolerancePolicy.float64_ulps(source.capabilities, target.capabilities)
        for b in range(buckets):
            _compare_bucket(report, src_spill.read(b), dst_spill.read(b), policies, ulps, suspects)
            _release()
        fields = sorted(n for n in hashed if n in dst_present)
        if suspects.count and fields:
            _recheck(report, source, target, spec, target_spec, policies, fields, suspects,
                     root, step)  # fmt: skip
    return report


def _recheck(
    report: CompletenessReport, source: Connector, target: Connector, spec: CollectionSpec,
    target_spec: CollectionSpec, policies: dict[str, TolerancePolicy], fields: list[str],
    suspects: _Suspects, root: Path, batch_size: int,
) -> None:  # fmt: skip
    """Read the suspect rows' vectors again on both sides and compare them by value."""
    if suspects.ids is not None and source.capabilities.fetch and target.capabilities.fetch:
        ids = pa.concat_arrays(suspects.ids)
        try:
            src = _vectors_of(source.fetch(_typed(ids, spec)), fields)
            dst = _vectors_of(target.fetch(_typed(ids, target_spec)), fields)
        except Unsupported:
            pass
        else:
            _compare_values(report, src, dst, policies, 0)
            return
    keys = suspects.sorted_keys()
    width = 64 + sum(4 * spec.vector(n).dim for n in fields)
    buckets = max(1, math.ceil(suspects.count * width / BUCKET_BYTES))
    sides = []
    for side, conn in (("rs", source), ("rt", target)):
        spill = Spill(root, side, buckets)
        for batch in _scan(conn, batch_size):
            hit = np.isin(column_hash(_key(batch.column(ID))), keys, assume_unique=False)
            if hit.any():
                spill.add(_vectors_of(batch.filter(pa.array(hit)), fields))
            del batch
            _release()
        spill.close()
        sides.append(spill)
    for b in range(buckets):
        src, dst = sides[0].read(b), sides[1].read(b)
        if src is not None and dst is not None:
            _compare_values(report, src, dst, policies, 0)
        _release()


def _typed(ids: pa.Array, spec: CollectionSpec) -> list[Any]:
    """Suspect ids (as text) in the id type of one side, for its fetch."""
    if spec.id_type == "int64":
        return [int(v) for v in ids.to_pylist()]
    return list(ids.to_pylist())


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
    suspects: _Suspects | None = None,
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
    _compare_values(report, src, dst, policies, float_ulps, suspects)


def _compare_values(
    report: CompletenessReport,
    src: pa.Table,
    dst: pa.Table,
    policies: dict[str, TolerancePolicy],
    float_ulps: int,
    suspects: _Suspects | None = None,
) -> None:
    """Compare the values of the ids both sides hold (the first row of a duplicated id)."""
    src_ids = src.column(ID).combine_chunks()
    dst_ids = dst.column(ID).combine_chunks()
    position = pc.index_in(src_ids, value_set=dst_ids)
    matched = pc.is_valid(position)
    src_rows = pc.indices_nonzero(matched)
    dst_rows = pc.filter(position, matched)
    ids = src_ids.take(src_rows)
    differing = None  # rows whose vector hashes differ in any field
    for col in src.column_names:
        if col == ID or col not in dst.column_names:
            continue
        kind, name = col.split(":", 1)
        if kind == "v":
            bad = _differing_vectors(src.column(col), dst.column(col), src_rows, dst_rows,
                                     policies[name])  # fmt: skip
            report.vector_diffs.setdefault(name, FieldDiff(name)).add(
                pc.filter(ids, pa.array(bad)).to_pylist()
            )
            continue
        a = src.column(col).combine_chunks().take(src_rows)
        b = dst.column(col).combine_chunks().take(dst_rows)
        if kind == "h":
            ne = pc.fill_null(pc.not_equal(a, b), True)
            differing = ne if differing is None else pc.or_(differing, ne)
        elif kind == "f":
            a_null = a.is_null().to_numpy(zero_copy_only=False)
            b_null = b.is_null().to_numpy(zero_copy_only=False)
            av = pc.fill_null(a, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
            bv = pc.fill_null(b, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
            ok = (a_null == b_null) & (a_null | float64_equal(av, bv, float_ulps))
            bad_ids = pc.filter(ids, pa.array(~ok)).to_pylist()
            if bad_ids:
                report.metadata_diffs.setdefault(name, FieldDiff(name)).add(bad_ids)
        else:
            differs = pc.fill_null(pc.not_equal(a, b), True)
            bad_ids = pc.filter(ids, differs).to_pylist()
            if bad_ids:
                report.metadata_diffs.setdefault(name, FieldDiff(name)).add(bad_ids)
    if differing is not None and suspects is not None:
        suspects.add(pc.filter(ids, differing))


def _differing_vectors(
    a: pa.ChunkedArray, b: pa.ChunkedArray, a_rows: pa.Array, b_rows: pa.Array,
    policy: TolerancePolicy,
) -> np.ndarray:  # fmt: skip
    """Per matched row: do the two vectors differ under the policy? (a few rows at a time)"""
    a_col, b_col = a.combine_chunks(), b.combine_chunks()
    out = np.zeros(len(a_rows), dtype=bool)
    for start in range(0, len(a_rows), COMPARE_ROWS):
        end = min(start + COMPARE_ROWS, len(a_rows))
        va = vectors_numpy(a_col.take(a_rows.slice(start, end - start)))
        vb = vectors_numpy(b_col.take(b_rows.slice(start, end - start)))
        out[start:end] = ~policy.equal_rows(va, vb)
    return out
