"""``rollback --rehearse``: run the rollback path against a scratch copy, and validate it.

The rehearsal copies (a sample of) the old side into a scratch collection in the old side's
system, backs that up to the dataset format and restores it (the path a damaged old side would
take), switches traffic back on the scratch copy the way the real rollback would (the alias,
or a scratch router state), and validates the result. Scratch objects are dropped after.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from vecmigrate.connectors.base import IfExists
from vecmigrate.connectors.registry import connect
from vecmigrate.engine.copy import CopyJob, CopyOptions
from vecmigrate.errors import VecmigrateError
from vecmigrate.plan.actions import validation_options
from vecmigrate.plan.checks import supports_alias
from vecmigrate.plan.model import BlueGreen
from vecmigrate.plan.steps import Context
from vecmigrate.plan.traffic import same_system
from vecmigrate.records import vectors_numpy
from vecmigrate.routing.phase import Phase
from vecmigrate.routing.router import Router, RouterConfig
from vecmigrate.uri import ConnectorURI
from vecmigrate.validate.run import validate

NAME_OPTIONS = ("table", "collection", "key")


def scratch_uri(uri: str, suffix: str) -> str:
    """A sibling of ``uri`` in the same system: the name option or path with ``_suffix``."""
    u = ConnectorURI.parse(uri)
    for opt in NAME_OPTIONS:
        if opt in u.options:
            return replace(u, options={**u.options, opt: f"{u.options[opt]}_{suffix}"}).redacted()
    return replace(u, path=f"{u.path.rstrip('/')}-{suffix}").redacted()


def _scratch_copy(ctx: Context, scratch: str, limit: int | None) -> int:
    batch = ctx.plan.copy_.batch_size
    rows = 0
    with connect(ctx.plan.source) as old, connect(scratch) as target:
        spec = old.describe()
        target.create(spec, IfExists.REPLACE)
        target.begin("rehearsal", resume=False)
        for part in old.partitions(1):
            for sb in old.scan(part, None, batch):
                piece = sb.batch if limit is None else sb.batch.slice(0, limit - rows)
                if piece.num_rows:
                    target.upsert(piece)
                    rows += piece.num_rows
                if limit is not None and rows >= limit:
                    break
        target.finalize(spec)
    return rows


def _round_trip(scratch: str, folder: Path) -> str:
    """Back the scratch copy up to a dataset, drop it, restore it from the dataset."""
    dataset = f"parquet://{(folder / 'backup').resolve()}"
    ledgers = folder / "ledgers"
    opts = CopyOptions(state_dir=ledgers, restart=True, if_exists=IfExists.REPLACE)
    CopyJob(scratch, dataset, opts).run()
    with connect(scratch) as conn:
        conn.drop()
    CopyJob(dataset, scratch, opts).run()
    return dataset


def _switch_back(ctx: Context, scratch: str, folder: Path) -> dict[str, Any]:
    strategy = ctx.plan.strategy
    alias = strategy.alias if isinstance(strategy, BlueGreen) else None
    if alias and same_system(ctx.plan.source, ctx.plan.target):
        name = f"{alias}_rehearsal"
        with connect(ctx.plan.target) as green, connect(scratch) as blue:
            if supports_alias(green) and supports_alias(blue):
                green.switch_alias(name)  # type: ignore[attr-defined]
                previous = blue.switch_alias(name)  # type: ignore[attr-defined]
                blue.drop_alias(name)  # type: ignore[attr-defined]
                return {"mode": "alias", "alias": name, "moved_from": previous}
    with connect(scratch) as old, connect(ctx.plan.target) as new:
        router = Router(old, new, RouterConfig(state_path=folder / "router.sqlite"))
        try:
            router.set_phase(Phase.NEW_ONLY, actor="rehearsal", force=True)
            if ctx.plan.kind in ("big-bang", "blue-green"):
                router.set_phase(Phase.OLD_ONLY, actor="rehearsal", force=True)
            else:
                router.rollback(actor="rehearsal")
            part = old.partitions(1)[0]
            first = next(iter(old.scan(part, None, 5)))
            vf = old.describe().vector()
            queries = vectors_numpy(first.batch.column(vf.name))[:5]
            via_router = router.query(queries, 5)
            direct = old.query(queries, 5)
            same = [
                list(map(str, a)) == list(map(str, b))
                for a, b in zip(via_router.ids, direct.ids, strict=True)
            ]
            if not all(same):
                raise VecmigrateError("after the rollback the router still served the new side")
            return {
                "mode": "router",
                "phase_after": router.phase.value,
                "queries_served_by_old": int(np.sum(same)),
            }
        finally:
            router.close()


def rehearse(ctx: Context) -> dict[str, Any]:
    """Run the rehearsal; record (and return) whether it passed."""
    plan = ctx.plan
    scratch = plan.rollback.scratch or scratch_uri(plan.source, "rehearsal")
    folder = plan.state_path / "rehearsal"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    limit = plan.rollback.rehearsal_rows or None
    record: dict[str, Any] = {"scratch": ConnectorURI.parse(scratch).redacted(), "timings_s": {}}
    stage = "scratch copy"
    t0 = time.perf_counter()
    try:
        ctx.say(f"rehearsal: scratch copy of the old side in {record['scratch']}")
        record["rows"] = _scratch_copy(ctx, scratch, limit)
        record["timings_s"]["scratch_copy"] = round(time.perf_counter() - t0, 3)
        stage = "backup and restore"
        t1 = time.perf_counter()
        dataset = _round_trip(scratch, folder)
        record["timings_s"]["backup_restore"] = round(time.perf_counter() - t1, 3)
        stage = "switch back"
        t2 = time.perf_counter()
        record["switch"] = _switch_back(ctx, scratch, folder)
        record["timings_s"]["switch_back"] = round(time.perf_counter() - t2, 3)
        stage = "validation"
        reference = plan.source if limit is None else dataset
        result = validate(reference, scratch, validation_options(ctx))
        record["validation"] = {
            "verdict": "pass" if result.passed else "fail",
            "failed_checks": result.failures,
        }
        record["passed"] = result.passed
        if not result.passed:
            record["error"] = f"the restored copy failed validation: {', '.join(result.failures)}"
    except VecmigrateError as exc:
        record["passed"] = False
        record["error"] = f"{stage}: {exc.one_line()}"
    finally:
        try:
            with connect(scratch) as conn:
                if conn.exists():
                    conn.drop()
        except VecmigrateError as exc:
            record.setdefault("cleanup", f"could not drop {record['scratch']}: {exc.one_line()}")
        shutil.rmtree(folder, ignore_errors=True)
    record["elapsed_s"] = round(time.perf_counter() - t0, 3)
    record["at"] = time.time()
    ctx.state.put("rehearsal", record, actor=ctx.actor, event="rollback-rehearsal")
    return record
