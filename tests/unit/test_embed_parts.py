"""Re-embedding parts that need no model: references, prices, budget, cache, dead letters,
failure isolation, the transform's spec mapping, and the token estimator's interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_batch, make_spec
from tests.embedding_models import HASHING, hashing
from vecmigrate.embed.cache import EmbeddingCache, text_key
from vecmigrate.embed.cost import Budget, BudgetExceeded, ModelPrice, price_of
from vecmigrate.embed.estimate import padded_tokens, ratio_estimate
from vecmigrate.embed.providers import (
    CallableProvider,
    EmbeddingFailed,
    ModelRef,
    embed_isolating,
    open_provider,
)
from vecmigrate.embed.transform import DeadLetters, ReembedTransform
from vecmigrate.errors import ConfigError
from vecmigrate.records import vectors_numpy
from vecmigrate.spec import MetadataField, MetadataType


def test_model_reference_identity() -> None:
    ref = ModelRef.parse("sentence-transformers:all-MiniLM-L6-v2?batch=64&normalize=true")
    assert (ref.kind, ref.name) == ("sentence-transformers", "all-MiniLM-L6-v2")
    assert ref.canonical == "sentence-transformers:all-MiniLM-L6-v2?normalize=true"
    assert ModelRef.parse("st:x").canonical == "sentence-transformers:x"
    assert ModelRef.parse("python:pkg.mod:fn").name == "pkg.mod:fn"
    assert ModelRef.parse("openai:text-embedding-3-small?dimensions=256").canonical == (
        "openai:text-embedding-3-small?dimensions=256"
    )
    for bad in ("minilm", "cohere:x", "python:nomodule", "openai:m?a=1&a=2"):
        with pytest.raises(ConfigError):
            ModelRef.parse(bad)
    with pytest.raises(ConfigError, match="unknown option"):
        open_provider(f"{HASHING}?colour=blue")
    with pytest.raises(ConfigError, match="cannot import"):
        open_provider("python:no_such_module_here:fn")


def test_prices_from_tables_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VECMIGRATE_PRICES", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    small = price_of("openai:text-embedding-3-small?dimensions=512")
    assert small.usd_per_mtok == 0.02 and small.dim == 1536
    assert price_of("sentence-transformers:/models/x").usd_per_mtok == 0.0
    assert price_of("openai:unknown-model").usd_per_mtok is None
    assert price_of("openai:unknown-model", override=0.5).usd_per_mtok == 0.5
    table = tmp_path / "prices.toml"
    table.write_text('[models."openai:text-embedding-3-small"]\nusd_per_mtok = 0.01\n'
                     '[models]\n"openai:my-*" = 0.3\n')  # fmt: skip
    assert price_of("openai:text-embedding-3-small", prices=table).usd_per_mtok == 0.01
    monkeypatch.setenv("VECMIGRATE_PRICES", str(table))
    assert price_of("openai:my-model").usd_per_mtok == 0.3
    assert price_of("openai:text-embedding-3-large").usd_per_mtok == 0.13
    with pytest.raises(ConfigError):
        price_of("openai:x", prices=tmp_path / "missing.toml")


def test_budget_refuses_the_call_that_would_pass_the_cap() -> None:
    budget = Budget(ModelPrice(1.0, "t"), cap=0.001, spent=0.0004)  # 1 USD per M tokens
    held = budget.reserve(500)
    budget.settle(held, 0.0005)
    with pytest.raises(BudgetExceeded, match="max-cost"):
        budget.reserve(200)
    assert budget.spent == pytest.approx(0.0009)
    with pytest.raises(ConfigError, match="price"):
        Budget(ModelPrice(None, "unknown"), cap=1.0)


def test_cache_keeps_vectors_and_spend_across_opens(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    keys = [text_key("m", t) for t in ("a", "b", "c")]
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put("m", keys[:2], vecs[:2], job="j", tokens=7, cost=0.25, seconds=1.0, items=3)
    cache.set_dimension("m", 4)
    cache.close()
    cache = EmbeddingCache(path)
    got, found = cache.get_many([keys[1], keys[2], keys[0], keys[1]], 4)
    assert found.tolist() == [True, False, True, True]
    assert np.array_equal(got[0], vecs[1]) and np.array_equal(got[2], vecs[0])
    spent = cache.spent("j")
    assert (spent.calls, spent.items, spent.tokens, spent.cost) == (1, 3, 7, 0.25)
    assert cache.spent("other").calls == 0
    assert cache.dimension("m") == 4 and cache.cached("m") == 2
    assert text_key("m", "a") != text_key("n", "a")
    cache.close()


def test_dead_letters_keep_one_line_per_id(tmp_path: Path) -> None:
    dead = DeadLetters(tmp_path / "d.jsonl", model="m", field="document")
    dead.add(["a", "b"], ["no text", "empty"])
    dead.add(["a"], ["no text"])  # a batch re-sent after a crash
    with (tmp_path / "d.jsonl").open("a") as fh:
        fh.write('{"id": "torn')
    assert dead.compact() == 2
    lines = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["b", "a"]


def _picky(texts: list[str]) -> np.ndarray:
    if any("bad" in t for t in texts):
        raise ValueError("cannot embed 'bad'")
    return hashing(texts)


def _broken(texts: list[str]) -> np.ndarray:
    raise RuntimeError("model file is corrupt")


def test_callable_failures_are_isolated_or_raised() -> None:
    picky = CallableProvider(ModelRef.parse("python:x:picky"), fn=_picky)
    texts = [f"text {i}" for i in range(16)]
    texts[3], texts[11] = "bad one", "also bad"
    out = embed_isolating(picky, texts)
    assert sorted(out.errors) == [3, 11] and out.ok.sum() == 14
    assert "cannot embed" in out.errors[3]
    assert np.allclose(out.vectors[0], hashing(["text 0"])[0])
    broken = CallableProvider(ModelRef.parse("python:x:broken"), fn=_broken)
    with pytest.raises(EmbeddingFailed, match="corrupt"):
        embed_isolating(broken, texts)


def _transform(tmp_path: Path, **kw: str) -> ReembedTransform:
    return ReembedTransform(
        open_provider(HASHING),
        cache=EmbeddingCache(tmp_path / "c.sqlite"),
        job="j",
        dead_letter=tmp_path / "d.jsonl",
        budget=Budget(ModelPrice(0.0, "t"), None),
        **kw,  # type: ignore[arg-type]
    )


def test_transform_spec_replaces_or_adds_the_vector_field(tmp_path: Path) -> None:
    spec = make_spec(dim=8)
    t = _transform(tmp_path)
    out = t.spec(spec)
    assert [(v.name, v.dim, v.embedding_model) for v in out.vectors] == [("vector", 256, HASHING)]
    assert spec.vector().dim == 8  # the source spec is not modified
    added = _transform(tmp_path / "b", vector_field="vector_v2").spec(spec)
    assert [v.name for v in added.vectors] == ["vector", "vector_v2"]
    batch = make_batch(spec, 0, 10)
    res = t.apply(batch)
    assert res.num_rows == 10 and res.schema.field("vector").type.list_size == 256
    docs = batch.column("document").to_pylist()
    assert np.allclose(vectors_numpy(res.column("vector")), hashing(docs), atol=1e-6)
    with pytest.raises(ConfigError, match="not text"):
        _transform(tmp_path / "c", text_field="rank").spec(spec)
    with pytest.raises(ConfigError, match="keeps no documents"):
        _transform(tmp_path / "d").spec(make_spec(dim=8, documents=False))
    spec2 = spec.model_copy(deep=True)
    spec2.metadata.append(MetadataField(name="title", type=MetadataType.STRING))
    t2 = _transform(tmp_path / "e", text_field="title")
    t2.spec(spec2)
    titled = batch.append_column("title", pa.array(["x"] * 9 + [None]))
    assert t2.apply(titled).num_rows == 9
    t.close()
    t2.close()


def test_ratio_estimate_interval_covers_the_truth() -> None:
    rng = np.random.default_rng(5)
    chars = rng.integers(20, 2_000, size=20_000)
    tokens = np.maximum(1, (chars / rng.uniform(3.0, 5.0, size=chars.size))).astype(np.int64)
    truth = tokens.sum()
    covered = 0
    for _ in range(200):
        pick = rng.choice(chars.size, 300, replace=False)
        total, half = ratio_estimate(
            tokens[pick].astype(float), chars[pick], float(chars.sum()), chars.size
        )
        covered += total - half <= truth <= total + half
    assert covered >= 180  # about 95% of 95% intervals hold the true total
    full, half = ratio_estimate(tokens.astype(float), chars, float(chars.sum()), chars.size)
    assert full == pytest.approx(truth) and half == 0.0


def test_padded_tokens_follow_the_batch_structure() -> None:
    chars = np.array([10, 10, 10, 100, -1])  # -1: no text
    # one model batch of 4 padded to the longest (100 chars -> 100 tokens at 1 token/char)
    assert padded_tokens(chars, (0.0, 1.0), batch=10, call=10, model_batch=4, cap=None) == 400
    assert padded_tokens(chars, (0.0, 1.0), batch=10, call=10, model_batch=4, cap=50) == 200
    # model batches of 2: (100, 10) and (10, 10)
    assert padded_tokens(chars, (0.0, 1.0), batch=10, call=10, model_batch=2, cap=None) == 220
