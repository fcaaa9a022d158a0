"""The record path of one model request: budget held before it is sent, one record after.

``begin_call`` (through `admission.admit` for model requests) prices the call's worst case and
holds it on the task's budgets; ``finish_call`` runs the record pipeline, in this order:

    usage ──> calibrate ──> price ──> CallRecord ──> DELIVERY:
        task roll-up (spent += cost, hold given back) ─> ledger ─> log (``llm.call``) ─>
        call hooks (alerts from `signals`, OpenTelemetry from `telemetry`, the user's own)

Each step runs in `guarded`, the one "never break the user's call" rule: a metering fault is
logged and the user's call goes on unchanged; the record still reaches every later step.

When nothing observes the record as its call ends (no OpenTelemetry span, fleet limit, call hook
or listened-to log line asks for it, the model is priced and no task is near its ``warn_at``
mark), everything after usage runs off the call path (`pending`); a task's totals, its end, a
refusing budget check and ``bc.flush()`` settle it first, so what they read is exact.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import ModuleType
from typing import Any

from . import pending, pricing
from ._construct import fast_constructor
from ._guard import guarded, report_fault
from ._log import _disabled, log
from .blocks import Ttl
from .drift import PrefixDrift
from .hooks import Hooks, run_each
from .ledger.writer import get_writer, install_sigterm_flush
from .tasks import CallCost, Reservation, Task, budgeted_chain, current_task, record_call, reserve_budget
from .usage import CallRecord, CallStatus, CostBreakdown, Usage, _new_call_record

__all__ = [
    "DELIVERY",
    "SUBSCRIBERS",
    "CallContext",
    "abandon_call",
    "add_call_hook",
    "add_call_start_hook",
    "begin_call",
    "call_cost",
    "finish_call",
    "publish_call",
]


_call_hooks: Hooks[None, CallRecord] = Hooks("meter.hook_failed")
_sync_call_hooks: Hooks[None, CallRecord] = Hooks("meter.hook_failed")
"""The hooks that must see each record as its call ends (all but those added ``deferrable``);
never run itself: its members also sit in `_call_hooks`."""
_MILLION = Decimal(1_000_000)


def add_call_hook(hook: Callable[[CallRecord], None], *, deferrable: bool = False) -> Callable[[], None]:
    """Call ``hook(record)`` after every metered call; returns a function that removes it.

    ``deferrable``: the hook may get records off the call path, in a background thread (in call
    order, before any task total or ``bc.flush()`` reads them); else every record is made as its
    call ends, in the caller's thread.
    """
    remove_hook = _call_hooks.add(hook)
    remove_sync = _sync_call_hooks.add(hook) if not deferrable else None

    def remove() -> None:
        remove_hook()
        if remove_sync is not None:
            remove_sync()

    return remove


# -- otel hook: call start (telemetry.py) -------------------------------------------------------
CallEnd = Callable[[CallRecord], None]
_call_start_hooks: Hooks[CallEnd] = Hooks("meter.hook_failed")


def add_call_start_hook(hook: Callable[[], CallEnd | None]) -> Callable[[], None]:
    """Call ``hook()`` as a call starts, in the caller's context; the function it returns gets the
    call's record(s). Tracing needs this: the span current at the request is gone when a stream ends."""
    return _call_start_hooks.add(hook)


def _call_started() -> tuple[CallEnd, ...]:
    return _call_start_hooks.collect()


@dataclass(slots=True)
class CallContext:
    """What is known about a request when it is sent; completed by ``finish_call``."""

    provider: str
    model: str
    operation: str
    task: Task | None
    started_at: datetime
    t0: float
    stream: bool = False
    attempt: int = 0
    request_bytes: int = 0
    conversation: str | None = None
    prefix_hash: str | None = None
    drift: PrefixDrift | None = None
    reservation: Reservation | None = None
    estimated_raw_tokens: int = 0
    """Uncalibrated input estimate made for a budget check; calibrates against the reported count."""
    finished: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    call_ends: tuple[CallEnd, ...] = ()
    """What the call-start hooks returned (otel spans): each gets this call's record(s)."""
    releases: tuple[Callable[[], None], ...] = ()
    """Run when the call is abandoned before sending (fleet limit holds, `limits`)."""


