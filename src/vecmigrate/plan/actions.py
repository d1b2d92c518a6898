"""The operations steps are made of: copy, validate, back up, route, probe, switch."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from vecmigrate.connectors.base import Connector, IfExists
from vecmigrate.connectors.registry import connect, connect_writer
from vecmigrate.engine.copy import CopyJob, CopyOptions, CopyResult
from vecmigrate.engine.mapping import map_spec
from vecmigrate.engine.transforms import BatchTransform
from vecmigrate.errors import Unsupported
from vecmigrate.plan.model import Phased, Segment
from vecmigrate.plan.segments import SegmentView, Throttle, chain
from vecmigrate.plan.steps import Context, StepFailed
from vecmigrate.routing.phase import ORDER, Phase
from vecmigrate.routing.router import Router, RouterConfig
from vecmigrate.routing.triggers import Fired, TriggerConfig, evaluate
from vecmigrate.spec import ID, CollectionSpec
from vecmigrate.uri import ConnectorURI
from vecmigrate.validate.parity import QuerySample
from vecmigrate.validate.run import (
    Thresholds,
    ValidateOptions,
    ValidationResult,
    validate_connectors,
)

MAX_LISTED_IDS = 20


# -- copies ------------------------------------------------------------------------------------
def embedding_transform(ctx: Context, source: str, target: str) -> Any:
    """The plan's re-embedding transform (or None); the caller closes it."""
    emb = ctx.plan.embedding
    if emb is None:
        return None
    from vecmigrate.embed.cache import EmbeddingCache
    from vecmigrate.embed.cost import Budget, price_of
    from vecmigrate.embed.providers import open_provider
    from vecmigrate.embed.transform import ReembedTransform

    job = f"plan-{ctx.plan.name}"
    provider = open_provider(emb.model, url=emb.url, key_env=emb.key_env)
    cache = EmbeddingCache(ctx.sub("embed") / "embed-cache.sqlite")
    try:
        price = price_of(provider.ref.canonical, override=emb.usd_per_mtok)
        budget = Budget(price, emb.max_cost, spent=cache.spent(job).cost)
    except BaseException:
        cache.close()
        provider.close()
        raise
    return ReembedTransform(
        provider,
        cache=cache,
        job=job,
        dead_letter=ctx.sub("embed") / "dead-letter.jsonl",
        budget=budget,
        text_field=emb.text_field,
        vector_field=emb.vector_field,
    )


def run_copy(
    ctx: Context,
    source: str,
    target: str,
    label: str,
    *,
    transform: BatchTransform | None = None,
    throttle: bool = True,
    reembed: bool = False,
    if_exists: IfExists = IfExists.REUSE,
    restart: bool = False,
) -> dict[str, Any]:
    """A checkpointed copy with its own ledger folder (resumes after a crash)."""
    copy = ctx.plan.copy_
    embed = embedding_transform(ctx, source, target) if reembed else None
    limit = Throttle(copy.max_rows_per_s) if throttle and copy.max_rows_per_s else None
    options = CopyOptions(
        batch_size=copy.batch_size,
        workers=copy.workers,
        state_dir=ctx.sub("copies", label),
        if_exists=if_exists,
        restart=restart,
        transform=chain([transform, embed, limit]),
    )
    ctx.say(f"copy {label}: {ConnectorURI.parse(source)} -> {ConnectorURI.parse(target)}")
    try:
        result = CopyJob(source, target, options).run()
    finally:
        if embed is not None:
            embed.close()
    return copy_evidence(result)


def copy_evidence(result: CopyResult) -> dict[str, Any]:
    d = result.as_dict()
    keep = (
        "rows",
        "rows_this_run",
        "resumed",
        "already_complete",
        "elapsed_s",
        "rows_per_s",
        "source_count",
        "target_count",
        "content_hash",
        "ledger",
    )
    out = {k: d[k] for k in keep}
    out["mapping_lost"] = d["mapping"]["lost"]
    out["mapping_converted"] = d["mapping"]["converted"]
    return out


def planned_spec(ctx: Context, source: Connector, target: Connector) -> CollectionSpec:
    spec = source.describe()
    if ctx.plan.embedding is not None:
        embed = embedding_transform(ctx, ctx.plan.source, ctx.plan.target)
        try:
            spec = embed.spec(spec)
        finally:
            embed.close()
    mapped, _ = map_spec(spec, target.capabilities, target=target.uri.scheme)
    return mapped


