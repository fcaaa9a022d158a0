"""``budgetclient demo``: a reference agent session, four caching strategies, one offline run.

Every call goes through ``bc.Anthropic`` (the real SDK, its middleware and metering) to the fake
Anthropic backend, so the figures are what budgetclient meters and writes to the configured
ledger (by default the SQLite file under ``$XDG_DATA_HOME``). The strategies:

- ``none``: no cache markers;
- ``system-only``: one marker on the last system block (the guide's advice);
- ``provider-auto``: Anthropic's automatic mode (top-level ``cache_control``);
- ``budgetclient``: ``cache="auto"``, budgetclient's own placement.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..config import get_settings
from ..ledger.base import mask_url

STRATEGY_ORDER = ("none", "system-only", "provider-auto", "budgetclient")
LABELS = {
    "none": "no caching",
    "system-only": "system prefix only (guide)",
    "provider-auto": "provider automatic mode",
    "budgetclient": "budgetclient placement",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a reference agent session offline with four caching strategies and compare cost",
        description=(
            "Replays the guide's 15-turn agent session (and optionally the other reference traces) "
            "through bc.Anthropic on an offline fake Anthropic backend, once per caching strategy, "
            "and prints cost and cache hit rate per task. Records go to the configured ledger."
        ),
    )
    parser.add_argument(
        "--trace",
        default="guide_session",
        help="reference trace to run, or 'all' (default: guide_session)",
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
    if args.format == "json":
        print(json.dumps([_row_json(r, rows) for r in rows], indent=2))
    else:
        print(_table(rows))
        where = mask_url(get_settings().ledger_url)
        state = "written to" if flushed else "queued for (ledger unavailable, will retry)"
        print(f"\n{sum(r.calls for r in rows)} call records and {len(rows)} task records {state} {where}")
        print("See them with: budgetclient report")
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
                f"  {LABELS[r.strategy]:<28} {r.calls:>5} {'$' + format(r.cost, '.4f'):>10} "
                f"{'$' + format(r.input_cost, '.4f'):>10} {share:>8} {r.cache_hit_rate:>9.1%}"
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K" + message)
        sys.stderr.flush()
