"""Read-only connector for vdf-io folders (``vdf:///dir``), so users of that tool can move over.

A VDF folder has ``VDF_META.json`` (indexes -> namespaces -> a ``data_path`` of Parquet files)
and Parquet files written through pandas: an id column, list<double> vector columns, metadata
columns. VDF keeps no checksums: rows are checked (dimensions, NaN, duplicate ids), bytes are
not. Vectors stored as float64 are rounded to float32.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vecmigrate.connectors.base import Capabilities, Connector, Partition, QueryResult, ScanBatch
from vecmigrate.connectors.dataset.codec import at
from vecmigrate.connectors.dataset.manifest import resolve_inside
from vecmigrate.connectors.dataset.scanning import (
    fetch_by_scan,
    file_partitions,
    knn_by_scan,
    parse_cursor,
    partition_files,
)
from vecmigrate.connectors.vdf.config import VdfConfig
from vecmigrate.connectors.vdf.errors import mapped
from vecmigrate.connectors.vdf.meta import NamespaceMeta, VdfMeta, read_meta
from vecmigrate.errors import ConfigError, DataError
from vecmigrate.records import check_batch, conform
from vecmigrate.spec import (
    DOCUMENT,
    ID,
    CollectionSpec,
    MetadataField,
    MetadataType,
    Metric,
    VectorField,
)
from vecmigrate.uri import ConnectorURI

_PANDAS_INDEX = re.compile(r"^__index_level_\d+__$")


class VdfConnector(Connector):
    scheme = "vdf"
    capabilities = Capabilities(
        write=False,
        query=True,
        fetch=True,
        sparse_vectors=False,
        named_vectors=True,
        notes=(
            "read-only: folders written by vdf-io (VDF_META.json + Parquet)",
            "vdf-io wrote the metric 'Cosine' for some systems whatever the index used: "
            "check it and pass ?metric= when it is wrong",
            "VDF files carry no checksums; vectors stored as float64 are rounded to float32",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = VdfConfig.from_uri(uri)
        self.folder = self.config.folder
        self._loaded: tuple[VdfMeta, str, NamespaceMeta, list[str], CollectionSpec] | None = None

    def exists(self) -> bool:
        return (self.folder / "VDF_META.json").is_file()

    # -- the chosen namespace -----------------------------------------------------------
    def _load(self) -> tuple[VdfMeta, str, NamespaceMeta, list[str], CollectionSpec]:
        if self._loaded is None:
            with mapped(str(self.folder)):
                meta = read_meta(self.folder)
                index, ns = self._choose(meta)
                files = self._files(ns)
                spec = self._spec(meta, index, ns, files)
            self._loaded = (meta, index, ns, files, spec)
        return self._loaded

    def _choose(self, meta: VdfMeta) -> tuple[str, NamespaceMeta]:
        names = sorted(meta.indexes)
        if self.config.index is not None:
            if self.config.index not in meta.indexes:
                raise ConfigError(
                    f"vdf:// index {self.config.index!r} is not in {self.folder} "
                    f"(indexes: {', '.join(names) or 'none'})"
                )
            index = self.config.index
        elif len(names) == 1:
            index = names[0]
        else:
            raise ConfigError(
                f"{self.folder} holds {len(names)} indexes: pick one with ?index= "
                f"({', '.join(names) or 'none'})"
            )
        spaces = meta.indexes[index]
        wanted = self.config.namespace
        if wanted is not None:
            found = [ns for ns in spaces if ns.namespace == wanted]
            if not found:
                have = ", ".join(repr(ns.namespace) for ns in spaces)
                raise ConfigError(f"index {index!r} has no namespace {wanted!r} (has {have})")
            return index, found[0]
        if len(spaces) != 1:
            have = ", ".join(repr(ns.namespace) for ns in spaces)
            raise ConfigError(
                f"index {index!r} has {len(spaces)} namespaces: pick one with ?namespace= ({have})"
            )
        return index, spaces[0]

    def _files(self, ns: NamespaceMeta) -> list[str]:
        """The namespace's Parquet files, relative to the folder, in vdf-io's (sorted) order."""
        target = resolve_inside(self.folder, ns.data_path.strip("/") or ".")
        root = self.folder.resolve()
        if target.is_file():
            paths = [target]
        elif target.is_dir():
            paths = sorted(p for p in target.iterdir() if p.name.endswith(".parquet"))
        else:
            raise DataError("data_path does not exist", file=ns.data_path)
        out = []
        for p in paths:
            rel = p.relative_to(root).as_posix()
            resolve_inside(self.folder, rel)  # refuse symlinks that leave the folder
            out.append(rel)
        return out

    def _spec(
        self, meta: VdfMeta, index: str, ns: NamespaceMeta, files: list[str]
    ) -> CollectionSpec:
        fields: dict[str, pa.DataType] = {}
        for rel in files:
            try:
                schema = pq.read_schema(self.folder / rel)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"not a readable Parquet file: {exc}", file=rel) from exc
            for f in schema:
                fields.setdefault(f.name, f.type)
        id_name = meta.id_column or ID
        if files and id_name not in fields:
            raise DataError(f"no id column {id_name!r}", file=files[0], field=id_name)
        id_t = fields.get(id_name, pa.string())
        metric = self.config.metric or _metric(ns.metric)
        vectors = []
        for col in ns.vector_columns:
            if col not in fields and files:
                raise DataError(
                    "vector column named in VDF_META.json is missing", file=files[0], field=col
                )
            dim = ns.dim_of(col) or self._first_length(files, col)
            vectors.append(
                VectorField(name=col, dim=dim, metric=metric, embedding_model=ns.model_of(col))
            )
        metadata = []
        for name, dtype in fields.items():
            if name in (id_name, DOCUMENT) or name in ns.vector_columns:
                continue
            if _PANDAS_INDEX.match(name):
                continue
            metadata.append(MetadataField(name=name, type=_metadata_type(dtype, name)))
        return CollectionSpec(
            name=index + (f"_{ns.namespace}" if ns.namespace else ""),
            id_type="int64" if pa.types.is_integer(id_t) else "string",
            vectors=vectors,
            metadata=metadata,
            has_document=DOCUMENT in fields,
            system={
                "vdf": {
                    "exported_from": meta.exported_from,
                    "version": meta.version,
                    "index_config": ns.index_config,
                    "metric": ns.metric,
                }
            },
        )

    def _first_length(self, files: list[str], column: str) -> int:
        for rel in files:
            table = pq.read_table(self.folder / rel, columns=[column])
            lengths = pc.drop_null(pc.list_value_length(table.column(column)))
            if len(lengths):
                return int(lengths[0].as_py())
        raise ConfigError(f"cannot tell the dimension of {column!r}: no dimensions in VDF_META")

    # -- source -------------------------------------------------------------------------
    def describe(self) -> CollectionSpec:
        return self._load()[4].model_copy(deep=True)

    def count(self) -> int:
        _, _, _, files, _ = self._load()
        with mapped(str(self.folder)):
            return sum(pq.ParquetFile(self.folder / rel).metadata.num_rows for rel in files)

    def partitions(self, hint: int) -> list[Partition]:
        _, _, _, files, _ = self._load()
        with mapped(str(self.folder)):
            sized = [(rel, pq.ParquetFile(self.folder / rel).metadata.num_rows) for rel in files]
        return file_partitions(sized, hint)

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        _, _, _, files, _ = self._load()
        names = partition_files(partition, files)
        first_file, first_row = parse_cursor(cursor)
        for index in range(first_file, len(names)):
            start = first_row if index == first_file else 0
            for row, batch in self._read_file(names[index], start, batch_size):
                yield ScanBatch(batch=batch, cursor=f"{index}:{row + batch.num_rows}")

    def _read_file(
        self, rel: str, start: int, batch_size: int
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        meta, _, _, _, spec = self._load()
        id_name = meta.id_column or ID
        with mapped(rel):
            path = resolve_inside(self.folder, rel)
            try:
                pf = pq.ParquetFile(path)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"not a readable Parquet file: {exc}", file=rel) from exc
            wanted = {
                id_name,
                DOCUMENT,
                *(v.name for v in spec.vectors),
                *(m.name for m in spec.metadata),
            }
            columns = [n for n in pf.schema_arrow.names if n in wanted]
            seen: set[Any] = set()
            row = 0
            try:
                batches = pf.iter_batches(batch_size=batch_size, columns=columns, use_threads=False)
                for raw in batches:
                    if row + raw.num_rows <= start:
                        row += raw.num_rows
                        continue
                    cut = max(0, start - row)
                    row += cut
                    batch = self._convert(raw.slice(cut), spec, id_name, rel, row)
                    ids = batch.column(ID).to_pylist()
                    if not seen.isdisjoint(ids):
                        j = next(j for j, v in enumerate(ids) if v in seen)
                        raise DataError(
                            "duplicate id in the file",
                            file=rel,
                            row=row + j,
                            record_id=ids[j],
                            field=ID,
                        )
                    seen.update(ids)
                    yield row, batch
                    row += batch.num_rows
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(
                    f"Parquet data is corrupt near row {row}: {exc}", file=rel, row=row
                ) from exc

    def _convert(
        self, raw: pa.RecordBatch, spec: CollectionSpec, id_name: str, rel: str, first_row: int
    ) -> pa.RecordBatch:
        """A pandas-written batch in the collection's schema, checked; errors name file and row."""
        arrays: list[pa.Array] = []
        names: list[str] = []
        for name, column in zip(raw.schema.names, raw.columns, strict=True):
            out_name = ID if name == id_name else name
            try:
                arrays.append(_column_for(column, out_name, spec))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    f"cannot convert {column.type}: {exc}", file=rel, field=out_name
                ) from exc
            names.append(out_name)
        batch = pa.RecordBatch.from_arrays(arrays, names=names)
        try:
            batch = conform(batch, spec)
            check_batch(batch, spec)
        except DataError as err:
            raise at(err, file=rel, row_offset=first_row) from err
        return batch

    def _all_batches(self) -> Iterator[pa.RecordBatch]:
        _, _, _, files, _ = self._load()
        for rel in files:
            for _, batch in self._read_file(rel, 0, 8192):
                yield batch

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        spec = self._load()[4]
        return fetch_by_scan(self._all_batches(), ids, spec.arrow_schema())

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        vf = self._load()[4].vector(vector_field)
        return knn_by_scan(self._all_batches(), vectors, k, vf)


