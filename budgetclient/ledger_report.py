"""A `Report` and the checklist's `LedgerFacts` read from a ledger, figure for figure what
`reports.build_report` and `reports.facts_from_records` give over the same records, in memory that
does not grow with the ledger.

On SQLite and PostgreSQL the database sums the calls (`ledger.aggregate.call_groups`); the rest is
done one task name at a time: the name's runs (a tenth of the calls) give its row and, replayed
through a fresh `signals.SignalEngine`, its alerts. What the cache signal and the checklist's cache
check need of a run's calls is its `RunFacts`, kept in the tasks table: the first report that meets
a run without them reads the calls of the runs from there on (a few fields each, `CallFacts`),
computes and stores them; later reports read runs only. A run's facts hold what its calls say apart
from the runs before it, plus the calls whose verdict depends on those (`signals.RepeatFacts`), so
resolving them name by name in the replay's order gives the replay's figures. Names are independent
in the signals, so replaying them one by one and ordering the alerts by when their task ended gives
what one replay over the whole history gives. Memory is bounded by the largest task name's runs
(and, when facts are missing, its calls), not by the ledger. ``memory://`` ledgers (small by
nature) are aggregated in Python from their records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from . import config
from ._construct import fast_constructor
from .config import Settings
from .errors import LedgerError
from .ledger import _codec
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
from .ledger.rollups import read_rollups, store_rollups
from .ledger.run_marks import Run, cost_percentiles, runs_after, runs_before, runs_up_to
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
from .run_sums import row_from_sums, run_sums
from .signal_rollup import (
    SEEN_PREFIX,
    CacheItem,
    CacheState,
    KeptSignals,
    kept_seen,
    kept_signals,
    rollup_name,
    seen_name,
    signals_rollup,
)
from .signals import (
    PrefixCall,
    RepeatFacts,
    SignalEngine,
    apply_repeat_facts,
    cost_limit_for,
    history_kept,
    moment_us,
    repeat_facts,
)
from .usage import CostBreakdown, TaskRecord, Usage

__all__ = [
    "LedgerReport",
    "RunFacts",
    "decode_run_facts",
    "encode_run_facts",
    "read_ledger_report",
    "run_facts",
]

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


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What one run's calls say to the signals and to the checklist's cache check, kept in the
    tasks table (``facts``) once computed, so a report reads runs, not their calls."""

    signal: RepeatFacts
    """Over the calls the run gathered as it ended (its own, and its children's that ended before it)."""
    own: RepeatFacts
    """Over its own eligible calls (status ok, ``cache_min_input_tokens``+ input), in stored order."""
    own_calls: int
    """Its own calls, any status: the report checks they are all the name's calls in tasks."""
    eligible: int
    cached: int
    """Eligible calls that read or wrote a cache."""
    first_eligible: tuple[int, int] | None
    """Start (`signals.moment_us`) and stored order of its first eligible call: the order the
    checklist takes runs in."""
    first_call: int | None
    """The earliest start of the calls gathered (`signals.moment_us`): ``--since`` after it leaves
    some of them out."""


_NO_REPEATS = RepeatFacts(0, 0, 0, 0, (), ())
_loads = json.JSONDecoder().decode
_new_repeats = fast_constructor(RepeatFacts)
_new_run_facts = fast_constructor(RunFacts)
"""Without a frozen dataclass's per-field cost: a report decodes the facts of every run."""


def run_facts(gathered: Sequence[PrefixCall], own: Sequence[CallFacts], min_input: int) -> RunFacts:
    """`RunFacts` of a run from the calls it gathered and its own calls (both in stored order)."""
    eligible = [c for c in own if c.status == "ok" and c.usage.input_tokens >= min_input]
    return RunFacts(
        signal=repeat_facts(gathered, min_input),
        own=repeat_facts(eligible, 0),
        own_calls=len(own),
        eligible=len(eligible),
        cached=sum(1 for c in eligible if c.usage.cache_read_tokens or c.usage.cache_write_tokens),
        first_eligible=(moment_us(eligible[0].started_at), eligible[0].order) if eligible else None,
        first_call=min((moment_us(c.started_at) for c in gathered), default=None),
    )


