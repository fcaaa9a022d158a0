"""Per-task-name figures from ledger records: pure aggregation shared by the CLI, ``check`` and tests.

Definitions (they are the report's contract):

- A *run* is one finished task (`TaskRecord`). Tasks nest and a parent's figures include its
  children's, so every name's row counts its own runs in full; the report's grand totals come
  from the call records instead, where nothing is counted twice.
- Money is summed exactly in `Decimal` over *priced* runs. A run whose cost is unknown (some call
  had no price) is left out of every money figure and counted in ``unpriced_runs``; a row whose
  runs are all unpriced has ``None`` for every money figure, never 0.
- ``cost_p50`` / ``cost_p95``: nearest-rank percentiles of per-run cost over priced runs (the
  value at rank ceil(p/100 x n) of the ascending costs), so each is a cost some run really had.
- ``cost_per_success``: total cost of priced runs (failures and partials included) divided by the
  number of successful priced runs - what one success really costs. ``cost_mean`` is the plain
  mean per run. Quotients are rounded to 12 decimal places (``QUANTUM``).
- ``failure_cost``: total cost of failed priced runs; ``failure_cost_share`` its share of the total.
- ``cache_hit_rate``: cache-read tokens / input tokens over all the row's runs (token-weighted).
- Calls made outside any task form the row with ``task=None``: ``runs`` is 0, its figures come
  from those calls, and per-run figures (percentiles, cost per success, failure cost) are None.
- ``alerts``: alerts stored in the ledger plus those found by replaying the signals over the
  report's tasks (`signals.evaluate_history`); one per (kind, task id), the stored one preferred.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .config import Settings
from .ledger.base import AlertRecord
from .signals import PrefixCall, repeat_prefix_calls
from .usage import CallRecord, CostBreakdown, Outcome, TaskRecord, Usage

__all__ = [
    "OUTCOMES",
    "QUANTUM",
    "CacheFacts",
    "LedgerFacts",
    "Report",
    "RunPoint",
    "TaskNameRow",
    "build_report",
    "facts_from_records",
    "merge_alerts",
    "name_cache_repeats",
    "percentile",
]

OUTCOMES: tuple[Outcome, ...] = ("success", "partial", "failure")
QUANTUM = Decimal("0.000000000001")
"""Quotients of money (means, cost per success) are rounded to this (half-even)."""

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, called now and then during long work."""


def percentile(values: Sequence[Decimal], p: float) -> Decimal | None:
    """Nearest-rank percentile: the value at rank ceil(p/100 x n) of ``values`` sorted; None if empty."""
    if not values:
        return None
    if not 0 < p <= 100:
        raise ValueError(f"percentile p must be in (0, 100], got {p!r}")
    ordered = sorted(values)
    rank = math.ceil(Decimal(str(p)) * len(ordered) / 100)  # exact: no float rounding at the boundary
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def _quotient(total: Decimal, count: int) -> Decimal | None:
    return (total / count).quantize(QUANTUM) if count else None


@dataclass(frozen=True, slots=True)
class RunPoint:
    """One finished run, for charts over time."""

    task: str
    task_id: str
    ended_at: datetime
    outcome: Outcome
    cost: Decimal | None
    cache_hit_rate: float
    calls: int


