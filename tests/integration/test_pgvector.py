"""The pgvector connector against a real PostgreSQL 18 + pgvector (tests/engines.py)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from tests.engines import PostgresAddress, free_port
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.base import Connector, Partition
from vecmigrate.errors import (
    AuthError,
    ConfigError,
    DataError,
    NotFoundError,
    SchemaMismatch,
    TransientError,
)
from vecmigrate.records import fixed_size_vectors, vectors_numpy
from vecmigrate.spec import (
    SPARSE_TYPE,
    CollectionSpec,
    IndexConfig,
    MetadataField,
    MetadataType,
    Metric,
    VectorField,
)

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402


@pytest.fixture
def pg(postgres_engine: PostgresAddress) -> PostgresAddress:
    return postgres_engine


@pytest.fixture
def table(request: pytest.FixtureRequest) -> str:
    return f"t_{request.node.name[:40]}_{uuid.uuid4().hex[:6]}".lower().replace("[", "_")


def run_sql(pg: PostgresAddress, *statements: Any) -> list[Any]:
    out: list[Any] = []
    with psycopg.connect(
        host=pg.host, port=pg.port, user=pg.user, dbname=pg.database, autocommit=True
    ) as conn:
        for statement in statements:
            cur = conn.execute(statement)
            out.append(cur.fetchall() if cur.description else None)
    return out


@pytest.fixture
def opened() -> Iterator[list[Connector]]:
    conns: list[Connector] = []
    yield conns
    for c in conns:
        c.close()


def open_uri(opened: list[Connector], uri: str) -> Connector:
    conn = connect(uri)
    opened.append(conn)
    return conn


# -- describe ---------------------------------------------------------------------------
def test_describe_hand_made_table(pg: PostgresAddress, table: str, opened: list[Connector]) -> None:
    role = f"reader_{uuid.uuid4().hex[:8]}"
    t = sql.Identifier(table)
    run_sql(
        pg,
        sql.SQL(
            "CREATE TABLE {} (pk bigint PRIMARY KEY, embedding vector(8), body text, "
            "tags jsonb, title varchar(40) NOT NULL, created timestamptz, labels text[], "
            "weight real)"
        ).format(t),
        sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops) WITH (m = 8)").format(
            t
        ),
        sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)),
        sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(t, sql.Identifier(role)),
        sql.SQL("COMMENT ON TABLE {} IS 'made by hand'").format(t),
        sql.SQL("COMMENT ON COLUMN {}.embedding IS 'MiniLM'").format(t),
        sql.SQL(
            "INSERT INTO {} VALUES (7, '[1,2,3,4,5,6,7,8]', 'seven', "
            "'{{\"b\": [1, 2], \"a\": \"x\"}}', 'Seven', '2024-05-06 07:08:09.123456+02', "
            "ARRAY['p', 'q'], 0.5), (3, '[0,0,0,0,0,0,0,1]', NULL, NULL, 'Three', NULL, "
            "NULL, NULL)"
        ).format(t),
    )
    conn = open_uri(opened, pg.uri(table) + "&document_column=body")
    spec = conn.describe()
    assert spec.id_type == "int64"
    assert [(v.name, v.dim, v.metric, v.dtype) for v in spec.vectors] == [
        ("embedding", 8, Metric.COSINE, "float32")
    ]
    assert spec.has_document
    types = {m.name: m.type for m in spec.metadata}
    assert types == {
        "tags": MetadataType.JSON,
        "title": MetadataType.STRING,
        "created": MetadataType.TIMESTAMP,
        "labels": MetadataType.LIST_STRING,
        "weight": MetadataType.FLOAT64,
    }
    title = spec.metadata_field("title")
    assert title is not None and title.max_length == 40 and not title.nullable
    assert spec.indexes == [
        IndexConfig(
            field="embedding",
            kind="hnsw",
            metric=Metric.COSINE,
            params={"m": 8, "ef_construction": 64},
        )
    ]
    grants = {a.principal: a.privileges for a in spec.access}
    assert grants[role] == ["INSERT", "SELECT"]
    assert all(a.resource == f"public.{table}" for a in spec.access)
    system = spec.system["postgres"]
    assert system["comment"] == "made by hand"
    assert system["column_comments"] == {"embedding": "MiniLM"}
    assert system["id_column"] == "pk"

    rows = pa.Table.from_batches([sb.batch for sb in conn.scan(Partition("all"), None, 10)])
    assert rows.column("id").to_pylist() == [3, 7]
    assert rows.column("document").to_pylist() == [None, "seven"]
    assert json.loads(rows.column("tags")[1].as_py()) == {"a": "x", "b": [1, 2]}
    assert rows.column("created")[1].as_py() == dt.datetime(
        2024, 5, 6, 5, 8, 9, 123456, tzinfo=dt.UTC
    )
    assert rows.column("labels").to_pylist() == [None, ["p", "q"]]
    np.testing.assert_array_equal(vectors_numpy(rows.column("embedding"))[1], np.arange(1, 9))


def test_round_trip_of_every_metadata_type_with_nulls(
    pg: PostgresAddress, table: str, opened: list[Connector]
) -> None:
    spec = CollectionSpec(
        name="mixed",
        id_type="string",
        vectors=[VectorField(name="vector", dim=4, metric=Metric.L2)],
        metadata=[MetadataField(name=t.name.lower(), type=t) for t in MetadataType],
        has_document=True,
    )
    n = 6
    names = [m.name for m in spec.metadata]
    ts = [
        dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=i * 1_000_001)
        for i in range(n)
    ]
    values: dict[str, list[Any]] = {
        "string": ["a", None, "ünï", "", "x" * 300, "z"],
        "int64": [1, None, -(2**62), 0, 5, 6],
        "float64": [0.1, None, -1e300, float("inf"), 5.5, 6.5],
        "bool": [True, None, False, True, False, True],
        "timestamp": [ts[0], None, ts[2], ts[3], ts[4], ts[5]],
        "json": ['{"k": 1}', None, "[1, 2]", '"s"', "null", "3.5"],
        "list_string": [["a", "b"], None, [], ["ü", None], ["x"], ["y"]],
        "list_int64": [[1, 2], None, [], [3], [4], [5]],
        "list_float64": [[0.5], None, [], [1.25, -2.0], [4.0], [5.0]],
    }
    assert set(values) == set(names)
    batch = pa.RecordBatch.from_pydict(
        {
            "id": [f"k{i}" for i in range(n)],
            "vector": fixed_size_vectors(np.arange(n * 4, dtype=np.float32).reshape(n, 4)),
            "document": [f"doc {i}" if i != 1 else None for i in range(n)],
            **{name: values[name] for name in names},
        }
    )
    conn = open_uri(opened, pg.uri(table))
    conn.create(spec, IfExists.FAIL)
    conn.upsert(batch)
    conn.upsert(batch)  # idempotent: the merge path, nothing changes
    got = conn.fetch([f"k{i}" for i in range(n)]).to_pydict()
    order = np.argsort(got["id"])
    for name in names:
        col = [got[name][i] for i in order]
        if name == "json":
            col = [None if v is None else json.loads(v) for v in col]
            assert col == [None if v is None else json.loads(v) for v in values[name]]
        else:
            assert col == values[name], name
    described = conn.describe()
    assert {m.name: m.type for m in described.metadata} == {m.name: m.type for m in spec.metadata}
    assert described.vector().metric is Metric.L2  # from the table comment: no index yet


# -- errors -----------------------------------------------------------------------------
def test_wrong_password_is_an_auth_error_without_the_password(
    pg: PostgresAddress, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "not-the-password-" + uuid.uuid4().hex
    monkeypatch.setenv("VM_PG_WRONG", secret)
    with (
        connect(pg.uri(table) + "&password_env=VM_PG_WRONG") as conn,
        pytest.raises(AuthError) as info,
    ):
        conn.count()
    assert secret not in str(info.value)
    assert secret not in repr(info.value)
    assert info.value.__cause__ is not None
    assert secret not in str(info.value.__cause__)


def test_password_file_is_read(pg: PostgresAddress, table: str, tmp_path: Any) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text(pg.password + "\n")
    with connect(pg.uri(table) + f"&password_file={secret_file}") as conn:
        assert not conn.exists()


def test_unreachable_port_is_transient(table: str) -> None:
    uri = f"pgvector://nobody@127.0.0.1:{free_port()}/db?table={table}"
    with connect(uri) as conn, pytest.raises(TransientError) as info:
        conn.count()
    assert info.value.__cause__ is not None


def test_missing_table_is_not_found(pg: PostgresAddress, opened: list[Connector]) -> None:
    conn = open_uri(opened, pg.uri("no_such_table_here"))
    with pytest.raises(NotFoundError, match="no_such_table_here"):
        conn.describe()
    with pytest.raises(NotFoundError, match="no_such_table_here"):
        list(conn.scan(Partition("all"), None, 10))


def test_table_dropped_behind_the_connector_is_not_found(
    pg: PostgresAddress, table: str, opened: list[Connector]
) -> None:
    conn = open_uri(opened, pg.uri(table))
    spec = make_spec(dim=4)
    conn.create(spec, IfExists.FAIL)
    conn.count()
    run_sql(pg, sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    with pytest.raises(NotFoundError, match=table) as info:
        conn.count()
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)


def test_permission_denied_is_an_auth_error(
    pg: PostgresAddress, table: str, opened: list[Connector], monkeypatch: pytest.MonkeyPatch
) -> None:
    role, password = f"nobody_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    run_sql(
        pg,
        sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, v vector(2))").format(sql.Identifier(table)),
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        ),
    )
    monkeypatch.setenv("VM_PG_OTHER", password)
    uri = f"pgvector://{role}@{pg.host}:{pg.port}/{pg.database}?table={table}"
    conn = open_uri(opened, uri + "&password_env=VM_PG_OTHER")
    with pytest.raises(AuthError, match="permission denied"):
        conn.count()


def test_existing_table_with_other_dimension_is_a_schema_mismatch(
    pg: PostgresAddress, table: str, opened: list[Connector]
) -> None:
    run_sql(
        pg,
        sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, vector vector(8))").format(
            sql.Identifier(table)
        ),
    )
    conn = open_uri(opened, pg.uri(table))
    with pytest.raises(SchemaMismatch, match="8-dimensional"):
        conn.create(make_spec(dim=4, documents=False, metadata=()), IfExists.REUSE)


def test_server_dimension_error_maps_to_schema_mismatch(pg: PostgresAddress, table: str) -> None:
    from vecmigrate.connectors.pgvector.errors import translate

    run_sql(
        pg,
        sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, v vector(8))").format(sql.Identifier(table)),
    )
    with pytest.raises(psycopg.DataError) as raised:
        run_sql(pg, sql.SQL("INSERT INTO {} VALUES ('a', '[1,2]')").format(sql.Identifier(table)))
    mapped = translate(raised.value, where=table, what="write")
    assert isinstance(mapped, SchemaMismatch)
    assert "dimension" in str(mapped)


# -- names ------------------------------------------------------------------------------
def test_sql_like_table_name_is_a_plain_identifier(
    pg: PostgresAddress, opened: list[Connector]
) -> None:
    run_sql(pg, "CREATE TABLE IF NOT EXISTS x (a int)")
    weird = 'weird"; drop table x; --'
    conn = open_uri(opened, pg.uri(quote(weird, safe="")) + "&index=hnsw")
    spec = make_spec(dim=8)
    conn.create(spec, IfExists.REPLACE)
    batch = make_batch(spec, 0, 200)
    conn.upsert(batch)
    conn.finalize(spec)
    assert conn.count() == 200
    assert conn.describe().indexes[0].kind == "hnsw"
    rows = sum(sb.batch.num_rows for p in conn.partitions(2) for sb in conn.scan(p, None, 64))
    assert rows == 200
    q = vectors_numpy(batch.column("vector"))[10:11]
    assert conn.query(q, 3).ids[0][0] == "doc-0000010"
    conn.delete(["doc-0000010"])
    assert conn.count() == 199
    conn.drop()
    assert run_sql(pg, "SELECT count(*) FROM x")[0] == [(0,)]  # x survived
    tables = run_sql(pg, "SELECT relname FROM pg_class WHERE relname LIKE 'weird%'")[0]
    assert tables == []


# -- scan: partitions and resume --------------------------------------------------------
@pytest.mark.parametrize("id_type", ["int64", "string"])
@pytest.mark.parametrize("analyzed", [True, False])
def test_scan_resumes_over_key_ranges(
    pg: PostgresAddress, table: str, opened: list[Connector], id_type: str, analyzed: bool
) -> None:
    spec = make_spec(dim=8, id_type=id_type)
    n = 5000
    rng = np.random.default_rng(1)
    order = rng.permutation(n)
    source = pa.Table.from_batches([make_batch(spec, s, 500) for s in range(0, n, 500)])
    if id_type == "int64":  # sparse, negative and large keys
        keys = (np.arange(n, dtype=np.int64) - 2000) * 7_000_000_011
        source = source.set_column(0, "id", pa.array(keys, pa.int64()))
    writer = open_uri(opened, pg.uri(table))
    writer.create(spec, IfExists.FAIL)
    shuffled = source.take(pa.array(order))
    for b in shuffled.to_batches(max_chunksize=700):
        writer.upsert(b)
    if analyzed:
        writer.finalize(spec)
    planned = writer.partitions(4)
    assert len(planned) == 4
    persisted = [p.to_json() for p in planned]

    seen: list[Any] = []
    for text in persisted:  # a new process: new connector, partitions from JSON
        part = Partition.from_json(text)
        first = open_uri(opened, pg.uri(table))
        it = first.scan(part, None, 300)
        cursor = None
        for _ in range(2):
            got = next(it, None)
            if got is None:
                break
            seen += got.batch.column("id").to_pylist()
            cursor = got.cursor
        it.close()  # type: ignore[attr-defined]
        again = open_uri(opened, pg.uri(table))
        if cursor is not None:
            seen += [
                v for sb in again.scan(part, cursor, 300) for v in sb.batch.column("id").to_pylist()
            ]
        lo, hi = part.bounds["lo"], part.bounds["hi"]
        ids = [v for sb in again.scan(part, None, 1000) for v in sb.batch.column("id").to_pylist()]
        assert all((lo is None or v >= lo) and (hi is None or v < hi) for v in ids)
        assert 0 < len(ids) < n
    assert len(seen) == n
    assert sorted(seen) == sorted(source.column("id").to_pylist())


# -- indexes, kNN, float16, sparse ------------------------------------------------------
def test_indexes_are_built_by_finalize_with_their_params(
    pg: PostgresAddress, table: str, opened: list[Connector]
) -> None:
    spec = make_spec(dim=16, metric=Metric.IP, documents=False, metadata=())
    spec.vectors.append(VectorField(name="other", dim=8, metric=Metric.L2))
    spec.indexes = [
        IndexConfig(field="vector", kind="HNSW", params={"M": 12, "efConstruction": 40}),
        IndexConfig(field="other", kind="IVF_FLAT", metric=Metric.L2, params={"nlist": 4}),
    ]
    batch = make_batch(spec, 0, 300)
    conn = open_uri(opened, pg.uri(table))
    conn.create(spec, IfExists.FAIL)
    assert conn.describe().indexes == []  # not before loading
    conn.upsert(batch)
    conn.finalize(spec)
    conn.finalize(spec)  # twice is harmless
    got = {ix.field: ix for ix in conn.describe().indexes}
    assert got["vector"].kind == "hnsw" and got["vector"].metric is Metric.IP
    assert got["vector"].params == {"m": 12, "ef_construction": 40}
    assert got["other"].kind == "ivf_flat" and got["other"].params == {"lists": 4}
    assert conn.describe().vector("other").metric is Metric.L2

    queries = vectors_numpy(batch.column("vector"))[:5]
    exact = open_uri(opened, pg.uri(table) + "&search=exact")
    result = exact.query(queries, 4)
    dots = queries @ vectors_numpy(batch.column("vector")).T
    want = np.argsort(-dots, axis=1, kind="stable")[:, :4]
    ids = batch.column("id").to_pylist()
    assert result.ids == [[ids[j] for j in row] for row in want]
    np.testing.assert_allclose(result.scores, -np.take_along_axis(dots, want, 1), rtol=1e-5)
    # through the HNSW index: approximate, but k above the default ef_search (40) is honoured
    approx = conn.query(queries[:2], 60)
    assert [len(row) for row in approx.ids] == [60, 60]
    assert [row[0] for row in approx.ids] == ids[:2]


def test_parallel_writers_share_one_connector(
    pg: PostgresAddress, table: str, opened: list[Connector]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    spec = make_spec(dim=8)
    conn = open_uri(opened, pg.uri(table))
    conn.create(spec, IfExists.FAIL)
    batches = [make_batch(spec, s, 400) for s in range(0, 4000, 400)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(conn.upsert, batches + batches[:3]))  # some re-sent: merged
    assert conn.count() == 4000


def test_hnsw_over_2000_dimensions_is_refused_before_loading(
    pg: PostgresAddress, table: str, opened: list[Connector]
) -> None:
    from vecmigrate.errors import Unsupported

    spec = make_spec(dim=3072, documents=False, metadata=())
    conn = open_uri(opened, pg.uri(table) + "&index=hnsw")
    with pytest.raises(Unsupported, match="2000"):
        conn.create(spec, IfExists.FAIL)
    assert not conn.exists()


def test_float16_vectors_are_stored_as_halfvec(
    pg: PostgresAddress, table: str, opened: list[Connector]
) -> None:
    spec = CollectionSpec(name="half", vectors=[VectorField(name="vector", dim=6, dtype="float16")])
    m = np.random.default_rng(3).standard_normal((50, 6)).astype(np.float32)
    batch = pa.RecordBatch.from_pydict(
        {"id": [f"h{i}" for i in range(50)], "vector": fixed_size_vectors(m)}
    )
    conn = open_uri(opened, pg.uri(table))
    conn.create(spec, IfExists.FAIL)
    conn.upsert(batch)
    got = conn.fetch(["h3", "h4"]).sort_by("id")
    want = m[[3, 4]].astype(np.float16).astype(np.float32)
    assert np.array_equal(vectors_numpy(got.column("vector")), want)
    assert conn.describe().vector().dtype == "float16"
    types = run_sql(
        pg,
        sql.SQL(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = {}::regclass AND attname = 'vector'"
        ).format(sql.Literal(table)),
    )[0]
    assert types == [("halfvec(6)",)]


def test_sparse_vectors_round_trip(
    pg: PostgresAddress, table: str, opened: list[Connector]
) -> None:
    spec = CollectionSpec(
        name="sparse",
        id_type="int64",
        vectors=[
            VectorField(name="dense", dim=3),
            VectorField(name="terms", dim=0, metric=Metric.IP, sparse=True),
        ],
    )
    terms = [
        {"indices": [1, 5, 900], "values": [0.5, -1.0, 2.0]},
        {"indices": [], "values": []},
        {"indices": [7], "values": [3.25]},
    ]
    batch = pa.RecordBatch.from_pydict(
        {
            "id": [1, 2, 3],
            "dense": fixed_size_vectors(np.eye(3, dtype=np.float32)),
            "terms": pa.array(terms, SPARSE_TYPE),
        }
    )
    conn = open_uri(opened, pg.uri(table))
    conn.create(spec, IfExists.FAIL)
    conn.upsert(batch)
    got = pa.Table.from_batches([sb.batch for sb in conn.scan(Partition("all"), None, 2)])
    assert got.column("terms").to_pylist() == terms
    described = conn.describe()
    assert described.vector("terms").sparse


def test_reuse_of_a_hand_made_table_with_other_column_types(
    pg: PostgresAddress, table: str, opened: list[Connector]
) -> None:
    """uuid keys, integer and timestamp-without-zone columns: the staged merge casts."""
    run_sql(
        pg,
        sql.SQL(
            "CREATE TABLE {} (key uuid PRIMARY KEY, vector vector(3), rank int4, "
            "seen timestamp, meta json)"
        ).format(sql.Identifier(table)),
    )
    conn = open_uri(opened, pg.uri(table))
    spec = conn.describe()
    assert spec.id_type == "string"
    keys = [str(uuid.UUID(int=i)) for i in range(1, 4)]
    when = dt.datetime(2023, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    batch = pa.RecordBatch.from_pydict(
        {
            "id": keys,
            "vector": fixed_size_vectors(np.ones((3, 3), dtype=np.float32)),
            "rank": [1, 2, None],
            "seen": [when, None, when],
            "meta": ['{"a": 1}', None, "[]"],
        }
    )
    conn.create(spec, IfExists.REUSE)
    conn.upsert(batch)
    conn.upsert(batch)
    assert conn.count() == 3
    got = conn.fetch(keys[:2]).sort_by("id").to_pydict()
    assert got["rank"] == [1, 2]
    assert got["seen"] == [when, None]
    assert json.loads(got["meta"][0]) == {"a": 1}
    parts = conn.partitions(2)
    total = sum(sb.batch.num_rows for p in parts for sb in conn.scan(p, None, 2))
    assert total == 3


@pytest.mark.parametrize("id_type", ["int64", "string"])
def test_large_batch_with_nulls_late_in_it_round_trips(
    pg: PostgresAddress, table: str, opened: list[Connector], id_type: str
) -> None:
    """Encoded in slices: a column with nulls only in the last slice keeps its COPY place."""
    spec = make_spec(dim=4, id_type=id_type, documents=False, metadata=(MetadataType.INT64,))
    batch = make_batch(spec, 0, 5000)
    ranks = batch.column("rank").to_pylist()
    ranks[-7:] = [None] * 7
    batch = batch.set_column(2, "rank", pa.array(ranks, pa.int64()))
    conn = open_uri(opened, pg.uri(table))
    conn.create(spec, IfExists.FAIL)
    conn.upsert(batch)
    got = pa.Table.from_batches([sb.batch for sb in conn.scan(Partition("all"), None, 4096)])
    want = pa.Table.from_batches([batch]).sort_by("id")
    assert got.column("id").to_pylist() == want.column("id").to_pylist()
    assert got.column("rank").to_pylist() == want.column("rank").to_pylist()
    assert np.array_equal(vectors_numpy(got.column("vector")), vectors_numpy(want.column("vector")))


# -- scans through ADBC ------------------------------------------------------------------------
def _scan_all(conn: Connector, parts: int = 2, batch: int = 7) -> pa.Table:
    batches = [sb.batch for p in conn.partitions(parts) for sb in conn.scan(p, None, batch)]
    return pa.Table.from_batches(batches, schema=conn.describe().arrow_schema())


def test_adbc_and_psycopg_scans_read_the_same_rows(
    pg: PostgresAddress, table: str, opened: list[Connector]
) -> None:
    """Every metadata type with nulls, halfvec and a null vector, int ids: both readers give
    the same batches (ADBC parses the binary COPY in C++, psycopg builds Python rows)."""
    pytest.importorskip("adbc_driver_postgresql")
    n = 40
    spec = CollectionSpec(
        name="both",
        id_type="int64",
        vectors=[
            VectorField(name="vector", dim=5, metric=Metric.COSINE),
            VectorField(name="half", dim=3, dtype="float16", metric=Metric.L2),
        ],
        metadata=[MetadataField(name=t.name.lower(), type=t) for t in MetadataType],
        has_document=True,
    )
    rng = np.random.default_rng(11)
    when = dt.datetime(2021, 5, 1, tzinfo=dt.UTC)
    values: dict[str, list[Any]] = {
        "string": [None if i % 7 == 0 else f"s{i} ü" for i in range(n)],
        "int64": [None if i % 5 == 0 else i * 2**40 for i in range(n)],
        "float64": [None if i % 6 == 0 else i / 3 for i in range(n)],
        "bool": [None if i % 4 == 0 else i % 2 == 0 for i in range(n)],
        "timestamp": [None if i % 9 == 0 else when + dt.timedelta(seconds=i) for i in range(n)],
        "json": [None if i % 8 == 0 else json.dumps({"i": i}) for i in range(n)],
        "list_string": [None if i % 3 == 0 else ["a", str(i)] for i in range(n)],
        "list_int64": [None if i % 3 == 1 else [i, -i] for i in range(n)],
        "list_float64": [None if i % 3 == 2 else [i / 2] for i in range(n)],
    }
    vec = rng.standard_normal((n, 5)).astype(np.float32)
    vectors = fixed_size_vectors(vec)
    batch = pa.RecordBatch.from_pydict(
        {
            "id": list(range(n)),
            "vector": vectors,
            "half": fixed_size_vectors(rng.standard_normal((n, 3)).astype(np.float32)),
            "document": [None if i % 10 == 0 else f"doc {i}" for i in range(n)],
            **values,
        }
    )
    conn = open_uri(opened, pg.uri(table))
    conn.create(spec, IfExists.FAIL)
    conn.upsert(batch)
    run_sql(pg, sql.SQL("UPDATE {} SET vector = NULL WHERE id = 13").format(sql.Identifier(table)))
    by_adbc = _scan_all(open_uri(opened, pg.uri(table) + "&reader=adbc"))
    by_rows = _scan_all(open_uri(opened, pg.uri(table) + "&reader=psycopg"))
    assert by_adbc.num_rows == n and by_adbc.column("vector").null_count == 1
    assert by_adbc.equals(by_rows)


def test_adbc_scan_names_the_row_of_a_vector_of_another_dimension(
    pg: PostgresAddress, table: str, opened: list[Connector]
) -> None:
    pytest.importorskip("adbc_driver_postgresql")
    t = sql.Identifier(table)
    run_sql(
        pg,
        sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, vector vector)").format(t),
        sql.SQL("INSERT INTO {} VALUES ('a', '[1,2,3]'), ('b', '[1,2]'), ('c', '[4,5,6]')").format(
            t
        ),
    )
    conn = open_uri(opened, pg.uri(table) + "&reader=adbc")
    spec = conn.describe()
    assert spec.vector().dim == 3  # sampled
    with pytest.raises(DataError, match="2 dimensions, expected 3") as err:
        _scan_all(conn, parts=1, batch=10)
    assert err.value.record_id == "b" and err.value.field == "vector"


def test_reader_option_is_checked(pg: PostgresAddress, table: str) -> None:
    with pytest.raises(ConfigError, match=r"reader='fast'.*auto, adbc, psycopg"):
        connect(pg.uri(table) + "&reader=fast")
