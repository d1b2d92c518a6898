"""A self-contained HTML report: verdict first, then each check, plots as inline SVG."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from vecmigrate.validate.run import ValidationResult

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
h1{margin-bottom:.2rem} .pass{color:#137333} .fail{color:#b3261e}
.verdict{font-size:1.6rem;font-weight:700;padding:.6rem 1rem;border-radius:.4rem;display:inline-block}
.verdict.pass{background:#e6f4ea} .verdict.fail{background:#fce8e6}
table{border-collapse:collapse;margin:.5rem 0 1.5rem} td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f5f5f5} code{font-size:.9em} .plots{display:flex;gap:2rem;flex-wrap:wrap}
"""


def _histogram_svg(
    values: list[float],
    title: str,
    bins: int = 20,
    width: int = 420,
    height: int = 220,
    span: tuple[float, float] | None = None,
) -> str:
    if not values:
        return ""
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins, range=span)
    top = max(int(counts.max()), 1)
    pad, bw = 30, (width - 40) / bins
    bars = []
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / top
        x = 35 + i * bw
        bars.append(
            f'<rect x="{x:.1f}" y="{height - pad - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" fill="#4a7bd0">'
            f"<title>{edges[i]:.4g} - {edges[i + 1]:.4g}: {c}</title></rect>"
        )  # fmt: skip
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">'
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>'
        f'<line x1="35" y1="{height - pad}" x2="{width - 5}" y2="{height - pad}" stroke="#555"/>'
        f'<text x="35" y="{height - 10}" font-size="11">{edges[0]:.4g}</text>'
        f'<text x="{width - 5}" y="{height - 10}" font-size="11" text-anchor="end">{edges[-1]:.4g}</text>'
        f'<text x="5" y="{pad + 5}" font-size="11">{top}</text>' + "".join(bars) + "</svg>"
    )  # fmt: skip


def _table(rows: dict[str, Any]) -> str:
    cells = []
    for key, value in rows.items():
        if isinstance(value, (dict, list)):
            text = json.dumps(value, default=str)
            text = text if len(text) < 1500 else text[:1500] + " ..."
            shown = f"<code>{html.escape(text)}</code>"
        else:
            shown = html.escape(str(value))
        cells.append(f"<tr><th>{html.escape(key)}</th><td>{shown}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def render(result: ValidationResult) -> str:
    data = result.as_dict()
    verdict = "pass" if result.passed else "fail"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>vecmigrate validation</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>vecmigrate validation</h1>",
        f"<p>{html.escape(data['source'])} &rarr; {html.escape(data['target'])}</p>",
        f"<div class='verdict {verdict}'>{verdict.upper()}</div>",
    ]
    if result.failures:
        parts.append(f"<p class='fail'>Failed: {html.escape(', '.join(result.failures))}</p>")
    summary = {
        name: ("pass" if c.get("passed", True) else "FAIL") for name, c in result.checks.items()
    }
    parts.append("<h2>Checks</h2>" + _table(summary))
    parity = result.checks.get("query_parity", {})
    plots = []
    recall_key = next((k for k in parity if k == "recall_distribution"), None)
    if recall_key:
        plots.append(
            _histogram_svg(
                parity[recall_key], f"recall@{parity.get('k')} per query", bins=10, span=(0.0, 1.0)
            )
        )
    for side in ("source", "target"):
        ms = result.parity_samples.get(f"{side}_ms")
        if ms:
            plots.append(_histogram_svg(ms, f"{side} query latency (ms)"))
    if plots:
        parts.append("<h2>Plots</h2><div class='plots'>" + "".join(plots) + "</div>")
    worst = parity.get("worst_queries") or []
    if worst:
        rkey = f"recall_at_{parity['k']}"
        rows = "".join(
            f"<tr><td>{html.escape(str(w['query']))}</td><td>{w[rkey]:.3f}</td>"
            f"<td><code>{html.escape(json.dumps(w['missing'][:10]))}</code></td></tr>"
            for w in worst
        )  # fmt: skip
        parts.append(
            "<h2>Worst queries</h2><table><tr><th>query</th><th>recall</th><th>missing ids</th></tr>"
            + rows + "</table>"
        )  # fmt: skip
    for name, check in result.checks.items():
        shown = {
            k: v for k, v in check.items() if k not in ("recall_distribution", "worst_queries")
        }
        parts.append(f"<h2>{html.escape(name)}</h2>" + _table(shown))
    parts.append(f"<p>Took {result.elapsed_s:.1f}s.</p></body></html>")
    return "".join(parts)


def write_report(result: ValidationResult, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(result), encoding="utf-8")
    tmp.replace(path)
