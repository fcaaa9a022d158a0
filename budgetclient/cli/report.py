"""``budgetclient report``: where the budget goes, per task name, from the ledger.

``--format json`` prints a JSON array, one object per task name (``task: null`` for calls made
outside any task); the figures are defined in ``budgetclient.reports``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from .. import config
from ..reports import OUTCOMES, Report, TaskNameRow
from . import CommandError
from ._common import add_ledger_arguments, read_report

__all__ = ["format_csv", "format_json", "format_table", "register", "run"]

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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = read_report(args, config.get_settings(), points=args.format == "html")
    report = loaded.report
    if args.format == "json":
        text = format_json(report)
    elif args.format == "csv":
        text = format_csv(report)
    elif args.format == "html":
        from ._html import render_html

        text = render_html(report, ledger=loaded.url, thresholds=config.get_settings().signals)
    else:
        text = format_table(report)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def format_json(report: Report) -> str:
    return json.dumps(report.as_json(), indent=2) + "\n"


_CSV_COLUMNS = (
    "task", "runs", *OUTCOMES, "calls", "cost_total", "cost_mean", "cost_p50", "cost_p95", "cost_per_success",
    "failure_cost", "failure_cost_share", "priced_runs", "unpriced_runs", "cache_hit_rate", "input_tokens",
    "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "alerts", "alert_kinds",
)  # fmt: skip


def format_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
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


def usd(amount: Decimal | None) -> str:
    """Money for people: more decimals for small amounts (a task often costs fractions of a cent)."""
    if amount is None:
        return "?"
    if not amount:
        return "$0"
    if abs(amount) >= 100:
        return f"${amount:,.2f}"
    if abs(amount) >= 1:
        return f"${amount:.4f}"
    return f"${amount:.6f}"


def _table_cells(row: TaskNameRow) -> list[str]:
    per_run = row.task is not None
    dash = "-"
    return [
        "(no task)" if row.task is None else row.task,
        str(row.runs) if per_run else dash,
        "/".join(str(row.outcomes.get(o, 0)) for o in OUTCOMES) if per_run else dash,
        str(row.calls),
        usd(row.cost_total),
        usd(row.cost_p50) if per_run else dash,
        usd(row.cost_p95) if per_run else dash,
        (usd(row.cost_per_success) if row.cost_per_success is not None or row.cost_total is None else dash)
        if per_run
        else dash,
        usd(row.failure_cost) if per_run else dash,
        f"{row.cache_hit_rate:.1%}",
        f"{row.usage.input_tokens:,}",
        f"{row.usage.output_tokens:,}",
        str(len(row.alerts)) if row.alerts else "",
    ]


_HEADERS = (
    "TASK", "RUNS", "OK/PART/FAIL", "CALLS", "TOTAL", "P50", "P95", "PER SUCCESS", "FAILURE COST",
    "CACHE HIT", "INPUT TOK", "OUTPUT TOK", "ALERTS",
)  # fmt: skip


def format_table(report: Report, *, max_alerts: int = 20) -> str:
    if not report.rows:
        return "no tasks or calls recorded in this window\n"
    cells = [list(_HEADERS), *(_table_cells(r) for r in report.rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_HEADERS))]
    lines = []
    for index, line in enumerate(cells):
        parts = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    unpriced = sum(r.unpriced_runs for r in report.rows)
    lines.append("")
    lines.append(
        f"total {usd(report.cost_total)} over {report.calls} calls, cache hit rate "
        f"{report.usage.cache_hit_rate:.1%}"
        + (
            f"; {report.unpriced_calls} calls with unknown price (not in money figures)"
            if report.unpriced_calls
            else ""
        )
        + (f"; {unpriced} runs unpriced" if unpriced else "")
    )
    alerts = sorted((a for r in report.rows for a in r.alerts), key=lambda a: a.created_at)
    if alerts:
        lines.append("")
        lines.append(f"alerts ({len(alerts)}):")
        for alert in alerts[-max_alerts:]:
            lines.append(f"  {alert.created_at:%Y-%m-%d %H:%M} {alert.kind}: {alert.message}")
        if len(alerts) > max_alerts:
            lines.append(f"  ... and {len(alerts) - max_alerts} earlier (see --format json)")
    return "\n".join(lines) + "\n"