def create_target(ctx: Context) -> dict[str, Any]:
    """Create the target from the mapped spec (an existing one is reused or replaced)."""
    with connect(ctx.plan.source) as source, connect(ctx.plan.target) as target:
        spec = planned_spec(ctx, source, target)
        existed = target.exists()
        mode = IfExists(ctx.plan.mapping.if_exists)
        if existed and mode is IfExists.REPLACE and ctx.state.get("target_replaced"):
            mode = IfExists.REUSE  # replaced once already: a re-run must not wipe copied rows
        target.create(spec, mode)
        if existed and mode is IfExists.REPLACE:
            ctx.state.put("target_replaced", True)
        return {"existed": existed, "if_exists": mode.value, "spec": spec.to_dict()}


# -- backups -----------------------------------------------------------------------------------
def backup(ctx: Context, uri: str, label: str) -> dict[str, Any]:
    """Export a collection to the dataset format under ``STATE_DIR/backups/LABEL``."""
    folder = ctx.sub("backups", label)
    dataset = f"parquet://{folder.resolve()}"
    ctx.say(f"backup of {ConnectorURI.parse(uri)} -> {folder}")
    result = run_copy(ctx, uri, dataset, f"backup-{label}", throttle=False)
    return {"backup": str(folder), "dataset_uri": dataset, **result}


def backup_target(ctx: Context) -> dict[str, Any]:
    """Back up an existing, non-empty target before the plan writes into it."""
    with connect(ctx.plan.target) as target:
        if not target.exists():
            return {"skipped": "the target does not exist yet: nothing to overwrite"}
        try:
            rows = target.count()
        except Unsupported:
            rows = None
    if rows == 0:
        return {"skipped": "the target exists but is empty: nothing to overwrite"}
    if ctx.plan.mapping.if_exists == "fail":
        raise StepFailed("the target exists and mapping.if_exists is fail", {"rows": rows})
    return backup(ctx, ctx.plan.target, "target-before")


# -- validation --------------------------------------------------------------------------------
def _trim(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _trim(v) for k, v in value.items() if k != "recall_distribution"}
    if isinstance(value, list) and len(value) > MAX_LISTED_IDS:
        return [*value[:MAX_LISTED_IDS], f"... {len(value) - MAX_LISTED_IDS} more"]
    return value


def validation_options(ctx: Context) -> ValidateOptions:
    v = ctx.plan.validation
    return ValidateOptions(
        queries=v.queries,
        k=v.k,
        check_cmds=list(v.check_cmds),
        thresholds=Thresholds(min_recall=v.min_recall, max_latency_ratio=v.max_latency_ratio),
    )


def run_validation(ctx: Context, label: str, segment: Segment | None = None) -> dict[str, Any]:
    """Validate the target against the source (one segment of each, or all); fail the step
    when any check fails. The full result is kept in ``STATE_DIR/validations/LABEL.json``."""
    opts = validation_options(ctx)
    started = time.perf_counter()
    with connect(ctx.plan.source) as source, connect(ctx.plan.target) as target:
        left: Connector = source
        right: Connector = target
        if segment is not None:
            strategy = ctx.plan.strategy
            assert isinstance(strategy, Phased)
            left = SegmentView(source, strategy.segment_field, segment, strategy.segments)
            right = SegmentView(target, strategy.segment_field, segment, strategy.segments)
        if ctx.plan.embedding is not None:
            result = _validate_reembedded(left, right, started)
        else:
            result = validate_connectors(left, right, opts, started)
    data = _trim(result.as_dict())
    data["label"] = label
    data["at"] = time.time()
    path = ctx.sub("validations") / f"{label.replace(':', '-')}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)
    evidence = {
        "verdict": data["verdict"],
        "failed_checks": data["failed_checks"],
        "checks": {name: _check_summary(c) for name, c in data["checks"].items()},
        "report": str(path),
    }
    if not result.passed:
        raise StepFailed(f"validation failed: {', '.join(result.failures)}", evidence)
    return evidence


def _check_summary(check: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "passed",
        "source_count",
        "target_count",
        "queries",
        "k",
        "mean_recall",
        "p95_ratio",
        "skipped",
        "differ",
        "missing_fields",
    )
    out = {k: check[k] for k in keys if k in check}
    for k in ("missing_in_target", "extra_in_target", "duplicates_in_target"):
        if k in check:
            out[k] = check[k]["count"]
    if "vectors_differ" in check:
        out["vectors_differ"] = sum(v["count"] for v in check["vectors_differ"].values())
    return out


