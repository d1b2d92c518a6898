"""A table in a local LanceDB database folder.

Reads pin a table version when partitions are planned, so a resumed scan sees the same rows;
partitions are row ranges of that version and the cursor is the absolute row position (the
LanceDB client has no fragment API without pylance, and row offsets of a pinned version are
as stable as fragment offsets). A batch is read as several small queries (a Lance query holds
several times the bytes it returns) whose vectors are copied into one preallocated buffer.
Writes are ``merge_insert`` on the id column, or a plain ``add`` while a fresh run writes new
batches into a table that was empty when the run began (several times faster; re-sent
batches, retries and resumed runs always merge). LanceDB has no per-table metric: the
CollectionSpec is kept in the table's schema metadata so ``describe`` round-trips it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import mmap
import threading
import weakref
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb import index as lance_index

from vecmigrate.connectors.base import (
    Capabilities,
    Connector,
    IfExists,
    Partition,
    QueryResult,
    ScanBatch,
    WriteToken,
)
from vecmigrate.connectors.lancedb.config import LanceDBConfig
from vecmigrate.connectors.lancedb.errors import lance_errors
from vecmigrate.dedup import repeated_ids
from vecmigrate.errors import ConfigError, DataError, NotFoundError, SchemaMismatch
from vecmigrate.records import check_batch, concat, conform
from vecmigrate.spec import (
    ID,
    SPARSE_TYPE,
    CollectionSpec,
    IndexConfig,
    MetadataType,
    Metric,
)
from vecmigrate.uri import ConnectorURI

SPEC_KEY = b"vecmigrate.spec"
MIN_PARTITION_ROWS = 1_000
AUTO_INDEX_ROWS = 100_000  # index=auto: below this LanceDB's exact search is fast enough
MIN_INDEX_ROWS = 256  # fewer rows cannot train an IVF index
COMPACT_FRAGMENTS = 64  # compact when at least this many fragments hold fewer rows than
COMPACT_MEAN_ROWS = 5_000  # this on average (tiny batches); bigger ones scan fine as they are
ID_CHUNK = 1_000  # ids per filter expression in fetch and delete
READ_BYTES = 8 << 20  # bytes per read query: Lance holds several times this while it reads
MIN_READ_ROWS = 64
DEDUP_READ_ROWS = 100_000
NO_CLEANUP = timedelta(days=365 * 100)  # compact without removing any older version

_DISTANCE = {Metric.COSINE: "cosine", Metric.L2: "l2", Metric.IP: "dot"}
_INDEX_KIND = {
    "IvfPq": "ivf_pq",
    "IvfFlat": "ivf_flat",
    "IvfSq": "ivf_sq",
    "IvfRq": "ivf_rq",
    "IvfHnswSq": "ivf_hnsw_sq",
    "IvfHnswPq": "ivf_hnsw_pq",
    "IvfHnswFlat": "ivf_hnsw_flat",
    "BTree": "btree",
    "Bitmap": "bitmap",
    "LabelList": "label_list",
    "FTS": "fts",
}
# spec index kinds -> LanceDB index configs (flat means no index: LanceDB searches exactly)
_INDEX_CONFIG: dict[str, type[Any]] = {
    "hnsw": lance_index.HnswSq,
    "ivf_hnsw_sq": lance_index.HnswSq,
    "ivf_hnsw_pq": lance_index.HnswPq,
    "ivf_hnsw_flat": lance_index.HnswFlat,
    "ivf_flat": lance_index.IvfFlat,
    "ivf_sq": lance_index.IvfSq,
    "ivf_pq": lance_index.IvfPq,
    "ivf_rq": lance_index.IvfRq,
}
_INDEX_PARAM_ALIASES = {
    "M": "m",
    "max_neighbors": "m",
    "efConstruction": "ef_construction",
    "ef_construct": "ef_construction",
    "nlist": "num_partitions",
    "lists": "num_partitions",
}


def _sql_literal(value: Any, id_type: str) -> str:
    """An id as a SQL literal: strings quoted with ``'`` doubled, ints as digits."""
    if id_type == "int64":
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise DataError(f"id {value!r} is not an int64", field=ID)
        return str(int(value))
    if not isinstance(value, str):
        raise DataError(f"id {value!r} is not a string", field=ID)
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    if "`" in name:
        raise ConfigError(f"lancedb: column name {name!r} contains a backtick")
    return f"`{name}`"


