"""``estimate``: tokens, money, compute time, storage and a timeline, before re-embedding.

One streamed pass over the source measures the read rate, the bytes of each copy, and the
character length of every text; a uniform sample of texts is tokenized with the model's own
tokenizer. Tokens are extrapolated with a ratio estimator on characters (known for every row),
which gives a 95% confidence interval. Compute time comes from a calibration run of sampled
texts through the provider on this machine: for local models as seconds per *padded* token,
replayed over the real batch structure of the copy (length-sorted calls of ``call_size`` texts,
model batches of ``batch_size``), so padding is accounted for.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecmigrate.connectors.base import Connector
from vecmigrate.connectors.registry import connect
from vecmigrate.embed.cache import EmbeddingCache, text_key
from vecmigrate.embed.cost import count_tokens, price_of
from vecmigrate.embed.providers import EmbeddingProvider, SentenceTransformerProvider
from vecmigrate.errors import ConfigError, Unsupported
from vecmigrate.spec import DOCUMENT, CollectionSpec

Z95 = 1.959964


@dataclass
class EstimateOptions:
    text_field: str = DOCUMENT
    vector_field: str | None = None
    sample: int = 2_000
    calibration: int = 512
    batch_size: int = 5_000  # rows per copy batch (as ``copy --batch-size``)
    price: float | None = None
    prices: Path | None = None
    cache: Path | None = None
    seed: int = 0


@dataclass
class _Scan:
    rows: int
    seconds: float
    bytes_total: int
    bytes_vector: int
    chars: np.ndarray  # per row, -1 for no text
    sample_texts: list[str]
    sample_chars: np.ndarray


def _scan(
    source: Connector, spec: CollectionSpec, opts: EstimateOptions, vector: str | None
) -> _Scan:
    """Stream every row once: sizes, text lengths, and a uniform sample of texts."""
    rng = np.random.default_rng(opts.seed)
    lengths: list[np.ndarray] = []
    keys = np.zeros(0)
    texts: list[str] = []
    bytes_total = bytes_vector = rows = 0
    started = time.perf_counter()
    for part in source.partitions(1):
        for sb in source.scan(part, None, opts.batch_size):
            batch = sb.batch
            rows += batch.num_rows
            bytes_total += batch.nbytes
            if vector is not None and vector in batch.schema.names:
                bytes_vector += batch.column(vector).nbytes
            if opts.text_field not in batch.schema.names:
                lengths.append(np.full(batch.num_rows, -1, dtype=np.int64))
                continue
            col = batch.column(opts.text_field)
            if not pa.types.is_string(col.type):
                col = pc.cast(col, pa.string())
            n_chars = pc.fill_null(pc.utf8_length(col), -1).to_numpy(zero_copy_only=False)
            blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(col), ""), True)
            n_chars = np.where(blank.to_numpy(zero_copy_only=False), -1, n_chars)
            lengths.append(n_chars.astype(np.int64))
            k = rng.random(batch.num_rows)
            k[n_chars < 0] = np.inf
            bound = np.sort(keys)[opts.sample - 1] if len(keys) >= opts.sample else np.inf
            pick = np.nonzero(k < bound)[0]
            if len(pick):
                keys = np.concatenate([keys, k[pick]])
                texts += col.take(pa.array(pick)).to_pylist()
                if len(keys) > opts.sample:
                    keep = np.argsort(keys, kind="stable")[: opts.sample]
                    keys = keys[keep]
                    texts = [texts[i] for i in keep]
    seconds = time.perf_counter() - started
    chars = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    sample = [t or "" for t in texts]
    return _Scan(
        rows=rows,
        seconds=seconds,
        bytes_total=bytes_total,
        bytes_vector=bytes_vector,
        chars=chars,
        sample_texts=sample,
        sample_chars=np.array([len(t) for t in sample], dtype=np.int64),
    )


def ratio_estimate(
    sample_tokens: np.ndarray, sample_chars: np.ndarray, total_chars: float, population: int
) -> tuple[float, float]:
    """Total tokens and the half-width of its 95% interval (ratio estimator on characters)."""
    n = len(sample_tokens)
    if n == 0 or sample_chars.sum() == 0:
        return 0.0, 0.0
    ratio = float(sample_tokens.sum() / sample_chars.sum())
    total = ratio * total_chars
    if n < 2 or population <= 1:
        return total, 0.0
    resid = sample_tokens - ratio * sample_chars
    fpc = max(0.0, 1.0 - n / population)
    se = population * math.sqrt(fpc * float(np.var(resid, ddof=1)) / n)
    return total, Z95 * se


def _token_model(tokens: np.ndarray, chars: np.ndarray) -> tuple[float, float]:
    """Least squares tokens ~ a + b * chars (b > 0), to predict a text's tokens from length."""
    if len(tokens) < 2 or np.ptp(chars) == 0:
        b = float(tokens.sum() / max(chars.sum(), 1))
        return 0.0, b
    b, a = np.polyfit(chars.astype(np.float64), tokens.astype(np.float64), 1)
    return float(a), float(max(b, 1e-6))


