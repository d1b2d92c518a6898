"""Rollback triggers: sliding-window evidence about the new side, and the rules that fire."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TriggerConfig:
    """Bounds the new side must stay within while it serves or shadows traffic."""

    max_error_rate: float | None = 0.05
    max_latency_ratio: float | None = 3.0  # query p95 new / query p95 old
    min_parity: float | None = 0.9  # mean overlap@k of shadow comparisons
    max_count_drift: float | None = 0.01  # |new - old - pending| / old
    window_s: float = 30.0
    min_samples: int = 20
    integration_checks: list[Callable[[], bool]] = field(default_factory=list)


class Window:
    """Timestamped samples of the last ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._items: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._items.append((now, value))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._items and now - self._items[0][0] > self.window_s:
            self._items.popleft()

    def values(self) -> list[float]:
        with self._lock:
            self._trim(time.monotonic())
            return [v for _, v in self._items]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Evidence:
    """What the router has seen of each side lately.

    ``latency`` holds query latencies (served or shadowed: the same operation on both sides),
    ``write_latency`` those of writes made on the caller's path. Writes drained from the
    outbox count for errors only: they are joined into batches and nobody waits for them.
    """

    def __init__(self, window_s: float) -> None:
        self.latency = {"old": Window(window_s), "new": Window(window_s)}
        self.write_latency = {"old": Window(window_s), "new": Window(window_s)}
        self.errors = {"old": Window(window_s), "new": Window(window_s)}  # 1.0 error, 0.0 ok
        self.parity = Window(window_s)
        self.totals: dict[str, int] = {
            "old_ops": 0, "new_ops": 0, "old_errors": 0, "new_errors": 0, "shadow_compared": 0,
        }  # fmt: skip
        self._lock = threading.Lock()

    def op(self, side: str, seconds: float, ok: bool, *, kind: str = "read") -> None:
        """One operation: ``kind`` is "read", "write" (caller's path) or "drain" (outbox)."""
        if ok and kind == "read":
            self.latency[side].add(seconds)
        elif ok and kind == "write":
            self.write_latency[side].add(seconds)
        self.errors[side].add(0.0 if ok else 1.0)
        with self._lock:
            self.totals[f"{side}_ops"] += 1
            if not ok:
                self.totals[f"{side}_errors"] += 1

    def compared(self, overlap: float) -> None:
        self.parity.add(overlap)
        with self._lock:
            self.totals["shadow_compared"] += 1

    def reset(self) -> None:
        windows = [*self.latency.values(), *self.write_latency.values(), *self.errors.values()]
        for w in [*windows, self.parity]:
            w.clear()


@dataclass(frozen=True)
class Fired:
    trigger: str
    evidence: dict[str, Any]


def evaluate(cfg: TriggerConfig, ev: Evidence, count_drift: float | None = None) -> Fired | None:
    """The first trigger whose bound is crossed, with its evidence; None while all hold."""
    errors = ev.errors["new"].values()
    if cfg.max_error_rate is not None and len(errors) >= cfg.min_samples:
        rate = float(np.mean(errors))
        if rate > cfg.max_error_rate:
            return Fired(
                "error_rate",
                {"error_rate": rate, "bound": cfg.max_error_rate, "samples": len(errors)},
            )
    new_lat, old_lat = ev.latency["new"].values(), ev.latency["old"].values()
    if (
        cfg.max_latency_ratio is not None
        and len(new_lat) >= cfg.min_samples
        and len(old_lat) >= cfg.min_samples
    ):
        p95_new = float(np.percentile(new_lat, 95))
        p95_old = max(float(np.percentile(old_lat, 95)), 1e-6)
        if p95_new / p95_old > cfg.max_latency_ratio:
            return Fired(
                "latency_ratio",
                {"p95_new_ms": p95_new * 1e3, "p95_old_ms": p95_old * 1e3,
                 "ratio": p95_new / p95_old, "bound": cfg.max_latency_ratio},
            )  # fmt: skip
    parity = ev.parity.values()
    if cfg.min_parity is not None and len(parity) >= cfg.min_samples:
        mean = float(np.mean(parity))
        if mean < cfg.min_parity:
            return Fired(
                "parity", {"mean_overlap": mean, "bound": cfg.min_parity, "samples": len(parity)}
            )
    if (
        cfg.max_count_drift is not None
        and count_drift is not None
        and count_drift > cfg.max_count_drift
    ):
        return Fired("count_drift", {"drift": count_drift, "bound": cfg.max_count_drift})
    for i, check in enumerate(cfg.integration_checks):
        try:
            ok = bool(check())
        except Exception as exc:  # a failing check is evidence, not a crash of the router
            return Fired("integration", {"check": i, "error": str(exc)})
        if not ok:
            return Fired("integration", {"check": i, "result": False})
    return None
