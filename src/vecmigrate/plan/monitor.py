"""``vecmigrate monitor``: after the switch, keep comparing both sides and roll back on a trigger.

Each round queries both sides with the same sampled stored vectors (overlap@k) and counts both;
a round below ``rollback.min_parity`` or above ``rollback.max_count_drift`` fires a trigger,
which rolls the plan back when ``monitor.auto_rollback`` is on. Rounds go to the plan state and
the HTML report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vecmigrate.connectors.registry import connect
from vecmigrate.plan.actions import sample_queries
from vecmigrate.plan.steps import Context


def monitor_round(ctx: Context) -> dict[str, Any]:
    """One comparison of both sides; recorded in the plan state."""
    plan = ctx.plan
    mon = plan.monitor
    _, vectors = sample_queries(ctx, plan.target, mon.queries, "monitor")
    started = time.perf_counter()
    with connect(plan.source) as old, connect(plan.target) as new:
        old_count, new_count = old.count(), new.count()
        overlaps: list[float] = []
        if len(vectors) and old.capabilities.query and new.capabilities.query:
            a = old.query(vectors, mon.k)
            b = new.query(vectors, mon.k)
            for x, y in zip(a.ids, b.ids, strict=True):
                want = {str(i) for i in x}
                overlaps.append(len(want & {str(i) for i in y}) / len(want) if want else 1.0)
    parity = float(np.mean(overlaps)) if overlaps else None
    drift = abs(new_count - old_count) / max(old_count, 1)
    fired: list[dict[str, Any]] = []
    bounds = plan.rollback
    if bounds.min_parity is not None and parity is not None and parity < bounds.min_parity:
        fired.append({"trigger": "parity", "mean_overlap": parity, "bound": bounds.min_parity})
    if bounds.max_count_drift is not None and drift > bounds.max_count_drift:
        fired.append(
            {
                "trigger": "count_drift",
                "drift": drift,
                "bound": bounds.max_count_drift,
                "old_count": old_count,
                "new_count": new_count,
            }
        )
    round_ = {
        "at": time.time(),
        "passed": not fired,
        "parity": parity,
        "drift": drift,
        "old_count": old_count,
        "new_count": new_count,
        "queries": len(overlaps),
        "k": mon.k,
        "fired": fired,
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    ctx.state.add_monitor_round(round_)
    return round_


def monitor(
    ctx: Context,
    *,
    duration: float,
    interval: float,
    on_round: Callable[[dict[str, Any]], None] = lambda r: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Rounds every ``interval`` seconds for ``duration``; stops at the first fired trigger."""
    from vecmigrate.plan.traffic import roll_back

    deadline = time.monotonic() + duration
    rounds: list[dict[str, Any]] = []
    rolled_back: dict[str, Any] | None = None
    while True:
        round_ = monitor_round(ctx)
        rounds.append(round_)
        on_round(round_)
        if round_["fired"]:
            if ctx.plan.monitor.auto_rollback:
                first = round_["fired"][0]
                rolled_back = roll_back(
                    ctx, f"monitor: trigger {first['trigger']} fired", {"trigger": first}
                )
            break
        if should_stop() or time.monotonic() + interval > deadline:
            break
        time.sleep(interval)
    return {
        "rounds": len(rounds),
        "passed": all(r["passed"] for r in rounds),
        "last": rounds[-1],
        "rolled_back": rolled_back,
    }
