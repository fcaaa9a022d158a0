"""``budgetclient demo``: a reference agent session, four caching strategies, one offline run.

Every call goes through ``bc.Anthropic`` (the real SDK, its middleware and metering) to the fake
Anthropic backend, so the figures are what budgetclient meters. They go to a ledger of the
demo's own (``demo-ledger.db`` beside the default ledger, or ``--ledger URL``), never to the
user's ledger: the demo's deliberately uncached runs would otherwise fail ``budgetclient check``
and mix with real tasks in ``budgetclient report``. The strategies:

- ``none``: no cache markers;
- ``system-only``: one marker on the last system block (the guide's advice);
- ``provider-auto``: Anthropic's automatic mode (top-level ``cache_control``);
- ``budgetclient``: ``cache="auto"``, budgetclient's own placement.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..config import default_ledger_url, get_settings
from ..ledger.base import mask_url, sqlite_path_from_url
from ._text import usd

STRATEGY_ORDER = ("none", "system-only", "provider-auto", "budgetclient")
LABELS = {
    "none": "no caching",
    "system-only": "system prefix only (guide)",
    "provider-auto": "provider automatic mode",
    "budgetclient": "budgetclient placement",
}


_TRACES_PLACEHOLDER = "{reference traces}"


def demo_ledger_url() -> str:
    """The demo's own ledger: ``demo-ledger.db`` beside the default ledger file."""
    default = sqlite_path_from_url(default_ledger_url())
    return "sqlite:///" + os.path.join(os.path.dirname(default), "demo-ledger.db")


def demo_ledger_hint(command: str) -> str:
    """One line telling where the demo's records are, or ``""`` when the demo has not run."""
    url = demo_ledger_url()
    if not os.path.exists(sqlite_path_from_url(url)):
        return ""
    return f"the demo's records are in its own ledger: budgetclient {command} --ledger {url}"