def padded_tokens(
    chars: np.ndarray,
    model: tuple[float, float],
    *,
    batch: int,
    call: int,
    model_batch: int,
    cap: int | None,
) -> float:
    """Tokens a local model computes, padding included, over the copy's batch structure:
    rows in copy batches of ``batch``, sorted by length, calls of ``call`` texts, model
    batches of ``model_batch`` padded to their longest text (truncated at ``cap``)."""
    a, b = model
    total = 0.0
    for start in range(0, len(chars), batch):
        block = chars[start : start + batch]
        block = np.sort(block[block >= 0])[::-1]
        for c0 in range(0, len(block), call):
            piece = block[c0 : c0 + call]
            heads = piece[::model_batch]
            sizes = np.minimum(model_batch, len(piece) - np.arange(0, len(piece), model_batch))
            longest = a + b * heads.astype(np.float64)
            if cap:
                longest = np.minimum(longest, cap)
            total += float((np.maximum(longest, 1.0) * sizes).sum())
    return total


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _calibrate(
    provider: EmbeddingProvider, texts: list[str], tokens_model: tuple[float, float]
) -> dict[str, Any]:
    """Embed ``texts`` as the copy would; seconds, texts/s and seconds per padded token.

    Calls run on worker threads, as in the copy: torch's CPU threading is not the same on the
    main thread (on a busy machine the main thread was measured 1.7x slower).
    """
    order = sorted(texts, key=len, reverse=True)
    size = provider.call_size
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    with ThreadPoolExecutor(max(1, provider.concurrency)) as pool:
        started = time.perf_counter()
        pool.submit(provider.embed, texts[: min(8, len(texts))]).result()  # load, warm up
        warm = time.perf_counter() - started
        started, cpu = time.perf_counter(), _cpu_seconds()
        list(pool.map(provider.embed, chunks))
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    out: dict[str, Any] = {
        "texts": len(texts),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "texts_per_s": round(len(texts) / seconds, 1) if seconds else None,
        "load_and_warmup_s": round(warm, 3),
    }
    if isinstance(provider, SentenceTransformerProvider):
        chars = np.array([len(t) for t in texts], dtype=np.int64)
        padded = padded_tokens(
            chars,
            tokens_model,
            batch=len(chars),
            call=provider.call_size,
            model_batch=provider.batch_size,
            cap=provider.max_tokens(),
        )
        out["padded_tokens"] = round(padded)
        out["seconds_per_padded_token"] = seconds / padded if padded else None
    return out


def _cached_fraction(cache: Path | None, model_id: str, texts: list[str]) -> float:
    if cache is None or not cache.is_file() or not texts:
        return 0.0
    store = EmbeddingCache(cache)
    try:
        dim = store.dimension(model_id)
        if not dim:
            return 0.0
        _, found = store.get_many([text_key(model_id, t) for t in texts], dim)
    finally:
        store.close()
    return float(found.mean())


def _gb(n: float) -> float:
    return round(n / 1e9, 6)


