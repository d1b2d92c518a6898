"""Which ids differ between two row sets, streamed with bounded memory.

Each side is a stream of fingerprint tables: the id (as a string key) and, when contents are
compared, one content hash per row. They are spilled into hash-partitioned runs on disk with
the completeness check's spill and compared one bucket at a time, so memory depends on the
bucket size, not on the collection size. Used by change sources that have no change log: the
LanceDB version diff without stable row ids, and the polling source's periodic id diff.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.hashing import row_hashes
from vecmigrate.spec import ID
from vecmigrate.validate.completeness import BUCKET_BYTES, Spill

HASH = "h"
FINGERPRINT_BYTES = 48  # a fingerprint row on disk and in memory: id text, hash, overhead


@dataclass
class IdDiff:
    """Ids of one bucket: only on the left, only on the right, on both with other contents."""

    only_left: list[str] = field(default_factory=list)
    only_right: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def fingerprints(batch: pa.RecordBatch, columns: list[str] | None = None) -> pa.Table:
    """The batch's ids as string keys, with a hash over ``columns`` (None: ids only)."""
    ids = batch.column(ID)
    cols: dict[str, pa.Array] = {ID: ids if pa.types.is_string(ids.type) else ids.cast(pa.string())}
    if columns is not None:
        cols[HASH] = pa.array(row_hashes(batch, columns))
    return pa.table(cols)


def diff_by_id(
    left: Iterable[pa.Table],
    right: Iterable[pa.Table],
    *,
    rows: int,
    work_dir: Path | None = None,
) -> Iterator[IdDiff]:
    """Compare two fingerprint streams (about ``rows`` rows per side) bucket by bucket."""
    buckets = max(1, math.ceil(rows * FINGERPRINT_BYTES / BUCKET_BYTES))
    with tempfile.TemporaryDirectory(prefix="vecmigrate-diff-", dir=work_dir) as tmp:
        root = Path(tmp)
        sides = (Spill(root, "l", buckets), Spill(root, "r", buckets))
        for spill, stream in zip(sides, (left, right), strict=True):
            for table in stream:
                if table.num_rows:
                    spill.add(table)
            spill.close()
        for b in range(buckets):
            yield _compare(sides[0].read(b), sides[1].read(b))


def _compare(left: pa.Table | None, right: pa.Table | None) -> IdDiff:
    if left is None and right is None:
        return IdDiff()
    if left is None or right is None:
        present = left if left is not None else right
        assert present is not None
        ids = pc.unique(present.column(ID).combine_chunks()).to_pylist()
        return IdDiff(only_left=ids) if left is not None else IdDiff(only_right=ids)
    a = left.column(ID).combine_chunks()
    b = right.column(ID).combine_chunks()
    out = IdDiff(
        only_left=pc.unique(pc.filter(a, pc.invert(pc.is_in(a, b)))).to_pylist(),
        only_right=pc.unique(pc.filter(b, pc.invert(pc.is_in(b, a)))).to_pylist(),
    )
    if HASH in left.column_names and HASH in right.column_names:
        at = pc.index_in(a, value_set=b)
        matched = pc.is_valid(at)
        mine = pc.filter(left.column(HASH).combine_chunks(), matched)
        theirs = right.column(HASH).combine_chunks().take(pc.filter(at, matched))
        differs = pc.not_equal(mine, theirs)
        out.changed = pc.unique(pc.filter(pc.filter(a, matched), differs)).to_pylist()
    return out
