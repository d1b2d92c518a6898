"""LangChain's ``PGVector`` (langchain-postgres): many collections in two shared tables.

``langchain_pg_collection(uuid, name, cmetadata json)`` names the collections;
``langchain_pg_embedding(id varchar primary key, collection_id, embedding vector, document,
cmetadata jsonb)`` holds every collection's records. A record's id is unique across all
collections. The distance is not stored: LangChain's default is cosine (``?metric=`` says
otherwise; a vector index on the embedding column wins).

``pgvector://USER@HOST:5432/DB?layout=langchain&collection=NAME``
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from psycopg import sql

from vecmigrate.connectors.base import Capabilities, IfExists, Partition, QueryResult, ScanBatch
from vecmigrate.errors import ConfigError, DataError, NotFoundError, SchemaMismatch
from vecmigrate.layouts.base import Records
from vecmigrate.layouts.metadata import fields_of
from vecmigrate.layouts.postgres import PostgresLayout, check_text, json_texts, metric_option
from vecmigrate.spec import CollectionSpec, IndexConfig, Metric
from vecmigrate.uri import ConnectorURI

COLLECTIONS = "langchain_pg_collection"
EMBEDDINGS = "langchain_pg_embedding"
ADVISORY_LOCK = 1573678846307946496  # the key langchain-postgres locks on while setting up
_STRATEGY = {Metric.COSINE: "COSINE", Metric.L2: "EUCLIDEAN", Metric.IP: "MAX_INNER_PRODUCT"}


class LangChainPgvector(PostgresLayout):
    framework: ClassVar[str] = "langchain"
    own_options: ClassVar[set[str]] = {"collection", "metric"}
    physical_table: ClassVar[str] = EMBEDDINGS
    native_metrics: ClassVar[frozenset[Metric]] = frozenset({Metric.COSINE})
    capabilities: ClassVar[Capabilities] = Capabilities(
        query=True,
        delete=True,
        int_ids=False,
        notes=(
            "the distance is not stored by LangChain: cosine unless ?metric= or a vector index "
            "on the embedding column says otherwise",
            "metadata keys and types are counted by the server at describe time",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.collection = uri.require("collection", "the LangChain collection_name")
        self.metric = metric_option(uri.option("metric"))
        self._uuid: uuid.UUID | None = None

    @property
    def where(self) -> str:
        return f"LangChain PGVector collection {self.collection!r} in {self.pg.database}"

    def _tables(self) -> tuple[sql.Identifier, sql.Identifier]:
        return self.ident(COLLECTIONS), self.ident(EMBEDDINGS)

    # -- collections --------------------------------------------------------------------
    def collections(self) -> list[tuple[str, int]]:
        """Every collection in the tables, with its record count."""
        if not self.table_exists(COLLECTIONS):
            return []
        colls, embs = self._tables()
        query = sql.SQL(
            "SELECT c.name, count(e.id) FROM {} c LEFT JOIN {} e ON e.collection_id = c.uuid "
            "GROUP BY c.name ORDER BY c.name"
        ).format(colls, embs)
        with self.translated("list collections"):
            return [(str(n), int(k)) for n, k in self.conn().execute(query).fetchall()]

    def _row(self) -> tuple[uuid.UUID, Any] | None:
        if not self.table_exists(COLLECTIONS) or not self.table_exists(EMBEDDINGS):
            return None
        colls, _ = self._tables()
        query = sql.SQL("SELECT uuid, cmetadata FROM {} WHERE name = %s").format(colls)
        with self.translated("look up the collection"):
            row = self.conn().execute(query, (self.collection,)).fetchone()
        return (row[0], row[1]) if row else None

    def _collection_id(self) -> uuid.UUID:
        if self._uuid is None:
            row = self._row()
            if row is None:
                names = ", ".join(n for n, _ in self.collections()) or "none"
                raise NotFoundError(f"{self.where} does not exist (collections: {names})")
            self._uuid = row[0]
        return self._uuid

    def exists(self) -> bool:
        return self._row() is not None

    def count(self) -> int:
        _, embs = self._tables()
        query = sql.SQL("SELECT count(*) FROM {} WHERE collection_id = %s").format(embs)
        with self.translated("count rows"):
            row = self.conn().execute(query, (self._collection_id(),)).fetchone()
        return int(row[0]) if row else 0

    # -- describe -----------------------------------------------------------------------
    def _describe(self) -> CollectionSpec:
        row = self._row()
        coll_id = self._collection_id()
        _, embs = self._tables()
        dim_query = sql.SQL(
            "SELECT vector_dims(embedding) FROM {} WHERE collection_id = %s "
            "AND embedding IS NOT NULL LIMIT 1"
        ).format(embs)
        with self.translated("sample a vector"):
            found = self.conn().execute(dim_query, (coll_id,)).fetchone()
        if found is None:
            raise ConfigError(f"{self.where} is empty: its vector dimension is unknown")
        index_metric, index = self.index_metric(EMBEDDINGS, "embedding")
        metric = self.metric or index_metric or Metric.COSINE
        source = sql.SQL("{} t WHERE t.collection_id = {}::uuid").format(
            embs, sql.Literal(str(coll_id))
        )
        fields = fields_of(self.kinds(sql.SQL("t.cmetadata"), source))
        indexes = []
        if index:
            kind = str(index.pop("kind"))
            indexes.append(
                IndexConfig(
                    field="vector",
                    kind=kind.replace("ivfflat", "ivf_flat"),
                    metric=index_metric,
                    params=index,
                )
            )
        info = {
            "collection": self.collection,
            "collection_metadata": row[1] if row else None,
            "distance_strategy": _STRATEGY[metric],
        }
        return self.canonical_spec(
            self.collection, int(found[0]), metric, fields, indexes=indexes, info=info
        )

    # -- reading ------------------------------------------------------------------------
    def partitions(self, hint: int) -> list[Partition]:
        return [Partition(key="collection", bounds={}, estimated_rows=self.count())]

    def _select(self, *, after: bool) -> sql.Composed:
        spec = self._described or self.describe()
        fields = list(spec.metadata)
        _, embs = self._tables()
        items: list[sql.Composable] = [sql.SQL("e.id, e.embedding, e.document")]
        items += self.extract_list(sql.SQL("e.cmetadata"), fields)
        where = sql.SQL("e.collection_id = %(coll)s") + (
            sql.SQL(" AND e.id > %(after)s") if after else sql.SQL("")
        )
        return sql.SQL("SELECT {} FROM {} e WHERE {} ORDER BY e.id LIMIT %(limit)s").format(
            sql.SQL(", ").join(items), embs, where
        )

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        spec = self.describe()
        dim = spec.vector().dim
        start = json.loads(cursor) if cursor is not None else None
        params = {"coll": self._collection_id()}
        pages = self.paged(
            self._select(after=False), self._select(after=True), params, start, batch_size
        )
        for rows in pages:
            batch = self._batch(rows, dim, spec)
            yield ScanBatch(batch=batch, cursor=json.dumps(rows[-1][0]))

    def _batch(
        self, rows: Sequence[tuple[Any, ...]], dim: int, spec: CollectionSpec
    ) -> pa.RecordBatch:
        ids = [str(r[0]) for r in rows]
        try:
            vectors = self.vectors([r[1] for r in rows], dim)
        except DataError as exc:
            row = exc.row or 0
            raise DataError(exc.reason, row=row, record_id=ids[row], field="embedding") from exc
        metadata = self.metadata_dicts(rows, 3, spec.metadata)
        return self.canonical_batch(ids, vectors, [r[2] for r in rows], metadata)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        spec = self.describe()
        _, embs = self._tables()
        distance = self.distance_sql(spec.vector().metric)
        query = sql.SQL(
            "SELECT id, {} AS d FROM {} WHERE collection_id = %(coll)s ORDER BY d LIMIT %(k)s"
        ).format(distance, embs)
        ids, scores = self.knn(query, {"coll": self._collection_id()}, vectors, k)
        return QueryResult(ids=ids, scores=scores)

    # -- writing ------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        self.check_target(spec)
        vf = next(v for v in spec.vectors if not v.sparse)
        colls, embs = self._tables()
        info = spec.system.get("layout", {})
        cmetadata = (
            info.get("collection_metadata") if info.get("framework") == "langchain" else None
        )
        with self.translated("create the collection"):
            conn = self.conn()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
                self.ensure_extension(conn)
                for statement in _ddl(colls, embs):
                    conn.execute(statement)
                query = sql.SQL("SELECT uuid FROM {} WHERE name = %s").format(colls)
                row = conn.execute(query, (self.collection,)).fetchone()
                if row is not None:
                    if if_exists is IfExists.FAIL:
                        raise SchemaMismatch(f"{self.where} already exists (if_exists=fail)")
                    if if_exists is IfExists.REUSE:
                        self._check_dim(conn, row[0], vf.dim)
                        self._uuid, self._target, self._described = row[0], spec, None
                        return
                    conn.execute(sql.SQL("DELETE FROM {} WHERE uuid = %s").format(colls), (row[0],))
                new_id = uuid.uuid4()
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (uuid, name, cmetadata) VALUES (%s, %s, %s::json)"
                    ).format(colls),
                    (new_id, self.collection, None if cmetadata is None else json.dumps(cmetadata)),
                )
        self._uuid, self._target, self._described = new_id, spec, None

    def _check_dim(self, conn: Any, coll_id: uuid.UUID, dim: int) -> None:
        _, embs = self._tables()
        query = sql.SQL(
            "SELECT vector_dims(embedding) FROM {} WHERE collection_id = %s "
            "AND embedding IS NOT NULL LIMIT 1"
        ).format(embs)
        row = conn.execute(query, (coll_id,)).fetchone()
        if row is not None and int(row[0]) != dim:
            raise SchemaMismatch(
                f"{self.where} holds {row[0]}-dimensional vectors, the source has {dim}"
            )

    def _write(self, records: Records) -> None:
        coll_id = self._collection_id()
        _, embs = self._tables()
        check_text(records.documents, records.ids, "the document")
        texts: dict[str, Sequence[str | None]] = {
            "id": records.ids,
            "document": records.documents,
            "meta": json_texts(records.metadata),  # LangChain writes {} for no metadata
        }
        merge = sql.SQL(
            "INSERT INTO {t} AS e (id, collection_id, embedding, document, cmetadata) "
            "SELECT s.id, %(coll)s, s.embedding, s.document, s.meta::jsonb FROM stage s "
            "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, "
            "document = EXCLUDED.document, cmetadata = EXCLUDED.cmetadata "
            "WHERE e.collection_id = EXCLUDED.collection_id RETURNING e.id"
        ).format(t=embs)
        with self.translated(f"write {len(records)} rows"):
            conn = self.conn()
            with conn.transaction():
                self.stage(conn, records.vectors, texts)
                written = conn.execute(merge, {"coll": coll_id}).fetchall()
                if len(written) != len(records):
                    self._refuse_foreign_ids(conn, {str(r[0]) for r in written}, records.ids)

    def _refuse_foreign_ids(self, conn: Any, written: set[str], ids: list[str]) -> None:
        """Ids are unique across LangChain collections: one held by another collection is
        refused rather than moved (the transaction rolls back)."""
        row = next(i for i, x in enumerate(ids) if x not in written)
        colls, embs = self._tables()
        query = sql.SQL(
            "SELECT c.name FROM {} e JOIN {} c ON c.uuid = e.collection_id WHERE e.id = %s"
        ).format(embs, colls)
        other = conn.execute(query, (ids[row],)).fetchone()
        raise DataError(
            f"id is already used by LangChain collection {other[0] if other else '?'!r} in the "
            "same tables (LangChain ids are unique across collections)",
            row=row,
            record_id=ids[row],
        )

    def delete(self, ids: Sequence[Any]) -> None:
        _, embs = self._tables()
        query = sql.SQL("DELETE FROM {} WHERE collection_id = %s AND id = ANY(%s)").format(embs)
        with self.translated("delete by id"):
            self.conn().execute(query, (self._collection_id(), [str(i) for i in ids]))

    def drop(self) -> None:
        if not self.table_exists(COLLECTIONS):
            return
        colls, _ = self._tables()
        with self.translated("drop the collection"):  # its records go by ON DELETE CASCADE
            self.conn().execute(
                sql.SQL("DELETE FROM {} WHERE name = %s").format(colls), (self.collection,)
            )
        self._uuid = self._described = None

    def finalize(self, spec: CollectionSpec) -> None:
        _, embs = self._tables()
        with self.translated("analyze"):
            self.conn().execute(sql.SQL("ANALYZE {}").format(embs))

    def metric_note(self, metric: Metric) -> str:
        return (
            "LangChain's PGVector does not store the distance: construct it with "
            f"distance_strategy=DistanceStrategy.{_STRATEGY[metric]}"
        )


def _ddl(colls: sql.Identifier, embs: sql.Identifier) -> list[sql.Composed]:
    """The tables exactly as langchain-postgres creates them (SQLAlchemy's DDL)."""
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (uuid UUID NOT NULL, name VARCHAR NOT NULL, "
            "cmetadata JSON, PRIMARY KEY (uuid), UNIQUE (name))"
        ).format(colls),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id VARCHAR NOT NULL, collection_id UUID, "
            "embedding VECTOR, document VARCHAR, cmetadata JSONB, PRIMARY KEY (id), "
            "FOREIGN KEY (collection_id) REFERENCES {} (uuid) ON DELETE CASCADE)"
        ).format(embs, colls),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS ix_cmetadata_gin ON {} USING gin (cmetadata jsonb_path_ops)"
        ).format(embs),
    ]