def estimate(
    source_uri: str,
    provider: EmbeddingProvider | None,
    options: EstimateOptions | None = None,
    *,
    target_uri: str | None = None,
) -> dict[str, Any]:
    """Everything ``vecmigrate estimate`` prints, as a dict."""
    opts = options or EstimateOptions()
    with connect(source_uri) as source:
        spec = source.describe()
        try:
            count: int | None = source.count()
        except Unsupported:
            count = None
        dense = [v for v in spec.vectors if not v.sparse]
        replaced = opts.vector_field or (dense[0].name if dense else None)
        if provider is not None and opts.text_field != DOCUMENT:
            if spec.metadata_field(opts.text_field) is None:
                raise ConfigError(f"--text-field {opts.text_field!r} is not a field of the source")
        elif provider is not None and not spec.has_document:
            raise ConfigError("the source keeps no documents: name the text with --text-field")
        scan = _scan(source, spec, opts, replaced)
    rows = scan.rows
    has_text = scan.chars >= 0
    text_rows = int(has_text.sum())
    result: dict[str, Any] = {
        "command": "estimate",
        "ok": True,
        "source": source_uri,
        "rows": rows,
        "source_count": count,
        "read": {
            "seconds": round(scan.seconds, 3),
            "rows_per_s": round(rows / scan.seconds, 1) if scan.seconds else None,
        },
    }
    timeline: list[dict[str, Any]] = []
    new_vector_bytes = 0
    old_vector_bytes = 0
    copy_s = scan.seconds
    if provider is not None:
        result["text_field"] = opts.text_field
        result["text_rows"] = text_rows
        result["rows_without_text"] = rows - text_rows
        sample_counts = count_tokens(provider, scan.sample_texts)
        total_chars = float(scan.chars[has_text].sum())
        tokens, half = ratio_estimate(
            sample_counts.counts.astype(np.float64), scan.sample_chars, total_chars, text_rows
        )
        price = price_of(provider.ref.canonical, prices=opts.prices, override=opts.price)
        cached = _cached_fraction(opts.cache, provider.model_id, scan.sample_texts)
        billable = tokens * (1.0 - cached)
        cost = price.cost(billable)
        lo, hi = (
            price.cost(max(0.0, (tokens - half) * (1 - cached))),
            price.cost((tokens + half) * (1 - cached)),
        )
        cap = provider.max_tokens()
        truncated = int((sample_counts.counts > cap).sum()) if cap else 0
        result["tokens"] = {
            "estimate": round(tokens),
            "ci95": [round(max(0.0, tokens - half)), round(tokens + half)],
            "method": sample_counts.method,
            "sample": len(scan.sample_texts),
            "mean_per_text": round(float(sample_counts.counts.mean()), 1)
            if len(sample_counts.counts)
            else 0,
            "sample_over_model_limit": truncated,
            "model_limit": cap,
        }
        result["cost"] = {
            "model": provider.model_id,
            "usd_per_mtok": price.usd_per_mtok,
            "price_source": price.source,
            "already_cached_fraction": round(cached, 4),
            "usd": None if cost is None else round(cost, 6),
            "usd_ci95": None if lo is None or hi is None else [round(lo, 6), round(hi, 6)],
        }
        calib_n = min(opts.calibration, len(scan.sample_texts))
        rng = np.random.default_rng(opts.seed + 1)
        calib_texts = [
            scan.sample_texts[i] for i in rng.choice(len(scan.sample_texts), calib_n, replace=False)
        ]
        model = _token_model(sample_counts.counts, scan.sample_chars)
        calib = _calibrate(provider, calib_texts, model)
        to_embed = text_rows * (1.0 - cached)
        if calib.get("seconds_per_padded_token"):
            assert isinstance(provider, SentenceTransformerProvider)
            padded = padded_tokens(
                scan.chars,
                model,
                batch=opts.batch_size,
                call=provider.call_size,
                model_batch=provider.batch_size,
                cap=cap,
            )
            embed_s = padded * (1.0 - cached) * calib["seconds_per_padded_token"]
            calib["seconds_per_padded_token"] = float(f"{calib['seconds_per_padded_token']:.4g}")
        else:
            rate = calib["texts_per_s"] or 1.0
            embed_s = to_embed / rate
        rel = half / tokens if tokens else 0.0
        dim = provider.dimension()
        result["compute"] = {
            "calibration": calib,
            "texts_to_embed": round(to_embed),
            "embed_seconds": round(embed_s, 1),
            "embed_seconds_ci95": [round(embed_s * (1 - rel), 1), round(embed_s * (1 + rel), 1)],
            "texts_per_s": round(to_embed / embed_s, 1) if embed_s else None,
            "dim": dim,
        }
        new_vector_bytes = text_rows * dim * 4
        old_vector_bytes = scan.bytes_vector
        load_s = float(calib["load_and_warmup_s"])
        copy_s = load_s + max(embed_s, scan.seconds)
        timeline.append({"phase": "load model", "seconds": round(load_s, 1)})
        timeline.append(
            {
                "phase": "copy with re-embedding (read, embed, write overlap)",
                "seconds": round(max(embed_s, scan.seconds), 1),
            }
        )
    else:
        timeline.append({"phase": "copy (read and write overlap)", "seconds": round(copy_s, 1)})
    target_bytes = scan.bytes_total - old_vector_bytes + new_vector_bytes
    result["storage"] = {
        "source_gb": _gb(scan.bytes_total),
        "target_gb": _gb(target_bytes),
        "during_transition_gb": _gb(scan.bytes_total + target_bytes),
        "note": "raw Arrow data sizes; indexes and engine overhead come on top",
    }
    timeline.append({"phase": "validate (read both sides)", "seconds": round(2 * scan.seconds, 1)})
    clock = 0.0
    for step in timeline:
        step["starts_at_s"] = round(clock, 1)
        clock += step["seconds"]
    result["timeline"] = timeline
    result["predicted_copy_seconds"] = round(copy_s, 1)
    result["total_seconds"] = round(clock, 1)
    if target_uri is not None:
        result["target"] = _target_info(target_uri)
    return result


def _target_info(uri: str) -> dict[str, Any]:
    with connect(uri) as target:
        info: dict[str, Any] = {"uri": target.uri.redacted()}
        try:
            info["exists"] = target.exists()
        except Unsupported:
            info["exists"] = None
        if info["exists"]:
            try:
                info["rows"] = target.count()
            except Unsupported:
                info["rows"] = None
        info["max_dim"] = target.capabilities.max_dim
        return info