def estimate_input_cost(provider: str, model: str, input_tokens: int) -> Decimal | None:
    """Input tokens at the uncached input rate; None if unpriced or the price lookup fails."""
    with guarded("price.estimate_failed", model=model):
        return pricing.estimate_input_cost(input_tokens, model, provider)
    return None


_new_cost = fast_constructor(CallCost)
"""``CallCost(...)`` at a third of the cost (one per budgeted call)."""


def call_cost(
    provider: str, model: str, input_tokens: int, output_tokens: int, *, cache_write_ttl: Ttl | None = None
) -> CallCost:
    """What a call may cost before it is sent: its input estimate, and its worst case.

    The worst case bills every input token at the dearest input rate it could meet (plain input,
    or a cache write when the request carries cache markers with ``cache_write_ttl``) and
    ``output_tokens`` (the request's output limit) at the output rate. Both None if unpriced.
    """
    rates = pricing.rates_for(model, provider)
    if rates is None:
        return _new_cost(input_usd=None, worst_usd=None)
    global _last_flat
    flat = _last_flat
    if flat[0] is not rates or flat[1] != cache_write_ttl:
        flat = _last_flat = (rates, cache_write_ttl, _flat_rates(rates, cache_write_ttl))
    chosen = flat[2]
    if chosen is None:  # tiered: the rates at this size
        chosen = _chosen_rates(rates, cache_write_ttl, input_tokens)
    base, dearest, output = chosen
    input_usd = input_tokens * base / _MILLION
    # the same operations on the same operands: the same Decimal (a dearer rate is another one)
    dearest_usd = input_usd if dearest is base else input_tokens * dearest / _MILLION
    return _new_cost(input_usd=input_usd, worst_usd=dearest_usd + output_tokens * output / _MILLION)


_Flat = tuple[Decimal, Decimal, Decimal]
_last_flat: tuple[pricing.Rates | None, Ttl | None, _Flat | None] = (None, None, None)
"""`call_cost`'s rates for the last (``rates``, TTL) it priced: rates are resolved once per model
and day, so consecutive calls of a model hand over the same object."""


def _flat_rates(rates: pricing.Rates, cache_write_ttl: Ttl | None) -> _Flat | None:
    """`_chosen_rates` of ``rates`` when none of them has tiers (each is then its base at every
    input size: the same at any size); None otherwise."""
    four = (rates.input, rates.output, rates.cache_write, rates.cache_write_long)
    if any(rate.tiers for rate in four):
        return None
    return _chosen_rates(rates, cache_write_ttl, 0)


def _chosen_rates(rates: pricing.Rates, cache_write_ttl: Ttl | None, input_tokens: int) -> _Flat:
    """(input, dearest input, output) rates at ``input_tokens``: the dearest input rate is the
    cache write's when the call may write one (the 1h write's when that TTL is allowed)."""
    base = dearest = rates.input.at(input_tokens)
    if cache_write_ttl is not None:
        dearest = max(dearest, rates.cache_write.at(input_tokens))
    if cache_write_ttl == "1h":
        dearest = max(dearest, rates.cache_write_long.at(input_tokens))
    return base, dearest, rates.output.at(input_tokens)