def _column_for(column: pa.Array, name: str, spec: CollectionSpec) -> pa.Array:
    """A pandas-written column in the form ``conform`` expects (ids, JSON, timestamps)."""
    m = spec.metadata_field(name)
    if name == ID and spec.id_type == "string" and not pa.types.is_string(column.type):
        return column.cast(pa.string())
    if m is not None and m.type is MetadataType.JSON and not pa.types.is_string(column.type):
        texts = [
            None if v is None else json.dumps(v, default=str, sort_keys=True)
            for v in column.to_pylist()
        ]
        return pa.array(texts, pa.string())
    if m is not None and m.type is MetadataType.TIMESTAMP:
        return _utc_micros(column)
    return column


def _metric(name: str | None) -> Metric:
    if not name:
        return Metric.COSINE
    try:
        return Metric.parse(name)
    except ConfigError:
        raise ConfigError(
            f"VDF metric {name!r} has no vecmigrate equivalent: pass ?metric=cosine|l2|ip"
        ) from None


def _metadata_type(dtype: pa.DataType, name: str) -> MetadataType:
    if pa.types.is_null(dtype):
        return MetadataType.STRING
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        inner = dtype.value_type
        if not (
            pa.types.is_string(inner) or pa.types.is_integer(inner) or pa.types.is_floating(inner)
        ):
            return MetadataType.JSON
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        raise ConfigError(f"VDF column {name!r} holds binary data, which has no metadata type")
    return MetadataType.of_arrow(dtype, field=name)


def _utc_micros(column: pa.Array) -> pa.Array:
    """Timestamps or dates as timestamp[us, UTC] (naive values are taken as UTC)."""
    t = column.type
    if pa.types.is_date(t):
        column = column.cast(pa.timestamp("s"))
        t = column.type
    if pa.types.is_timestamp(t) and t.tz is None:
        column = column.cast(pa.timestamp(t.unit, tz="UTC"))
    return column.cast(pa.timestamp("us", tz="UTC"), safe=False)
