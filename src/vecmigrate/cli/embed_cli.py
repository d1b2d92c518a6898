"""CLI pieces for re-embedding: ``copy --embed``, ``estimate``, ``validate --old/--new-embed``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from vecmigrate.cli import output
from vecmigrate.embed.cache import EmbeddingCache
from vecmigrate.embed.cost import Budget, price_of
from vecmigrate.embed.providers import open_provider
from vecmigrate.embed.transform import ReembedTransform
from vecmigrate.engine.copy import ledger_path
from vecmigrate.errors import ConfigError
from vecmigrate.spec import DOCUMENT
from vecmigrate.uri import ConnectorURI

T = TypeVar("T")

Embed = Annotated[
    str | None,
    typer.Option(
        "--embed",
        help="Re-embed with this model: sentence-transformers:NAME_OR_PATH, openai:MODEL "
        "or python:module:function (options after '?', e.g. ?batch=64).",
    ),
]
EmbedUrl = Annotated[
    str | None,
    typer.Option("--embed-url", help="Base URL of an OpenAI-compatible endpoint (openai:)."),
]
EmbedKeyEnv = Annotated[
    str,
    typer.Option("--embed-key-env", help="Environment variable holding the endpoint's API key."),
]
TextField = Annotated[str, typer.Option("--text-field", help="Field holding the text to embed.")]
VectorFieldOpt = Annotated[
    str | None,
    typer.Option(
        "--vector-field",
        help="Target vector field for the new embeddings (default: the source's first).",
    ),
]
MaxCost = Annotated[
    float | None,
    typer.Option("--max-cost", min=0, help="Stop before spending more than this (USD)."),
]
DeadLetter = Annotated[
    Path | None,
    typer.Option("--dead-letter", help="JSONL file for rows that cannot be embedded."),
]
EmbedCache = Annotated[
    Path | None,
    typer.Option(
        "--embed-cache",
        help="Embedding cache (SQLite); default STATE_DIR/embed-cache.sqlite.",
        envvar="VECMIGRATE_EMBED_CACHE",
    ),
]
Price = Annotated[
    float | None,
    typer.Option("--price", min=0, help="Price in USD per million tokens (overrides tables)."),
]
Prices = Annotated[
    Path | None, typer.Option("--prices", help="A price table (TOML) overriding the shipped one.")
]


@dataclass
class EmbedOptions:
    """What ``copy --embed ...`` was given; builds the transform and keeps its report."""

    model: str
    url: str | None = None
    key_env: str = "OPENAI_API_KEY"
    text_field: str = DOCUMENT
    vector_field: str | None = None
    max_cost: float | None = None
    dead_letter: Path | None = None
    cache: Path | None = None
    price: float | None = None
    prices: Path | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def transform(
        self, source: str, target: str, state_dir: Path, *, restart: bool
    ) -> ReembedTransform:
        ledger = ledger_path(state_dir, ConnectorURI.parse(source), ConnectorURI.parse(target))
        job = ledger.stem
        dead = self.dead_letter or ledger.with_name(f"{job}.dead-letter.jsonl")
        if restart:
            dead.unlink(missing_ok=True)
        provider = open_provider(self.model, url=self.url, key_env=self.key_env)
        cache = EmbeddingCache(self.cache or state_dir / "embed-cache.sqlite")
        try:
            price = price_of(provider.ref.canonical, prices=self.prices, override=self.price)
            budget = Budget(price, self.max_cost, spent=cache.spent(job).cost)
        except BaseException:
            cache.close()
            provider.close()
            raise
        return ReembedTransform(
            provider,
            cache=cache,
            job=job,
            dead_letter=dead,
            budget=budget,
            text_field=self.text_field,
            vector_field=self.vector_field,
        )

    def finish(self, transform: ReembedTransform) -> None:
        try:
            self.report = transform.report()
        finally:
            transform.close()


def embed_options(
    embed: str | None,
    *,
    url: str | None,
    key_env: str,
    text_field: str,
    vector_field: str | None,
    max_cost: float | None,
    dead_letter: Path | None,
    cache: Path | None,
    price: float | None,
    prices: Path | None,
) -> EmbedOptions | None:
    """The re-embedding options of ``copy``, or None without ``--embed`` (refusing strays)."""
    if embed is None:
        given = {
            "--embed-url": url,
            "--vector-field": vector_field,
            "--max-cost": max_cost,
            "--dead-letter": dead_letter,
            "--price": price,
        }
        stray = [k for k, v in given.items() if v is not None]
        if text_field != DOCUMENT:
            stray.append("--text-field")
        if stray:
            raise ConfigError(f"{', '.join(stray)} only apply with --embed")
        return None
    return EmbedOptions(
        model=embed,
        url=url,
        key_env=key_env,
        text_field=text_field,
        vector_field=vector_field,
        max_cost=max_cost,
        dead_letter=dead_letter,
        cache=cache,
        price=price,
        prices=prices,
    )


def embed_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """Human-readable lines of a re-embedding report."""
    run = report["this_run"]
    total = report["job_total"]
    rows: list[tuple[str, Any]] = [
        ("model", f"{report['model']} -> field {report['vector_field']} "
                  f"(dim {report['dim']}, {report['metric']})"),
        ("texts", f"{run['embedded']:,} embedded, {run['cache_hits']:,} from cache "
                  f"({report['model_texts_per_s']:,} texts/s in the model)"),
        ("spend", f"{run['cost_usd']:.6f} USD this run, {total['cost_usd']:.6f} USD in all "
                  f"({total['texts_embedded']:,} texts, {total['tokens']:,} tokens)"),
    ]  # fmt: skip
    if report["dead_lettered"]:
        rows.append(
            ("dead-lettered", f"{report['dead_lettered']:,} rows -> {report['dead_letter_file']}")
        )
    if report.get("http_retries") and any(report["http_retries"].values()):
        rows.append(("retries", ", ".join(f"{k}: {v}" for k, v in report["http_retries"].items())))
    return rows


def print_embed_report(report: dict[str, Any]) -> None:
    output.key_values("re-embedding", embed_rows(report))


def with_reembedding(
    embedding: EmbedOptions | None,
    source: str,
    target: str,
    state_dir: Path,
    restart: bool,
    run: Callable[[ReembedTransform | None], T],
) -> T:
    """Run a copy body with the re-embedding transform (if any), then keep its report."""
    if embedding is None:
        return run(None)
    transform = embedding.transform(source, target, state_dir, restart=restart)
    try:
        return run(transform)
    finally:
        embedding.finish(transform)


def emit_copy_with_embedding(
    payload: dict[str, Any], embedding: EmbedOptions, as_json: bool
) -> None:
    """The re-embedding part of copy's output (the copy part is printed by the caller)."""
    if as_json:
        output.emit_json({**payload, "embedding": embedding.report})
    elif embedding.report:
        print_embed_report(embedding.report)