@dataclass(frozen=True, slots=True)
class TaskNameRow:
    """Everything the report says about one task name (``task=None``: calls outside any task)."""

    task: str | None
    runs: int
    outcomes: Mapping[str, int]
    calls: int
    priced_runs: int
    unpriced_runs: int
    cost_total: Decimal | None
    cost_mean: Decimal | None
    cost_p50: Decimal | None
    cost_p95: Decimal | None
    cost_per_success: Decimal | None
    failure_cost: Decimal | None
    failure_cost_share: float | None
    cost_breakdown: CostBreakdown
    """Summed over the runs' priced calls (a run with some unpriced calls still adds its priced part)."""
    usage: Usage
    models: tuple[str, ...]
    """Models called directly under this name (from call records), most used first."""
    first_started_at: datetime | None
    last_ended_at: datetime | None
    alerts: tuple[AlertRecord, ...] = ()

    @property
    def cache_hit_rate(self) -> float:
        return self.usage.cache_hit_rate

    @property
    def output_input_ratio(self) -> float | None:
        return self.usage.output_tokens / self.usage.input_tokens if self.usage.input_tokens else None

    def as_json(self) -> dict[str, Any]:
        """The row as JSON-ready values: money as decimal strings (USD), times as ISO-8601 UTC."""
        return {
            "task": self.task,
            "runs": self.runs,
            "outcomes": {o: int(self.outcomes.get(o, 0)) for o in OUTCOMES},
            "calls": self.calls,
            "cost_total": _money(self.cost_total),
            "cost_mean": _money(self.cost_mean),
            "cost_p50": _money(self.cost_p50),
            "cost_p95": _money(self.cost_p95),
            "cost_per_success": _money(self.cost_per_success),
            "failure_cost": _money(self.failure_cost),
            "failure_cost_share": None
            if self.failure_cost_share is None
            else round(self.failure_cost_share, 6),
            "priced_runs": self.priced_runs,
            "unpriced_runs": self.unpriced_runs,
            "cache_hit_rate": round(self.cache_hit_rate, 6),
            "output_input_ratio": None
            if self.output_input_ratio is None
            else round(self.output_input_ratio, 6),
            "tokens": {
                "input": self.usage.input_tokens,
                "cache_read": self.usage.cache_read_tokens,
                "cache_write": self.usage.cache_write_tokens,
                "cache_write_long": self.usage.cache_write_long_tokens,
                "output": self.usage.output_tokens,
                "reasoning": self.usage.reasoning_tokens,
            },
            "cost_by_bucket": {k: f"{v:f}" for k, v in self.cost_breakdown.as_dict().items()},
            "models": list(self.models),
            "first_started_at": _time(self.first_started_at),
            "last_ended_at": _time(self.last_ended_at),
            "alerts": [alert_json(a) for a in self.alerts],
        }


def _money(amount: Decimal | None) -> str | None:
    """Plain decimal notation (never ``1.2E-7``), every stored digit kept."""
    return None if amount is None else f"{amount:f}"


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def alert_json(alert: AlertRecord) -> dict[str, Any]:
    return {
        "kind": alert.kind,
        "task_id": alert.task_id,
        "created_at": _time(alert.created_at),
        "message": alert.message,
        "value": alert.value,
        "threshold": alert.threshold,
        "details": alert.details,
    }


@dataclass(frozen=True, slots=True)
class Report:
    """Rows per task name (most expensive first, ``task=None`` last) and totals from the calls."""

    rows: tuple[TaskNameRow, ...]
    points: tuple[RunPoint, ...]
    """Every run, in the order they ended."""
    calls: int
    unpriced_calls: int
    cost_total: Decimal
    """Sum over priced calls (each call counted once, nested tasks or not)."""
    cost_breakdown: CostBreakdown
    usage: Usage
    since: datetime | None = None
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_json(self) -> list[dict[str, Any]]:
        return [row.as_json() for row in self.rows]


def merge_alerts(stored: Iterable[AlertRecord], replayed: Iterable[AlertRecord]) -> list[AlertRecord]:
    """One alert per (kind, task id): the stored one if any, else the replayed one; oldest first."""
    merged: dict[tuple[str, str | None], AlertRecord] = {}
    loose: list[AlertRecord] = []
    for alert in stored:
        if alert.task_id is None:
            loose.append(alert)
        else:
            merged.setdefault((alert.kind, alert.task_id), alert)
    for alert in replayed:
        merged.setdefault((alert.kind, alert.task_id), alert)
    return sorted([*merged.values(), *loose], key=lambda a: a.created_at)


def _models(calls: Iterable[CallRecord]) -> tuple[str, ...]:
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.model] = counts.get(call.model, 0) + 1
    return tuple(sorted(counts, key=lambda m: (-counts[m], m)))


def _usage_total(usages: Sequence[Usage]) -> Usage:
    """``sum(usages, Usage())`` field by field: a report sums every run's."""
    return Usage(
        input_tokens=sum(u.input_tokens for u in usages),
        cache_read_tokens=sum(u.cache_read_tokens for u in usages),
        cache_write_tokens=sum(u.cache_write_tokens for u in usages),
        cache_write_long_tokens=sum(u.cache_write_long_tokens for u in usages),
        output_tokens=sum(u.output_tokens for u in usages),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
        requests=sum(u.requests for u in usages),
    )


def _breakdown_total(breakdowns: Sequence[CostBreakdown]) -> CostBreakdown:
    """``sum(breakdowns, CostBreakdown())`` field by field: the same additions from ``Decimal(0)``."""
    zero = Decimal(0)
    return CostBreakdown(
        uncached_input=sum((b.uncached_input for b in breakdowns), zero),
        cache_read=sum((b.cache_read for b in breakdowns), zero),
        cache_write=sum((b.cache_write for b in breakdowns), zero),
        output=sum((b.output for b in breakdowns), zero),
        storage=sum((b.storage for b in breakdowns), zero),
    )


