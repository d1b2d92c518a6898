"""Timeline and cost of a plan, from stated inputs and measured (or typical) rates.

Every number in the result says where it came from: ``stated`` (the plan's ``estimate:``
section), ``measured`` (read from the source by ``vecmigrate plan``), ``counted`` (the source's
own count), or ``typical`` (rates measured on a 2-core machine, see the field notes). Machine
work runs around the clock; holds (shadow, traffic steps, the backup window) are calendar time.
"""

from __future__ import annotations

import math
import time
from datetime import date, timedelta
from typing import Any

from vecmigrate.connectors.registry import connect
from vecmigrate.errors import ConfigError, Unsupported
from vecmigrate.plan.model import Phased, Plan
from vecmigrate.uri import ConnectorURI

# vectors/s measured for 100k x 384 float32 on a 2-core machine (read, write)
TYPICAL_RATES: dict[str, tuple[float, float]] = {
    "pgvector": (187_000, 54_000),
    "milvus": (12_000, 11_000),
    "milvus+lite": (12_000, 11_000),
    "qdrant+edge": (307_000, 54_000),
    "qdrant+local": (17_000, 1_000),
    "chroma": (30_000, 1_500),
    "chroma+http": (30_000, 1_500),
    "lancedb": (1_160_000, 347_000),
    "faiss": (288_000, 150_000),
    "sqlitevec": (149_000, 93_000),
    "redis": (69_000, 327),
}
ASSUMED_RATE = 10_000.0
HOURS = 3600.0


def measure_read(uri: str, *, rows: int = 20_000, batch: int = 5_000) -> dict[str, Any]:
    """Read up to ``rows`` rows from the source; count, dimension and rows/s."""
    with connect(uri) as conn:
        spec = conn.describe()
        try:
            count: int | None = conn.count()
        except Unsupported:
            count = None
        got = 0
        nbytes = 0
        started = time.perf_counter()
        for part in conn.partitions(1):
            for sb in conn.scan(part, None, batch):
                got += sb.batch.num_rows
                nbytes += sb.batch.nbytes
                if got >= rows:
                    break
        seconds = time.perf_counter() - started
    dense = [v for v in spec.vectors if not v.sparse]
    return {
        "count": count,
        "dim": dense[0].dim if dense else None,
        "rows_read": got,
        "read_rate": got / seconds if seconds > 0 and got else None,
        "bytes_per_row": nbytes / got if got else None,
    }


def _rates(plan: Plan, measured: dict[str, Any] | None) -> dict[str, tuple[float, str]]:
    src = ConnectorURI.parse(plan.source).scheme
    dst = ConnectorURI.parse(plan.target).scheme
    e = plan.estimate
    measured = measured or {}
    out: dict[str, tuple[float, str]] = {}
    if e.read_rate:
        out["read_rate"] = (e.read_rate, "stated")
    elif measured.get("read_rate"):
        out["read_rate"] = (float(measured["read_rate"]), "measured")
    elif src in TYPICAL_RATES:
        out["read_rate"] = (TYPICAL_RATES[src][0], f"typical for {src}")
    else:
        out["read_rate"] = (ASSUMED_RATE, "assumed (state estimate.read_rate)")
    if e.write_rate:
        out["write_rate"] = (e.write_rate, "stated")
    elif measured.get("write_rate"):
        out["write_rate"] = (float(measured["write_rate"]), "measured")
    elif dst in TYPICAL_RATES:
        out["write_rate"] = (TYPICAL_RATES[dst][1], f"typical for {dst}")
    else:
        out["write_rate"] = (ASSUMED_RATE, "assumed (state estimate.write_rate)")
    return out


def _price_per_mtok(plan: Plan) -> tuple[float | None, str]:
    if plan.estimate.usd_per_mtok is not None:
        return plan.estimate.usd_per_mtok, "stated"
    emb = plan.embedding
    if emb is None:
        return None, "no re-embedding"
    if emb.usd_per_mtok is not None:
        return emb.usd_per_mtok, "stated (embedding.usd_per_mtok)"
    from vecmigrate.embed.cost import price_of

    price = price_of(emb.model.split("?", 1)[0])
    return price.usd_per_mtok, price.source


