"""``openai:MODEL``: any OpenAI-compatible ``POST {base}/embeddings`` endpoint.

Base URL from ``--embed-url`` (or ``OPENAI_BASE_URL``, else OpenAI's), key from the environment
variable named by ``--embed-key-env`` (``OPENAI_API_KEY`` by default; local servers may need
none). Options: ``batch`` (texts per request, 128), ``concurrency`` (requests in flight, 4),
``dimensions`` (for models that shorten vectors), ``encoding`` (``float`` or ``base64``),
``rpm``/``tpm`` (client-side request and token rates), ``retries`` (attempts on 429 and
connection errors, 8), ``backoff`` (first wait in seconds, 0.5), ``timeout`` (seconds, 60).

429, timeouts and connection errors are retried with exponential backoff (``Retry-After``
honoured) and raise TransientError when they persist; a 5xx is retried twice and then treated
as possibly caused by the texts, so the caller splits the request; 400/413/422 reject texts.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vecmigrate.embed.providers import Embedded, EmbeddingProvider, ItemsRejected, ModelRef
from vecmigrate.errors import (
    AuthError,
    ConfigError,
    MissingDependency,
    NotFoundError,
    TerminalError,
    TransientError,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SERVER_ATTEMPTS = 3
MAX_WAIT_S = 60.0


class RateLimiter:
    """Spaces requests so that at most ``rpm`` requests and ``tpm`` tokens go out per minute."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._lock = threading.Lock()
        self._next = 0.0

    def acquire(self, tokens: int) -> None:
        if not self.rpm and not self.tpm:
            return
        cost = max(
            60.0 / self.rpm if self.rpm else 0.0, tokens * 60.0 / self.tpm if self.tpm else 0.0
        )
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + cost
        if start > now:
            time.sleep(start - now)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        return str(resp.text[:300])
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("detail"):
            return str(body["detail"])
    return str(resp.text[:300])


class OpenAIProvider(EmbeddingProvider):
    """An OpenAI-compatible embeddings endpoint over HTTP (httpx, connection pooled)."""

    def __init__(
        self, ref: ModelRef, *, url: str | None = None, key_env: str | None = None
    ) -> None:
        super().__init__(ref)
        ref.check_options(
            {"batch", "concurrency", "dimensions", "prefix", "encoding", "rpm", "tpm"}
            | {"retries", "backoff", "timeout"}
        )
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependency("httpx", "embed") from exc
        self._httpx = httpx
        self.base_url = (url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.key_env = key_env or "OPENAI_API_KEY"
        api_key = os.environ.get(self.key_env)
        if not api_key and self.base_url == DEFAULT_BASE_URL:
            raise ConfigError(f"openai:{ref.name}: set the API key in ${self.key_env}")
        self.call_size = ref.int_option("batch", 128)
        self.concurrency = ref.int_option("concurrency", 4)
        self.dimensions = ref.int_option("dimensions", 1) if "dimensions" in ref.options else None
        self.encoding = (ref.option("encoding", "float") or "float").lower()
        if self.encoding not in ("float", "base64"):
            raise ConfigError(f"openai: encoding={self.encoding!r}: use float or base64")
        self.attempts = ref.int_option("retries", 8)
        self.backoff = ref.float_option("backoff") or 0.5
        timeout = ref.float_option("timeout") or 60.0
        self.limiter = RateLimiter(ref.float_option("rpm"), ref.float_option("tpm"))
        headers = {"User-Agent": "vecmigrate"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=self.concurrency + 2),
        )
        self.retried: dict[str, int] = {"429": 0, "5xx": 0, "connection": 0}
        self._stats_lock = threading.Lock()

    def _note(self, kind: str) -> None:
        with self._stats_lock:
            self.retried[kind] += 1

    def _wait(self, attempt: int, hint: float | None) -> None:
        delay = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
        time.sleep(min(MAX_WAIT_S, hint if hint is not None else delay))

    def known_dimension(self) -> int | None:
        return self.dimensions

    def _embed(self, texts: list[str]) -> Embedded:
        payload: dict[str, Any] = {"model": self.ref.name, "input": texts}
        if self.dimensions:
            payload["dimensions"] = self.dimensions
        if self.encoding == "base64":
            payload["encoding_format"] = "base64"
        estimated = sum(len(t) for t in texts) // 4 + len(texts)
        attempt = 0
        server_failures = 0
        while True:
            attempt += 1
            self.limiter.acquire(estimated)
            try:
                resp = self._client.post("/embeddings", json=payload)
            except (self._httpx.TimeoutException, self._httpx.TransportError) as exc:
                if attempt >= self.attempts:
                    raise TransientError(
                        f"{self.base_url}/embeddings: {type(exc).__name__}: {exc}"
                    ) from exc
                self._note("connection")
                self._wait(attempt, None)
                continue
            status = resp.status_code
            if status == 200:
                return self._parse(resp, len(texts))
            message = f"{self.base_url}/embeddings: HTTP {status}: {_error_message(resp)}"
            if status == 429:
                if attempt >= self.attempts:
                    raise TransientError(message + " (rate limited; retries exhausted)")
                self._note("429")
                self._wait(attempt, retry_after(resp.headers.get("retry-after")))
                continue
            if status >= 500:
                server_failures += 1
                if server_failures >= SERVER_ATTEMPTS:
                    raise ItemsRejected(message, origin="server")
                self._note("5xx")
                self._wait(attempt, retry_after(resp.headers.get("retry-after")))
                continue
            if status in (401, 403):
                raise AuthError(f"{message} (key from ${self.key_env})")
            if status == 404:
                raise NotFoundError(f"{message} (check --embed-url and the model name)")
            if status in (400, 413, 422):
                raise ItemsRejected(message, origin="client")
            raise TerminalError(message)

    def _parse(self, resp: Any, n: int) -> Embedded:
        try:
            body = resp.json()
            rows = sorted(body["data"], key=lambda d: int(d.get("index", 0)))
            if len(rows) != n:
                raise ValueError(f"{len(rows)} embeddings for {n} inputs")
            first = rows[0]["embedding"] if rows else []
            if isinstance(first, str):
                mats = [np.frombuffer(base64.b64decode(r["embedding"]), dtype="<f4") for r in rows]
            else:
                mats = [np.asarray(r["embedding"], dtype=np.float32) for r in rows]
            if len({m.shape[0] for m in mats}) > 1:
                raise ValueError("embeddings of different sizes in one response")
            vectors = np.vstack(mats).astype(np.float32) if mats else np.zeros((0, 0), np.float32)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TerminalError(f"{self.base_url}/embeddings: malformed response: {exc}") from exc
        usage = body.get("usage") if isinstance(body, dict) else None
        tokens = None
        if isinstance(usage, dict):
            raw = usage.get("prompt_tokens", usage.get("total_tokens"))
            tokens = int(raw) if isinstance(raw, int | float) else None
        return Embedded(vectors, tokens)

    def opener(self) -> Callable[[], EmbeddingProvider]:
        """Same endpoint and key variable (the key itself is read where it is opened)."""
        return functools.partial(OpenAIProvider, self.ref, url=self.base_url, key_env=self.key_env)

    def close(self) -> None:
        self._client.close()