def begin_call(
    provider: str,
    model: str,
    operation: str,
    *,
    estimated_input_tokens: Callable[[], int | Any] | None = None,
    max_output_tokens: int = 0,
    cache_write_ttl: Ttl | None = None,
    stream: bool = False,
    attempt: int = 0,
    request_bytes: int = 0,
    conversation: str | None = None,
) -> CallContext:
    """Capture the current task and hold the call's cost on its budgets before it is sent.

    Raises ``BudgetExceeded`` (``UnpricedModelError`` for a model without a price) when the task
    or a parent cannot afford it; nothing is held then. ``estimated_input_tokens`` is evaluated
    only when some task on the chain has a budget; it returns a token count or a
    ``tokens.TokenEstimate`` (whose raw count then feeds calibration). ``max_output_tokens`` is
    the request's output limit, priced into the worst case (see `call_cost`). A fault while
    estimating or pricing leaves the call unchecked (logged), never refused.
    """
    t = current_task()
    reservation = None
    raw = 0
    chain = budgeted_chain(t) if t is not None and estimated_input_tokens is not None else ()
    if chain:
        assert estimated_input_tokens is not None
        tokens = 0
        try:  # `guarded`, written out: this runs on every budgeted call
            estimate = estimated_input_tokens()
            tokens = int(getattr(estimate, "tokens", estimate))
            raw = int(getattr(estimate, "raw_tokens", 0))
        except Exception as exc:  # guarded's rule, without its object: never refused for a fault
            report_fault("tokens.estimate_failed", exc, model=model)
        cost: CallCost | None = None
        try:
            cost = call_cost(provider, model, tokens, max_output_tokens, cache_write_ttl=cache_write_ttl)
        except Exception as exc:  # guarded's rule, without its object: left unchecked, logged
            report_fault("price.estimate_failed", exc, model=model)
        if cost is not None:
            reservation = reserve_budget(t, cost, model, chain=chain)
    elif stream:  # a stream abandoned until interpreter shutdown is priced during finalisation, when
        # the price data can no longer be imported: resolve its rates now (a dict hit after the first)
        with guarded("price.failed", model=model):
            pricing.rates_for(model, provider)
    # by position up to ``conversation``: a third cheaper than by keyword (one per call)
    return CallContext(
        provider,
        model,
        operation,
        t,
        datetime.now(UTC),
        time.monotonic(),
        stream,
        attempt,
        request_bytes,
        conversation,
        reservation=reservation,
        estimated_raw_tokens=raw,
        call_ends=_call_started() if _call_start_hooks.hooks else (),  # otel hook: call start
    )


def abandon_call(ctx: CallContext | None) -> None:
    """Give back the budget ``ctx`` holds when its request is not sent after all; never raises.

    For a failure between admission and sending (a warning filter raising, a fault, a cancel):
    no record is made, since nothing was sent. A call already finished is left alone.
    """
    if ctx is None or ctx.finished:
        return
    ctx.finished = True
    reservation, ctx.reservation = ctx.reservation, None
    if reservation is not None:
        with guarded("meter.failed", stage="release"):
            reservation.release()
    _run_releases(ctx)


def _run_releases(ctx: CallContext) -> None:
    releases, ctx.releases = ctx.releases, ()
    for release in releases:
        with guarded("meter.failed", stage="release"):
            release()