def estimate(plan: Plan, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """Inputs, phases (hours, from day 0), week-by-week timeline and cost table."""
    e = plan.estimate
    measured = measured or {}
    inputs: dict[str, dict[str, Any]] = {}

    def put(name: str, value: Any, source: str) -> None:
        inputs[name] = {"value": value, "source": source}

    if e.vectors is not None:
        put("vectors", e.vectors, "stated")
    elif measured.get("count") is not None:
        put("vectors", int(measured["count"]), "counted")
    else:
        raise ConfigError("the estimate needs the number of vectors: state estimate.vectors")
    if e.dim is not None:
        put("dim", e.dim, "stated")
    elif measured.get("dim"):
        put("dim", int(measured["dim"]), "measured")
    else:
        raise ConfigError("the estimate needs the vector dimension: state estimate.dim")
    for name, (value, source) in _rates(plan, measured).items():
        put(name, round(value, 1), source)
    vectors = int(inputs["vectors"]["value"])
    dim = int(inputs["dim"]["value"])
    read = float(inputs["read_rate"]["value"])
    write = float(inputs["write_rate"]["value"])
    row_bytes = dim * 4 + e.metadata_bytes_per_vector
    put("bytes_per_vector", row_bytes, f"dim x 4 + {e.metadata_bytes_per_vector} metadata")
    gb = vectors * row_bytes / 1e9
    reembed = plan.embedding is not None or e.tokens_per_vector is not None
    tokens = 0.0
    usd_mtok: float | None = None
    embed_rate: float | None = None
    if reembed:
        tpv = e.tokens_per_vector
        if tpv is None:
            raise ConfigError("re-embedding needs estimate.tokens_per_vector to cost it")
        put("tokens_per_vector", tpv, "stated")
        tokens = vectors * tpv
        usd_mtok, price_source = _price_per_mtok(plan)
        put("usd_per_mtok", usd_mtok, price_source)
        if e.embed_rate:
            embed_rate = e.embed_rate
            put("embed_rate", e.embed_rate, "stated")
    copy_rate = min(read, write, embed_rate or math.inf)
    copy_h = vectors / copy_rate / HOURS
    validate_h = 2 * vectors / read / HOURS
    review_h = plan.schedule.review_days * 24
    rehearse_h = 3 * (plan.rollback.rehearsal_rows or vectors) / min(read, write) / HOURS
    keep_h = plan.rollback.keep_old_for / HOURS
    phases: list[dict[str, Any]] = [
        {"phase": "review the runbook, pre-flight checks", "hours": review_h, "machine": False},
    ]
    kind = plan.kind
    if kind == "big-bang":
        phases += [
            {
                "phase": "export the source (write freeze starts)"
                if _freeze(plan)
                else "export the source",
                "hours": vectors / read / HOURS,
                "machine": True,
            },
            {
                "phase": "import into the target" + (" with re-embedding" if reembed else ""),
                "hours": vectors / min(write, embed_rate or math.inf) / HOURS,
                "machine": True,
            },
            {"phase": "validate", "hours": validate_h, "machine": True},
        ]
    elif kind == "phased":
        strategy = plan.strategy
        assert isinstance(strategy, Phased)
        n = len(strategy.segments)
        seg_copy_h = max(vectors / read, vectors / n / min(write, embed_rate or math.inf)) / HOURS
        for seg in strategy.segments:
            phases += [
                {
                    "phase": f"segment {seg.name}: copy, validate",
                    "hours": seg_copy_h + validate_h,
                    "machine": True,
                },
                {
                    "phase": f"segment {seg.name}: routed, holding",
                    "hours": plan.routing.hold / HOURS,
                    "machine": False,
                },
            ]
        phases.append({"phase": "validate everything", "hours": validate_h, "machine": True})
    else:
        phases += [
            {
                "phase": "copy" + (" with re-embedding" if reembed else ""),
                "hours": copy_h,
                "machine": True,
            },
            {
                "phase": "validate",
                "hours": validate_h * (2 if kind == "parallel-run" else 1),
                "machine": True,
            },
        ]
        if kind == "parallel-run":
            phases.append(
                {
                    "phase": "shadow reads",
                    "hours": plan.routing.shadow_for / HOURS,
                    "machine": False,
                }
            )
            for p in plan.routing.steps[:-1]:
                phases.append(
                    {
                        "phase": f"{p:g}% of reads on the new side",
                        "hours": plan.routing.hold / HOURS,
                        "machine": False,
                    }
                )
    phases += [
        {"phase": "rollback rehearsal", "hours": rehearse_h, "machine": True},
        {"phase": "cutover", "hours": 1.0, "machine": False},
        {"phase": "backup window (old side kept); monitor", "hours": keep_h, "machine": False},
        {
            "phase": "decommission (final backup, drop)",
            "hours": vectors / read / HOURS,
            "machine": True,
        },
    ]
    clock = 0.0
    for ph in phases:
        ph["starts_at_h"] = round(clock, 3)
        clock += ph["hours"]
        ph["hours"] = round(ph["hours"], 3)
    total_h = clock
    overlap_h = total_h - review_h
    if e.overlap_days is not None:
        overlap_h = e.overlap_days * 24
        put("overlap_days", e.overlap_days, "stated")
    else:
        put(
            "overlap_days",
            round(overlap_h / 24, 2),
            "from the timeline (target created to old side dropped)",
        )
    machine_h = sum(p["hours"] for p in phases if p["machine"])
    months = overlap_h / 24 / 30
    storage_gb = gb * e.index_overhead
    backup_gb = gb if kind == "big-bang" else 0.0
    costs = [
        {
            "item": "double infrastructure",
            "how": f"new system {e.new_instance_usd_per_hour:g} USD/h x {overlap_h:,.1f} h "
            "of overlap",
            "usd": e.new_instance_usd_per_hour * overlap_h,
        },
        {
            "item": "re-embedding",
            "how": (
                f"{tokens:,.0f} tokens x {usd_mtok:g} USD per 1M tokens"
                if reembed and usd_mtok is not None
                else "no re-embedding"
                if not reembed
                else "price unknown"
            ),
            "usd": tokens / 1e6 * (usd_mtok or 0.0),
        },
        {
            "item": "compute",
            "how": f"migration worker {e.worker_usd_per_hour:g} USD/h x {machine_h:,.1f} h of "
            "copy, validation, rehearsal and backups",
            "usd": e.worker_usd_per_hour * machine_h,
        },
        {
            "item": "storage",
            "how": f"({storage_gb:,.1f} GB target incl. x{e.index_overhead:g} index overhead"
            + (f" + {backup_gb:,.1f} GB export" if backup_gb else "")
            + f") x {e.storage_usd_per_gb_month:g} USD/GB-month x {months:,.2f} months",
            "usd": (storage_gb + backup_gb) * e.storage_usd_per_gb_month * months,
        },
    ]
    for c in costs:
        c["usd"] = round(c["usd"], 2)
    start = plan.schedule.start or date.today()
    return {
        "inputs": inputs,
        "data_gb": round(gb, 3),
        "phases": phases,
        "total_hours": round(total_h, 2),
        "total_days": round(total_h / 24, 2),
        "weeks": weeks(phases, start),
        "start": start.isoformat(),
        "costs": costs,
        "total_usd": round(sum(c["usd"] for c in costs), 2),
    }


def _freeze(plan: Plan) -> bool:
    return bool(getattr(plan.strategy, "write_freeze", False))


def weeks(phases: list[dict[str, Any]], start: date) -> list[dict[str, Any]]:
    """The phases active in each calendar week from ``start``."""
    total = sum(p["hours"] for p in phases)
    count = max(1, math.ceil(total / (24 * 7) - 1e-9))
    out = []
    for w in range(count):
        lo, hi = w * 168.0, (w + 1) * 168.0
        work = []
        for p in phases:
            a, b = p["starts_at_h"], p["starts_at_h"] + p["hours"]
            overlap = min(b, hi) - max(a, lo)
            if overlap > 1e-9 or (p["hours"] == 0 and lo <= a < hi):
                work.append({"phase": p["phase"], "hours": round(max(overlap, 0.0), 2)})
        first = start + timedelta(days=7 * w)
        out.append(
            {
                "week": w + 1,
                "from": first.isoformat(),
                "to": (first + timedelta(days=6)).isoformat(),
                "work": work,
            }
        )
    return out