def _validate_reembedded(source: Connector, target: Connector, started: float) -> ValidationResult:
    """Vectors were recomputed by a new model: check ids and metadata, not vectors."""
    from vecmigrate.plan.segments import VectorlessView
    from vecmigrate.validate.completeness import check_completeness

    spec = source.describe().model_copy(update={"vectors": []})
    report = check_completeness(VectorlessView(source), VectorlessView(target), spec)
    full = report.as_dict()
    checks = {
        "completeness": {**full, "passed": report.passed},
        "query_parity": {
            "passed": True,
            "skipped": "vectors were re-embedded: compare "
            "retrieval with vecmigrate validate --old-embed/--new-embed",
        },
    }
    return ValidationResult(
        source=source.uri.redacted(),
        target=target.uri.redacted(),
        checks=checks,
        elapsed_s=time.perf_counter() - started,
    )


# -- routing -----------------------------------------------------------------------------------
def trigger_config(ctx: Context, *, whole_collection: bool = True) -> TriggerConfig:
    """The plan's bounds; parity and count drift only when both sides hold the same rows
    (in a phased migration the new side holds only the routed segments)."""
    r = ctx.plan.rollback
    return TriggerConfig(
        max_error_rate=r.max_error_rate,
        max_latency_ratio=r.max_latency_ratio,
        min_parity=r.min_parity if whole_collection else None,
        max_count_drift=r.max_count_drift if whole_collection else None,
        window_s=r.window,
        min_samples=r.min_samples,
    )


@contextlib.contextmanager
def open_router(ctx: Context, *, whole_collection: bool = True) -> Iterator[Router]:
    """The router on the plan's shared state file (applications' routers read the same)."""
    old, new = connect_writer(ctx.plan.source), connect_writer(ctx.plan.target)
    router = Router(
        old,
        new,
        RouterConfig(
            state_path=ctx.plan.router_state,
            triggers=trigger_config(ctx, whole_collection=whole_collection),
        ),
    )
    try:
        yield router
    finally:
        router.flush(timeout=30)
        router.close()
        old.close()
        new.close()


def advance(router: Router, phase: Phase, actor: str, *, force: bool = False, **kw: Any) -> None:
    """Move the router forward to ``phase`` one phase at a time (nothing if already there)."""
    current = router.phase
    if ORDER.index(current) > ORDER.index(phase):
        raise StepFailed(f"the router is at {current.value}, past {phase.value}")
    if current is phase and not kw:
        return
    if force:
        router.set_phase(phase, actor=actor, force=True, **kw)
        return
    while ORDER.index(router.phase) < ORDER.index(phase) - 1:
        router.set_phase(ORDER[ORDER.index(router.phase) + 1], actor=actor)
    router.set_phase(phase, actor=actor, **kw)


def check_not_rolled_back(ctx: Context, router: Router) -> None:
    """Refuse to move traffic again after a rollback until the operator says so."""
    ack = float(ctx.state.get("rollback_ack_at", 0.0))
    events = [e for e in router.state.audit() if e["event"] == "rollback" and e["at"] > ack]
    flag = ctx.state.get("rolled_back")
    if flag and float(flag.get("at", 0)) > ack:
        events.append({"at": flag["at"], "actor": "plan", "evidence": flag})
    if not events:
        return
    if ctx.after_rollback:
        ctx.state.put(
            "rollback_ack_at", time.time(), actor=ctx.actor, event="rollback-acknowledged"
        )
        return
    last = events[-1]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["at"]))
    raise StepFailed(
        f"traffic was rolled back at {when} by {last['actor']} ({last['evidence']}); after "
        "fixing the cause, run again with --after-rollback to move traffic again",
        {"rollback": last},
    )