def _json_strings(column: pa.Array) -> pa.Array:
    """A nested column (struct, map, list of structs) as JSON text, one value per row."""
    values = column.to_pylist()
    return pa.array(
        [None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in values],
        pa.string(),
    )


def _schema_row_bytes(schema: pa.Schema) -> int:
    """Bytes per row a schema suggests (vectors exactly, other columns a guess)."""
    total = 0
    for f in schema:
        t = f.type
        if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type):
            total += t.list_size * t.value_type.bit_width // 8
        else:
            total += 32
    return max(1, total)


class _VectorBuffers:
    """Buffers for the vectors of scanned batches: anonymous mappings, reused once written.

    A buffer is its own mapping, so what is not kept for reuse goes back to the system as soon
    as its batch is written, whatever the allocators cache; up to ``spares`` written buffers
    are kept, since fresh pages cost about a second of system time per GB (one spare saves
    most of it: a 1M x 768 copy took 12% less CPU, for ~15 MB more peak RSS).
    """

    def __init__(self, spares: int = 1) -> None:
        self.spares = spares
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        """A writable uint8 array of ``nbytes``; its mapping comes back here when it is freed."""
        with self._lock:
            fits = [m for m in self._free if len(m) >= nbytes]
            mapping = min(fits, key=len) if fits else None
            if mapping is not None:
                self._free.remove(mapping)
        if mapping is None:
            mapping = mmap.mmap(-1, max(1, nbytes))
        array = np.frombuffer(mapping, dtype=np.uint8, count=nbytes)
        weakref.finalize(array, self._give_back, mapping).atexit = False
        return array

    def _give_back(self, mapping: mmap.mmap) -> None:
        with self._lock:
            self._free.append(mapping)
            self._free.sort(key=len, reverse=True)
            del self._free[self.spares :]  # dropped mappings are unmapped


class _BatchBuilder:
    """One batch gathered from several small reads, without a second copy of its vectors.

    Dense vector columns are copied into a buffer of the batch's final size as each read
    arrives, so only one read's arrays and the finished vectors are held at a time; the other
    (small) columns are concatenated at the end.
    """

    def __init__(self, schema: pa.Schema, rows: int, buffers: _VectorBuffers) -> None:
        self.schema = schema
        self.rows = rows
        self.filled = 0
        self.chunks: dict[str, list[pa.Array]] = {}
        self.dense: dict[str, tuple[pa.Buffer, np.ndarray, np.ndarray]] = {}
        for f in schema:
            t = f.type
            if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type):
                dtype = np.dtype(t.value_type.to_pandas_dtype())
                raw = buffers.take(rows * t.list_size * dtype.itemsize)
                values = raw.view(dtype).reshape(rows, t.list_size)
                self.dense[f.name] = (pa.py_buffer(raw), values, np.ones(rows, dtype=bool))
            else:
                self.chunks[f.name] = []

    def add(self, table: pa.Table) -> None:
        start, n = self.filled, table.num_rows
        for name, (_, values, valid) in self.dense.items():
            row = start
            for chunk in table.column(name).chunks:
                dim = chunk.type.list_size
                flat = chunk.values.slice(chunk.offset * dim, len(chunk) * dim)
                values[row : row + len(chunk)] = flat.to_numpy(zero_copy_only=False).reshape(
                    len(chunk), dim
                )
                if chunk.null_count:
                    valid[row : row + len(chunk)] = chunk.is_valid().to_numpy(zero_copy_only=False)
                row += len(chunk)
        for name, chunks in self.chunks.items():
            chunks.extend(table.column(name).chunks)
        self.filled += n

    def finish(self) -> pa.RecordBatch:
        arrays = []
        for f in self.schema:
            if f.name in self.dense:
                buffer, values, valid = self.dense[f.name]
                flat = pa.Array.from_buffers(f.type.value_type, values.size, [None, buffer])
                mask = None if valid.all() else pa.array(~valid)
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, type=f.type, mask=mask))
            else:
                chunks = self.chunks[f.name]
                arrays.append(pa.concat_arrays(chunks) if chunks else pa.nulls(0, f.type))
        self.dense.clear()
        self.chunks.clear()
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


