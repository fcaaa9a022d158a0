"""The HTML report: one self-contained page (inline CSS, inline SVG, no external resources).

Charts: cost per task over time (one line per task name), cost by bucket and cache hit rate (a
row per task name, its full name above the bar). Each chart shows the most expensive task names
and says so when there are more ("top 12 of 40 by cost"); the filter box shows any task name's
rows, in every chart and table, whether or not it was in the top. The layout is one column below
1000 px. The inline script runs the filter and marks, after layout, what the browser drew
(``data-charts-rendered``, ``data-layout`` on ``<body>``), which the tests read back from a
headless browser at several widths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from html import escape

from ..config import SignalThresholds
from ..ledger.base import AlertRecord
from ..reports import OUTCOMES, Report, RunPoint, TaskNameRow
from ..reports_drift import DriftRow
from ._text import usd

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
"""Lines drawn for the most expensive task names; the others' lines are drawn hidden, for the filter."""
MAX_BARS = 12
MAX_FILTERABLE = 60
"""Task names with lines or bars at all (hidden beyond the top ones until the filter asks)."""
MAX_POINTS_PER_SERIES = 1500
MAX_POINTS_HIDDEN = 200
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
.grid2 { display:grid; grid-template-columns:minmax(0,1fr) minmax(0,1fr); gap:16px; }
.grid2 section { margin-bottom:0; } .grid2 + section { margin-top:16px; }
@media (max-width: 1000px) { .grid2 { grid-template-columns:minmax(0,1fr); }
  .grid2 section + section { margin-top:16px; } body { padding:16px; } }
svg.chart { display:block; width:100%; height:auto; }
.filter { margin:0 0 16px; } .filter input { font:inherit; padding:6px 10px; width:min(420px,100%);
  border:1px solid var(--line); border-radius:6px; }
.note { color:var(--muted); font-size:12px; margin:-6px 0 10px; }
.legend { display:flex; flex-wrap:wrap; gap:4px 14px; margin:8px 0 0; padding:0; list-style:none;
  font-size:12px; } .legend li { overflow-wrap:anywhere; } .legend i { display:inline-block; width:10px;
  height:10px; border-radius:2px; margin-right:5px; }
.keys { display:flex; flex-wrap:wrap; gap:4px 12px; font-size:11px; margin-bottom:8px; }
.keys i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:4px; }
.bars .row { margin:0 0 8px; } .bars .name { font-size:12px; overflow-wrap:anywhere; }
.bars .line { display:flex; align-items:center; gap:8px; } .bars svg { flex:1 1 auto; min-width:0;
  height:14px; } .bars .val { font-size:12px; color:var(--muted); min-width:64px; text-align:right; }
.extra { display:none; } .hidden { display:none !important; }
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
  var box = document.getElementById('task-filter');
  function apply() {
    var q = (box && box.value || '').trim().toLowerCase();
    document.querySelectorAll('[data-task]').forEach(function (el) {
      var name = el.getAttribute('data-task').toLowerCase();
      var extra = el.classList.contains('extra');
      var show = q ? name.indexOf(q) >= 0 : !extra;
      el.classList.toggle('hidden', !show);
      if (extra) { el.style.display = show ? (el.tagName === 'g' ? 'inline' : 'block') : ''; }
    });
  }
  if (box) {
    box.addEventListener('input', apply);
    // a link can carry its filter: report.html#filter=triage
    var hash = /^#filter=(.*)$/.exec(location.hash);
    if (hash) { box.value = decodeURIComponent(hash[1]); apply(); }
  }
  var drawn = 0;
  document.querySelectorAll('.chart').forEach(function (chart) {
    var marks = Array.prototype.filter.call(chart.querySelectorAll('[data-mark]'), function (m) {
      var r = m.getBoundingClientRect(); return r.width > 0 && r.height > 0;
    });
    if (marks.length > 0) { drawn += 1; }
  });
  document.body.setAttribute('data-charts-rendered', String(drawn));
  var clipped = 0, smallest = 99;
  document.querySelectorAll('.chart text, .bars .name, .legend li').forEach(function (t) {
    var r = t.getBoundingClientRect();
    if (r.width === 0) { return; }
    var chart = t.closest('section').getBoundingClientRect();
    if (r.left < chart.left - 0.5 || r.right > chart.right + 0.5) { clipped += 1; }
    smallest = Math.min(smallest, r.height);
  });
  document.body.setAttribute('data-layout', JSON.stringify({
    overflow: document.documentElement.scrollWidth > window.innerWidth, clipped: clipped,
    smallest_text_px: Math.round(smallest * 10) / 10, width: window.innerWidth
  }));
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
    """An axis tick: as few decimals as the tick step needs (``$0.50``, ``$2``, ``$1,500``)."""
    if value == 0:
        return "$0"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 0.01:
        return f"${value:.2f}"
    return f"${value:.4f}".rstrip("0") if value >= 0.0001 else f"${value:.2g}"


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