# -- estimate --------------------------------------------------------------------------------
def estimate(
    source: Annotated[str, typer.Argument(help="Source URI")],
    embed: Embed = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Target URI (existing rows, limits).")
    ] = None,
    text_field: TextField = DOCUMENT,
    vector_field: VectorFieldOpt = None,
    sample: Annotated[
        int, typer.Option("--sample", min=10, help="Texts tokenized to extrapolate tokens.")
    ] = 2_000,
    calibration: Annotated[
        int, typer.Option("--calibration", min=8, help="Texts embedded to measure speed.")
    ] = 512,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows per read batch (as in copy).")
    ] = 5_000,
    price: Price = None,
    prices: Prices = None,
    embed_url: EmbedUrl = None,
    embed_key_env: EmbedKeyEnv = "OPENAI_API_KEY",
    embed_cache: EmbedCache = None,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", envvar="VECMIGRATE_STATE_DIR", help="Checkpoints.")
    ] = Path(".vecmigrate"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Estimate a migration before running it: tokens (with a 95% interval), embedding cost,
    compute time measured on this machine, storage of both copies, and a timeline."""
    from vecmigrate.cli.app import _run
    from vecmigrate.embed.estimate import EstimateOptions
    from vecmigrate.embed.estimate import estimate as run_estimate

    def body() -> dict[str, Any]:
        opts = EstimateOptions(
            text_field=text_field,
            vector_field=vector_field,
            sample=sample,
            calibration=calibration,
            batch_size=batch_size,
            price=price,
            prices=prices,
            cache=embed_cache or state_dir / "embed-cache.sqlite",
        )
        provider = open_provider(embed, url=embed_url, key_env=embed_key_env) if embed else None
        try:
            return run_estimate(source, provider, opts, target_uri=target)
        finally:
            if provider is not None:
                provider.close()

    info = _run(as_json, body)
    if as_json:
        output.emit_json(info)
        return
    rows: list[tuple[str, Any]] = [
        ("rows", f"{info['rows']:,} (read at {info['read']['rows_per_s'] or 0:,.0f} rows/s)")
    ]
    if "tokens" in info:
        tok, cost, comp = info["tokens"], info["cost"], info["compute"]
        lo, hi = tok["ci95"]
        rows += [
            ("texts", f"{info['text_rows']:,} ({info['rows_without_text']:,} without text)"),
            ("tokens", f"{tok['estimate']:,} (95%: {lo:,} - {hi:,}; {tok['method']})"),
            (
                "cost",
                "unknown: pass --price"
                if cost["usd"] is None
                else f"{cost['usd']:.4f} USD at {cost['usd_per_mtok']} USD/M tokens "
                f"(95%: {cost['usd_ci95'][0]:.4f} - {cost['usd_ci95'][1]:.4f})",
            ),
            (
                "compute",
                f"{comp['embed_seconds']:,.1f} s for {comp['texts_to_embed']:,} texts "
                f"(calibrated: {comp['calibration']['texts_per_s']} texts/s on this machine)",
            ),
        ]
    st = info["storage"]
    rows += [
        ("storage", f"source {st['source_gb']:.3f} GB, target {st['target_gb']:.3f} GB, "
                    f"both during transition {st['during_transition_gb']:.3f} GB"),
    ]  # fmt: skip
    rows += [
        (f"+{step['starts_at_s']:,.0f}s", f"{step['phase']}: {step['seconds']:,.1f} s")
        for step in info["timeline"]
    ]
    rows.append(("total", f"{info['total_seconds']:,.1f} s"))
    output.key_values(f"vecmigrate estimate {info['source']}", rows)


# -- validate with two models ----------------------------------------------------------------
@dataclass
class ModelValidation:
    """What ``validate --old-embed M1 --new-embed M2`` was given."""

    old_model: str
    new_model: str
    queries: Path
    qrels: Path | None = None
    k: int = 10
    max_drop: float = 0.0
    min_overlap: float = 0.5
    url: str | None = None
    key_env: str = "OPENAI_API_KEY"
    old_field: str | None = None
    new_field: str | None = None
    adapter: Path | None = None
    adapter_kind: str = "ridge"
    adapter_sample: int = 2_000
    text_field: str = DOCUMENT


def validate_models(source: str, target: str, opts: ModelValidation) -> dict[str, Any]:
    """Retrieval of the old model on SOURCE vs the new model on TARGET; optional adapter."""
    from vecmigrate.connectors.registry import connect
    from vecmigrate.embed.adapter import evaluate_adapter, fit_adapter, sample_documents
    from vecmigrate.embed.quality import compare_models, load_query_texts, run_queries
    from vecmigrate.validate.accuracy import load_qrels

    queries = load_query_texts(opts.queries)
    qrels = load_qrels(opts.qrels) if opts.qrels is not None else None
    if opts.adapter is not None and qrels is None:
        raise ConfigError("--adapter is judged on labelled queries: pass --qrels")
    old = open_provider(opts.old_model, url=opts.url, key_env=opts.key_env)
    new = open_provider(opts.new_model, url=opts.url, key_env=opts.key_env)
    try:
        with connect(source) as src, connect(target) as tgt:
            if not (src.capabilities.query and tgt.capabilities.query):
                raise ConfigError("both collections must answer kNN queries")
            cmp = run_queries(
                src, tgt, old, new, queries, k=opts.k,
                old_field=opts.old_field, new_field=opts.new_field,
            )  # fmt: skip
            check = compare_models(cmp, qrels, max_drop=opts.max_drop, min_overlap=opts.min_overlap)
            result: dict[str, Any] = {"embedding_quality": check}
            if opts.adapter is not None and qrels is not None:
                texts, old_vecs = sample_documents(
                    src, opts.text_field, cmp.old_field, opts.adapter_sample
                )
                from vecmigrate.embed.quality import embed_queries

                new_vecs = embed_queries(new, texts)
                adapter = fit_adapter(
                    new_vecs, old_vecs, kind=opts.adapter_kind,
                    new_model=new.model_id, old_model=old.model_id,
                )  # fmt: skip
                verdict = evaluate_adapter(adapter, cmp, src, qrels)
                if verdict["beats_keeping_old_model"]:
                    adapter.save(opts.adapter)
                    verdict["file"] = str(opts.adapter)
                else:
                    verdict["file"] = None
                verdict["passed"] = True  # informative: a refused adapter is simply not written
                result["adapter"] = verdict
            return result
    finally:
        old.close()
        new.close()


def quality_rows(checks: dict[str, Any]) -> list[tuple[str, Any]]:
    q = checks["embedding_quality"]
    k = q["k"]
    rows: list[tuple[str, Any]] = [
        ("verdict", q["verdict"].upper()),
        ("models", f"{q['old_model']} ({q['old_field']}) -> {q['new_model']} ({q['new_field']})"),
        ("queries", q["queries"]),
        (f"overlap@{k}", q[f"mean_overlap_at_{k}"]),
    ]
    if q["labels"]:
        for m in q["old"]:
            rows.append((m, f"{q['old'][m]:.4f} -> {q['new'][m]:.4f} (drop {q['drop'][m]:+.4f})"))
        lo, hi = q["ndcg_at_10_change_ci95"]
        rows.append(("nDCG@10 change 95%", f"{lo:+.4f} .. {hi:+.4f}"))
        rows.append(
            ("per query", f"{q['queries_better']} better, {q['queries_worse']} worse, "
                          f"{q['queries_same']} same")
        )  # fmt: skip
    else:
        rows.append(("min overlap", q["min_overlap"]))
    for item in q["changed_most"][:5]:
        rows.append(
            (f"changed: {item['id']}", f"{item[f'overlap_at_{k}']:.2f} {item['text'][:60]!r}")
        )
    if "adapter" in checks:
        a = checks["adapter"]
        rows.append(
            ("adapter", f"{a['kind']}: nDCG@10 {a['adapter']['ndcg_at_10']:.4f} vs keep-old "
                        f"{a['keep_old_model']['ndcg_at_10']:.4f} -> {a['verdict']}"
                        + (f" ({a['file']})" if a["file"] else ""))
        )  # fmt: skip
    return rows


OldEmbed = Annotated[
    str | None,
    typer.Option("--old-embed", help="The model that made SOURCE's vectors (compare mode)."),
]
NewEmbed = Annotated[
    str | None,
    typer.Option("--new-embed", help="The model that made TARGET's vectors (compare mode)."),
]
MinOverlap = Annotated[
    float,
    typer.Option(
        "--min-overlap", min=0, max=1, help="Without --qrels: least mean top-k overlap for GO."
    ),
]
AdapterOpt = Annotated[
    Path | None,
    typer.Option(
        "--adapter",
        help="Fit a linear adapter (new-model queries -> old space) and write it here if it "
        "beats keeping the old model on the labelled queries.",
    ),
]
AdapterKind = Annotated[str, typer.Option("--adapter-kind", help="ridge or procrustes.")]
AdapterSample = Annotated[
    int, typer.Option("--adapter-sample", min=10, help="Documents the adapter is fitted on.")
]


def parse_queries(value: str) -> tuple[int, Path | None]:
    """``--queries``: a number of sampled stored vectors, or (compare mode) a query-text file."""
    text = value.strip()
    if text.isdigit():
        return int(text), None
    return 100, Path(text)


def run_model_validation(
    source: str, target: str, opts: ModelValidation, *, as_json: bool, report: Path | None = None
) -> None:
    """``validate --old-embed M1 --new-embed M2``: print the comparison, exit 3 on NO-GO."""
    import time

    from vecmigrate.cli.app import _run
    from vecmigrate.errors import ValidationFailed

    started = time.perf_counter()
    checks = _run(as_json, lambda: validate_models(source, target, opts))
    passed = all(c.get("passed", True) for c in checks.values())
    if report is not None:
        from vecmigrate.validate.html import write_report
        from vecmigrate.validate.run import ValidationResult

        write_report(
            ValidationResult(
                source=ConnectorURI.parse(source).redacted(),
                target=ConnectorURI.parse(target).redacted(),
                checks=checks,
                elapsed_s=time.perf_counter() - started,
            ),
            report,
        )
    if as_json:
        output.emit_json(
            {
                "command": "validate",
                "ok": passed,
                "verdict": "pass" if passed else "fail",
                "failed_checks": [n for n, c in checks.items() if not c.get("passed", True)],
                "source": ConnectorURI.parse(source).redacted(),
                "target": ConnectorURI.parse(target).redacted(),
                "checks": checks,
            }
        )
    else:
        output.key_values(f"vecmigrate validate {source} -> {target}", quality_rows(checks))
    if not passed:
        output.stderr.print("[bold red]validation failed[/]: embedding_quality (NO-GO)")
        raise typer.Exit(ValidationFailed.exit_code)