class LanceDBConnector(Connector):
    scheme = "lancedb"
    capabilities = Capabilities(
        query=True,
        fetch=True,
        delete=True,
        sparse_vectors=True,
        named_vectors=True,
        notes=(
            "LanceDB has no per-table metric: vecmigrate keeps the spec in the table's schema "
            "metadata; tables made elsewhere report the metric of their vector index, else L2 "
            "(LanceDB's default)",
            "a scan reads the table version pinned when partitions were planned; compacting "
            "or cleaning up that version before the scan ends fails the scan",
            "sparse vectors are stored as struct columns (not searchable)",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = LanceDBConfig.from_uri(uri)
        self._db: Any = None
        self._table: Any = None
        self._pinned: tuple[int, Any] | None = None
        self._spec: CollectionSpec | None = None
        self._metric_known = True
        self._lock = threading.Lock()
        # one merge at a time (concurrent merges of one table conflict); appends do not take
        # it: Lance commits concurrent appends by retrying on the newer version, and their
        # encoding then runs in parallel (1M x 768, 2 workers: 61-76k -> 83-94k rows/s)
        self._merge_lock = threading.Lock()
        self._read_lock = threading.Lock()  # one read at a time: each holds several times its size
        self._buffers = _VectorBuffers()
        self._run_id: str | None = None
        self._fresh = False  # the table was empty when this run began and no write failed
        self._sent: set[tuple[int, int]] = set()
        self._appended = False  # some batch took the add fast path: check ids in finalize
        self._wrote = False

    @property
    def _name(self) -> str:
        return self.config.table

    def _where(self) -> str:
        return f"lancedb table {self._name!r} in {self.config.path}"

    # -- connection -----------------------------------------------------------------------
    def _connection(self, *, create: bool = False) -> Any:
        if self._db is None:
            path = self.config.path
            if not create and not path.is_dir():
                raise NotFoundError(f"{self._where()}: the database folder {path} does not exist")
            with lance_errors(f"open database {path}"):
                path.mkdir(parents=True, exist_ok=True)
                session = lancedb.Session(
                    metadata_cache_size_bytes=self.config.metadata_cache_mb << 20
                )
                self._db = lancedb.connect(
                    str(path), read_consistency_interval=timedelta(0), session=session
                )
        return self._db

    def _latest(self) -> Any:
        if self._table is None:
            db = self._connection()
            try:
                with lance_errors(f"open {self._where()}"):
                    self._table = db.open_table(self._name)
            except NotFoundError as exc:
                raise NotFoundError(f"{self._where()} does not exist") from exc
        return self._table

    def _at_version(self, version: int) -> Any:
        with self._lock:
            if self._pinned is None or self._pinned[0] != version:
                db = self._connection()
                with lance_errors(f"open version {version} of {self._where()}"):
                    self._pinned = (version, db.open_table(self._name, version=version))
            return self._pinned[1]

    def close(self) -> None:
        self._table = None
        self._pinned = None
        self._db = None

    def exists(self) -> bool:
        try:
            self._latest()
        except NotFoundError:
            return False
        return True

    # -- spec -----------------------------------------------------------------------------
    def describe(self) -> CollectionSpec:
        return self._describe().model_copy(deep=True)

    def _describe(self) -> CollectionSpec:
        if self._spec is None:
            table = self._latest()
            with lance_errors(f"read the schema of {self._where()}"):
                schema = table.schema
                indexes = self._indexes(table)
            stored = (schema.metadata or {}).get(SPEC_KEY)
            if stored is not None:
                spec = CollectionSpec.from_json(stored)
                self._metric_known = True
            else:
                spec = self._infer(schema, indexes)
            spec.name = self._name
            spec.indexes = indexes
            self._spec = spec
        return self._spec

    def _indexes(self, table: Any) -> list[IndexConfig]:
        out = []
        for ix in table.list_indices():
            kind = _INDEX_KIND.get(ix.index_type, str(ix.index_type).lower())
            metric = None
            stats = table.index_stats(ix.name)
            if stats is not None and stats.distance_type:
                metric = Metric.parse(stats.distance_type)
            out.append(
                IndexConfig(field=ix.columns[0], kind=kind, metric=metric, params={"name": ix.name})
            )
        return out

    def _infer(self, schema: pa.Schema, indexes: list[IndexConfig]) -> CollectionSpec:
        """A spec for a table made without vecmigrate: columns it cannot move are listed."""
        id_column = self.config.id_column
        if id_column not in schema.names:
            raise ConfigError(
                f"{self._where()} has no {id_column!r} column (columns: "
                f"{', '.join(schema.names)}): name the id column with ?id_column=NAME"
            )
        fields: list[pa.Field] = []
        skipped: list[str] = []
        for f in schema:
            if f.name == id_column:
                fields.append(pa.field(ID, f.type, False))
                continue
            t = f.type
            usable = f.name != ID and (
                (pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type))
                or t == SPARSE_TYPE
            )
            if not usable and f.name != ID:
                try:
                    MetadataType.of_arrow(t, field=f.name)
                    usable = True
                except ConfigError:
                    usable = False
            if usable:
                fields.append(f)
            else:
                skipped.append(f.name)
        spec = CollectionSpec.from_arrow_schema(
            pa.schema(fields), name=self._name, metric=Metric.L2
        )
        metric_of = {ix.field: ix.metric for ix in indexes if ix.metric is not None}
        self._metric_known = False
        for vf in spec.vectors:
            if not vf.sparse and vf.name in metric_of:
                vf.metric = metric_of[vf.name]
                self._metric_known = True
        spec.system = {"lancedb": {"metric": "from index" if self._metric_known else "default"}}
        if skipped:
            spec.system["lancedb"]["skipped_columns"] = skipped
        return spec

    def count(self) -> int:
        table = self._latest()
        with lance_errors(f"count the rows of {self._where()}"):
            return int(table.count_rows())

    # -- reading --------------------------------------------------------------------------
    def partitions(self, hint: int) -> list[Partition]:
        table = self._latest()
        with lance_errors(f"plan a scan of {self._where()}"):
            version = self.config.version or int(table.version)
            n = int(self._at_version(version).count_rows())
        parts = max(1, min(hint, n // MIN_PARTITION_ROWS or 1))
        edges = np.linspace(0, n, parts + 1, dtype=np.int64)
        return [
            Partition(
                key=f"v{version}-rows-{a}-{b}",
                bounds={"version": version, "start": int(a), "end": int(b)},
                estimated_rows=int(b - a),
            )
            for a, b in itertools.pairwise(edges)
        ]

    def _source_columns(self, spec: CollectionSpec) -> list[str]:
        return [self.config.id_column if n == ID else n for n in spec.arrow_schema().names]

    def _records(self, batch: pa.RecordBatch, spec: CollectionSpec) -> pa.RecordBatch:
        """A batch read from the table in the spec's schema (id renamed, JSON as text)."""
        schema = spec.arrow_schema()
        arrays = []
        for f, source in zip(schema, self._source_columns(spec), strict=True):
            column = batch.column(source)
            meta = spec.metadata_field(f.name)
            is_text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
            if meta is not None and meta.type is MetadataType.JSON and not is_text:
                column = _json_strings(column)
            arrays.append(column)
        return conform(pa.RecordBatch.from_arrays(arrays, names=schema.names), spec)

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        bounds = partition.bounds
        version, end = int(bounds["version"]), int(bounds["end"])
        pos = int(cursor) if cursor is not None else int(bounds["start"])
        if pos >= end:
            return
        spec = self._describe()
        table = self._at_version(version)
        columns = self._source_columns(spec)
        read_rows = max(MIN_READ_ROWS, READ_BYTES // _schema_row_bytes(spec.arrow_schema()))
        while pos < end:
            limit = min(batch_size, end - pos)
            builder: _BatchBuilder | None = None
            at = pos
            while at < pos + limit:
                # bounded queries (Lance pushes the offset down to the fragments): memory stays
                # at one small read instead of a streaming reader's read-ahead
                n = min(read_rows, pos + limit - at)
                what = f"read rows {at}-{at + n} of version {version} of {self._where()}"
                with self._read_lock, lance_errors(what):
                    got = table.search().select(columns).offset(at).limit(n).to_arrow()
                if got.num_rows != n:
                    raise NotFoundError(
                        f"lancedb: {what}: got {got.num_rows} rows; the version has fewer rows "
                        "than when the scan was planned"
                    )
                if builder is None:
                    builder = _BatchBuilder(got.schema, limit, self._buffers)
                builder.add(got)
                if got.nbytes:
                    read_rows = max(MIN_READ_ROWS, READ_BYTES * n // got.nbytes)
                del got
                at += n
            assert builder is not None
            pos += limit
            yield ScanBatch(batch=self._records(builder.finish(), spec), cursor=str(pos))

    def _id_filters(self, ids: Sequence[Any], spec: CollectionSpec) -> Iterator[tuple[int, str]]:
        column = _ident(self.config.id_column)
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            literals = ",".join(_sql_literal(v, spec.id_type) for v in chunk)
            yield len(chunk), f"{column} IN ({literals})"

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        spec = self._describe()
        table = self._latest()
        out = []
        with lance_errors(f"fetch {len(ids)} ids from {self._where()}"):
            for n, where in self._id_filters(list(dict.fromkeys(ids)), spec):
                got = (
                    table.search()
                    .where(where)
                    .select(self._source_columns(spec))
                    .limit(n)
                    .to_arrow()
                )
                out += [self._records(b, spec) for b in got.to_batches() if b.num_rows]
        return concat(out, spec.arrow_schema())

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        spec = self._describe()
        vf = spec.vector(vector_field)
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if len(queries) == 0:
            return QueryResult(ids=[], scores=[])
        table = self._latest()
        id_column = self.config.id_column
        with lance_errors(f"search {self._where()}"):
            search = (
                table.search(list(queries), vector_column_name=vf.name)
                .distance_type(_DISTANCE[vf.metric])
                .limit(k)
                .select([id_column, "_distance"])
            )
            if self.config.search == "exact":
                search = search.bypass_vector_index()
            got = search.to_arrow()
        which = (
            got.column("query_index").to_numpy()
            if "query_index" in got.schema.names
            else np.zeros(got.num_rows, dtype=np.int64)
        )
        order = np.argsort(which, kind="stable")
        which = which[order]
        ids = got.column(id_column).take(pa.array(order)).to_pylist()
        scores = got.column("_distance").to_numpy(zero_copy_only=False)[order].astype(float)
        cuts = np.searchsorted(which, np.arange(len(queries) + 1)).tolist()
        spans = list(itertools.pairwise(cuts))
        return QueryResult(
            ids=[ids[a:b] for a, b in spans], scores=[scores[a:b].tolist() for a, b in spans]
        )

    # -- writing --------------------------------------------------------------------------
    def _table_schema(self, spec: CollectionSpec) -> pa.Schema:
        schema = spec.arrow_schema()
        if self.config.id_column != ID:
            if self.config.id_column in schema.names:
                raise ConfigError(
                    f"lancedb: id_column={self.config.id_column!r} is also a field of the spec"
                )
            schema = schema.set(0, schema.field(0).with_name(self.config.id_column))
        return schema.with_metadata({SPEC_KEY: spec.to_json().encode()})

    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        if self.exists():
            if if_exists is IfExists.FAIL:
                raise SchemaMismatch(f"{self._where()} already exists")
            if if_exists is IfExists.REUSE:
                self._check_compatible(spec)
                return
            self.drop()
        db = self._connection(create=True)
        with lance_errors(f"create {self._where()}"):
            self._table = db.create_table(self._name, schema=self._table_schema(spec))
        self._spec = None
        self._pinned = None

    def _check_compatible(self, spec: CollectionSpec) -> None:
        have = self._describe()
        where = self._where()
        if have.id_type != spec.id_type:
            raise SchemaMismatch(
                f"{where} has {have.id_type} ids, the source has {spec.id_type} ids"
            )
        for vf in spec.vectors:
            old = next((v for v in have.vectors if v.name == vf.name), None)
            if old is None:
                raise SchemaMismatch(f"{where} has no vector column {vf.name!r}")
            if (old.dim, old.sparse) != (vf.dim, vf.sparse):
                raise SchemaMismatch(
                    f"{where}: column {vf.name!r} holds vectors of dim {old.dim}, "
                    f"the source has dim {vf.dim}"
                )
            if self._metric_known and old.metric is not vf.metric:
                raise SchemaMismatch(
                    f"{where}: column {vf.name!r} uses metric {old.metric}, the source uses "
                    f"{vf.metric}"
                )
        for m in spec.metadata:
            old_m = have.metadata_field(m.name)
            if old_m is None:
                raise SchemaMismatch(f"{where} has no column {m.name!r} (the source has it)")
            if old_m.type is not m.type:
                raise SchemaMismatch(
                    f"{where}: column {m.name!r} is {old_m.type}, the source has {m.type}"
                )
        if spec.has_document and not have.has_document:
            raise SchemaMismatch(f"{where} has no document column (the source has documents)")

    def begin(self, run_id: str, *, resume: bool) -> None:
        with self._lock:
            self._run_id = run_id
            self._sent.clear()
        empty = not resume and self.count() == 0
        with self._lock:
            self._fresh = empty

    def handoff(self) -> dict[str, Any]:
        with self._lock:
            return {"fresh": self._fresh}

    def join(self, run_id: str, handoff: dict[str, Any]) -> None:
        """Workers and resumed attempts of a fresh run append too; finalize removes the
        duplicate ids that re-sent batches add."""
        with self._lock:
            self._run_id = run_id
            self._sent.clear()
            self._fresh = bool(handoff.get("fresh"))

    def _may_append(self, token: WriteToken | None) -> bool:
        """Whether this batch's ids cannot be in the table yet (first send in a fresh run)."""
        if token is None:
            return False
        key = (token.partition_index, token.rows_before)
        with self._lock:
            if not self._fresh or token.run_id != self._run_id or key in self._sent:
                return False
            self._sent.add(key)
            self._appended = True
            return True

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        if batch.num_rows == 0:
            return
        spec = self._describe()
        records = conform(batch, spec)
        if pc.count_distinct(records.column(ID)).as_py() != records.num_rows:
            check_batch(records, spec)  # names the duplicate id (merge_insert would keep both)
        append = self._may_append(token)
        if self.config.id_column != ID:
            records = records.rename_columns(self._source_columns(spec))
        table = self._latest()
        try:
            with lance_errors(f"write {records.num_rows} rows to {self._where()}"):
                if append:
                    table.add(records)
                else:
                    with self._merge_lock:
                        (
                            table.merge_insert(self.config.id_column)
                            .when_matched_update_all()
                            .when_not_matched_insert_all()
                            .execute(records)
                        )
        except BaseException:
            with self._lock:
                self._fresh = False  # a failed add may still have committed: merge from now on
            raise
        self._wrote = True

    def delete(self, ids: Sequence[Any]) -> None:
        spec = self._describe()
        table = self._latest()
        with lance_errors(f"delete {len(ids)} ids from {self._where()}"):
            for _, where in self._id_filters(list(ids), spec):
                table.delete(where)

    def finalize(self, spec: CollectionSpec) -> None:
        table = self._latest()
        if self._appended or self._fresh:  # appended here, or by workers that joined the run
            self._drop_duplicate_ids()
            self._appended = False
        with lance_errors(f"finish {self._where()}"):
            if self.config.compact == "auto" and self._wrote:
                fragments = table.stats()["fragment_stats"]
                if (
                    fragments["num_fragments"] >= COMPACT_FRAGMENTS
                    and fragments["lengths"]["mean"] < COMPACT_MEAN_ROWS
                ):
                    table.optimize(cleanup_older_than=NO_CLEANUP)
            if self.config.index != "none":
                self._build_indexes(table, spec)
        self._spec = None

    def _duplicate_ids(self) -> list[Any]:
        """Ids the table holds more than once, in bounded memory (``dedup.repeated_ids``)."""
        table = self._latest()
        id_column = self.config.id_column

        def ids() -> Iterator[pa.Array]:
            query = table.search().select([id_column]).limit(None)
            for batch in query.to_batches(DEDUP_READ_ROWS):
                yield batch.column(id_column)

        return repeated_ids(ids, table.count_rows())

    def _drop_duplicate_ids(self) -> None:
        """Keep only the last written row of an id that appended batches wrote twice."""
        with lance_errors(f"check the ids of {self._where()}"):
            dups = self._duplicate_ids()
        if not dups:
            return
        table = self._latest()
        id_column = self.config.id_column
        spec = self._describe()
        with lance_errors(f"remove duplicate ids from {self._where()}"):
            for _, where in self._id_filters(dups, spec):
                got = table.search().where(where).select([id_column]).with_row_id(True)
                found = got.limit(None).to_arrow()
                last = found.group_by(id_column).aggregate([("_rowid", "max")])
                older = pc.filter(
                    found.column("_rowid"),
                    pc.invert(pc.is_in(found.column("_rowid"), last.column("_rowid_max"))),
                ).to_pylist()
                # one commit per chunk: the older copies go, nothing is rewritten
                table.delete(f"_rowid IN ({', '.join(str(int(r)) for r in older)})")

    def _build_indexes(self, table: Any, spec: CollectionSpec) -> None:
        indexed = {ix.field for ix in self._indexes(table) if ix.metric is not None}
        dense = {v.name: v for v in spec.vectors if not v.sparse}
        wanted = [ix for ix in spec.indexes if ix.field in dense and ix.field not in indexed]
        least = AUTO_INDEX_ROWS if self.config.index == "auto" else MIN_INDEX_ROWS
        if not wanted or table.count_rows() < least:
            return
        for ix in wanted:
            config_class = _INDEX_CONFIG.get(ix.kind.lower())
            if config_class is None:
                continue  # flat (exact search needs no index) or a kind LanceDB does not have
            names = {f.name for f in dataclasses.fields(config_class)}
            params = {_INDEX_PARAM_ALIASES.get(k, k): v for k, v in ix.params.items()}
            params = {k: v for k, v in params.items() if k in names and k != "distance_type"}
            metric = ix.metric or dense[ix.field].metric
            table.create_index(
                ix.field, config=config_class(distance_type=_DISTANCE[metric], **params)
            )

    def drop(self) -> None:
        if self.config.path.is_dir():
            db = self._connection()
            with lance_errors(f"drop {self._where()}"):
                db.drop_table(self._name, ignore_missing=True)
        self._table = None
        self._pinned = None
        self._spec = None