def _name(task: str | None) -> str:
    return "(no task)" if task is None else task


def _svg_open(width: int, height: int, label: str) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}" '
        f'style="{FONT};max-width:{width}px">'
    )


def truncation_note(shown: int, total: int, what: str = "task names by cost") -> str:
    """Says a chart shows only the top ``shown`` of ``total`` (empty when it shows them all)."""
    if total <= shown:
        return ""
    return (
        f'<p class="note">top {shown} of {total} {what}; type in the filter above to see any other '
        "task name</p>"
    )


def cost_over_time_chart(points: Sequence[RunPoint], rows: Sequence[TaskNameRow]) -> str:
    """Per-run cost against end time, one line per task name, the legend below in HTML.

    The ``MAX_SERIES`` most expensive names are drawn; up to ``MAX_FILTERABLE`` more are drawn
    hidden (sampled more thinly) so the filter can show them.
    """
    width, height = 760, 300
    left, right, top, bottom = 70, 16, 16, 44
    label = "Cost per task over time"
    names = [r.task for r in rows if r.task is not None and r.cost_total is not None][:MAX_FILTERABLE]
    series = {n: [p for p in points if p.task == n and p.cost is not None] for n in names}
    series = {n: s for n, s in series.items() if s}
    if not series:
        return _empty(width, height, label)
    for index, (name, pts) in enumerate(series.items()):
        limit = MAX_POINTS_PER_SERIES if index < MAX_SERIES else MAX_POINTS_HIDDEN
        if len(pts) > limit:  # keep the page light: an even sample of the runs
            step = len(pts) / limit
            series[name] = [pts[int(i * step)] for i in range(limit)]
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
            f'<text x="{left - 8}" y="{ty + 4:.1f}" text-anchor="end" font-size="13" fill="#6b7785">'
            f"{_money_label(value)}</text>"
        )
    for i in range(5):
        moment = t0 + span * (i / 4)
        tx = x(moment)
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        out.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 5}" stroke="{AXIS}"/>'
        )
        out.append(
            f'<text x="{tx:.1f}" y="{top + plot_h + 20}" text-anchor="{anchor}" font-size="13" '
            f'fill="{MUTED}">'
            f"{escape(_time_label(moment, span))}</text>"
        )
    out.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#9aa5b1"/>'
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" font-size="13" fill="#6b7785">'
        f"task end time (UTC) · red rings: failed runs</text>"
    )
    legend = []
    for index, (name, pts) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        extra = ' class="extra"' if index >= MAX_SERIES else ""
        coords = " ".join(f"{x(p.ended_at):.1f},{y(p.cost):.1f}" for p in pts)
        out.append(
            f'<g data-task="{escape(name)}"{extra}><polyline data-mark="line" points="{coords}" fill="none" '
            f'stroke="{color}" stroke-width="1.5" opacity="0.8"/>'
        )
        for p in pts:
            ring = ' stroke="#c0392b" stroke-width="2"' if p.outcome == "failure" else ""
            out.append(
                f'<circle data-mark="point" cx="{x(p.ended_at):.1f}" cy="{y(p.cost):.1f}" r="3" '
                f'fill="{color}"{ring}>'
                f"<title>{escape(name)} · {escape(p.ended_at.strftime('%Y-%m-%d %H:%M:%S'))} UTC · "
                f"{escape(usd(p.cost))} · {p.outcome} · {p.calls} calls</title></circle>"
            )
        out.append("</g>")
        legend.append(
            f'<li data-task="{escape(name)}"{extra}><i style="background:{color}"></i>{escape(name)}</li>'
        )
    out.append("</svg>")
    total = sum(1 for r in rows if r.task is not None and r.cost_total is not None)
    return (
        truncation_note(min(MAX_SERIES, len(series)), total)
        + "".join(out)
        + f'<ul class="legend">{"".join(legend)}</ul>'
    )