def _task_row(name: str, runs: Sequence[TaskRecord], models: tuple[str, ...]) -> TaskNameRow:
    outcomes: dict[str, int] = {o: 0 for o in OUTCOMES}
    for run in runs:
        outcomes[run.outcome] = outcomes.get(run.outcome, 0) + 1
    priced = [r for r in runs if r.cost is not None]
    costs = [r.cost for r in priced if r.cost is not None]
    total = sum(costs, Decimal(0)) if priced else None
    successes = sum(1 for r in priced if r.outcome == "success")
    failure = sum((r.cost for r in priced if r.outcome == "failure" and r.cost is not None), Decimal(0))
    return TaskNameRow(
        task=name,
        runs=len(runs),
        outcomes=outcomes,
        calls=sum(r.calls for r in runs),
        priced_runs=len(priced),
        unpriced_runs=len(runs) - len(priced),
        cost_total=total,
        cost_mean=None if total is None else _quotient(total, len(priced)),
        cost_p50=percentile(costs, 50),
        cost_p95=percentile(costs, 95),
        cost_per_success=None if total is None else _quotient(total, successes),
        failure_cost=None if total is None else failure,
        failure_cost_share=None if not total else float(failure / total),
        cost_breakdown=_breakdown_total([r.cost_breakdown for r in runs]),
        usage=_usage_total([r.usage for r in runs]),
        models=models,
        first_started_at=min(r.started_at for r in runs),
        last_ended_at=max(r.ended_at for r in runs),
    )


def _loose_calls_row(calls: Sequence[CallRecord]) -> TaskNameRow:
    priced = [c.cost for c in calls if c.cost is not None]
    return TaskNameRow(
        task=None,
        runs=0,
        outcomes={o: 0 for o in OUTCOMES},
        calls=len(calls),
        priced_runs=0,
        unpriced_runs=0,
        cost_total=sum(priced, Decimal(0)) if priced else None,
        cost_mean=None,
        cost_p50=None,
        cost_p95=None,
        cost_per_success=None,
        failure_cost=None,
        failure_cost_share=None,
        cost_breakdown=sum(
            (c.cost_breakdown for c in calls if c.cost_breakdown is not None), CostBreakdown()
        ),
        usage=sum((c.usage for c in calls), Usage()),
        models=_models(calls),
        first_started_at=min(c.started_at for c in calls),
        last_ended_at=max(c.started_at for c in calls),
    )


def build_report(
    tasks: Iterable[TaskRecord],
    calls: Iterable[CallRecord] = (),
    alerts: Iterable[AlertRecord] = (),
    *,
    task_name: str | None = None,
    settings: Settings | None = None,
    replay_signals: bool = True,
    since: datetime | None = None,
    progress: Progress | None = None,
) -> Report:
    """Aggregate records into a `Report`; ``task_name`` keeps one name's row only.

    ``settings`` gives the signal thresholds for the replay (default: the configured ones).
    """
    from . import signals

    tasks = list(tasks)
    calls = list(calls)
    replayed: list[AlertRecord] = []
    if replay_signals:
        report_progress = None if progress is None else (lambda done, total: progress("signals", done, total))
        replayed = signals.evaluate_history(tasks, calls, settings=settings, progress=report_progress)
    all_alerts = merge_alerts(alerts, replayed)

    by_name: dict[str, list[TaskRecord]] = {}
    for run in sorted(tasks, key=lambda t: (t.ended_at, t.started_at)):
        by_name.setdefault(run.name, []).append(run)
    calls_by_name: dict[str | None, list[CallRecord]] = {}
    for call in calls:
        calls_by_name.setdefault(call.task_name if call.task_id is not None else None, []).append(call)
    alerts_by_name: dict[str | None, list[AlertRecord]] = {}
    for alert in all_alerts:
        alerts_by_name.setdefault(alert.task_name, []).append(alert)

    rows: list[TaskNameRow] = []
    names = [n for n in by_name if task_name is None or n == task_name]
    for done, name in enumerate(names, 1):
        row = _task_row(name, by_name[name], _models(calls_by_name.get(name, ())))
        rows.append(_with_alerts(row, alerts_by_name.get(name, ())))
        if progress is not None and (done % 50 == 0 or done == len(names)):
            progress("task names", done, len(names))
    rows.sort(key=lambda r: (r.cost_total is None, -(r.cost_total or 0), r.task or ""))
    loose = calls_by_name.get(None, [])
    if loose and task_name is None:
        rows.append(_with_alerts(_loose_calls_row(loose), alerts_by_name.get(None, ())))

    chosen_calls = [c for c in calls if task_name is None or c.task_name == task_name]
    points = tuple(
        RunPoint(t.name, t.id, t.ended_at, t.outcome, t.cost, t.usage.cache_hit_rate, t.calls)
        for name in names
        for t in by_name[name]
    )
    return Report(
        rows=tuple(rows),
        points=tuple(sorted(points, key=lambda p: p.ended_at)),
        calls=len(chosen_calls),
        unpriced_calls=sum(1 for c in chosen_calls if c.cost is None),
        cost_total=sum((c.cost for c in chosen_calls if c.cost is not None), Decimal(0)),
        cost_breakdown=sum(
            (c.cost_breakdown for c in chosen_calls if c.cost_breakdown is not None), CostBreakdown()
        ),
        usage=sum((c.usage for c in chosen_calls), Usage()),
        since=since,
    )