def _repeats_json(facts: RepeatFacts) -> list[Any]:
    candidates = [[t, list(keys), i, r] for t, keys, i, r in facts.candidates]
    keys = [list(k) for k in facts.keys]
    return [facts.min_input, facts.calls, facts.input_tokens, facts.cache_read_tokens, candidates, keys]


def _repeats_from(data: list[Any]) -> RepeatFacts:
    """The JSON lists stand for the tuples as they are (a report decodes one per run)."""
    minimum, calls, input_tokens, read, candidates, keys = data
    if candidates.__class__ is not list or keys.__class__ is not list:
        raise TypeError("not run facts")
    return _new_repeats(
        min_input=minimum, calls=calls, input_tokens=input_tokens, cache_read_tokens=read,
        candidates=candidates, keys=keys,
    )  # fmt: skip


def encode_run_facts(facts: RunFacts) -> str:
    first = facts.first_eligible
    data = {
        "v": 1, "s": _repeats_json(facts.signal), "o": _repeats_json(facts.own), "n": facts.own_calls,
        "e": facts.eligible, "c": facts.cached, "fe": None if first is None else list(first),
        "f": facts.first_call,
    }  # fmt: skip
    return json.dumps(data, separators=(",", ":"))


def decode_run_facts(text: str | None, *, own: bool = True) -> RunFacts | None:
    """None for no facts, or facts this version does not read (they are computed again); without
    ``own``, the checklist's part is left empty (a report without the checklist skips it)."""
    if not text:
        return None
    try:
        data = _loads(text)
        if data["v"] != 1:
            return None
        first, first_call = data["fe"], data["f"]
        return _new_run_facts(
            signal=_repeats_from(data["s"]), own=_repeats_from(data["o"]) if own else _NO_REPEATS,
            own_calls=int(data["n"]), eligible=int(data["e"]), cached=int(data["c"]),
            first_eligible=None if first is None else (int(first[0]), int(first[1])),
            first_call=None if first_call is None else int(first_call),
        )  # fmt: skip
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


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
        self.children: dict[str, list[ChildTask]] | None = None
        self.rows: list[TaskNameRow] = []
        self.replayed: list[tuple[_TaskKey, AlertRecord]] = []
        self.points: list[tuple[_TaskKey, list[RunPoint]]] = []
        self.runs = 0
        self.unpriced: set[str] = set()
        self.budgeted: set[str] = set()
        # cache check: per name (its first eligible call, eligible, cached, repeat input, repeat read)
        self.cache: list[tuple[tuple[datetime, int], str | None, int, int, int, int]] = []
        # a whole-ledger report reads and keeps rollups of its work (`ledger.rollups`)
        self.rollups = read_rollups(db, skip=SEEN_PREFIX) if sel == Selection() else None
        self.kept: list[tuple[str, Any]] = []
        """Rollups to store once the report is done."""
        self.kept_names: dict[str, KeptSignals] = {}
        self.after: dict[str, list[Run]] = {}
        self.percentiles: dict[str, tuple[Decimal | None, Decimal | None]] = {}

    def run(self, stored: Sequence[AlertRecord]) -> LedgerReport:
        sel = self.sel
        groups = call_groups(self.db, sel, self.rollups)
        names = [n for n in task_names(self.db, sel) if sel.task_name is None or n == sel.task_name]
        self._read_kept(names)
        call_names = {g.task_name for g in groups}
        todo: list[str | None] = [*names, *(n for n in call_names if n not in set(names))]
        task_name_set = set(names)
        for done, name in enumerate(todo, 1):
            in_tasks = sum(g.calls for g in groups if g.in_task and g.task_name == name)
            loose = any(not g.in_task and g.task_name == name for g in groups)
            if name is not None and name in task_name_set:
                models = _models([g for g in groups if g.in_task and g.task_name == name])
                own_calls, cache = self._task_name(name, models)
                if self.want_facts and not loose and own_calls == in_tasks:
                    if cache is not None:
                        first_us, order, *figures = cache
                        self.cache.append(((_codec.time_from_us(first_us), order), name, *figures))  # type: ignore[arg-type]
                elif self.want_facts:
                    self._cache_facts(name, calls_of(self.db, sel, name))
            elif self.want_facts and name in call_names:
                self._cache_facts(name, calls_of(self.db, sel, name))
            if self.progress is not None and (done % 50 == 0 or done == len(todo)):
                self.progress("task names", done, len(todo))
        store_rollups(self.db, self.kept)
        return self._finish(stored, groups)

    def _cache_facts(self, name: str | None, calls: Sequence[CallFacts]) -> None:
        """The checklist's cache figures of a name from its calls (loose calls, or calls of tasks the
        report has no run of)."""
        minimum = self.settings.signals.cache_min_input_tokens
        eligible = [c for c in calls if c.status == "ok" and c.usage.input_tokens >= minimum]
        if not eligible:
            return
        cached = sum(1 for c in eligible if c.usage.cache_read_tokens or c.usage.cache_write_tokens)
        repeat_input, repeat_read = name_cache_repeats(eligible)
        first = (eligible[0].started_at, eligible[0].order)
        self.cache.append((first, name, len(eligible), cached, repeat_input, repeat_read))

    @staticmethod
    def _cache_from_facts(facts: Iterable[RunFacts], state: CacheState | None = None) -> CacheState | None:
        """`_cache_facts` from the runs' facts: `name_cache_repeats` takes each run's eligible calls in
        the order of its first one, earlier runs' prefixes counting as seen. From ``state`` (the
        figures of runs taken in before) on: None if one of these runs comes before its last."""
        runs = sorted(
            (f for f in facts if f.first_eligible is not None), key=lambda f: f.first_eligible or ()
        )
        item, seen, last = state if state is not None else (None, {}, None)
        if runs and last is not None and (runs[0].first_eligible or ()) <= last:
            return None
        seen = dict(seen)
        first = None if item is None else (item[0], item[1])
        eligible, cached, repeat_input, repeat_read = (0, 0, 0, 0) if item is None else item[2:]
        for run in runs:
            _, run_input, run_read = apply_repeat_facts(run.own, seen)
            repeat_input, repeat_read = repeat_input + run_input, repeat_read + run_read
            eligible, cached = eligible + run.eligible, cached + run.cached
        if runs:
            first, last = first or runs[0].first_eligible, runs[-1].first_eligible
        item = None if first is None else (first[0], first[1], eligible, cached, repeat_input, repeat_read)
        return item, seen, last

    def _read_kept(self, names: Sequence[str]) -> None:
        """The names whose kept work (`signal_rollup`) still holds, the runs that ended after it, and
        the cost percentiles their rows take from the database: a few queries for all the names."""
        if self.rollups is None or self.want_points:
            return
        kept = {}
        for name in names:
            found = kept_signals(self.rollups.get(rollup_name(name)), name, self.settings)
            if found is not None:
                kept[name] = found
        if not kept:
            return
        counts = runs_up_to(self.db, {name: k.mark for name, k in kept.items()})
        self.kept_names = {name: k for name, k in kept.items() if counts[name] == (k.runs, k.orders)}
        self.after = runs_after(self.db, {name: k.mark for name, k in self.kept_names.items()})
        priced = {
            name: k.sums.priced + sum(1 for run, _, _ in self.after[name] if run.cost is not None)
            for name, k in self.kept_names.items()
        }
        self.percentiles = cost_percentiles(self.db, priced)

    def _task_name(self, name: str, models: tuple[str, ...]) -> tuple[int, CacheItem | None]:
        """The name's row, points and alerts; returns its runs' own calls and, for the checklist, its
        cache figures. Where the name's kept work (`signal_rollup`) still holds, only the runs that
        ended after it are read and replayed."""
        kept = self.kept_names.get(name)
        if kept is not None:
            after = self.after[name]
            if not after and (kept.has_cache or not self.want_facts):
                return self._after_kept(name, models, kept, after, {}, None)
            if after:
                found = read_rollups(self.db, names=[seen_name(name)]).get(seen_name(name))
                with_seen = kept_seen(found, kept)
                if with_seen is not None:
                    facts = self._run_facts(name, after, complete=False)
                    cache = None
                    if with_seen.has_cache:
                        state = (with_seen.cache, with_seen.cache_seen, with_seen.cache_last)
                        cache = self._cache_from_facts([facts[run.id] for run, _, _ in after], state)
                    if cache is not None or not self.want_facts:
                        return self._after_kept(name, models, with_seen, after, facts, cache)
        return self._every_run(name, models, kept)

    def _after_kept(
        self,
        name: str,
        models: tuple[str, ...],
        kept: KeptSignals,
        after: Sequence[Run],
        facts: dict[str, RunFacts],
        cache: CacheState | None,
    ) -> tuple[int, CacheItem | None]:
        """`_every_run` from the kept work and the runs that ended after it (with their ``facts``, and
        the cache figures with them, None where they could not be added)."""
        settings = self.settings
        thresholds, limit = settings.signals, cost_limit_for(name, settings)
        runs = [run for run, _, _ in after]
        sums = kept.sums
        sums.add(runs)
        self.rows.append(row_from_sums(name, sums, self.percentiles.get(name, (None, None)), models))
        self.runs += sums.runs
        if sums.priced < sums.runs:
            self.unpriced.add(name)
        if sums.budgeted:
            self.budgeted.add(name)
        self.replayed.extend(kept.alerts)
        if not after:
            return kept.own_calls, kept.cache
        engine = SignalEngine(max_pending_tasks=None)
        history = runs_before(self.db, name, kept.mark, history_kept(thresholds))
        engine.resume(name, [run for run, _, _ in history], kept.seen)
        alerts = list(kept.alerts)
        for run, order, _ in after:
            raised = engine.end_task(run, thresholds=thresholds, cost_limit=limit, at=run.ended_at,
                                     facts=facts[run.id].signal)  # fmt: skip
            alerts.extend(((run.ended_at, run.started_at, order), alert) for alert in raised)
        self.replayed.extend(alerts[len(kept.alerts) :])
        own_calls = kept.own_calls + sum(facts[run.id].own_calls for run in runs)
        last, last_order = runs[-1], after[-1][1]
        now = KeptSignals(
            mark=(last.ended_at, last.started_at, last_order), runs=sums.runs,
            orders=kept.orders + sum(order for _, order, _ in after), sums=sums, seen=engine.seen_keys(name),
            alerts=alerts, own_calls=own_calls, cache=None if cache is None else cache[0],
            has_cache=cache is not None, cache_seen={} if cache is None else cache[1],
            cache_last=None if cache is None else cache[2],
        )  # fmt: skip
        self.kept += signals_rollup(name, settings, now)
        return own_calls, now.cache

    def _every_run(
        self, name: str, models: tuple[str, ...], kept: KeptSignals | None
    ) -> tuple[int, CacheItem | None]:
        """The name's figures from every run of the selection; on a whole-ledger report, kept for the
        next (`signal_rollup`) unless what is kept already covers them."""
        stored_runs = tasks_of(self.db, self.sel, name)
        ended = sorted(stored_runs, key=lambda run: (run[0].ended_at, run[0].started_at, run[1]))
        runs = [run for run, _, _ in ended]
        self.rows.append(_task_row(name, runs, models))
        self.runs += len(runs)
        if any(run.cost is None for run in runs):
            self.unpriced.add(name)
        if any(run.budget_usd is not None for run in runs):
            self.budgeted.add(name)
        keys = [(run.ended_at, run.started_at, order) for run, order, _ in ended]
        if self.want_points:
            self.points.append((keys[0], [
                RunPoint(t.name, t.id, t.ended_at, t.outcome, t.cost, t.usage.cache_hit_rate, t.calls)
                for t in runs
            ]))  # fmt: skip
        settings = self.settings
        facts = self._run_facts(name, stored_runs)
        engine = SignalEngine(max_pending_tasks=None)
        thresholds, limit = settings.signals, cost_limit_for(name, settings)
        alerts: list[tuple[_TaskKey, AlertRecord]] = []
        for key, run in zip(keys, runs, strict=True):
            raised = engine.end_task(run, thresholds=thresholds, cost_limit=limit, at=run.ended_at,
                                     facts=facts[run.id].signal)  # fmt: skip
            alerts.extend((key, alert) for alert in raised)
        self.replayed.extend(alerts)
        own_calls = sum(f.own_calls for f in facts.values())
        # kept work holds the checklist's figures too (so a check after a report reads no run)
        with_cache = self.want_facts or self.rollups is not None
        state = self._cache_from_facts(facts.values()) if with_cache else None
        cache = None if state is None else state[0]
        if self.rollups is not None and (
            kept is None or kept.runs != len(runs) or not kept.has_cache
        ):
            now = KeptSignals(
                mark=keys[-1], runs=len(runs), orders=sum(order for _, order, _ in ended),
                sums=run_sums(runs), seen=engine.seen_keys(name), alerts=alerts, own_calls=own_calls,
                cache=cache, has_cache=True, cache_seen={} if state is None else state[1],
                cache_last=None if state is None else state[2],
            )  # fmt: skip
            self.kept += signals_rollup(name, settings, now)
        return own_calls, cache

    def _run_facts(
        self, name: str, stored_runs: Sequence[tuple[TaskRecord, int, str | None]], *, complete: bool = True
    ) -> dict[str, RunFacts]:
        """Each run's facts: as stored, else computed from the calls (of the runs from the first such
        one on) and stored for the next report when they hold for any window. Unless ``complete`` (the
        runs are all of the name's in the selection), the runs a computation needs are read here."""
        sel, minimum = self.sel, self.settings.signals.cache_min_input_tokens
        facts: dict[str, RunFacts] = {}
        since_us = None if sel.since is None else moment_us(sel.since)
        for run, _, text in stored_runs:
            found = decode_run_facts(text, own=self.want_facts or self.rollups is not None)
            if found is None or found.signal.min_input != minimum or sel.task_name is not None:
                continue  # --task: the runs gather no calls of other names' children (as before)
            if since_us is not None and found.first_call is not None and found.first_call < since_us:
                continue  # the window leaves some of its calls out
            facts[run.id] = found
        missing = [(run, order) for run, order, _ in stored_runs if run.id not in facts]
        if not missing:
            return facts
        if not complete:
            stored_runs = tasks_of(self.db, sel, name, start=min(run.started_at for run, _ in missing))
        computed = self._compute_facts(name, [(run, order) for run, order, _ in stored_runs], missing)
        facts.update(computed)
        store = getattr(self.db, "store_task_facts", None)
        if store is not None and sel.since is None and sel.task_name is None:
            try:
                store([(task_id, encode_run_facts(found)) for task_id, found in computed.items()])
            except LedgerError:
                pass  # a read-only ledger: computed again next time
        return facts

    def _compute_facts(
        self,
        name: str,
        stored_runs: Sequence[tuple[TaskRecord, int]],
        missing: Sequence[tuple[TaskRecord, int]],
    ) -> dict[str, RunFacts]:
        """What a replay of the runs that started with or after the first missing one gives each missing
        run: the calls it gathers as it ends (its own, and those its children hand up, as
        `signals.evaluate_history` sees them) and its own calls. A run's calls and children start
        after it, so none before that start is needed."""
        start = min(run.started_at for run, _ in missing)
        ended = sorted(
            ((run, order) for run, order in stored_runs if run.started_at >= start),
            key=lambda item: (item[0].ended_at, item[0].started_at, item[1]),
        )
        calls = calls_of(self.db, self.sel, name, start=start)
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
        gathered: dict[str, list[PrefixCall]] = {}
        for _, task in events:
            gathered[task.id] = engine.pass_up(task.id, task.parent_id)
        own: dict[str | None, list[CallFacts]] = {}
        for call in calls:
            own.setdefault(call.task_id, []).append(call)
        minimum = self.settings.signals.cache_min_input_tokens
        return {
            run.id: run_facts(gathered.get(run.id, []), own.get(run.id, []), minimum) for run, _ in missing
        }

    def _foreign_descendants(self, name: str, ids: list[str]) -> list[ChildTask]:
        if self.children is None:  # read once, when a run's facts are first computed
            self.children = {}
            for child in child_tasks(self.db, self.sel):
                self.children.setdefault(child.parent_id, []).append(child)
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