def finish_call(
    ctx: CallContext,
    usage: Usage,
    *,
    status: CallStatus = "ok",
    model: str | None = None,
    http_status: int | None = None,
    error: str | None = None,
    response_id: str | None = None,
    service_tier: str | None = None,
    batch: bool = False,
    drift: PrefixDrift | None = None,
    operation: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> CallRecord | None:
    """Run the record pipeline for one call (see the module docstring).

    Idempotent per context (a stream closed twice records once). Never raises. Returns the
    record, or None when it is made off the call path (`pending`; nothing observes it as the call
    ends) or could not be made.
    """
    if ctx.finished and not batch:
        return None
    ctx.finished = True
    # each budgeted task gives its hold back as the call's cost is added to it (`record_call`)
    reservation, ctx.reservation = ctx.reservation, None
    model_name = model or ctx.model
    # `_Finished`'s fields in order, built into one where the record is made (here, or off the
    # call path): a tuple costs the caller a third of the dataclass
    finished: _FinishedFields = (
        ctx, usage, reservation, time.monotonic() - ctx.t0, status, model_name, http_status, error,
        response_id, service_tier, batch, drift, operation, metadata,
    )  # fmt: skip
    if batch:
        return _complete_now(_Finished(*finished))
    try:
        bounds = _deferrable(ctx, usage, model_name)
    except Exception as exc:  # guarded's rule, without its object (every call): made now, logged
        report_fault("meter.failed", exc, stage="defer")
        bounds = None
    if bounds is None:
        return _complete_now(_Finished(*finished))
    if not _sigterm_checked:
        _check_sigterm()
    pending.defer(functools.partial(_complete_deferred, finished, bounds))
    return None


@dataclass(slots=True)
class _Finished:
    """A call's outcome as `finish_call` took it, for the record made now or off the call path
    (built positionally from `_FinishedFields`: the order of these fields is `finish_call`'s)."""

    ctx: CallContext
    usage: Usage
    reservation: Reservation | None
    duration_s: float
    status: CallStatus
    model: str
    http_status: int | None
    error: str | None
    response_id: str | None
    service_tier: str | None
    batch: bool
    drift: PrefixDrift | None
    operation: str | None
    metadata: dict[str, Any] | None


_FinishedFields = tuple[
    CallContext, Usage, Reservation | None, float, CallStatus, str, int | None, str | None, str | None,
    str | None, bool, PrefixDrift | None, str | None, dict[str, Any] | None,
]  # fmt: skip
"""`_Finished`'s fields, in order."""


def _complete_now(f: _Finished) -> CallRecord | None:
    """`_complete` in the caller's thread, after the records still queued off the call path
    (`pending`): a task lists its records, and hooks and the ledger get them, in the order their
    calls ended."""
    if pending.unsettled():
        pending.settle()
    return _complete(f)


def _complete(f: _Finished) -> CallRecord | None:
    """Calibrate, price, build the record and deliver it; never raises."""
    ctx = f.ctx
    record: CallRecord | None = None
    with guarded("meter.failed", stage="record"):
        if ctx.estimated_raw_tokens and f.status == "ok" and f.usage.input_tokens:
            _calibrate(ctx.provider, f.model, ctx.estimated_raw_tokens, f.usage.input_tokens)
        breakdown = _price(f.usage, f.model, ctx.provider, f.batch)
        t = ctx.task
        metadata = f.metadata
        merged = {**ctx.metadata, **metadata} if metadata else dict(ctx.metadata) if ctx.metadata else {}
        record = _new_call_record(
            id=_new_id(),
            provider=ctx.provider,
            model=f.model,
            operation=f.operation or ctx.operation,
            started_at=ctx.started_at,
            duration_s=f.duration_s,
            usage=f.usage,
            cost=None if breakdown is None else breakdown.total,
            cost_breakdown=breakdown,
            status=f.status,
            http_status=f.http_status,
            error=f.error,
            task_id=t.id if t else None,
            task_name=t.name if t else None,
            conversation=ctx.conversation,
            stream=ctx.stream,
            batch=f.batch,
            attempt=ctx.attempt,
            request_bytes=ctx.request_bytes,
            prefix_hash=ctx.prefix_hash,
            response_id=f.response_id,
            service_tier=f.service_tier,
            drift=f.drift if f.drift is not None else ctx.drift,
            metadata=merged,
        )
    if record is None:
        if f.reservation is not None:
            with guarded("meter.failed", stage="release"):
                f.reservation.release()
        _run_releases(ctx)
        return None
    ctx.releases = ()  # the call's record settles its limit holds (a call end, `limits`)
    return _deliver(record, ctx.task, f.reservation, ctx.call_ends)


# -- off the call path: when a record may be made later (`pending`) ------------------------------

_WARN_MARGIN = 4.0
"""How far a call's cost bound is stretched before it is trusted not to reach a ``warn_at`` mark
(service tiers and tiers priced above the rates' highest bucket)."""
_LARGE_INPUT = 1 << 40
"""An input size past every tier: the rate of a bucket's dearest tier."""


def _deferrable(ctx: CallContext, usage: Usage, model: str) -> list[tuple[Task, float]] | None:
    """Whether the call's record may be made off the call path, and the cost bound it leaves
    pending on each budgeted task of its chain; None: make it now.

    Now when something observes the record as the call ends: an OpenTelemetry span or fleet limit
    hold (call ends), a call hook that asked for it, the ``llm.call`` log line being listened to,
    an unpriced model (its warning belongs to the caller), or a task the call might carry over its
    ``warn_at`` mark (the `BudgetWarning` is raised in the caller's thread, by the call).
    """
    if ctx.call_ends or ctx.releases or _sync_call_hooks.hooks or log.info is not _disabled:
        return None
    rates = pricing.rates_for(model, ctx.provider)
    if rates is None:
        return None
    bounds: list[tuple[Task, float]] = []
    bound = -1.0
    node = ctx.task
    while node is not None:
        if node.budget_usd is not None:
            if bound < 0:  # `_cost_bound`, inline: most calls have one budgeted task
                dearest = _last_dearest[1] if _last_dearest[0] is rates else _dearest(rates)
                if dearest is None:
                    bound = _cost_bound(usage, rates)
                else:
                    bound = (usage.input_tokens + usage.output_tokens) * dearest * _WARN_MARGIN / 1_000_000
            if not node._leave_pending(bound):
                for held, amount in bounds:
                    held._settle_pending(amount)
                return None
            bounds.append((node, bound))
        node = node.parent
    return bounds


def _cost_bound(usage: Usage, rates: pricing.Rates) -> float:
    """More than ``usage`` can cost at ``rates`` (every token at the dearest rate, stretched)."""
    dearest = _dearest(rates)
    if dearest is None:  # a tiered rate: its rate at this input size may be dearer
        five = (rates.input, rates.output, rates.cache_write, rates.cache_write_long, rates.cache_read)
        dearest = max(float(rate.at(n)) for rate in five for n in (usage.input_tokens, _LARGE_INPUT))
    return (usage.input_tokens + usage.output_tokens) * dearest * _WARN_MARGIN / 1_000_000


_last_dearest: tuple[pricing.Rates | None, float | None] = (None, None)


def _dearest(rates: pricing.Rates) -> float | None:
    """`_cost_bound`'s dearest rate, when no rate of ``rates`` has tiers (each rate is then its
    base at every input size); None otherwise. Kept for the last ``rates`` object (resolved once
    per model and day, so consecutive calls of a model hand over the same one)."""
    global _last_dearest
    last, value = _last_dearest
    if last is rates:
        return value
    five = (rates.input, rates.output, rates.cache_write, rates.cache_write_long, rates.cache_read)
    value = None if any(rate.tiers for rate in five) else max(float(rate.base) for rate in five)
    _last_dearest = (rates, value)
    return value


_sigterm_checked = False


def _check_sigterm() -> None:
    """The SIGTERM flush installs on the first record published from the main thread
    (`ledger.writer.get_writer`): a deferred record is published from another, so ask here."""
    global _sigterm_checked
    with guarded("meter.failed", stage="sigterm"):
        install_sigterm_flush()
        _sigterm_checked = threading.current_thread() is threading.main_thread()


def _complete_deferred(finished: _FinishedFields, bounds: list[tuple[Task, float]]) -> None:
    try:
        _complete(_Finished(*finished))
    finally:
        for node, bound in bounds:
            node._settle_pending(bound)


def publish_call(record: CallRecord, task: Task | None) -> CallRecord:
    """Deliver a record made elsewhere (Gemini cache storage) through `DELIVERY`, after the records
    still queued off the call path (`_complete_now`); never raises."""
    if pending.unsettled():
        pending.settle()
    return _deliver(record, task, None, _call_started())  # otel hook: a record without a request


def _price(usage: Usage, model: str, provider: str, batch: bool) -> CostBreakdown | None:
    with guarded("price.failed", model=model):
        return pricing.price_call(usage, model, provider, batch=batch)
    return None


# -- delivery: where a finished record goes, in order -------------------------------------------


def _to_tasks(record: CallRecord, task: Task | None, reservation: Reservation | None) -> None:
    record_call(task, record, reservation)


def _to_ledger(record: CallRecord, task: Task | None, reservation: Reservation | None) -> None:
    get_writer().submit_call(record)


def _to_log(record: CallRecord, task: Task | None, reservation: Reservation | None) -> None:
    info = log.info
    if info is not _disabled:  # nobody listens: skip building the event (it runs on every call)
        _log_call(info, record)


def _to_hooks(record: CallRecord, task: Task | None, reservation: Reservation | None) -> None:
    _call_hooks.run(record)


DELIVERY: tuple[tuple[str, Callable[[CallRecord, Task | None, Reservation | None], None]], ...] = (
    ("task", _to_tasks),
    ("ledger", _to_ledger),
    ("log", _to_log),
    ("hooks", _to_hooks),
)
"""The steps every finished record goes through, in order; a failing step never stops the next.
Alerts and OpenTelemetry join through hooks: see `SUBSCRIBERS`."""

SUBSCRIBERS: tuple[tuple[str, str], ...] = (
    ("alerts", "signals"),
    ("otel", "telemetry"),
)
"""The built-in subscribers of the record pipeline, by name and module, in install order.

Each module's ``install()`` runs on first use (the first ``configure()`` or metered call, never
at import; `budgetclient._start_subscribers`) and adds its hooks:

- alerts (`signals`): a call hook (DELIVERY's "hooks" step) that counts each call into its task,
  and a task-end hook (`tasks.TASK_END_DELIVERY`'s "hooks" step) that evaluates the signals;
- otel (`telemetry`): follows ``configure(otel=...)``; when on, a task-start hook (the task's
  span), a call-start hook (the call's span, ended with its record after DELIVERY) and a
  task-end hook.

Hooks added with `add_call_hook` / `tasks.add_task_end_hook` run in the same steps, in the order
they were added."""


def _deliver(
    record: CallRecord,
    task: Task | None,
    reservation: Reservation | None,
    call_ends: tuple[CallEnd, ...] = (),
) -> CallRecord:
    for stage, step in DELIVERY:
        with guarded("meter.failed", stage=stage):
            step(record, task, reservation)
    if call_ends:  # the call's OpenTelemetry span, opened at admission (`add_call_start_hook`)
        run_each("meter.hook_failed", call_ends, record)
    return record


# -- call ids ----------------------------------------------------------------------------------

_ID_BATCH = 256
_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))
"""Byte 6 of a UUID: version 4 in the high nibble."""
_VARIANT_RFC4122 = bytes(b & 0x3F | 0x80 for b in range(256))
"""Byte 8 of a UUID: the RFC 4122 variant in the two high bits."""
_ids: list[str] = []
os.register_at_fork(after_in_child=_ids.clear)  # a child must never hand out its parent's ids