def _with_alerts(row: TaskNameRow, alerts: Iterable[AlertRecord]) -> TaskNameRow:
    return replace(row, alerts=tuple(alerts))


# -- what the checklist reads beyond the report ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheFacts:
    """The cache check's view of the ``ok`` calls with at least ``cache_min_input_tokens`` input."""

    eligible: int
    cached: int
    """Eligible calls that read or wrote a prompt cache."""
    repeat_input: int
    """Input tokens of the eligible calls that repeat a prefix (`name_cache_repeats`), all names."""
    repeat_read: int
    low: tuple[str | None, ...]
    """Names whose repeating calls read less than ``cache_hit_rate_min``, by their first eligible call."""


@dataclass(frozen=True, slots=True)
class LedgerFacts:
    """What ``budgetclient check`` reads of the records besides the `Report`."""

    runs: int
    task_names: tuple[str, ...]
    """Sorted, like every name list here."""
    unpriced_task_names: tuple[str, ...]
    budgeted_task_names: tuple[str, ...]
    loose_calls: int
    """Calls outside any task (no task id)."""
    loose_cost: Decimal
    call_cost: Decimal
    """Summed over every priced call."""
    models: tuple[str, ...]
    """Models called, cache storage left out."""
    cache: CacheFacts


def name_cache_repeats(calls: Sequence[PrefixCall]) -> tuple[int, int]:
    """(input, cache read) tokens of one name's calls that repeat a prefix: per task in the order of
    its first call, the name's earlier tasks' prefixes counting as seen. ``calls`` in stored order."""
    seen: dict[str, datetime] = {}
    by_task: dict[str | None, list[PrefixCall]] = {}
    for call in sorted(calls, key=lambda c: c.started_at):
        by_task.setdefault(call.task_id, []).append(call)
    repeats = [c for task_calls in by_task.values() for c in repeat_prefix_calls(task_calls, seen)]
    return sum(c.usage.input_tokens for c in repeats), sum(c.usage.cache_read_tokens for c in repeats)


def facts_from_records(
    tasks: Sequence[TaskRecord], calls: Sequence[CallRecord], *, settings: Settings
) -> LedgerFacts:
    """`LedgerFacts` from records in memory (``calls`` in stored order), for small ledgers and tests."""
    minimum = settings.signals.cache_min_input_tokens
    eligible = [c for c in calls if c.status == "ok" and c.usage.input_tokens >= minimum]
    by_name: dict[str | None, list[CallRecord]] = {}
    for call in eligible:
        by_name.setdefault(call.task_name, []).append(call)
    low: list[str | None] = []
    read = total = 0
    for name, group in by_name.items():
        name_input, name_read = name_cache_repeats(group)
        read, total = read + name_read, total + name_input
        if name_input and name_read / name_input < settings.signals.cache_hit_rate_min:
            low.append(name)
    loose = [c for c in calls if c.task_id is None]
    return LedgerFacts(
        runs=len(tasks),
        task_names=tuple(sorted({t.name for t in tasks})),
        unpriced_task_names=tuple(sorted({t.name for t in tasks if t.cost is None})),
        budgeted_task_names=tuple(sorted({t.name for t in tasks if t.budget_usd is not None})),
        loose_calls=len(loose),
        loose_cost=sum((c.cost for c in loose if c.cost is not None), Decimal(0)),
        call_cost=sum((c.cost for c in calls if c.cost is not None), Decimal(0)),
        models=tuple(sorted({c.model for c in calls if c.operation != "cache.storage"})),
        cache=CacheFacts(
            eligible=len(eligible),
            cached=sum(1 for c in eligible if c.usage.cache_read_tokens or c.usage.cache_write_tokens),
            repeat_input=total,
            repeat_read=read,
            low=tuple(low),
        ),
    )
