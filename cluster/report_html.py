"""A run's report as one self-contained HTML file: inline SVG and CSS, no script, no network.

Hand-written SVG rather than a charting library: the file must open offline in any browser
(no CDN), stay small, and need nothing installed to read; four simple charts do not need more.

Example:
    >>> Path("run.html").write_text(render_html(load_report(journal, None)))  # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
from decimal import Decimal

from actors.ledger_rollup import Rollup
from cluster.report_data import COLOURS, LIMITER_NOTE, STATUSES, RunReport

_WIDTH, _LABEL, _ROW = 1000, 150, 20
_PLOT = _WIDTH - _LABEL - 20
_MICRO = Decimal("0.000001")
_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #212121; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
.facts span { margin-right: 18px; } .note { color: #555; max-width: 980px; }
table { border-collapse: collapse; margin-bottom: 8px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr.total td { font-weight: bold; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
            vertical-align: -1px; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
"""


def render_html(report: RunReport) -> str:
    """The whole page for ``report``."""
    run = html.escape(report.run_id)
    totals = report.totals
    tokens = _input(totals) + totals.output_tokens
    facts = [f"architecture <b>{html.escape(report.topology)}</b>",
             f"{report.duration_s:.2f} s", f"${totals.cost_usd.quantize(_MICRO)}",
             f"{tokens:,} tokens", f"{totals.calls:,} calls", f"{totals.attempts:,} attempts",
             f"peak {report.peak_in_flight} in flight"]
    body = [
        f"<h1>raytroupe run {run}</h1>",
        '<p class="facts">' + "".join(f"<span>{fact}</span>" for fact in facts) + "</p>",
        "<h2>Timeline: one bar per attempt, send to last byte (| time to first token)</h2>",
        _legend(), _timeline(report),
        "<h2>Attempts in flight</h2>", _in_flight(report),
        f'<p class="note">{html.escape(LIMITER_NOTE)}</p>',
        "<h2>Cost and tokens per agent</h2>", _cost_table(report.by_agent, "agent", totals),
        "<h2>Cost and tokens per tier</h2>", _cost_table(report.by_tier, "tier", totals),
        "<h2>Latency per tier (seconds, API attempts)</h2>", _latency_table(report),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>raytroupe run {run}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def _legend() -> str:
    items = "".join(f'<span><i style="background:{COLOURS[s]}"></i>{s}</span>'
                    for s in STATUSES)
    return f'<p class="legend">{items}</p>'


def _x(seconds: float, span: float) -> float:
    return _LABEL + seconds / span * _PLOT


def _axis(span: float, top: float, bottom: float) -> list[str]:
    """Vertical grid lines with labels in seconds, at a round step."""
    step = _nice_step(span / 8)
    parts, tick = [], 0.0
    while tick <= span + 1e-9:
        x = _x(tick, span)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" '
                     'stroke="#e0e0e0"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">'
                     f"{tick:g} s</text>")
        tick += step
    return parts


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``raw``."""
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _timeline(report: RunReport) -> str:
    """A row per agent (as tall as its most attempts at once), a bar per attempt."""
    lanes = report.lanes
    lane_h = max(4.0, min(14.0, 300 / max(sum(lanes.values()), 1)))
    span = max(report.duration_s, 1e-3)
    tops, y = {}, 0.0
    for agent, count in lanes.items():
        tops[agent] = y
        y += max(count * lane_h, _ROW) + 4
    parts = _axis(span, 0, y)
    for agent, top in tops.items():
        parts.append(f'<text x="{_LABEL - 6}" y="{top + 13:.1f}" text-anchor="end">'
                     f"{html.escape(agent)}</text>")
        parts.append(f'<line x1="{_LABEL}" y1="{top:.1f}" x2="{_WIDTH - 20}" y2="{top:.1f}" '
                     'stroke="#bdbdbd"/>')
    for a in report.attempts:
        x, top = _x(a.start_s, span), tops[a.agent] + a.lane * lane_h + 1
        width = max(a.latency_s / span * _PLOT, 1.0)
        tip = (f"{a.agent} ({a.tier}): {a.status}, {a.latency_s:.3f} s, "
               f"${a.cost_usd.quantize(_MICRO)}")
        parts.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" '
                     f'height="{lane_h - 1:.1f}" fill="{COLOURS[a.status]}">'
                     f"<title>{html.escape(tip)}</title></rect>")
        if a.ttft_s is not None:
            tx = _x(a.start_s + a.ttft_s, span)
            parts.append(f'<line x1="{tx:.1f}" y1="{top:.1f}" x2="{tx:.1f}" '
                         f'y2="{top + lane_h - 1:.1f}" stroke="#000" stroke-width="2"/>')
    return _svg(y + 30, parts, "timeline")


def _in_flight(report: RunReport) -> str:
    span, peak = max(report.duration_s, 1e-3), max(report.peak_in_flight, 1)
    top, plot_h = 8, 120

    def y(level: int) -> str:
        return f"{top + plot_h - level / peak * plot_h:.1f}"

    points, last = [], 0
    for at, level in report.in_flight:
        x = _x(at, span)
        points += [f"{x:.1f},{y(last)}", f"{x:.1f},{y(level)}"]
        last = level
    points.append(f"{_x(span, span):.1f},{y(last)}")
    parts = _axis(span, top, top + plot_h)
    parts.append(f'<text x="{_LABEL - 6}" y="{top + 4}" text-anchor="end">{peak} in flight'
                 "</text>")
    parts.append(f'<text x="{_LABEL - 6}" y="{top + plot_h}" text-anchor="end">0</text>')
    parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#1565c0" '
                 'stroke-width="2"/>')
    return _svg(top + plot_h + 30, parts, "in flight")


def _svg(height: float, parts: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
            f'role="img" aria-label="{label}">{"".join(parts)}</svg>')


def _input(row: Rollup) -> int:
    return row.input_tokens + row.cache_write_5m + row.cache_write_1h + row.cache_read


def _cost_table(rows: list[Rollup], first: str, totals: Rollup) -> str:
    head = "".join(f"<th>{name}</th>" for name in (
        first, "calls", "attempts", "input", "output", "cache read", "USD", "share"))
    body = [_cost_row(row, first, totals) for row in rows]
    if len(rows) > 1:
        body.append(_cost_row(totals, "total", totals).replace("<tr>", '<tr class="total">'))
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _cost_row(row: Rollup, first: str, totals: Rollup) -> str:
    name = "total" if first == "total" else row.key.rsplit("/", 1)[-1]
    share = row.cost_usd / totals.cost_usd * 100 if totals.cost_usd else Decimal(0)
    cells = [html.escape(name), f"{row.calls:,}", f"{row.attempts:,}", f"{_input(row):,}",
             f"{row.output_tokens:,}", f"{row.cache_read:,}",
             f"${row.cost_usd.quantize(_MICRO)}", f"{share:.1f}%"]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _latency_table(report: RunReport) -> str:
    head = "".join(f"<th>{n}</th>" for n in ("tier", "attempts", "p50", "p95", "p99"))
    rows = []
    for tier in report.latency:
        cells = [html.escape(tier.tier), str(tier.attempts),
                 *(f"{v:.3f}" if v is not None else "-" for v in (tier.p50, tier.p95, tier.p99))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"
