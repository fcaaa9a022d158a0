"""A `Report` and the checklist's `LedgerFacts` read from a ledger, figure for figure what
`reports.build_report` and `reports.facts_from_records` give over the same records, in memory that
does not grow with the ledger.

On SQLite and PostgreSQL the database sums the calls (`ledger.aggregate.call_groups`); the rest is
done one task name at a time: the name's runs (a tenth of the calls) give its row and, replayed
through a fresh `signals.SignalEngine`, its alerts; its calls are read as a few fields each
(`CallFacts`), never as whole records, for the cache signal and the cache check. Names are
independent in the signals, so replaying them one by one and ordering the alerts by when their task
ended gives what one replay over the whole history gives. Memory is bounded by the largest task name
(its runs and calls) plus the tasks that have a parent, not by the ledger. ``memory://`` ledgers
(small by nature) are aggregated in Python from their records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from . import config
from .config import Settings
from .ledger.aggregate import (
    CallFacts,
    CallGroup,
    ChildTask,
    Selection,
    SqlLedger,
    call_groups,
    calls_of,
    child_tasks,
    sql_ledger,
    task_names,
    tasks_of,
)
from .ledger.base import AlertRecord, Ledger
from .reports import (
    OUTCOMES,
    CacheFacts,
    LedgerFacts,
    Progress,
    Report,
    RunPoint,
    TaskNameRow,
    _task_row,
    build_report,
    facts_from_records,
    merge_alerts,
    name_cache_repeats,
)
from .signals import SignalEngine, cost_limit_for
from .usage import CostBreakdown, TaskRecord, Usage

__all__ = ["LedgerReport", "read_ledger_report"]

_IDS_PER_QUERY = 500
_TaskKey = tuple[datetime, datetime, int]
"""When a task ended, started, and its stored order: the order a replay ends tasks in."""


@dataclass(frozen=True, slots=True)
class LedgerReport:
    report: Report
    facts: LedgerFacts | None
    """None unless asked for (``check``): the cache check reads every call a second time."""


def read_ledger_report(
    ledger: Ledger,
    *,
    since: datetime | None = None,
    task_name: str | None = None,
    settings: Settings | None = None,
    points: bool = False,
    facts: bool = False,
    progress: Progress | None = None,
) -> LedgerReport:
    """The report of the records started at or after ``since`` (of ``task_name`` only, if given).

    ``points`` (every run, for charts) grows with the ledger: ask for them only to draw them.
    ``facts``: the checklist's `LedgerFacts` too.
    """
    settings = settings or config.get_settings()
    stored = ledger.read_alerts(since=since, task_name=task_name)
    db = sql_ledger(ledger)
    if db is None:
        tasks = ledger.read_tasks(since=since, name=task_name)
        calls = ledger.read_calls(since=since, task_name=task_name)
        report = build_report(tasks, calls, stored, task_name=task_name, settings=settings, since=since,
                              progress=progress)  # fmt: skip
        found = facts_from_records(tasks, calls, settings=settings) if facts else None
        return LedgerReport(report if points else replace(report, points=()), found)
    return _NamePasses(db, Selection(since, task_name), settings, points, facts, progress).run(stored)


def _models(groups: Sequence[CallGroup]) -> tuple[str, ...]:
    counts: dict[str, int] = {}
    for group in groups:
        counts[group.model] = counts.get(group.model, 0) + group.calls
    return tuple(sorted(counts, key=lambda m: (-counts[m], m)))


def _call_totals(groups: Sequence[CallGroup]) -> tuple[int, int, Decimal, CostBreakdown, Usage]:
    return (
        sum(g.calls for g in groups),
        sum(g.priced for g in groups),
        sum((g.cost for g in groups), Decimal(0)),
        sum((g.cost_breakdown for g in groups), CostBreakdown()),
        sum((g.usage for g in groups), Usage()),
    )


def _loose_row(groups: Sequence[CallGroup]) -> TaskNameRow:
    """`reports._loose_calls_row` from the database's sums."""
    calls, priced, cost, breakdown, usage = _call_totals(groups)
    return TaskNameRow(
        task=None, runs=0, outcomes={o: 0 for o in OUTCOMES}, calls=calls, priced_runs=0, unpriced_runs=0,
        cost_total=cost if priced else None, cost_mean=None, cost_p50=None, cost_p95=None,
        cost_per_success=None, failure_cost=None, failure_cost_share=None, cost_breakdown=breakdown,
        usage=usage, models=_models(groups),
        first_started_at=min(g.first_started_at for g in groups),
        last_ended_at=max(g.last_started_at for g in groups),
    )  # fmt: skip


