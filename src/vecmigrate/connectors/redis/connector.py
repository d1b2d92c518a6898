"""A collection as one Redis 8 vector set, with its spec in a companion string key.

Each record is an element: the id is the element name (int64 ids as decimal strings), the
vector is added with ``VADD ... FP32`` (``NOQUANT`` unless asked otherwise, so values are kept
as float32), and the document and metadata are the element's JSON attributes. Vector sets
have one metric, cosine: Redis stores each vector normalised, with its norm, and ``VEMB RAW``
returns both, so vectors are read back as ``normalised * norm`` (within 1 float32 ulp of what
was written; Q8 and BIN sets are lossy).

There is no scan command in Redis 8.0: a scan takes all element names (``VRANDMEMBER`` with a
count above the set's size returns every element once), keeps those of its partition after
the cursor, sorts them by their bytes and reads them in pipelined batches (``VEMB RAW`` and
``VGETATTR``). The cursor is the last element name read; partitions are ranges of names.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from vecmigrate.connectors.base import (
    ALL_METADATA,
    Capabilities,
    Connector,
    IfExists,
    Partition,
    QueryResult,
    ScanBatch,
    WriteToken,
)
from vecmigrate.connectors.redis import attributes
from vecmigrate.connectors.redis.config import QUANTS, RedisConfig
from vecmigrate.connectors.redis.errors import redis_errors, translate
from vecmigrate.errors import (
    DataError,
    NotFoundError,
    SchemaMismatch,
    TerminalError,
    Unsupported,
)
from vecmigrate.records import check_batch, conform, vectors_numpy
from vecmigrate.spec import (
    DOCUMENT,
    ID,
    CollectionSpec,
    IndexConfig,
    MetadataField,
    MetadataType,
    Metric,
    VectorField,
)
from vecmigrate.uri import ConnectorURI

if TYPE_CHECKING:
    from redis import Redis

ALL_ELEMENTS = 2**62  # a VRANDMEMBER count above any set's size: every element, once
SAMPLE = 1_000  # elements sampled to infer the attributes of a set made by others
SYSTEM = "redis"  # key of this system's settings in CollectionSpec.system


def _name_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _name_text(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


class RedisConnector(Connector):
    scheme = "redis"
    capabilities = Capabilities(
        query=True,
        fetch=True,
        delete=True,
        metrics=frozenset({Metric.COSINE}),
        metadata_types=ALL_METADATA,
        documents=True,
        exact_float32=False,
        max_ulp=1,
        normalizes_cosine=False,
        notes=(
            "one vector set per collection (?key=K); the spec is kept in K:vecmigrate:spec",
            "cosine only; vectors are stored normalised with their norm and read back as "
            "normalised*norm: within 1 float32 ulp of what was written (NOQUANT, the default)",
            "quant=q8 or quant=bin stores quantised vectors: reading them back is lossy",
            "no scan command: each scan lists all element names once (VRANDMEMBER) and reads "
            "its range of names in sorted order",
            "metadata and documents are the elements' JSON attributes",
        ),
    )

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        self.config = RedisConfig.from_uri(uri)
        self._client: Redis | None = None
        self._spec: CollectionSpec | None = None
        self._vadd_flags: list[str | int] | None = None

    # -- plumbing -----------------------------------------------------------------------
    @property
    def redis(self) -> Redis:
        if self._client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            cfg = self.config
            self._client = redis.Redis(
                host=cfg.host,
                port=cfg.port,
                db=cfg.db,
                username=cfg.username,
                password=cfg.password,
                socket_timeout=cfg.timeout,
                socket_connect_timeout=min(cfg.timeout, 10.0),
                protocol=2,
                retry=Retry(NoBackoff(), 1),  # one reconnect; the copy engine retries the rest
            )
        return self._client

    def _call(self, *args: Any) -> Any:
        with redis_errors(self.config.key):
            return self.redis.execute_command(*args)  # type: ignore[no-untyped-call]

    def _pipelined(self, commands: Sequence[Sequence[Any]], ids: Sequence[Any] = ()) -> list[Any]:
        """Replies of many commands, ``config.pipeline`` per round trip; errors name the row."""
        replies: list[Any] = []
        step = self.config.pipeline
        with redis_errors(self.config.key):
            for start in range(0, len(commands), step):
                pipe = self.redis.pipeline(transaction=False)
                for cmd in commands[start : start + step]:
                    pipe.execute_command(*cmd)  # type: ignore[no-untyped-call]
                replies += pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, Exception):
                err = translate(reply, self.config.key)
                if ids:
                    err = type(err)(f"{err} (id {ids[i]!r})")
                raise err from reply
        return replies

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- what is there ------------------------------------------------------------------
    def _info(self) -> dict[str, Any] | None:
        """VINFO of the set as a dict (None when the key does not exist)."""
        reply = self._call("VINFO", self.config.key)
        if reply is None:
            return None
        items = iter(reply)
        info: dict[str, Any] = {}
        for name, value in zip(items, items, strict=False):
            info[name.decode()] = value.decode() if isinstance(value, bytes) else value
        return info

    def _stored_spec(self) -> CollectionSpec | None:
        text = self._call("GET", self.config.spec_key)
        if text is None:
            return None
        try:
            return CollectionSpec.from_json(text)
        except ValueError as exc:
            raise TerminalError(
                f"redis key {self.config.spec_key!r} does not hold a vecmigrate spec: {exc}"
            ) from exc

    def exists(self) -> bool:
        return bool(self._call("EXISTS", self.config.key, self.config.spec_key))

    def describe(self) -> CollectionSpec:
        info = self._info()
        spec = self._stored_spec()
        if spec is None and info is None:
            raise NotFoundError(f"redis vector set {self.config.key!r} does not exist")
        if spec is None:
            spec = self._inferred_spec(info or {})
        if info is not None:
            quant = str(info.get("quant-type", "f32"))
            m = int(info.get("hnsw-m", 16))
            system = {**spec.system.get(SYSTEM, {}), "quant": quant, "m": m}
            if int(info.get("projection-input-dim", 0) or 0):
                system["projection_input_dim"] = int(info["projection-input-dim"])
            spec.system[SYSTEM] = system
            vf = spec.vector()
            spec.indexes = [
                IndexConfig(
                    field=vf.name,
                    kind="hnsw",
                    metric=Metric.COSINE,
                    params={"m": m, "quant": quant},
                )
            ]
        self._spec = spec
        return spec.model_copy(deep=True)

    def _inferred_spec(self, info: dict[str, Any]) -> CollectionSpec:
        """The spec of a set made without vecmigrate: VINFO, and sampled attributes."""
        key = self.config.key
        names = self._call("VRANDMEMBER", key, SAMPLE) or []
        texts = self._pipelined([("VGETATTR", key, n) for n in names])
        ids = [_name_text(n) for n in names]
        fields, has_document, skipped = attributes.infer(attributes.parse(texts, ids))
        system: dict[str, Any] = {"made_by": "other", "sampled_elements": len(names)}
        if skipped:
            system["skipped_attributes"] = skipped
        return CollectionSpec(
            name=key,
            id_type="string",
            vectors=[VectorField(name="vector", dim=int(info["vector-dim"]), metric=Metric.COSINE)],
            metadata=fields,
            has_document=has_document,
            system={SYSTEM: system},
        )

    def _read_spec(self) -> CollectionSpec:
        if self._spec is None:
            self.describe()
        assert self._spec is not None
        return self._spec

    def count(self) -> int:
        n = int(self._call("VCARD", self.config.key))
        if n == 0 and not self.exists():
            raise NotFoundError(f"redis vector set {self.config.key!r} does not exist")
        return n

    # -- reading ------------------------------------------------------------------------
    def _names(self) -> list[bytes]:
        names: list[bytes] = self._call("VRANDMEMBER", self.config.key, ALL_ELEMENTS) or []
        return names

    def partitions(self, hint: int) -> list[Partition]:
        total = self.count()
        parts = max(1, min(hint, total // 1000 or 1))
        if parts == 1:
            return [Partition(key="all", bounds={}, estimated_rows=total)]
        # With a count above 20% of the set Redis walks it from a random element instead
        # of sampling: take every name then (the set is small enough).
        want = SAMPLE * parts
        sample = (
            self._names()
            if want * 5 > total
            else self._call("VRANDMEMBER", self.config.key, want) or []
        )
        sample.sort()
        edges = sorted({sample[len(sample) * i // parts] for i in range(1, parts)})
        bounds: list[tuple[bytes | None, bytes | None]] = list(
            zip([None, *edges], [*edges, None], strict=True)
        )
        return [
            Partition(
                key=f"names-{i}",
                bounds={
                    "from": None if lo is None else _name_text(lo),
                    "to": None if hi is None else _name_text(hi),
                },
                estimated_rows=total // len(bounds),
            )
            for i, (lo, hi) in enumerate(bounds)
        ]

    def scan(
        self, partition: Partition, cursor: str | None, batch_size: int
    ) -> Iterator[ScanBatch]:
        lo = partition.bounds.get("from")
        hi = partition.bounds.get("to")
        low = None if lo is None else _name_bytes(lo)
        high = None if hi is None else _name_bytes(hi)
        after = None if cursor is None else _name_bytes(cursor)
        names = sorted(
            n
            for n in self._names()
            if (low is None or n >= low)
            and (high is None or n < high)
            and (after is None or n > after)
        )
        spec = self._read_spec()
        for start in range(0, len(names), batch_size):
            chunk = names[start : start + batch_size]
            batch = self._read(chunk, spec)
            if batch.num_rows:  # elements removed since the listing are left out
                yield ScanBatch(batch=batch, cursor=_name_text(chunk[-1]))

    def _read(self, names: Sequence[bytes], spec: CollectionSpec) -> pa.RecordBatch:
        """The records of these elements (ones that no longer exist are left out)."""
        key = self.config.key
        with_attrs = spec.has_document or bool(spec.metadata)
        commands: list[tuple[Any, ...]] = []
        for n in names:
            commands.append(("VEMB", key, n, "RAW"))
            if with_attrs:
                commands.append(("VGETATTR", key, n))
        replies = self._pipelined(commands)
        embs = replies[0::2] if with_attrs else replies
        texts = replies[1::2] if with_attrs else [None] * len(replies)
        keep = [i for i, e in enumerate(embs) if e is not None]
        vf = spec.vector()
        ids = self._ids([names[i] for i in keep], spec)
        matrix = _vectors([embs[i] for i in keep], vf.dim, key)
        attrs = attributes.parse([texts[i] for i in keep], ids)
        columns: dict[str, pa.Array] = {
            ID: pa.array(ids, pa.string() if spec.id_type == "string" else pa.int64()),
            vf.name: pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), vf.dim),
        }
        if spec.has_document:
            columns[DOCUMENT] = attributes.column(attrs, DOCUMENT, MetadataType.STRING, ids)
        for m in spec.metadata:
            columns[m.name] = attributes.column(attrs, m.name, m.type, ids)
        schema = spec.arrow_schema()
        return pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)

    def _ids(self, names: Sequence[bytes], spec: CollectionSpec) -> list[Any]:
        try:
            texts = [n.decode("utf-8") for n in names]
        except UnicodeDecodeError as exc:
            raise DataError(
                f"an element name of {self.config.key!r} is not UTF-8: {exc}", field=ID
            ) from exc
        if spec.id_type == "string":
            return texts
        try:
            return [int(t) for t in texts]
        except ValueError as exc:
            raise DataError(
                f"element name is not an int64 id ({exc}) in {self.config.key!r}", field=ID
            ) from exc

    def fetch(self, ids: Sequence[Any]) -> pa.RecordBatch:
        spec = self._read_spec()
        return self._read([_name_bytes(str(i)) for i in ids], spec)

    def query(self, vectors: np.ndarray, k: int, *, vector_field: str | None = None) -> QueryResult:
        spec = self._read_spec()
        spec.vector(vector_field)
        q = np.ascontiguousarray(np.atleast_2d(vectors), dtype="<f4")
        extra: list[Any] = ["WITHSCORES"]
        if self.config.exact:
            extra.append("TRUTH")
        if self.config.query_ef:
            extra += ["EF", self.config.query_ef]
        replies = self._pipelined(
            [("VSIM", self.config.key, "FP32", row.tobytes(), "COUNT", k, *extra) for row in q]
        )
        result = QueryResult(ids=[], scores=[])
        for reply in replies:
            flat = reply or []
            ids = self._ids(flat[0::2], spec)
            result.ids.append(ids)
            result.scores.append([float(s) for s in flat[1::2]])
        return result

    # -- writing ------------------------------------------------------------------------
    def create(self, spec: CollectionSpec, if_exists: IfExists = IfExists.REUSE) -> None:
        vf = _single_cosine_vector(spec, self.config.key)
        key = self.config.key
        if self.exists():
            if if_exists is IfExists.FAIL:
                raise SchemaMismatch(f"redis vector set {key!r} already exists")
            if if_exists is IfExists.REUSE:
                self._store_spec(self._reusable(spec, vf))
                return
            self._call("DEL", key, self.config.spec_key)
        settings = dict(spec.system.get(SYSTEM, {}))
        quant = self.config.quant or QUANTS.get(
            str(settings.get("quant", "noquant")).lower(), "NOQUANT"
        )
        new = spec.model_copy(deep=True)
        new.system[SYSTEM] = {"quant": quant, "m": self.config.m or settings.get("m")}
        new.indexes = []
        self._store_spec(new)

    def _reusable(self, spec: CollectionSpec, vf: VectorField) -> CollectionSpec:
        """The existing spec, widened by the new one's fields; refuse an incompatible set."""
        old = self.describe()
        ovf = old.vector()
        key = self.config.key
        if (ovf.dim, ovf.metric) != (vf.dim, vf.metric):
            raise SchemaMismatch(
                f"redis vector set {key!r} has vectors of dim {ovf.dim} ({ovf.metric}), "
                f"the source has dim {vf.dim} ({vf.metric})"
            )
        if old.id_type != spec.id_type:
            raise SchemaMismatch(
                f"redis vector set {key!r} has {old.id_type} ids, the source has {spec.id_type}"
            )
        fields = {m.name: m for m in old.metadata}
        for m in spec.metadata:
            have = fields.get(m.name)
            if have is not None and have.type is not m.type:
                raise SchemaMismatch(
                    f"redis vector set {key!r}: field {m.name!r} is {have.type.value}, "
                    f"the source has {m.type.value}"
                )
            fields.setdefault(m.name, MetadataField(name=m.name, type=m.type))
        merged = old.model_copy(deep=True)
        merged.metadata = list(fields.values())
        merged.has_document = old.has_document or spec.has_document
        merged.system.get(SYSTEM, {}).pop("made_by", None)
        return merged

    def _store_spec(self, spec: CollectionSpec) -> None:
        self._call("SET", self.config.spec_key, spec.to_json())
        self._spec = spec
        self._vadd_flags = None

    def _flags(self, spec: CollectionSpec) -> list[str | int]:
        """VADD options after the element: the set's quantisation and M must be repeated."""
        if self._vadd_flags is None:
            info = self._info()
            settings = spec.system.get(SYSTEM, {})
            if info is not None:
                quant = QUANTS[str(info["quant-type"])]
                m: Any = int(info["hnsw-m"])
            else:
                quant = QUANTS.get(str(settings.get("quant", "noquant")).lower(), "NOQUANT")
                m = settings.get("m")
            flags: list[str | int] = [quant]
            if m:
                flags += ["M", int(m)]
            if self.config.build_ef:
                flags += ["EF", self.config.build_ef]
            if self.config.cas:
                flags.append("CAS")
            self._vadd_flags = flags
        return self._vadd_flags

    def upsert(self, batch: pa.RecordBatch, token: WriteToken | None = None) -> None:
        spec = self._stored_spec() if self._spec is None else self._spec
        if spec is None:
            if self._info() is None:
                raise NotFoundError(
                    f"redis vector set {self.config.key!r} does not exist: create it first"
                )
            spec = self._read_spec()
        self._spec = spec
        if batch.num_rows == 0:
            return
        batch = conform(batch, spec)
        check_batch(batch, spec)
        vf = spec.vector()
        matrix = np.ascontiguousarray(vectors_numpy(batch.column(vf.name)), dtype="<f4")
        row_bytes = vf.dim * 4
        blob = matrix.tobytes()
        ids = batch.column(ID).to_pylist()
        names = [str(i) for i in ids]
        attr_names = ([DOCUMENT] if spec.has_document else []) + [m.name for m in spec.metadata]
        try:
            attrs = attributes.encode(batch, attr_names)
        except ValueError as exc:  # a non-finite float inside a list, for one
            raise DataError(f"metadata cannot be written as JSON: {exc}") from exc
        flags = self._flags(spec)
        key = self.config.key
        commands = [
            (
                "VADD",
                key,
                "FP32",
                blob[i * row_bytes : (i + 1) * row_bytes],
                names[i],
                *flags,
                "SETATTR",
                attrs[i],
            )
            for i in range(len(names))
        ]
        self._pipelined(commands, ids)

    def delete(self, ids: Sequence[Any]) -> None:
        self._pipelined([("VREM", self.config.key, str(i)) for i in ids], ids)

    def drop(self) -> None:
        self._call("DEL", self.config.key, self.config.spec_key)
        self._spec = None
        self._vadd_flags = None


