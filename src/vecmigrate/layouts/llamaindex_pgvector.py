"""LlamaIndex's ``PGVectorStore`` (llama-index-vector-stores-postgres): one table per index.

``data_<table_name>(id bigserial, text varchar not null, metadata_ json|jsonb, node_id
varchar, embedding vector(dim))``; ``metadata_`` is the node's metadata plus LlamaIndex's
own keys (:mod:`vecmigrate.layouts.llamaindex`). Queries are by cosine distance, always.
``node_id`` is not unique in LlamaIndex's table: rows are read in ``id`` order, and a write
replaces the rows of the same node ids.

``pgvector://USER@HOST:5432/DB?layout=llamaindex&table=TABLE_NAME`` (the ``table_name`` given
to ``PGVectorStore``; the table is ``data_`` + its lower-cased name). ``use_jsonb=true``
creates a jsonb metadata column, as ``PGVectorStore(use_jsonb=True)`` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from psycopg import sql

from vecmigrate.connectors.base import Capabilities, IfExists, Partition, QueryResult, ScanBatch
from vecmigrate.errors import ConfigError, DataError, SchemaMismatch
from vecmigrate.layouts.base import Records
from vecmigrate.layouts.llamaindex import INTERNAL_KEYS, StoredNode, write_node
from vecmigrate.layouts.metadata import NODE_COLUMNS, fields_of
from vecmigrate.layouts.postgres import PostgresLayout, check_text
from vecmigrate.spec import CollectionSpec, IndexConfig, Metric
from vecmigrate.uri import ConnectorURI

PREFIX = "data_"
HNSW_DEFAULTS = {"m": 16, "ef_construction": 64}


def node_metadata_sql(column: sql.Composable) -> sql.Composable:
    """The node's own metadata (inside ``_node_content``; else the stored keys less
    LlamaIndex's), as jsonb."""
    internal = sql.SQL(", ").join(sql.Literal(k) for k in sorted(INTERNAL_KEYS))
    return sql.SQL(
        "COALESCE((({c})::jsonb ->> '_node_content')::jsonb -> 'metadata', "
        "({c})::jsonb - ARRAY[{keys}]::text[])"
    ).format(c=column, keys=internal)