class _TraceListHelp(argparse.RawDescriptionHelpFormatter):
    """Fills in the trace list only when help is shown (building the traces takes a moment)."""

    def _format_text(self, text: str) -> str:
        if text == _TRACES_PLACEHOLDER:
            from ..testing.traces import reference_traces

            traces = reference_traces()
            width = max(map(len, traces))
            lines = [f"  {name:<{width}}  {t.description} ({len(t.calls)} calls)"
                     for name, t in traces.items()]
            text = "reference traces (--trace NAME, or --trace all):\n" + "\n".join(lines)
            return text + "\n\n"
        return super()._format_text(text)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a reference agent session offline with four caching strategies and compare cost",
        description=(
            "Replays the guide's 15-turn agent session (and optionally the other reference traces)\n"
            "through bc.Anthropic on an offline fake Anthropic backend, once per caching strategy,\n"
            "and prints cost and cache hit rate per strategy. Records go to the demo's own ledger\n"
            "(demo-ledger.db beside the default ledger), never to yours."
        ),
        epilog=_TRACES_PLACEHOLDER,
        formatter_class=_TraceListHelp,
    )
    parser.add_argument(
        "--trace",
        default="guide_session",
        help="reference trace to run (listed below), or 'all' (default: guide_session)",
    )
    parser.add_argument(
        "--ledger",
        metavar="URL",
        help="ledger the demo writes to (default: demo-ledger.db beside the default ledger)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class DemoRow:
    trace: str
    strategy: str
    calls: int
    cost: Decimal
    input_cost: Decimal
    cache_hit_rate: float


def run_strategy(trace: Any, strategy: str) -> DemoRow:
    """Run one trace with one strategy through bc.Anthropic on a fresh fake backend."""
    import budgetclient as bc

    from ..lineage import LineageState
    from ..options import ClientOptions
    from ..providers.anthropic import BudgetMiddleware
    from ..testing import FakeAnthropic, FakeClock
    from ..testing.traces import STRATEGIES

    fake = FakeAnthropic(clock=FakeClock())
    ours = strategy == "budgetclient"
    options = ClientOptions(cache="auto" if ours else "off", cache_ttl="auto", drift="off")
    client = bc.Anthropic(
        api_key="demo-key-not-secret",
        base_url="https://api.anthropic.com",
        http_client=fake.http_client(),
        max_retries=0,
        middleware=[BudgetMiddleware(options, clock=fake.clock.now)],
    )
    mark = STRATEGIES[strategy]
    state = LineageState(key=f"demo:{strategy}")
    with bc.task(f"demo:{trace.name}:{strategy}", metadata={"trace": trace.name, "strategy": strategy}) as t:
        for call in trace.calls:
            fake.clock.advance(call.gap_s)
            body = dict(call.body) if ours else mark(dict(call.body), state, fake.clock.now())
            client.messages.create(**body)
    cost = t.cost if t.cost is not None else Decimal(0)
    breakdown = t.cost_breakdown  # None only if a call was unpriced; the demo's models are priced
    return DemoRow(
        trace=trace.name,
        strategy=strategy,
        calls=t.calls,
        cost=cost,
        input_cost=breakdown.input if breakdown is not None else Decimal(0),
        cache_hit_rate=t.cache_hit_rate,
    )


def run(args: argparse.Namespace) -> int:
    import warnings

    import structlog

    from .. import config
    from ..cli import CommandError
    from ..ledger.writer import flush
    from ..testing.traces import reference_traces

    traces = reference_traces()
    if args.trace == "all":
        chosen = list(traces.values())
    elif args.trace in traces:
        chosen = [traces[args.trace]]
    else:
        raise CommandError(f"unknown trace {args.trace!r}; choose one of {', '.join(traces)} or 'all'")

    yours = mask_url(get_settings().ledger_url)
    url = args.ledger or demo_ledger_url()
    config.configure(ledger=url)
    # The uncached strategies are meant to look bad: their alerts (low hit rate, cost per task)
    # would be noise here, so only errors are logged; the ledger keeps the alerts for `report`.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    rows: list[DemoRow] = []
    total = len(chosen) * len(STRATEGY_ORDER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for trace in chosen:
            for strategy in STRATEGY_ORDER:
                _progress(f"[{len(rows) + 1}/{total}] {trace.name}: {LABELS[strategy]}")
                rows.append(run_strategy(trace, strategy))
    _progress("")
    flushed = flush(30)
    where = mask_url(get_settings().ledger_url)
    if args.format == "json":
        print(json.dumps([_row_json(r, rows) for r in rows], indent=2))
        print(f"demo records: {where}", file=sys.stderr)
    else:
        print(_table(rows))
        state = "" if flushed else " (not written yet: ledger unavailable)"
        print(f"\ndemo ledger ({sum(r.calls for r in rows)} calls, {len(rows)} tasks){state}: {where}")
        print(f"  see it:    budgetclient report --ledger {where}")
        if not args.ledger:
            print(f"  remove it: rm {sqlite_path_from_url(url)}")
            print(f"your own ledger is untouched: {yours}")
    return 0


def _baseline(row: DemoRow, rows: list[DemoRow]) -> Decimal:
    for other in rows:
        if other.trace == row.trace and other.strategy == "none":
            return other.input_cost
    return row.input_cost


def _row_json(row: DemoRow, rows: list[DemoRow]) -> dict[str, Any]:
    base = _baseline(row, rows)
    return {
        "trace": row.trace,
        "strategy": row.strategy,
        "calls": row.calls,
        "cost": str(row.cost),
        "input_cost": str(row.input_cost),
        "input_cost_vs_uncached": float(row.input_cost / base) if base else None,
        "cache_hit_rate": round(row.cache_hit_rate, 4),
    }


def _table(rows: list[DemoRow]) -> str:
    lines = []
    for trace in dict.fromkeys(r.trace for r in rows):
        lines.append(f"trace: {trace}")
        lines.append(
            f"  {'strategy':<28} {'calls':>5} {'cost':>10} {'input':>10} {'vs none':>8} {'hit rate':>9}"
        )
        for r in (r for r in rows if r.trace == trace):
            base = _baseline(r, rows)
            share = f"{float(r.input_cost / base):.0%}" if base else "-"
            lines.append(
                f"  {LABELS[r.strategy]:<28} {r.calls:>5} {usd(r.cost):>10} "
                f"{usd(r.input_cost):>10} {share:>8} {r.cache_hit_rate:>9.1%}"
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K" + message)
        sys.stderr.flush()
