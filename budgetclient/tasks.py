"""Task scope: which task is running, what it has spent, and whether it may spend more.

A task is found through a ``contextvars.ContextVar``, so it follows asyncio tasks (each inherits
its creator's scope) and threads started with ``contextvars.copy_context()`` or
``task_executor()``. Calls are attributed to the task that was current when the request was made,
even when the response (a stream) finishes later.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, get_args, overload

from ._guard import guarded
from ._log import log
from ._warnings import emit_warning
from .config import parse_usd
from .errors import (
    BudgetExceeded,
    BudgetWarning,
    ConfigurationError,
    UnenforceableBudgetWarning,
    UnpricedModelError,
)
from .hooks import Hooks, run_each
from .pending import settle, unsettled
from .usage import CallRecord, CostBreakdown, Outcome, TaskRecord, Usage

__all__ = [
    "RECORDS_KEPT",
    "BudgetMode",
    "CallCost",
    "Reservation",
    "Task",
    "UnpricedPolicy",
    "add_task_closing_hook",
    "add_task_end_hook",
    "add_task_start_hook",
    "record_call",
    "reserve_budget",
    "current_task",
    "task",
    "task_executor",
    "track_task",
]


_current: contextvars.ContextVar[Task | None] = contextvars.ContextVar("budgetclient_task", default=None)
_task_end_hooks: Hooks[None, TaskRecord] = Hooks("task.hook_failed")
_task_closing_hooks: Hooks[None, Task] = Hooks("task.hook_failed")

P = ParamSpec("P")
R = TypeVar("R")

BudgetMode = Literal["cap", "estimate"]
"""``"cap"``: each call reserves its worst case (input estimate + its output limit at the output
price), so spent ≤ budget under any concurrency. ``"estimate"``: each call reserves its input
estimate only, so the last calls in flight may overshoot by their output."""
UnpricedPolicy = Literal["refuse", "allow"]
"""What a budgeted task does with a call it cannot price: refuse to send it, or send it unchecked."""

RECORDS_KEPT = 1000
"""Per-call records a task keeps in memory (the most recent); its totals always count every call."""


def current_task() -> Task | None:
    """The innermost running task in this context, or None."""
    return _current.get()


def add_task_end_hook(hook: Callable[[TaskRecord], None]) -> Callable[[], None]:
    """Call ``hook(record)`` whenever a task ends; returns a function that removes it."""
    return _task_end_hooks.add(hook)


def add_task_closing_hook(hook: Callable[[Task], None]) -> Callable[[], None]:
    """Call ``hook(task)`` as a task ends, before its record is built: a charge that accrues over
    time (a Gemini cache's storage) is billed up to the end and still counts in the task's totals."""
    return _task_closing_hooks.add(hook)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCost:
    """What one call may cost, priced before it is sent; ``None`` fields: the model has no price."""

    input_usd: Decimal | None
    """The input estimate at the uncached input rate."""
    worst_usd: Decimal | None
    """The most the call can cost: every input token at the dearest rate it may be billed at
    (input, or a cache write), plus the call's output limit at the output rate."""

    def held_by(self, mode: BudgetMode) -> Decimal | None:
        return self.worst_usd if mode == "cap" else self.input_usd


# -- otel hook: task scope (telemetry.py) -------------------------------------------------------
ScopeExit = Callable[[bool], None]
"""Run as a task scope exits, with whether it exits in the context it entered in."""
_task_start_hooks: Hooks[ScopeExit, Task] = Hooks("task.hook_failed")


def add_task_start_hook(hook: Callable[[Task], ScopeExit | None]) -> Callable[[], None]:
    """Call ``hook(task)`` as a ``task(...)`` scope is entered, in its context (a tracer makes the
    task's span current there); the function it returns runs as the scope exits."""
    return _task_start_hooks.add(hook)


def _task_started(t: Task) -> tuple[ScopeExit, ...]:
    return _task_start_hooks.collect(t)


def _task_exited(t: Task, exits: tuple[ScopeExit, ...], same_context: bool) -> None:
    run_each("task.hook_failed", exits[::-1], same_context)


@dataclass(slots=True)
class Reservation:
    """Budget held for one call in flight, per budgeted task of its chain; see `reserve_budget`."""

    holds: tuple[tuple[Task, Decimal], ...]

    def amount_for(self, task: Task) -> Decimal | None:
        for held, amount in self.holds:
            if held is task:
                return amount
        return None

    def release(self) -> None:
        """Give the whole hold back (the call was never sent, or its record could not be made)."""
        holds, self.holds = self.holds, ()
        for t, amount in holds:
            t._release(amount)


class Task:
    """A unit of agent work whose calls are metered together; see ``task()``.

    Live totals are updated as each call ends; a child's calls also count in every parent.
    """

    def __init__(
        self,
        name: str,
        *,
        parent: Task | None = None,
        budget_usd: Decimal | float | str | None = None,
        warn_at: float | None = 0.8,
        metadata: Mapping[str, Any] | None = None,
        budget_mode: BudgetMode = "cap",
        on_unpriced: UnpricedPolicy = "refuse",
        limits: Sequence[str] = (),
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"task name must be a non-empty string, got {name!r}")
        if warn_at is not None and not (0 < warn_at <= 1):
            raise ConfigurationError(
                f"warn_at must be a fraction in (0, 1], got {warn_at!r}; e.g. warn_at=0.8"
            )
        if budget_mode not in get_args(BudgetMode):
            raise ConfigurationError(f'budget_mode must be "cap" or "estimate", got {budget_mode!r}')
        if on_unpriced not in get_args(UnpricedPolicy):
            raise ConfigurationError(f'on_unpriced must be "refuse" or "allow", got {on_unpriced!r}')
        self.id: str = uuid.uuid4().hex
        self.name = name
        self.parent = parent
        self.budget_usd = None if budget_usd is None else parse_usd(budget_usd, "budget_usd")
        self.warn_at = warn_at
        self.budget_mode: BudgetMode = budget_mode
        self.on_unpriced: UnpricedPolicy = on_unpriced
        if isinstance(limits, str) or not all(isinstance(n, str) and n for n in limits):
            raise ConfigurationError(
                f'limits must be a list of limit names, e.g. ["tenant:acme"], got {limits!r}'
            )
        self.limits: tuple[str, ...] = tuple(limits)
        """Fleet limits (``bc.limit``) every call of this task and its children falls under."""
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.outcome: Outcome | None = None
        self.error: str | None = None
        self.started_at = datetime.now(UTC)
        self.ended_at: datetime | None = None
        self._t0 = time.monotonic()
        self._t1: float | None = None
        self._lock = threading.Lock()
        self._usage = Usage()
        self._breakdown = CostBreakdown()
        self._priced_cost = Decimal(0)
        self._priced_float = 0.0
        """``float(self._priced_cost)``, kept by `_add` (a Decimal's float costs microseconds, and
        `_leave_pending` compares it on every call)."""
        self._unpriced_calls = 0
        self._calls = 0
        self._records: deque[CallRecord] = deque(maxlen=RECORDS_KEPT)
        self._reserved = Decimal(0)
        self._warned = False
        self._warn_threshold: tuple[Decimal, float, Decimal] | None = None
        """(budget_usd, warn_at, their product) as last computed: ``_add`` runs on every call."""
        self._pending_mark: tuple[Decimal, float, float] | None = None
        """(budget_usd, warn_at, ``float(budget_usd) * warn_at``) as last computed, for `_leave_pending`."""
        self._unenforceable_warned: set[str] = set()
        self._pending_bound = 0.0
        """Upper bound (USD) of the calls whose roll-up is still pending (`pending`), for a task
        with a budget: a budget check or the ``warn_at`` mark that this bound keeps clear of needs
        no roll-up first."""

    # -- outcome -----------------------------------------------------------------------------
    def succeed(self) -> None:
        self.outcome = "success"

    def partial(self, reason: str | None = None) -> None:
        self.outcome = "partial"
        self.error = reason

    def fail(self, reason: str | None = None) -> None:
        self.outcome = "failure"
        self.error = reason

    # -- live totals -------------------------------------------------------------------------
    @property
    def usage(self) -> Usage:
        settle()
        return self._usage

    @property
    def cost(self) -> Decimal | None:
        """USD spent so far; None if any call had no known price."""
        settle()
        with self._lock:
            return None if self._unpriced_calls else self._priced_cost

    @property
    def spent_usd(self) -> Decimal:
        """USD of the priced calls so far (unpriced calls count as 0 here)."""
        settle()
        return self._priced_cost

    @property
    def cost_breakdown(self) -> CostBreakdown | None:
        """USD per bucket; None (like ``cost``) if any call had no known price, never a partial $0."""
        settle()
        with self._lock:
            return None if self._unpriced_calls else self._breakdown

    @property
    def calls(self) -> int:
        settle()
        return self._calls

    @property
    def cache_hit_rate(self) -> float:
        return self.usage.cache_hit_rate

    @property
    def records(self) -> tuple[CallRecord, ...]:
        """Per-call records of this task and its children, in the order they ended: the last
        `RECORDS_KEPT` of them, so a long-lived task's memory stays bounded (the totals above and
        the ledger count every call)."""
        settle()
        with self._lock:
            return tuple(self._records)

    @property
    def duration_s(self) -> float:
        end = self._t1 if self._t1 is not None else time.monotonic()
        return end - self._t0

    @property
    def ancestry(self) -> tuple[Task, ...]:
        """This task followed by its parents, innermost first."""
        chain: list[Task] = []
        node: Task | None = self
        while node is not None:
            chain.append(node)
            node = node.parent
        return tuple(chain)

    def __repr__(self) -> str:
        cost = self.cost
        return f"<Task {self.name!r} id={self.id[:8]} calls={self._calls} cost={cost} outcome={self.outcome}>"

    # -- metering (called by the record pipeline) --------------------------------------------
    def _add(self, record: CallRecord, released: Decimal | None = None) -> None:
        """Count a finished call; ``released`` is a reservation of this task to give back at once."""
        usage, cost, breakdown = record.usage, record.cost, record.cost_breakdown
        with self._lock:
            if released is not None:
                self._reserved -= released
            self._usage = self._usage + usage
            self._calls += 1
            self._records.append(record)
            if breakdown is not None and cost is not None:
                self._breakdown = self._breakdown + breakdown
                self._priced_cost += cost
                self._priced_float = float(self._priced_cost)
            else:
                self._unpriced_calls += 1
            crossed = self._crossed_warn_at()
        if crossed:
            self._emit_budget_warning()

    def _leave_pending(self, bound: float) -> bool:
        """Count a call of cost at most ``bound`` as pending unless, with every other pending
        call's bound, it might reach the ``warn_at`` mark (then its roll-up must happen now)."""
        with self._lock:
            budget, warn_at = self.budget_usd, self.warn_at
            if budget is not None and warn_at is not None and not self._warned:
                cached = self._pending_mark
                if cached is None or cached[0] is not budget or cached[1] != warn_at:
                    cached = self._pending_mark = (budget, warn_at, float(budget) * warn_at)
                if self._priced_float + self._pending_bound + bound >= cached[2]:
                    return False  # it might reach the mark
            self._pending_bound += bound
            return True

    def _settle_pending(self, bound: float) -> None:
        with self._lock:
            self._pending_bound = max(self._pending_bound - bound, 0.0)

    def _crossed_warn_at(self) -> bool:
        budget, warn_at = self.budget_usd, self.warn_at
        if self._warned or budget is None or warn_at is None:
            return False
        cached = self._warn_threshold
        if cached is None or cached[0] is not budget or cached[1] != warn_at:
            cached = self._warn_threshold = (budget, warn_at, budget * Decimal(str(warn_at)))
        if self._priced_cost >= cached[2]:
            self._warned = True
            return True
        return False

    def _emit_budget_warning(self) -> None:
        assert self.budget_usd is not None
        log.warning(
            "budget.warning",
            task=self.name,
            task_id=self.id,
            spent_usd=str(self._priced_cost),
            budget_usd=str(self.budget_usd),
            warn_at=self.warn_at,
        )
        emit_warning(
            BudgetWarning(
                f"task {self.name!r} has spent ${self._priced_cost} of its ${self.budget_usd} budget "
                f"(warn_at={self.warn_at})"
            ),
            stacklevel=2,
        )

    def _check(self, estimate: Decimal | None, model: str) -> None:
        """Raise BudgetExceeded if this task cannot afford ``estimate`` more (lock held by caller).

        ``estimate`` None: the model has no price; refused unless ``on_unpriced="allow"``.
        """
        if self.budget_usd is None:
            return
        if estimate is None:
            if self.on_unpriced == "refuse":
                log.warning("budget.unpriced_refused", task=self.name, task_id=self.id, model=model)
                raise UnpricedModelError(self.name, self.budget_usd, model)
            if model not in self._unenforceable_warned:
                self._unenforceable_warned.add(model)
                log.warning("budget.unenforceable", task=self.name, task_id=self.id, model=model)
                emit_warning(
                    UnenforceableBudgetWarning(
                        f"task {self.name!r} has budget_usd={self.budget_usd}, but model {model!r} has no "
                        "known price, so the budget cannot be enforced for its calls (on_unpriced='allow'); "
                        "add a price with "
                        f"bc.configure(prices={{{model!r}: {{'input': ..., 'output': ...}}}})"
                    ),
                    stacklevel=4,
                )
            return
        if self._priced_cost + self._reserved + estimate > self.budget_usd:
            log.warning(
                "budget.exceeded",
                task=self.name,
                task_id=self.id,
                spent_usd=str(self._priced_cost),
                reserved_usd=str(self._reserved),
                estimate_usd=str(estimate),
                budget_usd=str(self.budget_usd),
                model=model,
            )
            raise BudgetExceeded(
                self.name,
                self.budget_usd,
                self._priced_cost + self._reserved,
                estimate,
                model,
                worst_case=self.budget_mode == "cap",
            )

    def _fits(self, amount: Decimal) -> bool:
        """Whether the budget has room for ``amount`` more even if every pending call costs its
        bound (`tasks._fits`); no budget: room for anything."""
        budget = self.budget_usd
        if budget is None:
            return True
        return float(self._priced_cost + self._reserved + amount) + self._pending_bound <= float(budget)

    def _release(self, amount: Decimal) -> None:
        with self._lock:
            self._reserved -= amount

    # -- end ---------------------------------------------------------------------------------
    def _finish(self, exc: BaseException | None) -> TaskRecord:
        settle()  # every call of the task is counted before it ends
        self._t1 = time.monotonic()
        self.ended_at = datetime.now(UTC)
        _task_closing_hooks.run(self)
        if exc is not None:
            self.outcome = "failure"
            if self.error is None:
                self.error = type(exc).__name__
        elif self.outcome is None:
            self.outcome = "success"
        with self._lock:
            record = TaskRecord(
                id=self.id,
                name=self.name,
                parent_id=self.parent.id if self.parent else None,
                outcome=self.outcome,
                started_at=self.started_at,
                ended_at=self.ended_at,
                usage=self._usage,
                cost=None if self._unpriced_calls else self._priced_cost,
                cost_breakdown=self._breakdown,
                calls=self._calls,
                budget_usd=self.budget_usd,
                error=self.error,
                metadata=dict(self.metadata),
            )
        _publish_task_end(record)
        return record


def reserve_budget(
    task: Task | None, cost: CallCost, model: str, *, chain: tuple[Task, ...] | None = None
) -> Reservation | None:
    """Check every budget on the task chain and hold what the call may cost until it ends.

    Each budgeted task holds ``cost.held_by(its budget_mode)``. Raises ``BudgetExceeded`` (or
    ``UnpricedModelError``) with nothing reserved, so that no request is sent. ``chain``: the
    task's `budgeted_chain`, when the caller has it already.
    """
    if task is None:
        return None
    if chain is None:
        chain = budgeted_chain(task)
    if not chain:
        return None
    if len(chain) == 1:
        return _reserve_one(chain[0], cost, model)
    if unsettled() and not _fits(chain, cost):
        settle()  # calls whose roll-up is pending hold their worst case: give back what they did not use
    return _reserve(chain, cost, model)


def record_call(task: Task | None, record: CallRecord, reservation: Reservation | None) -> None:
    """Add a finished call to ``task`` and its parents, each giving back its hold for the call in
    the same step (one lock: spent + held never misses the call in between). Never raises."""
    if task is None:
        if reservation is not None:
            reservation.release()
        return
    for node in task.ancestry:
        with guarded("meter.failed", stage="task", task_id=node.id):
            node._add(record, reservation.amount_for(node) if reservation is not None else None)


def budgeted_chain(task: Task) -> tuple[Task, ...]:
    """``task`` and its parents that have a budget, innermost first (often none: then no estimate)."""
    if task.parent is None:  # the common case, without building the ancestry
        return (task,) if task.budget_usd is not None else ()
    return tuple([t for t in task.ancestry if t.budget_usd is not None])


def _fits(chain: tuple[Task, ...], cost: CallCost) -> bool:
    """Whether every budget of the chain has room for the call even if each pending call costs its
    bound (its hold is counted as well): then no roll-up is needed first (`_reserve` decides)."""
    for t in chain:
        amount = cost.held_by(t.budget_mode)
        if amount is not None and not t._fits(amount):
            return False
    return True


def _reserve_one(t: Task, cost: CallCost, model: str) -> Reservation | None:
    """`reserve_budget` for a chain of one budgeted task (the common case), without its lists."""
    amount = cost.held_by(t.budget_mode)
    if amount is not None and unsettled() and not t._fits(amount):
        settle()  # as `_fits` below: pending calls hold their bound, give back what they did not use
    with t._lock:
        t._check(amount, model)
        if amount is None:
            return None
        t._reserved += amount
    return Reservation(((t, amount),))


def _reserve(chain: tuple[Task, ...], cost: CallCost, model: str) -> Reservation | None:
    """Check and hold the call's cost on every task of a non-empty budgeted chain, all locks held."""
    locked: list[Task] = []
    try:
        for t in chain:
            t._lock.acquire()
            locked.append(t)
        amounts = [cost.held_by(t.budget_mode) for t in chain]
        for t, amount in zip(chain, amounts, strict=True):
            t._check(amount, model)
        holds = tuple((t, amount) for t, amount in zip(chain, amounts, strict=True) if amount is not None)
        if not holds:
            return None
        for t, amount in holds:
            t._reserved += amount
        return Reservation(holds)
    finally:
        for t in reversed(locked):
            t._lock.release()


def _publish_task_end(record: TaskRecord) -> None:
    """Send a finished task through `TASK_END_DELIVERY`; never raises."""
    for stage, step in TASK_END_DELIVERY:
        with guarded(
            "task.persist_failed" if stage == "ledger" else "meter.failed", stage=stage, task=record.name
        ):
            step(record)


def _task_to_ledger(record: TaskRecord) -> None:
    from .ledger.writer import get_writer  # the ledger imports tasks' records: resolved on use

    get_writer().submit_task(record)


def _task_to_log(record: TaskRecord) -> None:
    log.info(
        "task.end",
        task=record.name,
        task_id=record.id,
        parent_id=record.parent_id,
        outcome=record.outcome,
        calls=record.calls,
        cost_usd=None if record.cost is None else str(record.cost),
        input_tokens=record.usage.input_tokens,
        cache_read_tokens=record.usage.cache_read_tokens,
        cache_write_tokens=record.usage.cache_write_tokens,
        output_tokens=record.usage.output_tokens,
        cache_hit_rate=round(record.usage.cache_hit_rate, 4),
        duration_s=round(record.duration_s, 4),
    )


def _task_to_hooks(record: TaskRecord) -> None:
    _task_end_hooks.run(record)


TASK_END_DELIVERY: tuple[tuple[str, Callable[[TaskRecord], None]], ...] = (
    ("ledger", _task_to_ledger),
    ("log", _task_to_log),
    ("hooks", _task_to_hooks),
)
"""Where a finished task goes, in order (alerts and OpenTelemetry are task-end hooks)."""


class task:
    """Scope of one task: ``with bc.task("triage", budget_usd=0.5) as t:`` (or ``async with``).

    Clean exit with no outcome set records ``"success"``; an exception records ``"failure"`` and
    is re-raised unchanged.

    ``budget_usd`` is a cap: spent ≤ budget, whatever the concurrency. Before each request is
    sent, its worst case (input estimate at the input price + its output limit at the output
    price) is reserved on this task and every budgeted parent; a request whose worst case does not
    fit beside what is spent and held raises ``bc.BudgetExceeded`` and is not sent; the unused
    part is given back when usage arrives. The output limit is the request's own (``max_tokens``,
    ``max_completion_tokens`` / ``max_output_tokens``, ``generationConfig.maxOutputTokens``), else
    ``admission.DEFAULT_OUTPUT_LIMIT`` tokens (set a limit on the request for an exact bound). The
    cap is as exact as the input estimate, which budgetclient calibrates against reported counts.
    ``budget_mode="estimate"`` reserves the input estimate only: calls go out until the budget is
    reached, and the last ones in flight may overshoot by their output.

    A call that cannot be priced (an unknown or misspelt model) is refused in a budgeted task
    with ``bc.UnpricedModelError``; ``on_unpriced="allow"`` sends it unchecked, with one
    ``bc.UnenforceableBudgetWarning`` per model.
    """

    def __init__(
        self,
        name: str,
        *,
        budget_usd: Decimal | float | str | None = None,
        warn_at: float | None = 0.8,
        metadata: Mapping[str, Any] | None = None,
        budget_mode: BudgetMode = "cap",
        on_unpriced: UnpricedPolicy = "refuse",
        limits: Sequence[str] = (),
    ) -> None:
        self._options: dict[str, Any] = {
            "limits": limits,
            "budget_usd": budget_usd,
            "warn_at": warn_at,
            "metadata": metadata,
            "budget_mode": budget_mode,
            "on_unpriced": on_unpriced,
        }
        # validate now, so a bad argument fails at the call site
        Task(name, **self._options)
        self._name = name
        self._task: Task | None = None
        self._token: contextvars.Token[Task | None] | None = None
        self._exits: tuple[ScopeExit, ...] = ()

    def _enter(self) -> Task:
        if self._task is not None:
            raise RuntimeError("a bc.task(...) scope object can be entered only once; create a new one")
        self._task = Task(self._name, parent=_current.get(), **self._options)
        self._token = _current.set(self._task)
        self._exits = _task_started(self._task) if _task_start_hooks.hooks else ()  # otel hook: task start
        return self._task

    def _exit(self, exc: BaseException | None) -> None:
        assert self._task is not None and self._token is not None
        same_context = True
        try:
            _current.reset(self._token)
        except ValueError:
            # exited in another context (e.g. a generator finalised elsewhere): restore the parent
            _current.set(self._task.parent)
            same_context = False
        if self._exits:
            _task_exited(self._task, self._exits, same_context)  # otel hook: task scope exit
        self._task._finish(exc)

    def __enter__(self) -> Task:
        return self._enter()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit(exc)

    async def __aenter__(self) -> Task:
        return self._enter()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit(exc)


@overload
def track_task(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def track_task(
    name: str | None = None,
    /,
    *,
    budget_usd: Decimal | float | str | None = None,
    warn_at: float | None = 0.8,
    metadata: Mapping[str, Any] | None = None,
    budget_mode: BudgetMode = "cap",
    on_unpriced: UnpricedPolicy = "refuse",
    limits: Sequence[str] = (),
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def track_task(
    func_or_name: Callable[P, R] | str | None = None,
    /,
    *,
    budget_usd: Decimal | float | str | None = None,
    warn_at: float | None = 0.8,
    metadata: Mapping[str, Any] | None = None,
    budget_mode: BudgetMode = "cap",
    on_unpriced: UnpricedPolicy = "refuse",
    limits: Sequence[str] = (),
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Run each call of the decorated function (sync or async) as a task (see `task` for budgets).

    Bare ``@bc.track_task`` names the task after the function's qualified name.
    """
    options: dict[str, Any] = {
        "budget_usd": budget_usd,
        "warn_at": warn_at,
        "metadata": metadata,
        "budget_mode": budget_mode,
        "on_unpriced": on_unpriced,
        "limits": limits,
    }

    def decorate(func: Callable[P, R], name: str | None) -> Callable[P, R]:
        task_name = name or getattr(func, "__qualname__", None) or repr(func)
        if inspect.iscoroutinefunction(func):
            afunc: Callable[P, Awaitable[Any]] = func

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with task(task_name, **options):
                    return await afunc(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with task(task_name, **options):
                return func(*args, **kwargs)

        return wrapper

    if callable(func_or_name):
        return decorate(func_or_name, None)
    if func_or_name is not None and not isinstance(func_or_name, str):
        raise TypeError(f"track_task takes a function or a task name, got {func_or_name!r}")
    name = func_or_name
    # validate arguments at decoration time
    Task(name or "_", **options)
    return lambda func: decorate(func, name)


class _ContextExecutor(ThreadPoolExecutor):
    """A thread pool whose jobs run in a copy of the submitter's context (so they see its task)."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        ctx = contextvars.copy_context()
        return super().submit(ctx.run, functools.partial(fn, *args, **kwargs))


def task_executor(
    max_workers: int | None = None, thread_name_prefix: str = "budgetclient"
) -> ThreadPoolExecutor:
    """A ``ThreadPoolExecutor`` whose workers run in the submitting context, current task included."""
    return _ContextExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
