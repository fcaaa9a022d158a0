"""The record path of one model request: budget held before it is sent, one record after.

``begin_call`` (through `admission.admit` for model requests) prices the call's worst case and
holds it on the task's budgets; ``finish_call`` runs the record pipeline, in this order:

    usage ──> calibrate ──> price ──> CallRecord ──> DELIVERY:
        task roll-up (spent += cost, hold given back) ─> ledger ─> log (``llm.call``) ─>
        call hooks (alerts from `signals`, OpenTelemetry from `telemetry`, the user's own)

Each step runs in `guarded`, the one "never break the user's call" rule: a metering fault is
logged and the user's call goes on unchanged; the record still reaches every later step.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import ModuleType
from typing import Any

from . import pricing
from ._guard import guarded
from ._log import _disabled, log
from .blocks import Ttl
from .drift import PrefixDrift
from .ledger.writer import get_writer
from .tasks import CallCost, Reservation, Task, budgeted_chain, current_task, record_call, reserve_budget
from .usage import CallRecord, CallStatus, CostBreakdown, Usage, _new_call_record

__all__ = [
    "DELIVERY",
    "CallContext",
    "abandon_call",
    "add_call_hook",
    "add_call_start_hook",
    "begin_call",
    "call_cost",
    "finish_call",
    "publish_call",
]


_call_hooks: list[Callable[[CallRecord], None]] = []
_MILLION = Decimal(1_000_000)


def add_call_hook(hook: Callable[[CallRecord], None]) -> Callable[[], None]:
    """Call ``hook(record)`` after every metered call; returns a function that removes it."""
    _call_hooks.append(hook)
    return lambda: _call_hooks.remove(hook) if hook in _call_hooks else None


# -- otel hook: call start (telemetry.py) -------------------------------------------------------
CallEnd = Callable[[CallRecord], None]
_call_start_hooks: list[Callable[[], CallEnd | None]] = []


def add_call_start_hook(hook: Callable[[], CallEnd | None]) -> Callable[[], None]:
    """Call ``hook()`` as a call starts, in the caller's context; the function it returns gets the
    call's record(s). Tracing needs this: the span current at the request is gone when a stream ends."""
    _call_start_hooks.append(hook)
    return lambda: _call_start_hooks.remove(hook) if hook in _call_start_hooks else None


def _call_started() -> tuple[CallEnd, ...]:
    if not _call_start_hooks:
        return ()
    ends: list[CallEnd] = []
    for hook in list(_call_start_hooks):
        with guarded("meter.hook_failed", hook=repr(hook)):
            end = hook()
            if end is not None:
                ends.append(end)
    return tuple(ends)


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
        return CallCost(input_usd=None, worst_usd=None)
    input_usd = input_tokens * rates.input.at(input_tokens) / _MILLION
    dearest = rates.input.at(input_tokens)
    if cache_write_ttl is not None:
        dearest = max(dearest, rates.cache_write.at(input_tokens))
    if cache_write_ttl == "1h":
        dearest = max(dearest, rates.cache_write_long.at(input_tokens))
    output_usd = output_tokens * rates.output.at(input_tokens) / _MILLION
    return CallCost(input_usd=input_usd, worst_usd=input_tokens * dearest / _MILLION + output_usd)


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
    if t is not None and estimated_input_tokens is not None and budgeted_chain(t):
        tokens = 0
        with guarded("tokens.estimate_failed", model=model):
            estimate = estimated_input_tokens()
            tokens = int(getattr(estimate, "tokens", estimate))
            raw = int(getattr(estimate, "raw_tokens", 0))
        cost: CallCost | None = None
        with guarded("price.estimate_failed", model=model):
            cost = call_cost(provider, model, tokens, max_output_tokens, cache_write_ttl=cache_write_ttl)
        if cost is not None:
            reservation = reserve_budget(t, cost, model)
    elif stream:  # a stream abandoned until interpreter shutdown is priced during finalisation, when
        # the price data can no longer be imported: resolve its rates now (a dict hit after the first)
        with guarded("price.failed", model=model):
            pricing.rates_for(model, provider)
    return CallContext(
        provider=provider,
        model=model,
        operation=operation,
        task=t,
        started_at=datetime.now(UTC),
        t0=time.monotonic(),
        stream=stream,
        attempt=attempt,
        request_bytes=request_bytes,
        conversation=conversation,
        reservation=reservation,
        estimated_raw_tokens=raw,
        call_ends=_call_started() if _call_start_hooks else (),  # otel hook: call start
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

    Idempotent per context (a stream closed twice records once). Never raises.
    """
    if ctx.finished and not batch:
        return None
    ctx.finished = True
    # each budgeted task gives its hold back as the call's cost is added to it (`record_call`)
    reservation, ctx.reservation = ctx.reservation, None
    record: CallRecord | None = None
    with guarded("meter.failed", stage="record"):
        model_name = model or ctx.model
        if ctx.estimated_raw_tokens and status == "ok" and usage.input_tokens:
            _calibrate(ctx.provider, model_name, ctx.estimated_raw_tokens, usage.input_tokens)
        breakdown = _price(usage, model_name, ctx.provider, batch)
        t = ctx.task
        merged = {**ctx.metadata, **metadata} if metadata else dict(ctx.metadata) if ctx.metadata else {}
        record = _new_call_record(
            id=_new_id(),
            provider=ctx.provider,
            model=model_name,
            operation=operation or ctx.operation,
            started_at=ctx.started_at,
            duration_s=time.monotonic() - ctx.t0,
            usage=usage,
            cost=None if breakdown is None else breakdown.total,
            cost_breakdown=breakdown,
            status=status,
            http_status=http_status,
            error=error,
            task_id=t.id if t else None,
            task_name=t.name if t else None,
            conversation=ctx.conversation,
            stream=ctx.stream,
            batch=batch,
            attempt=ctx.attempt,
            request_bytes=ctx.request_bytes,
            prefix_hash=ctx.prefix_hash,
            response_id=response_id,
            service_tier=service_tier,
            drift=drift if drift is not None else ctx.drift,
            metadata=merged,
        )
    if record is None:
        if reservation is not None:
            with guarded("meter.failed", stage="release"):
                reservation.release()
        _run_releases(ctx)
        return None
    ctx.releases = ()  # the call's record settles its limit holds (a call end, `limits`)
    return _deliver(record, ctx.task, reservation, ctx.call_ends)


def publish_call(record: CallRecord, task: Task | None) -> CallRecord:
    """Deliver a record made elsewhere (Gemini cache storage) through `DELIVERY`; never raises."""
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
    for hook in list(_call_hooks):
        with guarded("meter.hook_failed", hook=repr(hook)):
            hook(record)


DELIVERY: tuple[tuple[str, Callable[[CallRecord, Task | None, Reservation | None], None]], ...] = (
    ("task", _to_tasks),
    ("ledger", _to_ledger),
    ("log", _to_log),
    ("hooks", _to_hooks),
)
"""The steps every finished record goes through, in order; a failing step never stops the next.
Alerts (`signals`) and OpenTelemetry (`telemetry`) are call hooks, installed on first use."""


def _deliver(
    record: CallRecord,
    task: Task | None,
    reservation: Reservation | None,
    call_ends: tuple[CallEnd, ...] = (),
) -> CallRecord:
    for stage, step in DELIVERY:
        with guarded("meter.failed", stage=stage):
            step(record, task, reservation)
    for end in call_ends:  # the call's OpenTelemetry span, opened at admission (`add_call_start_hook`)
        with guarded("meter.hook_failed", hook=repr(end)):
            end(record)
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
