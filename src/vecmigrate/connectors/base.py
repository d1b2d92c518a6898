"""The connector contract.

A connector is one class per system. The required part is small: ``describe``, ``scan``,
``count``, ``create`` and ``upsert``. The rest has defaults here or is declared impossible in
``capabilities`` (read by the planner, the schema mapper and the conformance tests; nothing
probes by catching errors).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from vecmigrate.errors import DataError, Unsupported
from vecmigrate.spec import AccessEntry, CollectionSpec, MetadataType, Metric
from vecmigrate.uri import ConnectorURI

ALL_METADATA = frozenset(MetadataType)


@dataclass(frozen=True)
class Capabilities:
    """What a connector can do, as data."""

    read: bool = True
    write: bool = True
    describe: bool = True
    query: bool = False
    fetch: bool = False
    delete: bool = False
    change_feed: bool = False
    string_ids: bool = True
    int_ids: bool = True
    metrics: frozenset[Metric] = frozenset(Metric)
    metadata_types: frozenset[MetadataType] = ALL_METADATA
    documents: bool = True
    sparse_vectors: bool = False
    named_vectors: bool = False
    max_dim: int | None = None
    max_batch: int | None = None
    exact_float32: bool = True  # vectors come back bit-exact (else within max_ulp)
    max_ulp: int = 0  # float32 ulps a stored vector component may drift
    exact_float64: bool = True  # float metadata comes back bit-exact (else within 4 ulps)
    normalizes_cosine: bool = False
    partitions: bool = False
    aliases: bool = False
    access_control: bool = False  # describes access entries (or keeps them, for datasets)
    apply_access: bool = False  # can re-apply access entries on request (apply_access)
    rejects_bad_rows: bool = False  # scan can hand unreadable rows over (reject_bad_rows)
    holds_gil: bool = False  # its client holds the GIL as it writes (a copy writes from a child)
    verified: bool = True
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, frozenset):
                out[key] = sorted(str(v) for v in value)
            elif isinstance(value, tuple):
                out[key] = list(value)
            else:
                out[key] = value
        return out


@dataclass(frozen=True)
class Partition:
    """A slice of a source that can be scanned on its own. ``bounds`` is connector data."""

    key: str
    bounds: dict[str, Any] = field(default_factory=dict)
    estimated_rows: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {"key": self.key, "bounds": self.bounds, "estimated_rows": self.estimated_rows},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Partition:
        d = json.loads(text)
        return cls(key=d["key"], bounds=d.get("bounds", {}), estimated_rows=d.get("estimated_rows"))


@dataclass(frozen=True)
class RejectedRow:
    """A source row that could not be read, handed over instead of raised.

    ``offset`` is its place among the rows the ScanBatch consumed (good and rejected, in
    source order); ``error`` says where (file, row, field, id) and why; ``record`` is the row
    as far as it could be read: a dict, or the raw text when it did not parse.
    """

    offset: int
    error: DataError
    record: Any = None


@dataclass(frozen=True)
class ScanBatch:
    """Rows read from a partition, and the cursor that resumes right after the last of them.

    ``rejected`` holds rows the connector could not read, only after ``reject_bad_rows()``
    (otherwise it raises DataError); the cursor resumes after them too.
    """

    batch: pa.RecordBatch
    cursor: str
    rejected: tuple[RejectedRow, ...] = ()

    @property
    def consumed(self) -> int:
        """Source rows this batch covers: the good ones and the rejected ones."""
        return int(self.batch.num_rows) + len(self.rejected)


@dataclass(frozen=True)
class WriteToken:
    """Identifies a write deterministically: the same rows re-sent carry the same token.

    Idempotent-by-id targets ignore it; file targets name their shard after it, so a batch
    re-sent after a crash replaces the shard instead of adding a second one.
    """

    run_id: str
    partition_index: int
    rows_before: int


@dataclass(frozen=True)
class QueryResult:
    """Top-k neighbours of each query: ids (n x k, ragged as lists) and distances/scores."""

    ids: list[list[Any]]
    scores: list[list[float]]


@dataclass(frozen=True)
class AccessGrant:
    """One privilege of one principal on the target, and whether it was applied."""

    principal: str
    privilege: str
    resource: str
    applied: bool
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "principal": self.principal,
            "privilege": self.privilege,
            "resource": self.resource,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class AccessReport:
    """What ``apply_access`` did: every (principal, privilege) applied or not, with why."""

    grants: tuple[AccessGrant, ...] = ()

    @property
    def applied(self) -> list[AccessGrant]:
        return [g for g in self.grants if g.applied]

    @property
    def not_applied(self) -> list[AccessGrant]:
        return [g for g in self.grants if not g.applied]


class IfExists(StrEnum):
    FAIL = "fail"
    REUSE = "reuse"
    REPLACE = "replace"


class Connector:
    """Base class for a system's connector; the defaults work for a scan-and-upsert system."""

    scheme: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, uri: ConnectorURI) -> None:
        self.uri = uri

    @classmethod
    def single_process(cls, uri: ConnectorURI) -> str | None:
        """Why only one process at a time may open ``uri``'s collection; None if many may.

        The Ray executor opens source and target in every worker process, so it refuses a
        collection that answers here before any worker starts.
        """
        return None

    # -- life cycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Release clients and files."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exists(self) -> bool:
        """Whether the collection exists."""
        raise Unsupported(f"{self.scheme}: cannot tell whether the collection exists")

    # -- source -------------------------------------------------------------------------
    def describe(self) -> CollectionSpec:
        raise Unsupported(f"{self.scheme}: describe is not supported")

    def count(self) -> int:
        raise Unsupported(f"{self.scheme}: count is not supported")

    def partitions(self, hint: int) -> list[Partition]:
        """Split the source into up to about ``hint`` partitions; one by default."""
        return [Partition(key="all")]

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        """Rows of a partition after ``cursor`` (from the start for None), in a stable order."""
        raise Unsupported(f"{self.scheme}: reading is not supported")

    def reject_bad_rows(self) -> None:
        """From now on, hand rows that cannot be read to ``ScanBatch.rejected`` (with the
        reason) instead of raising DataError. Only for ``capabilities.rejects_bad_rows``."""
        raise Unsupported(f"{self.scheme}: cannot read past bad rows")

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        """The records with these ids (missing ones left out)."""
        raise Unsupported(f"{self.scheme}: fetch by id is not supported")

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        """Exact or index kNN of each query vector; scores as the system reports them."""
        raise Unsupported(f"{self.scheme}: kNN query is not supported")

    # -- target -------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        """Create the collection for ``spec``; an existing one must be compatible to reuse."""
        raise Unsupported(f"{self.scheme}: writing is not supported")

    def set_source(self, source: str) -> None:
        """The redacted URI of the source being copied in (file targets record it)."""

    def begin(self, run_id: str, *, resume: bool) -> None:
        """Called before the first write of a copy run (``resume`` when continuing one)."""

    def handoff(self) -> dict[str, Any]:
        """What writers in other processes need to know of the run ``begin`` started here.

        JSON-able; a worker's connector receives it in ``join`` (Ray executor).
        """
        return {}

    def join(self, run_id: str, handoff: dict[str, Any]) -> None:
        """Write for run ``run_id``, begun elsewhere or earlier (see ``handoff``).

        Called in a worker process (Ray executor), and after ``begin`` when a run resumes,
        with the handoff its first attempt recorded in the checkpoint.
        """

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        """Insert or replace records by id. Re-sending the same batch changes nothing."""
        raise Unsupported(f"{self.scheme}: writing is not supported")

    def delete(self, ids: Sequence[Any]) -> None:
        raise Unsupported(f"{self.scheme}: delete is not supported")

    def finalize(self, spec: CollectionSpec) -> None:
        """Work after all rows are in: build indexes, write manifests, flush."""

    def drop(self) -> None:
        raise Unsupported(f"{self.scheme}: drop is not supported")

    def apply_access(self, entries: Sequence[AccessEntry]) -> AccessReport:
        """Grant each entry's privileges on the collection (``capabilities.apply_access``).

        Called only on explicit request, after the rows are in. A principal or privilege the
        target does not know is reported as not applied, not raised.
        """
        raise Unsupported(f"{self.scheme}: access entries cannot be applied")