def _single_cosine_vector(spec: CollectionSpec, key: str) -> VectorField:
    """The one dense cosine vector field a vector set can hold."""
    dense = [v for v in spec.vectors if not v.sparse]
    if len(spec.vectors) != 1 or len(dense) != 1:
        raise Unsupported(
            f"redis vector set {key!r} holds exactly one dense vector field; the spec has "
            f"{[v.name for v in spec.vectors]}"
        )
    vf = dense[0]
    if vf.metric is not Metric.COSINE:
        raise Unsupported(
            f"redis vector sets measure cosine similarity only; field {vf.name!r} uses "
            f"{vf.metric.value}"
        )
    return vf


def _vectors(embs: Sequence[Sequence[Any]], dim: int, key: str) -> np.ndarray:
    """Float32 vectors from ``VEMB ... RAW`` replies: stored values times the stored norm."""
    n = len(embs)
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    quant = embs[0][0]
    norms = np.array([float(e[2]) for e in embs], dtype=np.float32)[:, None]
    raw = b"".join(e[1] for e in embs)
    if quant == b"f32":
        return np.frombuffer(raw, dtype="<f4").reshape(n, dim) * norms
    if quant == b"int8":
        ranges = np.array([float(e[3]) for e in embs], dtype=np.float32)[:, None]
        q = np.frombuffer(raw, dtype=np.int8).reshape(n, dim).astype(np.float32)
        return (q * ranges) / np.float32(127) * norms  # as Redis dequantises
    if quant == b"bin":
        words = (dim + 63) // 64
        bits = np.unpackbits(
            np.frombuffer(raw, dtype=np.uint8).reshape(n, words * 8), axis=1, bitorder="little"
        )[:, :dim]
        return np.where(bits == 1, np.float32(1), np.float32(-1))
    raise TerminalError(f"redis vector set {key!r}: unknown quantisation {quant!r}")
