"""Re-embedding as a copy transform: text column in, new vector column out.

Each source batch: texts are looked up in the cache by (model, text) hash; the misses are sorted
by length (less padding for local models), embedded in calls of ``provider.call_size`` texts
(each call committed to the cache with its cost before the next starts), and the batch leaves
with the new vector column. Rows without text, and texts the model refuses, go to a dead-letter
JSONL file with the reason and are not written to the target. Source rows are never modified.

On Ray, :meth:`ReembedTransform.recipe` rebuilds the transform in each actor (the model loads
there once); the actors share the cache and the dead-letter file with the driver, so they must
see the same state directory (one machine, or a shared filesystem).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.embed.cache import EmbeddingCache, text_key
from vecmigrate.embed.cost import Budget, ModelPrice, count_tokens
from vecmigrate.embed.providers import (
    PROBE_TEXT,
    EmbeddingFailed,
    EmbeddingProvider,
    embed_isolating,
)
from vecmigrate.errors import ConfigError, DataError
from vecmigrate.records import conform, fixed_size_vectors
from vecmigrate.spec import DOCUMENT, ID, CollectionSpec, MetadataType, VectorField


@dataclass
class ReembedStats:
    """Counts of one run (the cache and the spend log keep what earlier runs did)."""

    rows_in: int = 0
    rows_out: int = 0
    no_text: int = 0
    rejected: int = 0
    cache_hits: int = 0
    embedded: int = 0
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    model_seconds: float = 0.0
    model_loads: int = 0  # of workers (Ray actors); the report adds this process's own


class DeadLetters:
    """Rows that could not be embedded, one JSON object per line, appended as they happen.

    A batch re-sent after a crash may append an id again; :meth:`compact` keeps one line per
    id (the last), which is what the final count reports.
    """

    def __init__(self, path: Path, *, model: str, field: str) -> None:
        self.path = path
        self.model = model
        self.field = field
        self._lock = threading.Lock()

    def add(self, ids: Sequence[Any], reasons: Sequence[str]) -> None:
        if not ids:
            return
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        lines = "".join(
            json.dumps(
                {"id": i, "reason": r, "field": self.field, "model": self.model, "at": at},
                ensure_ascii=False,
                default=str,
            )
            + "\n"
            for i, r in zip(ids, reasons, strict=True)
        )
        data = lines.encode("utf-8")
        with self._lock:  # one O_APPEND write: lines of other processes never interleave
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            finally:
                os.close(fd)

    def compact(self) -> int:
        """Rewrite the file with one line per id; the number of distinct ids."""
        with self._lock:
            if not self.path.exists():
                return 0
            latest: dict[str, str] = {}
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    key = json.dumps(json.loads(line)["id"], default=str)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line torn by a crash
                latest.pop(key, None)
                latest[key] = line
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text("".join(v + "\n" for v in latest.values()), encoding="utf-8")
            tmp.replace(self.path)
            return len(latest)


@dataclass(frozen=True)
class ReembedRecipe:
    """What rebuilds a :class:`ReembedTransform` in another process (picklable)."""

    open_provider: Callable[[], EmbeddingProvider]
    dimension: int | None
    cache: Path
    job: str
    dead_letter: Path
    price: ModelPrice
    cap: float | None
    text_field: str
    vector_field: str | None

    def __call__(self) -> ReembedTransform:
        provider = self.open_provider()
        cache = EmbeddingCache(self.cache)
        try:
            if self.dimension:
                provider.set_dimension(self.dimension)
            budget = Budget(self.price, self.cap, spent=cache.spent(self.job).cost)
        except BaseException:
            cache.close()
            provider.close()
            raise
        return ReembedTransform(
            provider,
            cache=cache,
            job=self.job,
            dead_letter=self.dead_letter,
            budget=budget,
            text_field=self.text_field,
            vector_field=self.vector_field,
            shared_spend=True,
        )


class ReembedTransform:
    """A :class:`~vecmigrate.engine.transforms.BatchTransform` that re-embeds a text field.

    ``spec`` must be called before ``apply`` (the engine does, on every run and worker).
    With ``shared_spend`` (a worker among several processes), the spend cap is checked
    against the job's spend recorded in the cache before each call.
    """

    def __init__(
        self,
        provider: EmbeddingProvider,
        *,
        cache: EmbeddingCache,
        job: str,
        dead_letter: Path,
        budget: Budget,
        text_field: str = DOCUMENT,
        vector_field: str | None = None,
        shared_spend: bool = False,
    ) -> None:
        self.provider = provider
        self.cache = cache
        self.job = job
        self.budget = budget
        self.text_field = text_field
        self.vector_field = vector_field
        self.dead_letters = DeadLetters(dead_letter, model=provider.model_id, field=text_field)
        self.stats = ReembedStats()
        self._stats_lock = threading.Lock()
        self._spec_lock = threading.Lock()
        self._in: CollectionSpec | None = None
        self._out: CollectionSpec | None = None
        self._dim: int | None = None
        self._name: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._count_tokens = bool(budget.price.usd_per_mtok)
        self._shared_spend = shared_spend and budget.cap is not None

    # -- spec ---------------------------------------------------------------------------
    def dimension(self) -> int:
        """The new vectors' size: from the cache, the model, or one probe call (paid, logged)."""
        if self._dim is None:
            model = self.provider.model_id
            dim = self.cache.dimension(model) or self.provider.known_dimension()
            if not dim:
                vectors, ok, errors = self._call([PROBE_TEXT], [text_key(model, PROBE_TEXT)])
                if not ok[0]:
                    raise EmbeddingFailed(f"{model} cannot embed a probe text: {errors[0]}")
                dim = int(vectors.shape[1])
            self.provider.set_dimension(dim)
            self.cache.set_dimension(model, dim)
            self._dim = dim
        return self._dim

    def _check_text_field(self, spec: CollectionSpec) -> None:
        if self.text_field == DOCUMENT:
            if not spec.has_document:
                raise ConfigError(
                    f"--text-field {DOCUMENT}: collection {spec.name!r} keeps no documents; "
                    "name a string metadata field that holds the text"
                )
            return
        meta = spec.metadata_field(self.text_field)
        if meta is None:
            names = ", ".join([DOCUMENT] * spec.has_document + [m.name for m in spec.metadata])
            raise ConfigError(
                f"--text-field {self.text_field!r} is not a field of {spec.name!r} "
                f"(text fields: {names or 'none'})"
            )
        if meta.type not in (MetadataType.STRING, MetadataType.JSON):
            raise ConfigError(f"--text-field {self.text_field!r} is {meta.type.value}, not text")

    def spec(self, spec: CollectionSpec) -> CollectionSpec:
        """The source spec with the target vector field set to the new model's shape."""
        with self._spec_lock:
            if self._in is not None and self._out is not None and spec == self._in:
                return self._out
            self._check_text_field(spec)
            dense = [v for v in spec.vectors if not v.sparse]
            name = self.vector_field or (dense[0].name if dense else "vector")
            new = VectorField(
                name=name,
                dim=self.dimension(),
                metric=self.provider.metric(),
                embedding_model=self.provider.model_id,
            )
            out = spec.model_copy(deep=True)
            if any(v.name == name for v in out.vectors):
                out.vectors = [new if v.name == name else v for v in out.vectors]
            elif out.metadata_field(name) is not None:
                raise ConfigError(f"--vector-field {name!r} is a metadata field of the source")
            else:
                out.vectors.append(new)
            for index in out.indexes:
                if index.field == name and index.metric is not None:
                    index.metric = new.metric
            self._in, self._out, self._name = spec.model_copy(deep=True), out, name
            return out

    # -- batches ------------------------------------------------------------------------
    def _texts(self, batch: pa.RecordBatch) -> list[str | None]:
        if self.text_field not in batch.schema.names:
            raise DataError("the text column is missing from the batch", field=self.text_field)
        col = batch.column(self.text_field)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = pc.cast(col, pa.string())
        texts: list[str | None] = col.to_pylist()
        return texts

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        out_spec = self._out
        if out_spec is None:
            # Shaping from the batch would lose what the source spec says (metrics, models of
            # other fields, metadata types): the engine calls spec() first, on resume too.
            raise RuntimeError("ReembedTransform.spec() must be called before apply()")
        dim = self.dimension()
        texts = self._texts(batch)
        n = batch.num_rows
        ids = batch.column(ID).to_pylist()
        usable = np.fromiter((bool(t and t.strip()) for t in texts), dtype=bool, count=n)
        missing = np.nonzero(~usable)[0]
        if len(missing):
            self.dead_letters.add(
                [ids[i] for i in missing],
                [
                    f"no text in field {self.text_field!r}"
                    if texts[i] is None
                    else f"empty text in field {self.text_field!r}"
                    for i in missing
                ],
            )
        rows = np.nonzero(usable)[0]
        model = self.provider.model_id
        keys = [text_key(model, texts[i] or "") for i in rows]
        vectors, found = self.cache.get_many(keys, dim)
        todo: dict[bytes, list[int]] = {}
        for j in np.nonzero(~found)[0]:
            todo.setdefault(keys[j], []).append(int(j))
        failed = self._embed_missing(todo, rows, texts, vectors, found)
        if failed:
            self.dead_letters.add([ids[rows[j]] for j in failed], list(failed.values()))
        keep = rows[found]
        with self._stats_lock:
            s = self.stats
            s.rows_in += n
            s.rows_out += len(keep)
            s.no_text += len(missing)
            s.rejected += len(failed)
            s.cache_hits += len(rows) - sum(len(v) for v in todo.values())
        out = batch.take(pa.array(keep, pa.int64())) if len(keep) < n else batch
        column = fixed_size_vectors(vectors if found.all() else vectors[found])
        name = self._name or "vector"
        names = out.schema.names
        if name in names:
            out = out.set_column(names.index(name), name, column)
        else:
            out = out.append_column(name, column)
        return conform(out, out_spec)

    def _embed_missing(
        self,
        todo: dict[bytes, list[int]],
        rows: np.ndarray,
        texts: list[str | None],
        vectors: np.ndarray,
        found: np.ndarray,
    ) -> dict[int, str]:
        """Embed the texts the cache lacks (fills ``vectors``/``found``); failures by row."""
        if not todo:
            return {}
        unique = list(todo)
        first = [todo[k][0] for k in unique]
        order = sorted(range(len(unique)), key=lambda u: -len(texts[rows[first[u]]] or ""))
        size = self.provider.call_size
        chunks = [order[i : i + size] for i in range(0, len(order), size)]

        def run(chunk: list[int]) -> tuple[list[int], np.ndarray, np.ndarray, dict[int, str]]:
            chunk_texts = [texts[rows[first[u]]] or "" for u in chunk]
            outcome = self._call(chunk_texts, [unique[u] for u in chunk])
            return chunk, outcome[0], outcome[1], outcome[2]

        failures: dict[int, str] = {}
        if self.provider.concurrency > 1 and len(chunks) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.provider.concurrency, thread_name_prefix="embed"
                )
            results = list(self._pool.map(run, chunks))
        else:
            results = [run(c) for c in chunks]
        for chunk, vecs, ok, errors in results:
            for pos, u in enumerate(chunk):
                targets = todo[unique[u]]
                if ok[pos]:
                    vectors[targets] = vecs[pos]
                    found[targets] = True
                else:
                    for j in targets:
                        failures[j] = errors[pos]
        return failures

    def _call(
        self, texts: list[str], keys: list[bytes]
    ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """One provider call with failing texts isolated; committed to the cache with its cost."""
        estimate = int(count_tokens(self.provider, texts).counts.sum()) if self._count_tokens else 0
        if self._shared_spend:
            self.budget.observe(self.cache.spent(self.job).cost)
        reserved = self.budget.reserve(estimate)
        started = time.perf_counter()
        try:
            outcome = embed_isolating(self.provider, texts)
        except BaseException:
            self.budget.settle(reserved, reserved)  # a failed call may still have been billed
            raise
        seconds = time.perf_counter() - started
        tokens = outcome.tokens if outcome.tokens is not None else estimate
        cost = self.budget.cost(tokens)
        ok_idx = np.nonzero(outcome.ok)[0]
        self.cache.put(
            self.provider.model_id,
            [keys[i] for i in ok_idx],
            outcome.vectors[ok_idx],
            job=self.job,
            tokens=tokens or None,
            cost=cost,
            seconds=seconds,
            items=len(texts),
        )
        self.budget.settle(reserved, cost)
        with self._stats_lock:
            s = self.stats
            s.embedded += len(texts)
            s.calls += outcome.calls
            s.tokens += tokens
            s.cost_usd += cost
            s.model_seconds += seconds
        return outcome.vectors, outcome.ok, outcome.errors

    # -- in other processes ---------------------------------------------------------------
    def recipe(self) -> ReembedRecipe:
        """Rebuilds this transform in a worker process, sharing the cache and dead letters."""
        return ReembedRecipe(
            open_provider=self.provider.opener(),
            dimension=self._dim or self.cache.dimension(self.provider.model_id),
            cache=self.cache.path.resolve(),
            job=self.job,
            dead_letter=self.dead_letters.path.resolve(),
            price=self.budget.price,
            cap=self.budget.cap,
            text_field=self.text_field,
            vector_field=self.vector_field,
        )

    def counters(self) -> dict[str, float]:
        """This transform's counts so far, with its own model loads."""
        with self._stats_lock:
            out: dict[str, float] = asdict(self.stats)
        out["model_loads"] += self.provider.loads
        return out

    def absorb(self, counters: Mapping[str, float]) -> None:
        """Add counts a worker's copy of this transform reported (see :meth:`counters`)."""
        with self._stats_lock:
            for f in fields(self.stats):
                if f.name in counters:
                    value = getattr(self.stats, f.name) + counters[f.name]
                    setattr(self.stats, f.name, type(getattr(self.stats, f.name))(value))

    # -- end ----------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """What this run did, what the job has spent over all runs, and the dead letters."""
        spent = self.cache.spent(self.job)
        dead = self.dead_letters.compact()
        stats = asdict(self.stats)
        stats["cost_usd"] = round(stats["cost_usd"], 6)
        stats["model_seconds"] = round(stats["model_seconds"], 3)
        stats["model_loads"] += self.provider.loads
        rate = self.stats.embedded / self.stats.model_seconds if self.stats.model_seconds else 0.0
        out: dict[str, Any] = {
            "model": self.provider.model_id,
            "text_field": self.text_field,
            "vector_field": self._name or self.vector_field,
            "dim": self._dim,
            "metric": self.provider.metric().value if self._dim else None,
            "this_run": stats,
            "model_texts_per_s": round(rate, 1),
            "job_total": {
                "calls": spent.calls,
                "texts_embedded": spent.items,
                "tokens": spent.tokens,
                "cost_usd": round(spent.cost, 6),
                "model_seconds": round(spent.seconds, 3),
            },
            "price": {
                "usd_per_mtok": self.budget.price.usd_per_mtok,
                "source": self.budget.price.source,
            },
            "max_cost_usd": self.budget.cap,
            "dead_lettered": dead,
            "dead_letter_file": str(self.dead_letters.path) if dead else None,
            "cache": str(self.cache.path),
        }
        retried = getattr(self.provider, "retried", None)
        if retried is not None:
            out["http_retries"] = dict(retried)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.provider.close()
        self.cache.close()
