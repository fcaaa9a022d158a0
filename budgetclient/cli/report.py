"""``budgetclient report``: where the budget goes, per task name, from the ledger.

``--format json`` prints a JSON array, one object per task name (``task: null`` for calls made
outside any task); the figures are defined in ``budgetclient.reports``. ``--drift`` reports the
prefix drifts instead (`budgetclient.reports_drift`). The table fits 100 columns (``--wide``:
every column, names whole).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

from .. import config
from .._display import DISPLAY_NAME_MAX, csv_writer, display_name, terminal_text
from ..ledger._files import write_private
from ..reports import OUTCOMES, Report, TaskNameRow
from ..reports_drift import DriftRow, drift_summary_line, ledger_drift
from . import CommandError
from ._common import add_ledger_arguments, parse_since, read_report
from ._json import dumps_indented
from ._text import WIDTH, table, usd, wrap
from .limits import limit_lines

__all__ = ["format_csv", "format_drift", "format_json", "format_table", "register", "run", "usd"]

FORMATS = ("table", "json", "csv", "html")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="cost per task name: runs, outcomes, cost p50/p95/total, failure cost, cache hit rate, alerts",
        description=(
            "Per task name: runs, outcomes, cost p50/p95/total, cost per success, failure cost, calls, "
            "cache hit rate, tokens by bucket and alerts, read from the ledger. p50/p95 are nearest-rank "
            "percentiles of per-run cost; runs with an unknown price are left out of money figures and "
            "counted as unpriced."
        ),
    )
    add_ledger_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout (for html)")
    parser.add_argument("--wide", action="store_true", help="every column, names in full (wider than 100)")
    parser.add_argument(
        "--drift", action="store_true",
        help="prefix drift by task: calls, cause, segment, tokens and dollars at risk, and how to fix it",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    width = None if args.wide else WIDTH
    if args.drift:
        text = _drift_text(args, width)
    else:
        loaded = read_report(args, config.get_settings(), points=args.format == "html", drift=True,
                             limits=args.format == "table")  # fmt: skip
        report, drifts = loaded.report, loaded.drift or []
        if args.format == "json":
            text = format_json(report)  # task-name rows; limits as JSON: `budgetclient limits --json`
        elif args.format == "csv":
            text = format_csv(report)
        elif args.format == "html":
            from ._html import render_html

            text = render_html(
                report, ledger=loaded.url, thresholds=config.get_settings().signals, drift=drifts
            )
        else:
            text = format_table(report, width=width, drift=drifts)
            if loaded.limits:  # spend per fleet limit (bc.limit) in its current window
                lines = [display_name(line, _ALERT_LINE_MAX) for line in limit_lines(list(loaded.limits))]
                text += "\nlimits (current windows):\n" + "\n".join(lines) + "\n"
    if args.output:
        try:
            write_private(Path(args.output), text)  # a report of costs is nobody else's business: 0600
        except OSError as exc:
            raise CommandError(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _drift_text(args: argparse.Namespace, width: int | None) -> str:
    from ._common import _open

    url = args.ledger or config.get_settings().ledger_url
    ledger = _open(url, "report")  # a missing ledger is the same one-line error as without --drift
    try:
        since = parse_since(args.since) if args.since else None
        rows = ledger_drift(ledger, since=since, task=args.task or None)
    finally:
        ledger.close()
    if args.format == "json":
        return json.dumps([r.as_json() for r in rows], indent=2) + "\n"
    if args.format == "csv":
        out = io.StringIO()
        writer = csv_writer(out)
        columns = list(DriftRow.__dataclass_fields__)
        writer.writerow(columns)
        for row in rows:
            data = row.as_json()
            writer.writerow(
                [
                    "" if data.get(_DRIFT_JSON.get(c, c)) is None else data[_DRIFT_JSON.get(c, c)]
                    for c in columns
                ]
            )
        return out.getvalue()
    if args.format == "html":
        raise CommandError("--drift prints table, json or csv; the html report has a drift section already")
    return format_drift(rows, width=width)


_DRIFT_JSON = {"unpriced": "unpriced_calls"}


def format_drift(rows: list[DriftRow], *, width: int | None = WIDTH) -> str:
    """The drift table, then one fix per cause that appears in it."""
    if not rows:
        return "no prefix drift recorded in this window\n"
    cells = [["TASK", "CAUSE", "SEGMENT", "CALLS", "TOKENS AT RISK", "$ AT RISK"]]
    for row in rows:
        cost = usd(row.cost_at_risk) + ("+?" if row.unpriced and row.cost_at_risk is not None else "")
        name = "(no task)" if row.task is None else display_name(row.task)
        cells.append(
            [name, row.cause, terminal_text(row.segment), str(row.calls), f"{row.tokens_at_risk:,}", cost]
        )
    lines = table(cells, width=width, left=3)
    calls = sum(r.calls for r in rows)
    lines += ["", f"{calls} call{'s' * (calls != 1)} changed their cached prefix. How to fix each cause:"]
    for cause, hint in dict.fromkeys((r.cause, r.hint) for r in rows):
        lines += wrap(f"{cause}: {hint}", indent="  ", width=width)
    return "\n".join(lines) + "\n"


def format_json(report: Report) -> str:
    return dumps_indented(report.as_json()) + "\n"  # json.dumps(..., indent=2)'s text, faster


_CSV_COLUMNS = (
    "task", "runs", *OUTCOMES, "calls", "cost_total", "cost_mean", "cost_p50", "cost_p95", "cost_per_success",
    "failure_cost", "failure_cost_share", "priced_runs", "unpriced_runs", "cache_hit_rate", "input_tokens",
    "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "alerts", "alert_kinds",
)  # fmt: skip


def format_csv(report: Report) -> str:
    """One line per task name; full names, but no cell a spreadsheet would run (`csv_writer`)."""
    out = io.StringIO()
    writer = csv_writer(out)
    writer.writerow(_CSV_COLUMNS)
    for row in report.rows:
        data = row.as_json()
        writer.writerow(
            [
                "" if row.task is None else row.task,
                row.runs,
                *(row.outcomes.get(o, 0) for o in OUTCOMES),
                row.calls,
                *(
                    "" if data[k] is None else data[k]
                    for k in ("cost_total", "cost_mean", "cost_p50", "cost_p95", "cost_per_success")
                ),
                "" if data["failure_cost"] is None else data["failure_cost"],
                "" if row.failure_cost_share is None else data["failure_cost_share"],
                row.priced_runs,
                row.unpriced_runs,
                data["cache_hit_rate"],
                row.usage.input_tokens,
                row.usage.cache_read_tokens,
                row.usage.cache_write_tokens,
                row.usage.output_tokens,
                row.usage.reasoning_tokens,
                len(row.alerts),
                ";".join(sorted({a.kind for a in row.alerts})),
            ]
        )
    return out.getvalue()


def _table_cells(row: TaskNameRow, wide: bool) -> list[str]:
    per_run = row.task is not None
    dash = "-"
    known = row.cost_per_success is not None or row.cost_total is None
    per_success = usd(row.cost_per_success) if known else dash
    limit = _WIDE_NAME_MAX if wide else DISPLAY_NAME_MAX
    name = "(no task)" if row.task is None else display_name(row.task, limit)
    return [
        name,
        str(row.runs) if per_run else dash,
        "/".join(str(row.outcomes.get(o, 0)) for o in OUTCOMES) if per_run else dash,
        *([str(row.calls)] if wide else []),
        usd(row.cost_total),
        usd(row.cost_p50) if per_run else dash,
        usd(row.cost_p95) if per_run else dash,
        *([per_success if per_run else dash] if wide else []),
        usd(row.failure_cost) if per_run else dash,
        f"{row.cache_hit_rate:.1%}",
        *([f"{row.usage.input_tokens:,}", f"{row.usage.output_tokens:,}"] if wide else []),
        str(len(row.alerts)) if row.alerts else "",
    ]


_WIDE_HEADERS = (
    "TASK", "RUNS", "OK/PART/FAIL", "CALLS", "TOTAL", "P50", "P95", "PER SUCCESS", "FAILURE COST",
    "CACHE HIT", "INPUT TOK", "OUTPUT TOK", "ALERTS",
)  # fmt: skip
_HEADERS = ("TASK", "RUNS", "OK/PT/FL", "TOTAL", "P50", "P95", "FAIL $", "HIT", "ALERTS")
"""The 100-column table: per-success cost, calls and token counts are in ``--wide``, json and csv."""


_ALERT_LINE_MAX = 200
_WIDE_NAME_MAX = 200
"""``--wide`` shows names whole up to this; longer ones (a 1 MB name) are cut even there."""


def format_table(
    report: Report, *, max_alerts: int = 20, width: int | None = WIDTH, drift: list[DriftRow] | None = None
) -> str:
    """The per-task table (``width=None``: every column, names whole), totals, alerts, a drift line."""
    if not report.rows:
        return "no tasks or calls recorded in this window\n"
    wide = width is None
    cells = [list(_WIDE_HEADERS if wide else _HEADERS), *(_table_cells(r, wide) for r in report.rows)]
    lines = table(cells, width=width)
    unpriced = sum(r.unpriced_runs for r in report.rows)
    lines.append("")
    lines += wrap(
        f"total {usd(report.cost_total)} over {report.calls} calls, cache hit rate "
        f"{report.usage.cache_hit_rate:.1%}"
        + (
            f"; {report.unpriced_calls} calls with unknown price (not in money figures)"
            if report.unpriced_calls
            else ""
        )
        + (f"; {unpriced} runs unpriced" if unpriced else ""),
        width=width,
    )
    summary = drift_summary_line(drift or (), usd)
    if summary:
        lines += wrap(summary, width=width)
    alerts = sorted((a for r in report.rows for a in r.alerts), key=lambda a: a.created_at)
    if alerts:
        lines.append("")
        lines.append(f"alerts ({len(alerts)}):")
        for alert in alerts[-max_alerts:]:
            message = display_name(f"{alert.kind}: {alert.message}", _ALERT_LINE_MAX)
            lines += wrap(f"{alert.created_at:%Y-%m-%d %H:%M} {message}", indent="  ", width=width)
        if len(alerts) > max_alerts:
            lines.append(f"  ... and {len(alerts) - max_alerts} earlier (see --format json)")
    return "\n".join(lines) + "\n"