def _bar_rows(rows: Sequence[TaskNameRow], label: str, draw: Callable[[TaskNameRow], tuple[str, str]],
              keys: str = "") -> str:
    """A chart of one bar per task name: its full name above, the bar (SVG) and its value beside.

    The first ``MAX_BARS`` rows show; the next ones, up to ``MAX_FILTERABLE``, wait for the filter.
    """
    items = []
    for index, row in enumerate(rows[:MAX_FILTERABLE]):
        name = _name(row.task)
        bar, value = draw(row)
        extra = " extra" if index >= MAX_BARS else ""
        items.append(
            f'<div class="row{extra}" data-task="{escape(name)}"><div class="name">{escape(name)}</div>'
            f'<div class="line"><svg viewBox="0 0 1000 14" preserveAspectRatio="none" aria-hidden="true">'
            f'{bar}</svg><span class="val">{escape(value)}</span></div></div>'
        )
    note = truncation_note(min(MAX_BARS, len(rows)), len(rows))
    chart = f'<div class="chart bars" role="img" aria-label="{escape(label)}">{keys}{"".join(items)}</div>'
    return note + chart


def cost_by_bucket_chart(rows: Sequence[TaskNameRow]) -> str:
    """One stacked bar per task name: uncached input, cache read, cache write, output, storage."""
    shown = [r for r in rows if r.cost_breakdown.total > 0]
    label = "Cost by bucket"
    if not shown:
        return _empty(580, 200, label)
    top_total = float(max(r.cost_breakdown.total for r in shown))
    keys = '<div class="keys">' + "".join(
        f'<span><i style="background:{color}"></i>{name}</span>' for _key, name, color in BUCKETS
    ) + "</div>"

    def draw(row: TaskNameRow) -> tuple[str, str]:
        parts, bx, out = row.cost_breakdown.as_dict(), 0.0, []
        for key, bucket, color in BUCKETS:
            amount = parts[key]
            if amount <= 0:
                continue
            w = 1000 * float(amount) / top_total
            out.append(
                f'<rect data-mark="bar" x="{bx:.1f}" y="0" width="{max(w, 2):.1f}" height="14" '
                f'fill="{color}">'
                f"<title>{escape(_name(row.task))} · {bucket}: {escape(usd(amount))}</title></rect>"
            )
            bx += w
        return "".join(out), usd(row.cost_breakdown.total)

    return _bar_rows(shown, label, draw, keys)


def cache_hit_rate_chart(rows: Sequence[TaskNameRow], threshold: float) -> str:
    """Cache hit rate per task name against the signal threshold (dashed line)."""
    shown = [r for r in rows if r.usage.input_tokens > 0]
    label = "Cache hit rate"
    if not shown:
        return _empty(580, 200, label)
    keys = (f'<div class="keys">cache-read tokens / input tokens; dashed line: alert threshold '
            f"{threshold:.0%}</div>")
    tx = 1000 * threshold

    def draw(row: TaskNameRow) -> tuple[str, str]:
        rate = row.cache_hit_rate
        color = "#59a14f" if rate >= threshold else "#f28e2b"
        return (
            f'<rect x="0" y="0" width="1000" height="14" fill="#f0f3f6"/>'
            f'<rect data-mark="bar" x="0" y="0" width="{max(1000 * rate, 2):.1f}" height="14" fill="{color}">'
            f"<title>{escape(_name(row.task))}: {rate:.1%} of {row.usage.input_tokens:,} input tokens "
            f"read from cache</title></rect>"
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="0" y2="14" stroke="#c0392b" stroke-dasharray="3 2" '
            'stroke-width="3"/>',
            f"{rate:.1%}",
        )

    return _bar_rows(shown, label, draw, keys)


