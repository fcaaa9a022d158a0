"""Warning signals from the guide, per task name, and the hooks that hear about them.

Each finished task is compared with the earlier tasks of its name:

- ``cost_per_task``: it cost more than its alert threshold (``configure(alert_cost_per_task=...)``);
- ``cost_baseline``: it cost more than ``cost_baseline_factor`` x the median of the earlier tasks
  of that name while its call count did not rise (so the context package grew, not the work);
- ``cache_hit_rate``: its calls that repeat a prefix already sent (same conversation, or same
  prefix hash within the provider's 5-minute TTL) read too little of their input from cache;
- ``failure_cost_share`` / ``failure_cost``: failed tasks take too large a share of the recent
  cost of that name, or one failed task cost more than ``failure_cost_max``;
- ``output_ratio``: output tokens above ``output_input_ratio_max`` x input tokens.

The checks are plain functions of records (``evaluate_task``), so reports replay them over a
ledger's history (``evaluate_history``) exactly as they ran live. Live evaluation (``install()``)
keeps the history of this process only; a fleet's history is judged by ``budgetclient report``.
Every alert is logged as ``alert.<kind>``, stored in the ledger and handed to ``on_alert`` hooks.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any, Protocol, TypeVar, overload

from . import config
from ._fork_locks import renew_after_fork
from ._guard import guarded
from ._log import log
from ._money import usd
from .config import Settings, SignalThresholds
from .hooks import Hooks
from .ledger.base import AlertRecord
from .usage import CallRecord, TaskRecord, Usage

__all__ = [
    "ALERT_KINDS",
    "AlertRecord",
    "PrefixCall",
    "RepeatFacts",
    "SignalEngine",
    "apply_repeat_facts",
    "SignalThresholds",
    "check_cache_hit_rate",
    "check_cost_baseline",
    "check_cost_limit",
    "check_failure_cost",
    "check_output_ratio",
    "cost_limit_for",
    "evaluate_history",
    "evaluate_task",
    "history_kept",
    "install",
    "moment_us",
    "on_alert",
    "repeat_facts",
    "reset",
]


ALERT_KINDS = (
    "cost_per_task",
    "cost_baseline",
    "cache_hit_rate",
    "failure_cost_share",
    "failure_cost",
    "output_ratio",
)

CACHE_TTL = timedelta(minutes=5)
"""A prefix sent longer ago than this may have left the cache legitimately (the default TTL)."""
_MAX_SEEN_KEYS = 4096
_MAX_PENDING_TASKS = 10_000
_RESERVED_LOG_KEYS = frozenset({"event", "message", "task", "task_id", "value", "threshold"})


def _alert(
    kind: str,
    task: TaskRecord,
    message: str,
    value: float | None,
    threshold: float | None,
    at: datetime | None,
    **details: Any,
) -> AlertRecord:
    return AlertRecord(
        id=uuid.uuid4().hex,
        kind=kind,
        task_name=task.name,
        task_id=task.id,
        created_at=at or datetime.now(UTC),
        message=message,
        value=value,
        threshold=threshold,
        details=details,
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _usd(amount: Decimal) -> str:
    return usd(amount)  # the one money format of reports and the CLI


# -- the checks: plain functions of records ------------------------------------------------------


def check_cost_limit(
    task: TaskRecord, limit: Decimal | None, *, at: datetime | None = None
) -> AlertRecord | None:
    """``cost_per_task`` when a priced task cost more than ``limit`` USD."""
    if limit is None or task.cost is None or task.cost <= limit:
        return None
    return _alert(
        "cost_per_task", task,
        f"task {task.name!r} cost {_usd(task.cost)}, above its alert threshold {_usd(limit)}",
        float(task.cost), float(limit), at, cost_usd=f"{task.cost:f}", limit_usd=f"{limit:f}",
    )  # fmt: skip


@overload
def _median(values: list[Decimal]) -> Decimal: ...
@overload
def _median(values: list[int]) -> float: ...
def _median(values: list[Any]) -> Any:
    """`statistics.median`, value for value (the middle one, or the mean of the middle two), without
    its overhead: a report evaluates it for every run of the ledger."""
    values.sort()
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def check_cost_baseline(
    task: TaskRecord,
    earlier: Sequence[TaskRecord],
    thresholds: SignalThresholds,
    *,
    at: datetime | None = None,
) -> AlertRecord | None:
    """``cost_baseline`` when cost rose against the rolling median of earlier runs but calls did not.

    The baseline is the median cost of the last ``cost_baseline_window`` earlier priced runs of the
    name (at least ``cost_baseline_min_history`` of them); the call count must stay within
    ``calls_rise_tolerance`` x the median call count of those runs.
    """
    if task.cost is None:
        return None
    window = thresholds.cost_baseline_window
    priced = [t for t in earlier[-window:] if t.cost is not None]  # usually all of them: look no further
    if len(priced) < min(window, len(earlier)):
        priced = [t for t in earlier if t.cost is not None][-window:]
    if len(priced) < thresholds.cost_baseline_min_history:
        return None
    baseline = _median([t.cost for t in priced if t.cost is not None])
    limit = baseline * Decimal(str(thresholds.cost_baseline_factor))
    median_calls = _median([t.calls for t in priced])
    if baseline <= 0 or task.cost <= limit or task.calls > median_calls * thresholds.calls_rise_tolerance:
        return None
    return _alert(
        "cost_baseline", task,
        f"task {task.name!r} cost {_usd(task.cost)}, {float(task.cost / baseline):.1f}x its baseline "
        f"{_usd(baseline)} (median of {len(priced)} earlier runs) with {task.calls} calls against a median "
        f"of {median_calls:g}: the context package is growing; check history, tools and system prompt",
        float(task.cost), float(limit), at,
        baseline_usd=f"{baseline:f}", runs=len(priced), calls=task.calls, median_calls=float(median_calls),
        factor=thresholds.cost_baseline_factor,
    )  # fmt: skip


class PrefixCall(Protocol):
    """What the signals read of a call: a `CallRecord`, or the few fields a report loads of one."""

    @property
    def task_id(self) -> str | None: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def conversation(self) -> str | None: ...
    @property
    def prefix_hash(self) -> str | None: ...
    @property
    def usage(self) -> Usage: ...


C = TypeVar("C", bound=PrefixCall)


def _call_keys(call: PrefixCall) -> list[str]:
    keys = []
    if call.conversation:
        keys.append(f"conversation:{call.conversation}")
    if call.prefix_hash:
        keys.append(f"prefix:{call.prefix_hash}")
    return keys


_started_at = attrgetter("started_at")


def _call_end(call: PrefixCall) -> datetime:
    return call.started_at + timedelta(seconds=max(call.duration_s, 0.0))


def repeat_prefix_calls(calls: Sequence[C], seen: dict[str, datetime] | None = None) -> list[C]:
    """The calls that repeat a prefix sent before (within ``CACHE_TTL``), so they should read cache.

    A call repeats when its conversation or its prefix hash was seen earlier (in ``seen``, the
    name's recent history, or earlier in ``calls``). When no call carries either key, a call
    repeats when the previous call of ``calls`` ended within ``CACHE_TTL`` before it.
    ``seen`` is updated in place.
    """
    seen = {} if seen is None else seen
    ordered = [(call, _call_keys(call)) for call in sorted(calls, key=_started_at)]
    keyed = any(keys for _, keys in ordered)
    repeats: list[C] = []
    previous_end: datetime | None = None
    for call, keys in ordered:
        started = call.started_at
        if keyed:
            if any(key in seen and started - seen[key] <= CACHE_TTL for key in keys):
                repeats.append(call)
        elif previous_end is not None and started - previous_end <= CACHE_TTL:
            repeats.append(call)
        end = _call_end(call)
        previous_end = end if previous_end is None or end > previous_end else previous_end
        for key in keys:
            if key not in seen or seen[key] < end:
                seen[key] = end
    return repeats


@dataclass(frozen=True, slots=True)
class RepeatFacts:
    """What one run's calls say about repeated prefixes, apart from the runs before it: enough to
    give `check_cache_hit_rate`'s figures once the name's earlier prefixes (``seen``) are known, so a
    report keeps these per run (`repeat_facts`) instead of replaying calls (`apply_repeat_facts`)."""

    min_input: int
    """The ``cache_min_input_tokens`` the figures were taken with."""
    calls: int
    input_tokens: int
    cache_read_tokens: int
    """Calls (and their tokens) of ``min_input``+ input that repeat a prefix sent earlier in the run."""
    candidates: Sequence[tuple[int, Sequence[str], int, int]]
    """The other calls of ``min_input``+ input with a prefix key: (start, keys, input, cache read);
    each repeats if an earlier run sent one of its keys within `CACHE_TTL` before it started."""
    keys: Sequence[tuple[str, int]]
    """Each prefix key's last end in the run, in the order the run first used them.

    Times are microseconds since the epoch (`moment_us`): exact, and cheap to store and compare."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TTL_US = CACHE_TTL // _MICROSECOND


def moment_us(moment: datetime) -> int:
    """An aware time as whole microseconds since the epoch."""
    return (moment - _EPOCH) // _MICROSECOND


def repeat_facts(calls: Sequence[PrefixCall], min_input: int) -> RepeatFacts:
    """`RepeatFacts` of one run's calls (as `check_cache_hit_rate` receives them)."""
    seen: dict[str, datetime] = {}
    within = {id(c) for c in repeat_prefix_calls(calls, seen)}
    repeats = [c for c in calls if id(c) in within and c.usage.input_tokens >= min_input]
    candidates = tuple(
        (moment_us(c.started_at), tuple(keys), c.usage.input_tokens, c.usage.cache_read_tokens)
        for c in sorted(calls, key=_started_at)
        if id(c) not in within and c.usage.input_tokens >= min_input and (keys := _call_keys(c))
    )
    return RepeatFacts(
        min_input=min_input,
        calls=len(repeats),
        input_tokens=sum(c.usage.input_tokens for c in repeats),
        cache_read_tokens=sum(c.usage.cache_read_tokens for c in repeats),
        candidates=candidates,
        keys=tuple((key, moment_us(end)) for key, end in seen.items()),
    )


def apply_repeat_facts(facts: RepeatFacts, seen: dict[str, int]) -> tuple[int, int, int]:
    """(calls, input tokens, cache read tokens) repeating a prefix, given the name's earlier prefixes
    ``seen``, which then takes the run's own: what `repeat_prefix_calls` over the run's calls gives.

    A call repeats when a key was last sent within `CACHE_TTL` before it, by the run or earlier ones;
    ``seen`` keeps each key's latest end, so the two sources can be judged apart."""
    calls, input_tokens, read = facts.calls, facts.input_tokens, facts.cache_read_tokens
    for started, keys, call_input, call_read in facts.candidates:
        if any(key in seen and started - seen[key] <= _TTL_US for key in keys):
            calls, input_tokens, read = calls + 1, input_tokens + call_input, read + call_read
    for key, end in facts.keys:
        if key not in seen or seen[key] < end:
            seen[key] = end
    return calls, input_tokens, read


def check_cache_hit_rate(
    task: TaskRecord,
    calls: Sequence[PrefixCall],
    thresholds: SignalThresholds,
    *,
    seen: dict[str, int] | None = None,
    at: datetime | None = None,
    facts: RepeatFacts | None = None,
) -> AlertRecord | None:
    """``cache_hit_rate`` when calls repeating a fixed prefix read too little from cache.

    Only calls with at least ``cache_min_input_tokens`` input count (smaller prompts cannot be
    cached). ``seen`` (prefix keys of the name's recent calls, each with when it was last sent, in
    `moment_us`) is updated in place. ``facts``, when
    given, stand for ``calls`` (taken with the same ``cache_min_input_tokens``).
    """
    facts = facts or repeat_facts(calls, thresholds.cache_min_input_tokens)
    count, input_tokens, read = apply_repeat_facts(facts, {} if seen is None else seen)
    if not count or not input_tokens:
        return None
    rate = read / input_tokens
    if rate >= thresholds.cache_hit_rate_min:
        return None
    return _alert(
        "cache_hit_rate", task,
        f"task {task.name!r}: {_count(count, 'call')} repeating a prefix already sent read "
        f"{rate:.0%} of their input from cache (threshold {thresholds.cache_hit_rate_min:.0%}); check that "
        "the system prompt and tools are byte-identical across calls (timestamps, ids, key order) "
        "and that caching is on",
        rate, thresholds.cache_hit_rate_min, at,
        calls=count, input_tokens=input_tokens, cache_read_tokens=read,
    )  # fmt: skip


def check_failure_cost(
    task: TaskRecord,
    earlier: Sequence[TaskRecord],
    thresholds: SignalThresholds,
    *,
    at: datetime | None = None,
) -> list[AlertRecord]:
    """``failure_cost`` / ``failure_cost_share`` when a failed task makes failures too expensive.

    Evaluated when a task fails: the absolute check compares its own cost with
    ``failure_cost_max``; the share check takes the last ``failure_window`` runs of the name (this
    one included, at least ``failure_min_runs``) and compares failed cost with total cost.
    """
    if task.outcome != "failure" or task.cost is None:
        return []
    alerts: list[AlertRecord] = []
    limit = thresholds.failure_cost_max
    if limit is not None and task.cost > limit:
        alerts.append(_alert(
            "failure_cost", task,
            f"failed task {task.name!r} cost {_usd(task.cost)}, above failure_cost_max {_usd(limit)}: tokens "
            "spent on failures cost the same as on successes; look for dead ends in the context package",
            float(task.cost), float(limit), at, cost_usd=f"{task.cost:f}", limit_usd=f"{limit:f}",
        ))  # fmt: skip
    window = [*earlier[-(thresholds.failure_window - 1) :], task] if thresholds.failure_window > 1 else [task]
    priced = [t for t in window if t.cost is not None]
    if len(priced) < thresholds.failure_min_runs:
        return alerts
    total = sum((t.cost for t in priced if t.cost is not None), Decimal(0))
    failed = sum((t.cost for t in priced if t.cost is not None and t.outcome == "failure"), Decimal(0))
    if total <= 0:
        return alerts
    share = float(failed / total)
    if share > thresholds.failure_cost_share_max:
        alerts.append(_alert(
            "failure_cost_share", task,
            f"failed runs of {task.name!r} took {share:.0%} of its cost over the last {len(priced)} runs "
            f"({_usd(failed)} of {_usd(total)}; threshold {thresholds.failure_cost_share_max:.0%})",
            share, thresholds.failure_cost_share_max, at,
            failure_cost_usd=f"{failed:f}", total_cost_usd=f"{total:f}", runs=len(priced),
            failures=sum(1 for t in priced if t.outcome == "failure"),
        ))  # fmt: skip
    return alerts


def check_output_ratio(
    task: TaskRecord, thresholds: SignalThresholds, *, at: datetime | None = None
) -> AlertRecord | None:
    """``output_ratio`` when output tokens exceed ``output_input_ratio_max`` x input tokens."""
    usage = task.usage
    if (
        not usage.input_tokens
        or usage.output_tokens <= thresholds.output_input_ratio_max * usage.input_tokens
    ):
        return None
    ratio = usage.output_tokens / usage.input_tokens
    return _alert(
        "output_ratio", task,
        f"task {task.name!r} generated {usage.output_tokens} output tokens for {usage.input_tokens} input "
        f"({ratio:.1f}x, threshold {thresholds.output_input_ratio_max:g}x): constrain output length in the "
        "system prompt or with max_tokens",
        ratio, thresholds.output_input_ratio_max, at,
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
    )  # fmt: skip


def cost_limit_for(name: str, settings: Settings) -> Decimal | None:
    """The ``alert_cost_per_task`` threshold for a task name (per-name override, then the default)."""
    return settings.alert_cost_per_task_by_name.get(name, settings.alert_cost_per_task)


def evaluate_task(
    task: TaskRecord,
    earlier: Sequence[TaskRecord] = (),
    calls: Sequence[PrefixCall] = (),
    *,
    thresholds: SignalThresholds | None = None,
    cost_limit: Decimal | None = None,
    seen: dict[str, int] | None = None,
    at: datetime | None = None,
    facts: RepeatFacts | None = None,
) -> list[AlertRecord]:
    """Every signal for one finished task, given the earlier tasks of its name and its calls.

    ``calls`` are the task's call records (its children's included), or ``facts`` what they say of
    repeated prefixes; ``seen`` maps prefix keys of the name's earlier calls to when they were last
    sent, and is updated in place.
    """
    thresholds = thresholds or SignalThresholds()
    alerts = [
        check_cost_limit(task, cost_limit, at=at),
        check_cost_baseline(task, earlier, thresholds, at=at),
        check_cache_hit_rate(task, calls, thresholds, seen=seen, at=at, facts=facts),
        *check_failure_cost(task, earlier, thresholds, at=at),
        check_output_ratio(task, thresholds, at=at),
    ]
    return [a for a in alerts if a is not None]


# -- history: shared by live evaluation and report replay ----------------------------------------


class SignalEngine:
    """Per-name history and per-task calls, fed in the order records finish; not thread-safe.

    ``add_call`` as each call ends; ``end_task`` as each task ends (children before parents, as
    they finish) returns the alerts for that task and then adds it to its name's history.
    """

    def __init__(self, *, max_pending_tasks: int | None = _MAX_PENDING_TASKS) -> None:
        self._max_pending = max_pending_tasks
        self._history: dict[str, list[TaskRecord]] = {}
        self._seen: dict[str, dict[str, int]] = {}
        self._pending: OrderedDict[str, list[PrefixCall]] = OrderedDict()

    def resume(self, name: str, earlier: Sequence[TaskRecord], seen: dict[str, int]) -> None:
        """Take up a name's history where a replay stopped: its runs so far (the last
        `history_kept` of them count) and its prefix keys (`seen_keys` then)."""
        self._history[name] = list(earlier)
        self._seen[name] = seen

    def seen_keys(self, name: str) -> dict[str, int]:
        """The name's prefix keys, each with when it was last sent (`moment_us`), in insertion order."""
        return self._seen.get(name, {})

    def add_call(self, record: PrefixCall) -> None:
        if record.task_id is None:
            return
        calls = self._pending.get(record.task_id)
        if calls is None:
            calls = self._pending[record.task_id] = []
            while self._max_pending is not None and len(self._pending) > self._max_pending:
                # tasks that never ended (live only): forget the oldest
                self._pending.popitem(last=False)
        calls.append(record)

    def pass_up(self, task_id: str, parent_id: str | None) -> list[PrefixCall]:
        """What `end_task` does with a task's calls, for a task whose own signals are judged elsewhere
        (a report replays one task name at a time, and a child may have another name); returns them."""
        return self._take(task_id, parent_id)

    def _take(self, task_id: str, parent_id: str | None) -> list[PrefixCall]:
        calls = self._pending.pop(task_id, [])
        if parent_id is not None and calls:  # a child's calls are the parent's too
            self._pending.setdefault(parent_id, []).extend(calls)
        return calls

    def end_task(
        self,
        task: TaskRecord,
        *,
        thresholds: SignalThresholds,
        cost_limit: Decimal | None,
        at: datetime | None = None,
        facts: RepeatFacts | None = None,
    ) -> list[AlertRecord]:
        """The task's alerts; ``facts`` stand for the calls it gathered (a report's stored figures)."""
        calls = self._take(task.id, task.parent_id)
        earlier = self._history.setdefault(task.name, [])
        seen = self._seen.setdefault(task.name, {})
        alerts = evaluate_task(
            task, earlier, calls, thresholds=thresholds, cost_limit=cost_limit, seen=seen, at=at, facts=facts
        )
        earlier.append(task)
        keep = history_kept(thresholds)
        if len(earlier) > keep:
            del earlier[: len(earlier) - keep]
        if len(seen) > _MAX_SEEN_KEYS:
            for key in sorted(seen, key=seen.__getitem__)[: len(seen) - _MAX_SEEN_KEYS // 2]:
                del seen[key]
        return alerts


def history_kept(thresholds: SignalThresholds) -> int:
    """How many of a name's latest runs `SignalEngine` keeps: enough for every check."""
    return max(thresholds.cost_baseline_window * 2, thresholds.failure_window, 50)


def evaluate_history(
    tasks: Iterable[TaskRecord],
    calls: Iterable[CallRecord] = (),
    *,
    settings: Settings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[AlertRecord]:
    """Replay the signals over stored records, in the order the tasks ended.

    Gives the alerts live evaluation would have raised had one process seen this whole history.
    Each alert's ``created_at`` is its task's end.
    """
    settings = settings or config.get_settings()
    ordered = sorted(tasks, key=lambda t: (t.ended_at, t.started_at))
    engine = SignalEngine(max_pending_tasks=None)  # every stored call must reach its task
    for call in calls:
        engine.add_call(call)
    alerts: list[AlertRecord] = []
    for done, task in enumerate(ordered, 1):
        alerts.extend(
            engine.end_task(
                task,
                thresholds=settings.signals,
                cost_limit=cost_limit_for(task.name, settings),
                at=task.ended_at,
            )
        )
        if progress is not None and (done % 500 == 0 or done == len(ordered)):
            progress(done, len(ordered))
    return alerts


# -- live evaluation, delivery and hooks ---------------------------------------------------------

_lock = threading.Lock()
renew_after_fork(globals(), "_lock")
_engine = SignalEngine()
_alert_hooks: Hooks[None, AlertRecord] = Hooks("alert.hook_failed")
_installed = False


def on_alert(callback: Callable[[AlertRecord], None]) -> Callable[[], None]:
    """Call ``callback(alert)`` for every alert raised in this process; returns a remover.

    A callback that raises is logged (``alert.hook_failed``) and never disturbs the task or the
    other callbacks. Installs live evaluation if it is not installed yet.
    """
    install()
    return _alert_hooks.add(callback)


def _on_call(record: CallRecord) -> None:
    with _lock:
        _engine.add_call(record)


def _on_task_end(task: TaskRecord) -> None:
    settings = config.get_settings()
    with _lock:
        alerts = _engine.end_task(
            task, thresholds=settings.signals, cost_limit=cost_limit_for(task.name, settings)
        )
    for alert in alerts:
        deliver(alert)


def deliver(alert: AlertRecord) -> None:
    """Log an alert as ``alert.<kind>``, queue it for the ledger and call the hooks; never raises."""
    try:
        log.warning(
            f"alert.{alert.kind}",
            task=alert.task_name,
            task_id=alert.task_id,
            value=alert.value,
            threshold=alert.threshold,
            message=alert.message,
            **{k: v for k, v in alert.details.items() if k not in _RESERVED_LOG_KEYS},
        )
    except Exception:  # plain: `guarded` reports through the same logger that just failed
        pass
    with guarded("alert.persist_failed", kind=alert.kind):
        from .ledger.writer import get_writer

        get_writer().submit_alert(alert)
    _alert_hooks.run(alert)


def install() -> None:
    """Evaluate the signals as tasks end in this process (idempotent)."""
    from .metering import add_call_hook
    from .tasks import add_task_end_hook

    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        add_call_hook(_on_call, deferrable=True)  # read at task end
        add_task_end_hook(_on_task_end)


def reset() -> None:
    """Forget this process's history and pending calls (for tests)."""
    global _engine
    with _lock:
        _engine = SignalEngine()