class LlamaIndexPgvector(PostgresLayout):
    framework: ClassVar[str] = "llamaindex"
    own_options: ClassVar[set[str]] = {"table", "use_jsonb"}
    native_metrics: ClassVar[frozenset[Metric]] = frozenset({Metric.COSINE})
    shadowed_keys: ClassVar[frozenset[str]] = INTERNAL_KEYS
    capabilities: ClassVar[Capabilities] = Capabilities(
        query=True,
        delete=True,
        int_ids=False,
        metrics=frozenset({Metric.COSINE}),
        notes=(
            "LlamaIndex's PGVectorStore searches by cosine distance only",
            "node_id is not unique in LlamaIndex's table; a write replaces the rows of its ids",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        name = uri.require("table", "the table_name given to PGVectorStore").lower()
        self.index_name = name
        super().__init__(uri)
        jsonb = (uri.option("use_jsonb") or "false").lower()
        if jsonb not in ("true", "false"):
            raise ConfigError(f"use_jsonb={jsonb!r}: use true or false")
        self.use_jsonb = jsonb == "true"
        self._jsonb: bool | None = None  # whether the existing table's metadata_ is jsonb

    def table_name(self, uri: ConnectorURI) -> str:
        return PREFIX + self.index_name

    @property
    def where(self) -> str:
        return f"LlamaIndex PGVectorStore table {self.pg.table!r} in {self.pg.database}"

    def table(self) -> sql.Identifier:
        return self.ident(self.pg.table)

    def exists(self) -> bool:
        return self.table_exists(self.pg.table)

    def count(self) -> int:
        self._require()
        with self.translated("count rows"):
            row = self.conn().execute(sql.SQL("SELECT count(*) FROM {}").format(self.table()))
            found = row.fetchone()
        return int(found[0]) if found else 0

    # -- describe -----------------------------------------------------------------------
    def _describe(self) -> CollectionSpec:
        self._require()
        query = sql.SQL(
            "SELECT vector_dims(embedding) FROM {} WHERE embedding IS NOT NULL LIMIT 1"
        ).format(self.table())
        with self.translated("sample a vector"):
            found = self.conn().execute(query).fetchone()
        if found is None:
            raise ConfigError(f"{self.where} is empty: its vector dimension is unknown")
        md = node_metadata_sql(sql.SQL("t.metadata_"))
        fields = fields_of(self.kinds(md, sql.SQL("{} t").format(self.table())))
        metric, index = self.index_metric(self.pg.table, "embedding")
        indexes = []
        if index.get("kind") == "hnsw":
            params = {k: v for k, v in index.items() if k != "kind"}
            indexes.append(IndexConfig(field="vector", kind="hnsw", metric=metric, params=params))
        info = {"table_name": self.index_name, "metadata_type": self._metadata_type()}
        return self.canonical_spec(
            self.index_name, int(found[0]), Metric.COSINE, fields, indexes=indexes, info=info
        )

    def _metadata_type(self) -> str:
        query = """
            SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
            WHERE a.attrelid = to_regclass(%s) AND a.attname = 'metadata_'
        """
        with self.translated("describe the table"):
            row = self.conn().execute(query, (self.table().as_string(self.conn()),)).fetchone()
        return str(row[0]) if row else "json"

    # -- reading ------------------------------------------------------------------------
    def partitions(self, hint: int) -> list[Partition]:
        return [Partition(key="table", bounds={}, estimated_rows=self.count())]

    def _select(self, *, after: bool) -> sql.Composed:
        spec = self._described or self.describe()
        fields = [m for m in spec.metadata if m.name not in NODE_COLUMNS]
        items: list[sql.Composable] = [
            sql.SQL(
                "t.id, t.embedding, t.text, t.node_id, "
                "(t.metadata_::jsonb) ->> '_node_content', (t.metadata_::jsonb) ->> '_node_type'"
            )
        ]
        items += self.extract_list(sql.SQL("m.md"), fields)
        where = sql.SQL(" WHERE t.id > %(after)s") if after else sql.SQL("")
        return sql.SQL(
            "SELECT {} FROM {} t CROSS JOIN LATERAL (SELECT {} AS md OFFSET 0) m{} "
            "ORDER BY t.id LIMIT %(limit)s"
        ).format(
            sql.SQL(", ").join(items),
            self.table(),
            node_metadata_sql(sql.SQL("t.metadata_")),
            where,
        )

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        spec = self.describe()
        start = json.loads(cursor) if cursor is not None else None
        pages = self.paged(
            self._select(after=False), self._select(after=True), {}, start, batch_size
        )
        for rows in pages:
            yield ScanBatch(batch=self._batch(rows, spec), cursor=json.dumps(rows[-1][0]))

    def _batch(self, rows: Sequence[tuple[Any, ...]], spec: CollectionSpec) -> pa.RecordBatch:
        ids = [str(r[3]) if r[3] is not None else str(r[0]) for r in rows]
        try:
            vectors = self.vectors([r[1] for r in rows], spec.vector().dim)
        except DataError as exc:
            row = exc.row or 0
            raise DataError(exc.reason, row=row, record_id=ids[row], field="embedding") from exc
        fields = [m for m in spec.metadata if m.name not in NODE_COLUMNS]
        metadata = self.metadata_dicts(rows, 6, fields)
        nodes = [
            StoredNode(node_id=i, metadata=m, text=r[2], node_content=r[4], node_type=r[5])
            for i, m, r in zip(ids, metadata, rows, strict=True)
        ]
        return self.canonical_batch(ids, vectors, [r[2] for r in rows], metadata, nodes)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        query = sql.SQL("SELECT node_id, {} AS d FROM {} ORDER BY d LIMIT %(k)s").format(
            self.distance_sql(Metric.COSINE), self.table()
        )
        ids, scores = self.knn(query, {}, vectors, k)
        return QueryResult(ids=ids, scores=scores)

    # -- writing ------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        self.check_target(spec)
        vf = next(v for v in spec.vectors if not v.sparse)
        with self.translated("create the table"):
            conn = self.conn()
            with conn.transaction():
                self.ensure_extension(conn)
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(self.schema_name)
                    )
                )
                if self.table_exists(self.pg.table):
                    if if_exists is IfExists.FAIL:
                        raise SchemaMismatch(f"{self.where} already exists (if_exists=fail)")
                    if if_exists is IfExists.REUSE:
                        self._check_dim(conn, vf.dim)
                        self._target, self._described = spec, None
                        return
                    conn.execute(sql.SQL("DROP TABLE {}").format(self.table()))
                self._jsonb = self.use_jsonb
                metadata_type = sql.SQL("JSONB" if self.use_jsonb else "JSON")
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE {} (id BIGSERIAL NOT NULL, text VARCHAR NOT NULL, "
                        "metadata_ {}, node_id VARCHAR, embedding VECTOR({}), PRIMARY KEY (id))"
                    ).format(self.table(), metadata_type, sql.Literal(vf.dim))
                )
                conn.execute(
                    sql.SQL("CREATE INDEX {} ON {} ((metadata_ ->> 'ref_doc_id'))").format(
                        sql.Identifier(f"{self.index_name}_idx_1"), self.table()
                    )
                )
        self._target, self._described = spec, None

    def _check_dim(self, conn: Any, dim: int) -> None:
        query = sql.SQL(
            "SELECT vector_dims(embedding) FROM {} WHERE embedding IS NOT NULL LIMIT 1"
        ).format(self.table())
        row = conn.execute(query).fetchone()
        if row is not None and int(row[0]) != dim:
            raise SchemaMismatch(
                f"{self.where} holds {row[0]}-dimensional vectors, the source has {dim}"
            )

    def _write(self, records: Records) -> None:
        stored: list[str | None] = []
        for i, node_id in enumerate(records.ids):
            node = write_node(
                node_id,
                records.metadata[i],
                node_content=records.node_content[i],
                node_type=records.node_type[i],
                text=None,
            )
            stored.append(json.dumps(node.keys(records.metadata[i]), ensure_ascii=False))
        documents = [d if d is not None else "" for d in records.documents]
        check_text(documents, records.ids, "the text")
        cast = sql.SQL("jsonb" if self._stored_jsonb() else "json")
        with self.translated(f"write {len(records)} rows"):
            conn = self.conn()
            with conn.transaction():
                self.stage(
                    conn,
                    records.vectors,
                    {"id": records.ids, "document": documents, "meta": stored},
                )
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE node_id IN (SELECT id FROM stage)").format(
                        self.table()
                    )
                )
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (text, metadata_, node_id, embedding) "
                        "SELECT s.document, s.meta::{}, s.id, s.embedding FROM stage s"
                    ).format(self.table(), cast)
                )

    def _stored_jsonb(self) -> bool:
        if self._jsonb is None:
            self._jsonb = self._metadata_type() == "jsonb"
        return self._jsonb

    def delete(self, ids: Sequence[Any]) -> None:
        with self.translated("delete by id"):
            self.conn().execute(
                sql.SQL("DELETE FROM {} WHERE node_id = ANY(%s)").format(self.table()),
                ([str(i) for i in ids],),
            )

    def drop(self) -> None:
        with self.translated("drop the table"):
            self.conn().execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.table()))
        self._described = None

    def finalize(self, spec: CollectionSpec) -> None:
        """An HNSW index where the source had one, named and built as LlamaIndex does."""
        hnsw = next((ix for ix in spec.indexes if ix.kind == "hnsw"), None)
        with self.translated("build the index and analyze"):
            conn = self.conn()
            if hnsw is not None:
                params = {
                    **HNSW_DEFAULTS,
                    **{k: v for k, v in hnsw.params.items() if k in HNSW_DEFAULTS},
                }
                conn.execute(
                    sql.SQL(
                        "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw "
                        "(embedding vector_cosine_ops) WITH (m = {}, ef_construction = {})"
                    ).format(
                        sql.Identifier(f"{self.pg.table}_embedding_idx"),
                        self.table(),
                        sql.Literal(int(params["m"])),
                        sql.Literal(int(params["ef_construction"])),
                    )
                )
            conn.execute(sql.SQL("ANALYZE {}").format(self.table()))

    def metric_note(self, metric: Metric) -> str:
        return "LlamaIndex's PGVectorStore searches by cosine distance only"