def sample_queries(
    ctx: Context, uri: str, n: int, key: str, segment: Segment | None = None
) -> tuple[list[Any], np.ndarray]:
    """``n`` stored vectors to use as queries (sampled from the first rows; cached)."""
    path = ctx.sub("queries") / f"{key}.npz"
    if path.exists():
        saved = np.load(path, allow_pickle=False)
        return [str(i) for i in saved["ids"]], saved["vectors"]
    with connect(uri) as conn:
        conn_view: Connector = conn
        if segment is not None:
            strategy = ctx.plan.strategy
            assert isinstance(strategy, Phased)
            conn_view = SegmentView(conn, strategy.segment_field, segment, strategy.segments)
        vf = conn.describe().vector()
        sample = QuerySample(n, vf.name, seed=7)
        scanned = 0
        for part in conn_view.partitions(1):
            for sb in conn_view.scan(part, None, 2_000):
                sample.add(sb.batch)
                scanned += sb.batch.num_rows
                if scanned >= max(20 * n, 20_000):
                    break
    ids, vectors = [str(i) for i in sample.ids], sample.vectors.astype(np.float32)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, ids=np.array(ids), vectors=vectors)
    tmp.replace(path)
    return ids, vectors


def probe(
    ctx: Context, router: Router, label: str, *, segment: Segment | None = None
) -> dict[str, Any]:
    """Send sampled queries through the router, wait for shadow comparisons, check triggers.

    A fired trigger rolls the router back (it does so itself) and fails the step.
    """
    n = ctx.plan.routing.probe_queries
    k = ctx.plan.validation.k
    if n == 0:
        return {"probes": 0}
    _, vectors = sample_queries(ctx, ctx.plan.source, n, label, segment)
    new_ops_before = router.evidence.totals["new_ops"]
    phase_before = router.phase
    seg_name = segment.name if segment is not None else None
    for i, q in enumerate(vectors):
        key = f"{label}-{i}-{uuid.uuid4().hex[:8]}"
        router.query(q[None, :], k, segment=seg_name, request_key=key)
    if phase_before in (Phase.SHADOW, Phase.CANARY):
        # every query reaches the new side once: served there, or mirrored (best effort)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if router.evidence.totals["new_ops"] - new_ops_before >= len(vectors):
                break
            time.sleep(0.02)
    fired = evaluate(router.config.triggers, router.evidence, None)
    metrics = router.metrics()
    evidence = {"probes": len(vectors), "phase": router.phase.value, "metrics": metrics}
    if fired is not None and router.phase is phase_before:
        router.rollback(fired, actor="trigger")
    if fired is None and ORDER.index(router.phase) < ORDER.index(phase_before):
        last = [e for e in router.state.audit() if e["event"] == "rollback"][-1:]
        info = dict(last[0]["evidence"]) if last else {}
        fired = Fired(str(info.pop("trigger", "unknown")), info)
    if fired is not None:
        why = fired.trigger
        evidence["trigger"] = {"name": why, **fired.evidence}
        evidence["phase"] = router.phase.value
        ctx.state.put(
            "rolled_back",
            {"at": time.time(), "step": label, "trigger": why, "evidence": evidence["trigger"]},
            actor="trigger",
            event="rollback",
        )
        raise StepFailed(
            f"rollback trigger {why} fired at {label}: traffic is back on old", evidence
        )
    return evidence


def _table_len(batch: pa.RecordBatch) -> int:
    return int(batch.num_rows)


def reconcile(ctx: Context, rounds: int = 3) -> dict[str, Any]:
    """Re-read from the source the ids a completeness check finds missing or different in
    the target (writes that raced the copy), and delete ids the source no longer has."""
    from vecmigrate.validate.completeness import check_completeness

    repaired = deleted = 0
    with connect(ctx.plan.source) as source, connect(ctx.plan.target) as target:
        spec = source.describe()
        target_spec = target.describe()
        for _ in range(rounds):
            report = check_completeness(source, target, spec)
            bad = set(report.missing.ids)
            for diff in [*report.vector_diffs.values(), *report.metadata_diffs.values()]:
                bad.update(diff.ids)
            extra = list(report.extra.ids)
            if not bad and not extra:
                break
            if bad and source.capabilities.fetch:
                ids: list[Any] = sorted(bad, key=str)
                if spec.id_type == "int64":
                    ids = [int(i) for i in ids]
                from vecmigrate.engine.transforms import to_target
                from vecmigrate.records import conform

                rows = conform(source.fetch(ids), spec)
                target.upsert(to_target(rows, spec, target_spec))
                repaired += _table_len(rows)
            if extra and target.capabilities.delete:
                target.delete([int(i) for i in extra] if spec.id_type == "int64" else extra)
                deleted += len(extra)
    return {"repaired": repaired, "deleted": deleted, "ids_column": ID}