def _new_id() -> str:
    """A random version-4 UUID as 32 hex digits, the same as ``uuid.uuid4().hex``.

    ``uuid4()`` asks the OS for 16 bytes on every call (a system call, 5 µs); this reads and
    formats a batch at once. ``list.pop`` is atomic, so threads share the pool without a lock.
    """
    while True:
        try:
            return _ids.pop()
        except IndexError:
            _ids.extend(_id_batch())


def _id_batch() -> list[str]:
    raw = bytearray(os.urandom(16 * _ID_BATCH))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT_RFC4122)
    digits = raw.hex()
    return [digits[i : i + 32] for i in range(0, len(digits), 32)]


# -- calibration -------------------------------------------------------------------------------


@functools.cache
def _tokens() -> ModuleType:
    """``budgetclient.tokens``, imported on first use (it loads tiktoken; an import statement in a
    function costs microseconds on every call)."""
    from . import tokens

    return tokens


def _calibrate(provider: str, model: str, raw: int, reported: int) -> None:
    with guarded("tokens.calibrate_failed", model=model):
        _tokens().calibrate(provider, model, raw, reported)


def _log_call(info: Callable[..., Any], record: CallRecord) -> None:
    u = record.usage
    info(
        "llm.call",
        provider=record.provider,
        model=record.model,
        operation=record.operation,
        status=record.status,
        http_status=record.http_status,
        task=record.task_name,
        task_id=record.task_id,
        input_tokens=u.input_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens,
        cache_write_long_tokens=u.cache_write_long_tokens,
        output_tokens=u.output_tokens,
        reasoning_tokens=u.reasoning_tokens,
        cost_usd=None if record.cost is None else str(record.cost),
        duration_s=round(record.duration_s, 4),
        stream=record.stream,
        batch=record.batch,
        attempt=record.attempt,
    )