def drift_table(rows: Sequence[DriftRow]) -> str:
    """Prefix drift by task: what changed, how often, what it costs, how to fix it."""
    if not rows:
        return '<p class="muted">No prefix drift recorded in this window.</p>'
    head = ("<tr><th>task</th><th>cause</th><th>segment</th><th>calls</th><th>tokens at risk</th>"
            "<th>$ at risk</th><th>how to fix</th></tr>")
    body = "".join(
        f'<tr data-task="{escape(_name(r.task))}"><td>{escape(_name(r.task))}</td><td>{escape(r.cause)}</td>'
        f"<td>{escape(r.segment)}</td><td>{r.calls:,}</td><td>{r.tokens_at_risk:,}</td>"
        f'<td>{escape(usd(r.cost_at_risk))}</td><td class="hint">{escape(r.hint)}</td></tr>'
        for r in rows
    )
    return f'<div class="scroll"><table class="drift">{head}{body}</table></div>'


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
        row_open = f'<tr data-task="{escape(_name(r.task))}">'
        unpriced = f' <span class="muted">({r.unpriced_runs} unpriced)</span>' if r.unpriced_runs else ""
        body.append(
            row_open
            + name
            + (f"<td>{r.runs}</td>" if per_run else cell)
            + (f"<td>{' / '.join(str(r.outcomes.get(o, 0)) for o in OUTCOMES)}</td>" if per_run else cell)
            + f"<td>{r.calls:,}</td><td>{escape(usd(r.cost_total))}{unpriced}</td>"
            + (
                f"<td>{escape(usd(r.cost_p50))}</td><td>{escape(usd(r.cost_p95))}</td>"
                if per_run
                else cell * 2
            )
            + (
                f"<td>{escape(usd(r.cost_per_success)) if r.cost_per_success is not None else '-'}</td>"
                if per_run
                else cell
            )
            + (f"<td>{escape(usd(r.failure_cost))}</td>" if per_run else cell)
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


def render_html(report: Report, *, ledger: str = "", thresholds: SignalThresholds | None = None,
                drift: Sequence[DriftRow] = ()) -> str:
    """The whole report as one HTML document with no external resources; ``drift``: its drift rows."""
    thresholds = thresholds or SignalThresholds()
    runs = sum(r.runs for r in report.rows)
    alerts = sum(len(r.alerts) for r in report.rows)
    window = f"since {report.since:%Y-%m-%d %H:%M} UTC" if report.since else "all records"
    cards = [
        ("total cost", usd(report.cost_total)),
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
        '<div class="filter"><input id="task-filter" type="search" placeholder="filter task names…" '
        f'aria-label="filter task names"> <span class="muted">{len(report.rows)} task names</span></div>'
        f"<section><h2>Cost per task over time</h2>{over_time}</section>"
        '<div class="grid2">'
        f"<section><h2>Cost by bucket</h2>{by_bucket}</section>"
        f"<section><h2>Cache hit rate</h2>{hit_rate}</section>"
        "</div>"
        f"<section><h2>Per task name</h2>{_table(report.rows)}</section>"
        f"<section><h2>Prefix drift</h2>{drift_table(drift)}</section>"
        f"<section><h2>Alerts</h2>{_alerts(report.rows)}</section>"
        "<footer>Money in USD, summed exactly over priced runs; runs with an unknown price are counted as "
        "unpriced and left out. p50/p95: nearest-rank percentiles of per-run cost. Per success: total cost "
        "(failures included) / successful runs. A parent task's figures include its children's.</footer>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
