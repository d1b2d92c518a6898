"""The plan's HTML report: timeline, validations, parity over time, incidents, rollbacks.

Rewritten after every plan command (``STATE_DIR/report.html``), self-contained (inline SVG).
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from vecmigrate.plan.model import Plan
from vecmigrate.plan.state import PlanState
from vecmigrate.uri import ConnectorURI

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:78rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
th{background:#f5f5f5} .passed{color:#137333} .failed{color:#b3261e}
.holding,.running{color:#8a6d00}
code{font-size:.85em}
"""


def _when(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + " ..."


def _rows(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _line_svg(points: list[tuple[float, float]], title: str, lo: float, hi: float) -> str:
    width, height, pad = 640, 200, 30
    if not points:
        return ""
    t0, t1 = points[0][0], max(points[-1][0], points[0][0] + 1)
    span = max(hi - lo, 1e-9)

    def xy(t: float, v: float) -> str:
        x = pad + (t - t0) / (t1 - t0) * (width - 2 * pad)
        y = height - pad - (min(max(v, lo), hi) - lo) / span * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    poly = " ".join(xy(t, v) for t, v in points)
    dots = "".join(
        f'<circle cx="{xy(t, v).split(",")[0]}" cy="{xy(t, v).split(",")[1]}" r="3" '
        f'fill="#4a7bd0"><title>{_when(t)}: {v:.4g}</title></circle>'
        for t, v in points
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}"><text x="{width / 2}" y="16" text-anchor="middle" '
        f'font-size="13">{html.escape(title)}</text>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#555"/>'
        f'<text x="2" y="{pad + 4}" font-size="11">{hi:g}</text>'
        f'<text x="2" y="{height - pad}" font-size="11">{lo:g}</text>'
        f'<polyline points="{poly}" fill="none" stroke="#4a7bd0" stroke-width="2"/>{dots}</svg>'
    )


def render(plan: Plan, state: PlanState) -> str:
    from vecmigrate.plan.strategies import steps_for

    steps = steps_for(plan)
    audit = state.audit()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>vecmigrate plan {html.escape(plan.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Migration {html.escape(plan.name)} ({plan.kind})</h1>",
        f"<p><code>{html.escape(ConnectorURI.parse(plan.source).redacted())}</code> &rarr; "
        f"<code>{html.escape(ConnectorURI.parse(plan.target).redacted())}</code>. "
        f"Report written {_when(time.time())}.</p>",
    ]
    rows = []
    for s in steps:
        rec = state.step(s.name)
        took = (
            f"{rec.finished - rec.started:.1f}s"
            if rec.started and rec.finished and rec.finished >= rec.started
            else ""
        )
        rows.append(
            [
                f"<code>{html.escape(s.name)}</code>",
                html.escape(s.title),
                f"<span class='{rec.status}'>{rec.status}</span>",
                _when(rec.started),
                _when(rec.finished),
                took,
                html.escape(rec.error or ""),
            ]
        )
    parts += [
        "<h2>Steps</h2>",
        _rows(["step", "what", "status", "started", "finished", "took", "error"], rows),
    ]
    validations = [
        e
        for e in audit
        if e["event"] in ("step-passed", "step-failed") and e["step"] and "validate" in e["step"]
    ]
    if validations:
        vrows = []
        for e in validations:
            ev = e["evidence"]
            checks = ev.get("checks", {})
            summary = "; ".join(
                f"{name}: {'pass' if c.get('passed', True) else 'FAIL'}"
                for name, c in checks.items()
            )
            vrows.append(
                [
                    _when(e["at"]),
                    html.escape(e["step"]),
                    html.escape(ev.get("verdict", "fail" if e["event"] == "step-failed" else "")),
                    html.escape(summary or ev.get("error", "")),
                ]
            )
        parts += ["<h2>Validations</h2>", _rows(["at", "step", "verdict", "checks"], vrows)]
    rounds = state.monitor_rounds()
    if rounds:
        parity = [(r["at"], r["parity"]) for r in rounds if r.get("parity") is not None]
        drift = [(r["at"], r["drift"]) for r in rounds if r.get("drift") is not None]
        parts += [
            "<h2>Parity over time</h2>",
            _line_svg(parity, f"overlap@{plan.monitor.k} old vs new", 0.0, 1.0),
            _line_svg(
                drift,
                "count drift |new-old|/old",
                0.0,
                max([d for _, d in drift] + [plan.rollback.max_count_drift or 0.01]),
            ),
            _rows(
                ["at", "passed", "parity", "drift", "old", "new"],
                [
                    [
                        _when(r["at"]),
                        str(r["passed"]),
                        f"{r['parity']}",
                        f"{r['drift']:.4g}",
                        str(r["old_count"]),
                        str(r["new_count"]),
                    ]
                    for r in rounds
                ],
            ),
        ]
    incidents = [
        e
        for e in audit
        if e["event"] in ("step-failed", "decommission-refused")
        or (e["event"] == "rollback-rehearsal" and not e["evidence"].get("passed"))
    ]
    if incidents:
        parts += [
            "<h2>Incidents</h2>",
            _rows(
                ["at", "who", "what", "step", "evidence"],
                [
                    [
                        _when(e["at"]),
                        html.escape(e["actor"]),
                        html.escape(e["event"]),
                        html.escape(e["step"] or ""),
                        f"<code>{html.escape(_short(e['evidence']))}</code>",
                    ]
                    for e in incidents
                ],
            ),
        ]
    rollbacks = [e for e in audit if e["event"] == "rollback"]
    if rollbacks:
        parts += [
            "<h2>Rollbacks</h2>",
            _rows(
                ["at", "who", "evidence"],
                [
                    [
                        _when(e["at"]),
                        html.escape(e["actor"]),
                        f"<code>{html.escape(_short(e['evidence'], 600))}</code>",
                    ]
                    for e in rollbacks
                ],
            ),
        ]
    parts += [
        "<h2>Timeline (audit log)</h2>",
        _rows(
            ["at", "who", "event", "step", "evidence"],
            [
                [
                    _when(e["at"]),
                    html.escape(e["actor"]),
                    html.escape(e["event"]),
                    html.escape(e["step"] or ""),
                    f"<code>{html.escape(_short(e['evidence']))}</code>",
                ]
                for e in audit
            ],
        ),
    ]
    parts.append("</body></html>")
    return "".join(parts)


def write_report(plan: Plan, state: PlanState, path: Path | None = None) -> Path:
    path = path or plan.state_path / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(plan, state), encoding="utf-8")
    tmp.replace(path)
    return path
