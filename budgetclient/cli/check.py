"""``budgetclient check``: the guide's pre-deployment checklist, evaluated on the ledger.

Each item is ``pass``, ``warn``, ``fail`` or ``manual`` (not something a ledger can show, or not
enough data to judge). The exit status is 1 when any item fails (``--strict``: or warns), so the
command can gate a deployment; 2 is kept for errors (bad arguments, unreadable ledger). A ledger
with nothing recorded (none yet, or only the demo's, which has a ledger of its own) exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, Literal

from .. import config
from .._display import display_name
from ..config import Settings
from ..ledger.base import AlertRecord, mask_url
from ..reports import CacheFacts, LedgerFacts, Report, facts_from_records
from ..usage import CallRecord, TaskRecord
from ._common import add_ledger_arguments, ledger_missing, read_report

__all__ = ["CheckItem", "checklist", "evaluate_checklist", "register", "run"]

Status = Literal["pass", "warn", "fail", "manual"]


@dataclass(frozen=True, slots=True)
class CheckItem:
    """One checklist item and what the ledger says about it."""

    key: str
    title: str
    status: Status
    detail: str


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="the pre-deployment token-budget checklist, evaluated on the ledger (exit 1 on failure)",
        description=(
            "Evaluate the guide's pre-deployment checklist on the ledger: caching enabled and hitting, "
            "cost per task logged, alert thresholds set, output constrained, failure cost, model tiering. "
            "Exit status 1 when an item fails. Alert thresholds are read from this process's settings "
            "(BUDGETCLIENT_ALERT_COST_PER_TASK) and from the budgets recorded on tasks."
        ),
    )
    add_ledger_arguments(parser)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--strict", action="store_true", help="treat warnings as failures")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = config.get_settings()
    url = args.ledger or settings.ledger_url
    if ledger_missing(url):
        return _nothing_recorded(args, "no ledger file yet")
    loaded = read_report(args, settings, facts=True)
    assert loaded.facts is not None
    if loaded.report.calls == 0 and loaded.facts.runs == 0:
        return _nothing_recorded(args, "no tasks or calls recorded in this window")
    items = checklist(loaded.facts, loaded.report, settings=settings)
    failed = any(i.status == "fail" or (args.strict and i.status == "warn") for i in items)
    if args.format == "json":
        sys.stdout.write(
            json.dumps({"passed": not failed, "items": [asdict(i) for i in items]}, indent=2) + "\n"
        )
    else:
        width = max(len(i.title) for i in items)
        for item in items:
            sys.stdout.write(f"{item.status.upper():<6} {item.title:<{width}}  {item.detail}\n")
        counts = {s: sum(1 for i in items if i.status == s) for s in ("pass", "warn", "fail", "manual")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        sys.stdout.write(f"\n{'FAILED' if failed else 'OK'}: {summary}\n")
    return 1 if failed else 0


def _nothing_recorded(args: argparse.Namespace, why: str) -> int:
    """Nothing to judge is not a failure: a fresh install (or one that only ran the demo) exits 0."""
    from .demo import demo_ledger_hint

    url = mask_url(args.ledger or config.get_settings().ledger_url)
    hint = demo_ledger_hint("check") if not args.ledger else ""
    note = f"nothing to check in {url}: {why}"
    if args.format == "json":
        sys.stdout.write(json.dumps({"passed": True, "items": [], "note": note}, indent=2) + "\n")
    else:
        sys.stdout.write(note + "\n" + (hint + "\n" if hint else ""))
    return 0


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(repr(display_name(n)) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _caching(cache: CacheFacts, settings: Settings) -> CheckItem:
    title = "Prompt caching enabled and verified"
    minimum = settings.signals.cache_min_input_tokens
    if not cache.eligible:
        return CheckItem(
            "caching", title, "manual", f"no call with at least {minimum} input tokens to judge by"
        )
    if not cache.cached:
        return CheckItem(
            "caching", title, "fail",
            f"none of {cache.eligible} calls of {minimum}+ input tokens read or wrote a prompt cache: enable "
            "caching (budgetclient clients with cache='auto') and keep the system prompt and tools stable",
        )  # fmt: skip
    threshold = settings.signals.cache_hit_rate_min
    if not cache.repeat_input:
        return CheckItem(
            "caching", title, "warn", "caching is on, but no call repeated a prefix to verify hits"
        )
    if cache.low:
        low = ["(no task)" if name is None else name for name in cache.low]
        return CheckItem(
            "caching", title, "fail",
            f"calls repeating a prefix read less than {threshold:.0%} of their input from cache for "
            f"{_names(low)}: look for prefix drift (timestamps, ids, tool order) in the cache.drift logs",
        )  # fmt: skip
    return CheckItem(
        "caching",
        title,
        "pass",
        f"calls repeating a prefix read {cache.repeat_read / cache.repeat_input:.1%} of their input "
        "from cache",
    )


def _cost_logged(facts: LedgerFacts) -> CheckItem:
    title = "Cost per task logged (not just cost per call)"
    if not facts.runs:
        return CheckItem(
            "cost_per_task_logged", title, "fail",
            "no task recorded: wrap each unit of agent work in bc.task(...) or @bc.track_task",
        )  # fmt: skip
    priced_cost, loose_cost = facts.call_cost, facts.loose_cost
    if priced_cost and loose_cost / priced_cost > Decimal("0.1"):
        return CheckItem(
            "cost_per_task_logged", title, "warn",
            f"{float(loose_cost / priced_cost):.0%} of the cost ({facts.loose_calls} calls) was spent "
            "outside tasks",
        )  # fmt: skip
    if facts.unpriced_task_names:
        return CheckItem(
            "cost_per_task_logged", title, "warn",
            f"tasks {_names(facts.unpriced_task_names)} used models without a known price; add them with "
            "bc.configure(prices=...) or BUDGETCLIENT_PRICES",
        )  # fmt: skip
    return CheckItem(
        "cost_per_task_logged",
        title,
        "pass",
        f"{facts.runs} task runs of {len(facts.task_names)} names",
    )


def _alert_thresholds(facts: LedgerFacts, settings: Settings) -> CheckItem:
    title = "Alert threshold set for cost per task"
    if settings.alert_cost_per_task is not None:
        return CheckItem(
            "alert_threshold",
            title,
            "pass",
            f"alert_cost_per_task = ${settings.alert_cost_per_task} for every task",
        )
    names = facts.task_names
    covered = set(settings.alert_cost_per_task_by_name) | set(facts.budgeted_task_names)
    uncovered = [n for n in names if n not in covered]
    if names and not uncovered:
        return CheckItem("alert_threshold", title, "pass", "every task name has a threshold or a budget")
    fix = (
        "set bc.configure(alert_cost_per_task=...) (and BUDGETCLIENT_ALERT_COST_PER_TASK for this check) "
        "or give tasks a budget_usd"
    )
    if covered and uncovered:
        return CheckItem(
            "alert_threshold", title, "warn", f"no threshold or budget for {_names(uncovered)}; {fix}"
        )
    return CheckItem("alert_threshold", title, "fail", f"no cost-per-task threshold or budget found; {fix}")


def _output(report: Report, settings: Settings) -> CheckItem:
    title = "Output length constrained"
    ratio = settings.signals.output_input_ratio_max
    rows = [r for r in report.rows if r.task is not None and r.usage.input_tokens]
    if not rows:
        return CheckItem("output_constrained", title, "manual", "no task with recorded input to judge by")
    over = [
        r.task for r in rows if r.task is not None and r.usage.output_tokens > ratio * r.usage.input_tokens
    ]
    if over:
        return CheckItem(
            "output_constrained", title, "fail",
            f"output tokens exceed {ratio:g}x input for {_names(over)}: add explicit length constraints",
        )  # fmt: skip
    spiky = [r.task for r in rows if r.task is not None and any(a.kind == "output_ratio" for a in r.alerts)]
    if spiky:
        return CheckItem(
            "output_constrained",
            title,
            "warn",
            f"some runs of {_names(spiky)} produced more than {ratio:g}x output",
        )
    worst = max(r.usage.output_tokens / r.usage.input_tokens for r in rows)
    return CheckItem(
        "output_constrained", title, "pass", f"highest output/input ratio per task name {worst:.2f}"
    )


def _failure_cost(report: Report, settings: Settings) -> CheckItem:
    title = "Failure cost tracked and contained"
    rows = [r for r in report.rows if r.task is not None and r.cost_total is not None]
    if not rows:
        return CheckItem("failure_cost", title, "manual", "no priced task runs to judge by")
    limit = settings.signals.failure_cost_share_max
    high = [r for r in rows if r.failure_cost_share is not None and r.failure_cost_share > limit]
    if high:
        detail = "; ".join(f"{r.task!r} {r.failure_cost_share:.0%}" for r in high[:4])
        return CheckItem(
            "failure_cost", title, "fail",
            f"failed runs take more than {limit:.0%} of the cost: {detail}; look for context dead ends",
        )  # fmt: skip
    failed = sum((r.failure_cost or Decimal(0) for r in rows), Decimal(0))
    total = sum((r.cost_total or Decimal(0) for r in rows), Decimal(0))
    share = float(failed / total) if total else 0.0
    return CheckItem("failure_cost", title, "pass", f"failed runs are {share:.1%} of task cost")


def _cost_stable(report: Report, settings: Settings, alerts: Sequence[AlertRecord]) -> CheckItem:
    title = "Cost per task stable (history management works)"
    rising = sorted({a.task_name for a in alerts if a.kind == "cost_baseline" and a.task_name})
    if rising:
        return CheckItem(
            "cost_stable", title, "warn",
            f"cost per task rose against its baseline without more calls for {_names(rising)}: "
            "summarise or window the conversation history, trim tools and system prompt",
        )  # fmt: skip
    need = settings.signals.cost_baseline_min_history + 1
    if not any(r.task is not None and r.priced_runs >= need for r in report.rows):
        return CheckItem("cost_stable", title, "manual", f"fewer than {need} priced runs of any task name")
    return CheckItem("cost_stable", title, "pass", "no task name's cost rose against its baseline")


def _tiering(facts: LedgerFacts) -> CheckItem:
    title = "Model tiering considered for sub-tasks"
    models = facts.models
    if not models:
        return CheckItem("model_tiering", title, "manual", "no calls recorded")
    if len(models) == 1:
        return CheckItem(
            "model_tiering", title, "warn",
            f"every call uses {models[0]!r}: route retrieval, summarisation and classification sub-tasks "
            "to a cheaper model where it matches quality",
        )  # fmt: skip
    return CheckItem("model_tiering", title, "pass", f"{len(models)} models in use: {_names(models, 5)}")


_MANUAL = (
    ("budget_modeled", "Token budget modeled per context component", "run `budgetclient estimate PLAN.toml`"),
    ("allocation_targets", "Allocation targets set for the context window", "see bc.plan.analyze(request)"),
    (
        "tool_surface",
        "Tool surface limited to task-relevant tools",
        "not visible in the ledger; review per task",
    ),
)


def evaluate_checklist(
    tasks: Sequence[TaskRecord], calls: Sequence[CallRecord], report: Report, *, settings: Settings
) -> list[CheckItem]:
    """Every checklist item, in the guide's order; ``report`` is `build_report` over the same records."""
    return checklist(facts_from_records(tasks, calls, settings=settings), report, settings=settings)


def checklist(facts: LedgerFacts, report: Report, *, settings: Settings) -> list[CheckItem]:
    """Every checklist item, in the guide's order, from a report and the facts of the same records."""
    alerts = [a for r in report.rows for a in r.alerts]
    manual = {key: CheckItem(key, title, "manual", detail) for key, title, detail in _MANUAL}
    return [
        manual["budget_modeled"],
        manual["allocation_targets"],
        _caching(facts.cache, settings),
        manual["tool_surface"],
        _cost_stable(report, settings, alerts),
        _output(report, settings),
        _cost_logged(facts),
        _alert_thresholds(facts, settings),
        _failure_cost(report, settings),
        _tiering(facts),
    ]