class _NamePasses:
    """One pass per task name over its runs and calls; the figures add up across names."""

    def __init__(
        self,
        db: SqlLedger,
        sel: Selection,
        settings: Settings,
        points: bool,
        facts: bool,
        progress: Progress | None,
    ) -> None:
        self.db, self.sel, self.settings, self.progress = db, sel, settings, progress
        self.want_points, self.want_facts = points, facts
        self.children: dict[str, list[ChildTask]] = {}
        self.rows: list[TaskNameRow] = []
        self.replayed: list[tuple[_TaskKey, AlertRecord]] = []
        self.points: list[tuple[_TaskKey, list[RunPoint]]] = []
        self.runs = 0
        self.unpriced: set[str] = set()
        self.budgeted: set[str] = set()
        # cache check: per name (its first eligible call, eligible, cached, repeat input, repeat read)
        self.cache: list[tuple[tuple[datetime, int], str | None, int, int, int, int]] = []

    def run(self, stored: Sequence[AlertRecord]) -> LedgerReport:
        sel = self.sel
        groups = call_groups(self.db, sel)
        names = [n for n in task_names(self.db, sel) if sel.task_name is None or n == sel.task_name]
        for child in child_tasks(self.db, sel):
            self.children.setdefault(child.parent_id, []).append(child)
        call_names = {g.task_name for g in groups}
        todo: list[str | None] = [*names, *(n for n in call_names if n not in set(names))]
        task_name_set = set(names)
        for done, name in enumerate(todo, 1):
            calls = calls_of(self.db, sel, name) if name in call_names else []
            if self.want_facts:
                self._cache_facts(name, calls)
            if name is not None and name in task_name_set:
                models = _models([g for g in groups if g.in_task and g.task_name == name])
                self._task_name(name, calls, models)
            if self.progress is not None and (done % 50 == 0 or done == len(todo)):
                self.progress("task names", done, len(todo))
        return self._finish(stored, groups)

    def _cache_facts(self, name: str | None, calls: Sequence[CallFacts]) -> None:
        minimum = self.settings.signals.cache_min_input_tokens
        eligible = [c for c in calls if c.status == "ok" and c.usage.input_tokens >= minimum]
        if not eligible:
            return
        cached = sum(1 for c in eligible if c.usage.cache_read_tokens or c.usage.cache_write_tokens)
        repeat_input, repeat_read = name_cache_repeats(eligible)
        first = (eligible[0].started_at, eligible[0].order)
        self.cache.append((first, name, len(eligible), cached, repeat_input, repeat_read))

    def _task_name(self, name: str, calls: Sequence[CallFacts], models: tuple[str, ...]) -> None:
        stored_runs = tasks_of(self.db, self.sel, name)
        ended = sorted(stored_runs, key=lambda run: (run[0].ended_at, run[0].started_at, run[1]))
        runs = [run for run, _ in ended]
        self.rows.append(_task_row(name, runs, models))
        self.runs += len(runs)
        if any(run.cost is None for run in runs):
            self.unpriced.add(name)
        if any(run.budget_usd is not None for run in runs):
            self.budgeted.add(name)
        keys = [(run.ended_at, run.started_at, order) for run, order in ended]
        if self.want_points:
            self.points.append((keys[0], [
                RunPoint(t.name, t.id, t.ended_at, t.outcome, t.cost, t.usage.cache_hit_rate, t.calls)
                for t in runs
            ]))  # fmt: skip
        self._replay(name, ended, calls)

    def _replay(self, name: str, ended: Sequence[tuple[TaskRecord, int]], calls: Sequence[CallFacts]) -> None:
        """`signals.evaluate_history` for one name: its runs end in order; tasks under them with other
        names only hand their calls up, as their own end would in a replay of every name."""
        engine = SignalEngine(max_pending_tasks=None)
        for call in calls:
            engine.add_call(call)
        foreign = self._foreign_descendants(name, [run.id for run, _ in ended])
        for call in self._calls_of_tasks(foreign):
            engine.add_call(call)
        events: list[tuple[_TaskKey, TaskRecord | ChildTask]] = [
            ((run.ended_at, run.started_at, order), run) for run, order in ended
        ]
        events.extend(((t.ended_at, t.started_at, t.order), t) for t in foreign)
        events.sort(key=lambda event: event[0])
        thresholds, limit = self.settings.signals, cost_limit_for(name, self.settings)
        for key, task in events:
            if isinstance(task, ChildTask):
                engine.pass_up(task.id, task.parent_id)
                continue
            for alert in engine.end_task(task, thresholds=thresholds, cost_limit=limit, at=task.ended_at):
                self.replayed.append((key, alert))

    def _foreign_descendants(self, name: str, ids: list[str]) -> list[ChildTask]:
        seen, stack, foreign = set(ids), list(ids), []
        while stack:
            for child in self.children.get(stack.pop(), ()):
                if child.id not in seen:
                    seen.add(child.id)
                    stack.append(child.id)
                    if child.name != name:
                        foreign.append(child)
        return foreign

    def _calls_of_tasks(self, tasks: Sequence[ChildTask]) -> list[CallFacts]:
        """The calls of these tasks: per task name, between their first start and last end."""
        by_name: dict[str, list[ChildTask]] = {}
        for task in tasks:
            by_name.setdefault(task.name, []).append(task)
        found: list[CallFacts] = []
        for child_name, group in by_name.items():
            for start in range(0, len(group), _IDS_PER_QUERY):
                chunk = group[start : start + _IDS_PER_QUERY]
                window = (min(t.started_at for t in chunk), max(t.ended_at for t in chunk))
                ids = [t.id for t in chunk]
                found.extend(calls_of(self.db, self.sel, child_name, between=window, task_ids=ids))
        return found

    def _finish(self, stored: Sequence[AlertRecord], groups: Sequence[CallGroup]) -> LedgerReport:
        sel, settings = self.sel, self.settings
        self.replayed.sort(key=lambda item: item[0])
        alerts = merge_alerts(stored, [alert for _, alert in self.replayed])
        by_name: dict[str | None, list[AlertRecord]] = {}
        for alert in alerts:
            by_name.setdefault(alert.task_name, []).append(alert)
        rows = [replace(row, alerts=tuple(by_name.get(row.task, ()))) for row in self.rows]
        rows.sort(key=lambda r: (r.cost_total is None, -(r.cost_total or 0), r.task or ""))
        loose = [g for g in groups if not g.in_task]
        if loose and sel.task_name is None:
            rows.append(replace(_loose_row(loose), alerts=tuple(by_name.get(None, ()))))
        self.points.sort(key=lambda item: item[0])
        points = sorted((p for _, name_points in self.points for p in name_points), key=lambda p: p.ended_at)
        calls, priced, cost, breakdown, usage = _call_totals(groups)
        report = Report(
            rows=tuple(rows), points=tuple(points), calls=calls, unpriced_calls=calls - priced,
            cost_total=cost, cost_breakdown=breakdown, usage=usage, since=sel.since,
        )  # fmt: skip
        loose_calls, _, loose_cost, _, _ = _call_totals(loose)
        self.cache.sort(key=lambda item: item[0])
        minimum_rate = settings.signals.cache_hit_rate_min
        cache = CacheFacts(
            eligible=sum(item[2] for item in self.cache),
            cached=sum(item[3] for item in self.cache),
            repeat_input=sum(item[4] for item in self.cache),
            repeat_read=sum(item[5] for item in self.cache),
            low=tuple(item[1] for item in self.cache if item[4] and item[5] / item[4] < minimum_rate),
        )
        names = sorted(row.task for row in self.rows if row.task is not None)
        facts = LedgerFacts(
            runs=self.runs, task_names=tuple(names), unpriced_task_names=tuple(sorted(self.unpriced)),
            budgeted_task_names=tuple(sorted(self.budgeted)), loose_calls=loose_calls, loose_cost=loose_cost,
            call_cost=cost, models=tuple(sorted({g.model for g in groups if not g.storage})), cache=cache,
        )  # fmt: skip
        return LedgerReport(report, facts)
