"""The HTML report: one self-contained page (inline CSS, inline SVG charts, no external resources).

Charts: cost per task over time, cost by bucket, cache hit rate. A few lines of inline script
only mark, after layout, how many charts the browser actually drew (``data-charts-rendered`` on
``<body>``), which the tests read back from a headless browser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from html import escape

from ..config import SignalThresholds
from ..ledger.base import AlertRecord
from ..reports import OUTCOMES, Report, RunPoint, TaskNameRow
from ._common import usd

__all__ = ["render_html"]

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7")
BUCKETS = (
    ("uncached_input", "uncached input", "#4e79a7"),
    ("cache_read", "cache read", "#59a14f"),
    ("cache_write", "cache write", "#edc948"),
    ("output", "output", "#e15759"),
    ("storage", "cache storage", "#b07aa1"),
)
MAX_SERIES = 8
MAX_POINTS_PER_SERIES = 1500
INK, MUTED, AXIS = "#1f2933", "#6b7785", "#9aa5b1"
FONT = "font-family:system-ui,-apple-system,'Segoe UI','DejaVu Sans',sans-serif"

_CSS = """
:root { --fg:#1f2933; --muted:#6b7785; --line:#e3e7ec; --bg:#f6f8fa; --card:#fff; --bad:#c0392b; }
* { box-sizing: border-box; }
body { margin:0; padding:24px 32px 40px; background:var(--bg); color:var(--fg);
       font:14px/1.45 system-ui,-apple-system,'Segoe UI','DejaVu Sans',sans-serif; }
h1 { font-size:22px; margin:0 0 4px; } h2 { font-size:16px; margin:0 0 12px; }
.meta { color:var(--muted); margin:0 0 20px; }
.cards { display:flex; gap:12px; flex-wrap:wrap; margin-bottom:20px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 16px;
        min-width:150px; }
.card .v { font-size:20px; font-weight:600; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px;
          margin-bottom:16px; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:16px; } .grid2 section { margin-bottom:0; }
.grid2 + section { margin-top:16px; }
svg.chart { display:block; width:100%; height:auto; }
table { border-collapse:collapse; width:100%; font-size:13px; font-variant-numeric:tabular-nums; }
.scroll { overflow-x:auto; }
th, td { padding:5px 6px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { color:var(--muted); font-weight:600; font-size:11px; text-transform:uppercase; white-space:normal;
     vertical-align:bottom; }
th:first-child, td:first-child { text-align:left; }
td.none { color:var(--muted); font-style:italic; }
ul.alerts { margin:0; padding-left:18px; } ul.alerts li { margin:4px 0; }
.kind { font-weight:600; color:var(--bad); } .muted { color:var(--muted); }
footer { color:var(--muted); font-size:12px; margin-top:8px; }
"""

_SCRIPT = """
(function () {
  var drawn = 0;
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var box = svg.getBBox();
    if (box.width > 0 && box.height > 0 && svg.querySelectorAll('[data-mark]').length > 0) { drawn += 1; }
  });
  document.body.setAttribute('data-charts-rendered', String(drawn));
})();
"""


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(ticks, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _money_label(value: float) -> str:
    if value == 0:
        return "$0"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:.2f}"
    return f"${value:.4f}".rstrip("0").rstrip(".") if value >= 0.0001 else f"${value:.2g}"


def _svg_open(width: int, height: int, label: str) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}" style="{FONT}">'
    )


def _empty(width: int, height: int, label: str) -> str:
    return (
        _svg_open(width, height, label)
        + f'<text data-mark="empty" x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#6b7785" '
        f'font-size="14">no priced runs in this window</text></svg>'
    )


def _time_label(moment: datetime, span: timedelta) -> str:
    if span > timedelta(days=2):
        return moment.strftime("%b %d")
    if span > timedelta(hours=6):
        return moment.strftime("%d %H:%M")
    return moment.strftime("%H:%M:%S" if span < timedelta(minutes=10) else "%H:%M")


def cost_over_time_chart(points: Sequence[RunPoint], rows: Sequence[TaskNameRow]) -> str:
    """Per-run cost against end time, one line per task name (the most expensive names)."""
    width, height = 1180, 340
    left, right, top, bottom = 78, 200, 16, 44
    label = "Cost per task over time"
    names = [r.task for r in rows if r.task is not None and r.cost_total is not None][:MAX_SERIES]
    series = {n: [p for p in points if p.task == n and p.cost is not None] for n in names}
    series = {n: s for n, s in series.items() if s}
    if not series:
        return _empty(width, height, label)
    for name, pts in series.items():
        if len(pts) > MAX_POINTS_PER_SERIES:  # keep the page light: an even sample of the runs
            step = len(pts) / MAX_POINTS_PER_SERIES
            series[name] = [pts[int(i * step)] for i in range(MAX_POINTS_PER_SERIES)]
    every = [p for pts in series.values() for p in pts]
    t0 = min(p.ended_at for p in every)
    t1 = max(p.ended_at for p in every)
    if t1 - t0 < timedelta(seconds=1):
        t0, t1 = t0 - timedelta(minutes=1), t1 + timedelta(minutes=1)
    span = t1 - t0
    top_cost = max(float(p.cost or 0) for p in every) or 1.0
    step = _nice_step(top_cost)
    y_max = step * math.ceil(top_cost / step)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(moment: datetime) -> float:
        return left + plot_w * ((moment - t0) / span)

    def y(cost: Decimal | None) -> float:
        return top + plot_h * (1 - float(cost or 0) / y_max)

    out = [_svg_open(width, height, label)]
    ticks = round(y_max / step)
    for i in range(ticks + 1):
        value = step * i
        ty = top + plot_h * (1 - value / y_max)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e3e7ec"/>')
        out.append(
            f'<text x="{left - 8}" y="{ty + 4:.1f}" text-anchor="end" font-size="12" fill="#6b7785">'
            f"{_money_label(value)}</text>"
        )
    for i in range(6):
        moment = t0 + span * (i / 5)
        tx = x(moment)
        out.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 5}" stroke="{AXIS}"/>'
        )
        out.append(
            f'<text x="{tx:.1f}" y="{top + plot_h + 20}" text-anchor="middle" font-size="12" fill="#6b7785">'
            f"{escape(_time_label(moment, span))}</text>"
        )
    out.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#9aa5b1"/>'
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" font-size="12" fill="#6b7785">'
        f"task end time (UTC) · red rings: failed runs</text>"
    )
    for index, (name, pts) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        coords = " ".join(f"{x(p.ended_at):.1f},{y(p.cost):.1f}" for p in pts)
        out.append(
            f'<polyline data-mark="line" points="{coords}" fill="none" stroke="{color}" '
            'stroke-width="1.5" opacity="0.8"/>'
        )
        for p in pts:
            ring = ' stroke="#c0392b" stroke-width="2"' if p.outcome == "failure" else ""
            out.append(
                f'<circle data-mark="point" cx="{x(p.ended_at):.1f}" cy="{y(p.cost):.1f}" r="3" '
                f'fill="{color}"{ring}>'
                f"<title>{escape(name)} · {escape(p.ended_at.strftime('%Y-%m-%d %H:%M:%S'))} UTC · "
                f"{escape(usd(p.cost))} · {p.outcome} · {p.calls} calls</title></circle>"
            )
        ly = top + 10 + index * 22
        out.append(
            f'<rect x="{left + plot_w + 16}" y="{ly - 9}" width="12" height="12" rx="2" fill="{color}"/>'
            f'<text x="{left + plot_w + 34}" y="{ly + 1}" font-size="12" fill="{INK}">'
            f"{escape(_short(name, 22))}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cost_by_bucket_chart(rows: Sequence[TaskNameRow]) -> str:
    """One stacked bar per task name: uncached input, cache read, cache write, output, storage."""
    shown = [r for r in rows if r.cost_breakdown.total > 0][:12]
    width, bar_h, gap, left, right, top = 580, 20, 10, 150, 90, 40
    height = top + len(shown) * (bar_h + gap) + 10
    label = "Cost by bucket"
    if not shown:
        return _empty(width, 200, label)
    top_total = float(max(r.cost_breakdown.total for r in shown))
    plot_w = width - left - right
    out = [_svg_open(width, height, label)]
    lx = 10
    for _key, name, color in BUCKETS:
        out.append(
            f'<rect x="{lx}" y="8" width="10" height="10" rx="2" fill="{color}"/>'
            f'<text x="{lx + 14}" y="17" font-size="11" fill="{INK}">{name}</text>'
        )
        lx += 14 + int(6.2 * len(name)) + 16
    for index, row in enumerate(shown):
        by = top + index * (bar_h + gap)
        name = "(no task)" if row.task is None else row.task
        out.append(
            f'<text x="{left - 8}" y="{by + bar_h / 2 + 4}" text-anchor="end" font-size="12" fill="#1f2933">'
            f"{escape(_short(name, 20))}</text>"
        )
        bx = float(left)
        parts = row.cost_breakdown.as_dict()
        for key, bucket, color in BUCKETS:
            amount = parts[key]
            if amount <= 0:
                continue
            w = plot_w * float(amount) / top_total
            out.append(
                f'<rect data-mark="bar" x="{bx:.1f}" y="{by}" width="{max(w, 0.5):.1f}" height="{bar_h}" '
                f'fill="{color}"><title>{escape(name)} · {bucket}: {escape(usd(amount))}</title></rect>'
            )
            bx += w
        out.append(
            f'<text x="{bx + 6:.1f}" y="{by + bar_h / 2 + 4}" font-size="12" fill="#6b7785">'
            f"{escape(money(row.cost_breakdown.total))}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def cache_hit_rate_chart(rows: Sequence[TaskNameRow], threshold: float) -> str:
    """Cache hit rate per task name against the signal threshold."""
    shown = [r for r in rows if r.usage.input_tokens > 0][:12]
    width, bar_h, gap, left, right, top = 580, 20, 10, 150, 60, 40
    height = top + len(shown) * (bar_h + gap) + 24
    label = "Cache hit rate"
    if not shown:
        return _empty(width, 200, label)
    plot_w = width - left - right
    out = [_svg_open(width, height, label)]
    tx = left + plot_w * threshold
    for i in range(5):
        gx = left + plot_w * i / 4
        out.append(
            f'<line x1="{gx:.1f}" x2="{gx:.1f}" y1="{top - 6}" y2="{height - 20}" stroke="#e3e7ec"/>'
            f'<text x="{gx:.1f}" y="{height - 6}" text-anchor="middle" font-size="11" fill="{MUTED}">'
            f"{25 * i}%</text>"
        )
    out.append(
        f'<text x="{left}" y="17" font-size="11" fill="{INK}">cache-read tokens / input tokens; dashed line: '
        f"alert threshold {threshold:.0%}</text>"
    )
    for index, row in enumerate(shown):
        by = top + index * (bar_h + gap)
        rate = row.cache_hit_rate
        color = "#59a14f" if rate >= threshold else "#f28e2b"
        name = "(no task)" if row.task is None else row.task
        out.append(
            f'<text x="{left - 8}" y="{by + bar_h / 2 + 4}" text-anchor="end" font-size="12" fill="#1f2933">'
            f"{escape(_short(name, 20))}</text>"
            f'<rect x="{left}" y="{by}" width="{plot_w}" height="{bar_h}" fill="#f0f3f6"/>'
            f'<rect data-mark="bar" x="{left}" y="{by}" width="{max(plot_w * rate, 0.5):.1f}" '
            f'height="{bar_h}" '
            f'fill="{color}"><title>{escape(name)}: {rate:.1%} of {row.usage.input_tokens:,} input tokens '
            f"read from cache</title></rect>"
            f'<text x="{left + plot_w + 6}" y="{by + bar_h / 2 + 4}" font-size="12" fill="{MUTED}">'
            f"{rate:.1%}</text>"
        )
    out.append(
        f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 6}" y2="{height - 20}" stroke="#c0392b" '
        'stroke-dasharray="4 3" stroke-width="1.5"/>'
    )
    out.append("</svg>")
    return "".join(out)


def money(amount: Decimal | None) -> str:
    """Four significant digits: enough to compare at a glance, short enough for a wide table."""
    if amount is None:
        return "?"
    if not amount:
        return "$0"
    rounded = amount.quantize(Decimal(1).scaleb(min(amount.adjusted() - 3, 0)))
    return f"${rounded:,f}"


def _tokens(count: int) -> str:
    """A table cell with three significant digits (``2.54M``, ``372k``); the exact count on hover."""
    if count < 10_000:
        text = f"{count:,}"
    elif count < 1_000_000:
        text = f"{count / 1000:.3g}k"
    else:
        text = f"{count / 1_000_000:.3g}M"
    return f'<td title="{count:,}">{text}</td>'


def _table(rows: Sequence[TaskNameRow]) -> str:
    head = (
        '<tr><th>task</th><th>runs</th><th title="success / partial / failure">ok / part / fail</th>'
        "<th>calls</th><th>total</th>"
        "<th>p50</th><th>p95</th><th>per success</th><th>failure cost</th><th>cache hit</th>"
        "<th>input tok</th><th>cache read</th><th>cache write</th><th>output tok</th><th>alerts</th></tr>"
    )
    body = []
    for r in rows:
        per_run = r.task is not None
        cell = "<td>-</td>"
        name = '<td class="none">(no task)</td>' if r.task is None else f"<td>{escape(r.task)}</td>"
        unpriced = f' <span class="muted">({r.unpriced_runs} unpriced)</span>' if r.unpriced_runs else ""
        body.append(
            "<tr>"
            + name
            + (f"<td>{r.runs}</td>" if per_run else cell)
            + (f"<td>{' / '.join(str(r.outcomes.get(o, 0)) for o in OUTCOMES)}</td>" if per_run else cell)
            + f"<td>{r.calls:,}</td><td>{escape(money(r.cost_total))}{unpriced}</td>"
            + (
                f"<td>{escape(money(r.cost_p50))}</td><td>{escape(money(r.cost_p95))}</td>"
                if per_run
                else cell * 2
            )
            + (
                f"<td>{escape(money(r.cost_per_success)) if r.cost_per_success is not None else '-'}</td>"
                if per_run
                else cell
            )
            + (f"<td>{escape(money(r.failure_cost))}</td>" if per_run else cell)
            + f"<td>{r.cache_hit_rate:.1%}</td>{_tokens(r.usage.input_tokens)}"
            + f"{_tokens(r.usage.cache_read_tokens)}{_tokens(r.usage.cache_write_tokens)}"
            + f"{_tokens(r.usage.output_tokens)}<td>{len(r.alerts) or ''}</td></tr>"
        )
    return f'<div class="scroll"><table>{head}{"".join(body)}</table></div>'


def _alerts(rows: Sequence[TaskNameRow], limit: int = 40) -> str:
    """One line per (task name, kind): the latest message and how often it fired."""
    groups: dict[tuple[str | None, str], list[AlertRecord]] = {}
    for row in rows:
        for alert in row.alerts:
            groups.setdefault((row.task, alert.kind), []).append(alert)
    if not groups:
        return '<p class="muted">No warning signal fired in this window.</p>'
    ordered = sorted(groups.values(), key=lambda g: max(a.created_at for a in g), reverse=True)
    items = []
    for group in ordered[:limit]:
        latest = max(group, key=lambda a: a.created_at)
        times = f"{len(group)} times, latest " if len(group) > 1 else ""
        items.append(
            f'<li><span class="kind">{escape(latest.kind)}</span> '
            f'<span class="muted">({times}{escape(latest.created_at.strftime("%Y-%m-%d %H:%M"))})</span> '
            f"{escape(latest.message)}</li>"
        )
    more = (
        f'<p class="muted">… and {len(ordered) - limit} more (see --format json).</p>'
        if len(ordered) > limit
        else ""
    )
    return f'<ul class="alerts">{"".join(items)}</ul>{more}'


def render_html(report: Report, *, ledger: str = "", thresholds: SignalThresholds | None = None) -> str:
    """The whole report as one HTML document with no external resources."""
    thresholds = thresholds or SignalThresholds()
    runs = sum(r.runs for r in report.rows)
    alerts = sum(len(r.alerts) for r in report.rows)
    window = f"since {report.since:%Y-%m-%d %H:%M} UTC" if report.since else "all records"
    cards = [
        ("total cost", money(report.cost_total)),
        ("calls", f"{report.calls:,}"),
        ("task runs", f"{runs:,}"),
        ("cache hit rate", f"{report.usage.cache_hit_rate:.1%}"),
        ("alerts", f"{alerts:,}"),
    ]
    if report.unpriced_calls:
        cards.append(("unpriced calls", f"{report.unpriced_calls:,}"))
    card_html = "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div></div>'
        for k, v in cards
    )
    over_time = cost_over_time_chart(report.points, report.rows)
    by_bucket = cost_by_bucket_chart(report.rows)
    hit_rate = cache_hit_rate_chart(report.rows, thresholds.cache_hit_rate_min)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>budgetclient report</title><style>{_CSS}</style></head><body>"
        "<h1>budgetclient report</h1>"
        f'<p class="meta">{escape(window)} · ledger {escape(ledger or "-")} · generated '
        f"{report.generated_at:%Y-%m-%d %H:%M} UTC</p>"
        f'<div class="cards">{card_html}</div>'
        f"<section><h2>Cost per task over time</h2>{over_time}</section>"
        '<div class="grid2">'
        f"<section><h2>Cost by bucket</h2>{by_bucket}</section>"
        f"<section><h2>Cache hit rate</h2>{hit_rate}</section>"
        "</div>"
        f"<section><h2>Per task name</h2>{_table(report.rows)}</section>"
        f"<section><h2>Alerts</h2>{_alerts(report.rows)}</section>"
        "<footer>Money in USD, summed exactly over priced runs; runs with an unknown price are counted as "
        "unpriced and left out. p50/p95: nearest-rank percentiles of per-run cost. Per success: total cost "
        "(failures included) / successful runs. A parent task's figures include its children's.</footer>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
