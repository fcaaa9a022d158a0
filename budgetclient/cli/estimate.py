"""``budgetclient estimate PLAN.toml``: the guide's context budget model for a plan, before deployment."""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from typing import Any

from ..plan import Estimate, estimate_file

__all__ = ["register", "render", "run"]

_LABELS = (
    ("uncached", "uncached"),
    ("fixed_prefix_cached", "fixed prefix cached"),
    ("budgetclient", "budgetclient placement"),
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "estimate",
        help="per-turn tokens and session cost of a budget plan (TOML)",
        description=(
            "Model a session's context budget from PLAN.toml (see examples/plans/guide.toml): tokens per "
            "turn, one session's cost uncached / with the fixed prefix cached / with budgetclient's "
            "placement (simulated on the fake backend), cost per 1,000 sessions, and allocation targets."
        ),
    )
    parser.add_argument("plan", metavar="PLAN.toml", help="the plan file")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="MODEL",
        help="price for this model instead of the plan's (repeat for a side-by-side)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {"models": list(args.models)} if args.models else None
    result = estimate_file(args.plan, overrides=overrides)
    if args.format == "json":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(result))
    return 0


def _usd(value: Decimal, places: str = "0.0001") -> str:
    return f"${value.quantize(Decimal(places)):,}"


def render(result: Estimate) -> str:
    """The plain-text report: turns table, session costs, side-by-side models, allocation."""
    lines = [
        f"plan: {result.name}  ({result.model}, {len(result.turns)} turns x {result.calls_per_turn} "
        f"call(s), {result.output_tokens:,} output tokens per call)",
        "",
    ]
    header = (
        f"{'turn':>4}  {'fixed':>7}  {'history':>8}  {'retrieved':>9}  {'tool out':>8}  {'user':>6}  "
        f"{'variable':>8}  {'total':>8}"
    )
    lines += [header, "-" * len(header)]
    for r in result.turns:
        lines.append(
            f"{r.turn:>4}  {r.fixed:>7,}  {r.history:>8,}  {r.retrieved:>9,}  {r.tool_outputs:>8,}  "
            f"{r.user_message:>6,}  {r.variable:>8,}  {r.total:>8,}"
        )
    lines += [
        "",
        f"input tokens per session: {result.session_input_tokens:,}",
        "",
        f"{'session cost':<24}{'per session':>14}{'input only':>14}{'per 1,000 sessions':>20}",
    ]
    for key, label in _LABELS:
        lines.append(
            f"{label:<24}{_usd(result.session_cost[key]):>14}{_usd(result.session_input_cost[key]):>14}"
            f"{_usd(result.per_1000_sessions[key], '0.01'):>20}"
        )
    if len(result.models) > 1:
        lines += ["", f"{'model':<28}" + "".join(f"{label:>24}" for _, label in _LABELS)]
        for m in result.models:
            lines.append(f"{m.model:<28}" + "".join(f"{_usd(m.session_cost[k]):>24}" for k, _ in _LABELS))
    lines += [
        "",
        f"allocation at the largest turn (window {result.window:,} tokens)",
        f"{'component':<18}{'tokens':>9}{'share':>8}{'target':>8}{'target tokens':>15}",
    ]
    for a in result.allocation:
        target = f"{a.target_share:.0%}" if a.target_share is not None else "-"
        target_tokens = f"{a.target_tokens:,}" if a.target_tokens is not None else "-"
        flag = "  OVER" if a.exceeded else ""
        lines.append(f"{a.component:<18}{a.tokens:>9,}{a.share:>8.1%}{target:>8}{target_tokens:>15}{flag}")
    return "\n".join(lines) + "\n"
