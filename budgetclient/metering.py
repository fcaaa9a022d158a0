"""The record path of one model request: usage → price → task → ledger, log and hooks.

Providers call ``begin_call`` before sending (it captures the task and enforces budgets) and
``finish_call`` once usage is known. ``finish_call`` never raises: a metering fault is logged and
the user's call goes on unchanged.
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
from ._log import _disabled, log
from .drift import PrefixDrift
from .ledger.writer import get_writer
from .tasks import Task, _Reservation, _reserve, budgeted_chain, current_task
from .usage import CallRecord, CallStatus, Usage, _new_call_record

__all__ = ["CallContext", "add_call_hook", "add_call_start_hook", "begin_call", "finish_call"]


_call_hooks: list[Callable[[CallRecord], None]] = []


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
        try:
            end = hook()
        except Exception as exc:
            log.error("meter.hook_failed", hook=repr(hook), error=type(exc).__name__)
            continue
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
    reservation: _Reservation | None = None
    estimated_raw_tokens: int = 0
    """Uncalibrated input estimate made for a budget check; calibrates against the reported count."""
    finished: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    call_ends: tuple[CallEnd, ...] = ()
    """What the call-start hooks returned (otel spans): each gets this call's record(s)."""


def estimate_input_cost(provider: str, model: str, input_tokens: int) -> Decimal | None:
    try:
        return pricing.estimate_input_cost(input_tokens, model, provider)
    except Exception as exc:
        log.error("price.estimate_failed", model=model, error=type(exc).__name__)
        return None


def begin_call(
    provider: str,
    model: str,
    operation: str,
    *,
    estimated_input_tokens: Callable[[], int | Any] | None = None,
    stream: bool = False,
    attempt: int = 0,
    request_bytes: int = 0,
    conversation: str | None = None,
) -> CallContext:
    """Capture the current task and enforce its budget before a request is sent.

    Raises ``BudgetExceeded`` when the task (or a parent) cannot afford the estimated input.
    ``estimated_input_tokens`` is only evaluated when some task on the chain has a budget; it
    returns a token count or a ``tokens.TokenEstimate`` (whose raw count then feeds calibration).
    """
    t = current_task()
    reservation = None
    raw = 0
    if t is not None and estimated_input_tokens is not None:
        chain = budgeted_chain(t)
        if chain:
            try:
                estimate = estimated_input_tokens()
                tokens = int(getattr(estimate, "tokens", estimate))
                raw = int(getattr(estimate, "raw_tokens", 0))
            except Exception as exc:
                log.error("tokens.estimate_failed", model=model, error=type(exc).__name__)
                tokens = 0
            reservation = _reserve(chain, estimate_input_cost(provider, model, tokens), model)
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
    """Price the call, add it to its task chain, queue it for the ledger and log it.

    Idempotent per context (a stream closed twice records once). Never raises.
    """
    if ctx.finished and not batch:
        return None
    ctx.finished = True
    # each budgeted task gives its hold back as the call's cost is added to it (`_deliver`): one
    # lock, so its spent + held never misses the call in between
    reservation, ctx.reservation = ctx.reservation, None
    try:
        model_name = model or ctx.model
        if ctx.estimated_raw_tokens and status == "ok" and usage.input_tokens:
            _calibrate(ctx.provider, model_name, ctx.estimated_raw_tokens, usage.input_tokens)
        try:
            breakdown = pricing.price_call(usage, model_name, ctx.provider, batch=batch)
        except Exception as exc:  # pricing must never break a call
            log.error("price.failed", model=model_name, error=type(exc).__name__, detail=str(exc)[:200])
            breakdown = None
        t = ctx.task
        merged = {**ctx.metadata, **metadata} if metadata else dict(ctx.metadata) if ctx.metadata else {}
        # positional: a frozen record's keyword constructor costs twice as much (see usage.py)
        record = _new_call_record(
            _new_id(),  # id
            ctx.provider,  # provider
            model_name,  # model
            operation or ctx.operation,  # operation
            ctx.started_at,  # started_at
            time.monotonic() - ctx.t0,  # duration_s
            usage,  # usage
            None if breakdown is None else breakdown.total,  # cost
            breakdown,  # cost_breakdown
            status,  # status
            http_status,  # http_status
            error,  # error
            t.id if t else None,  # task_id
            t.name if t else None,  # task_name
            ctx.conversation,  # conversation
            ctx.stream,  # stream
            batch,  # batch
            ctx.attempt,  # attempt
            ctx.request_bytes,  # request_bytes
            ctx.prefix_hash,  # prefix_hash
            response_id,  # response_id
            service_tier,  # service_tier
            drift if drift is not None else ctx.drift,  # drift
            merged,  # metadata
        )
    except Exception as exc:
        if reservation is not None:
            reservation.release()
        log.error("meter.failed", stage="record", error=type(exc).__name__, detail=str(exc)[:200])
        return None
    return _deliver(record, t, reservation, ctx.call_ends)


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
    try:
        _tokens().calibrate(provider, model, raw, reported)
    except Exception as exc:
        log.error("tokens.calibrate_failed", model=model, error=type(exc).__name__)


def publish_call(record: CallRecord, task: Task | None) -> CallRecord:
    """Deliver a finished record to its task chain, the ledger, the log and hooks; never raises."""
    return _deliver(record, task, None, _call_started())  # otel hook: a record without a request


def _deliver(
    record: CallRecord,
    task: Task | None,
    reservation: _Reservation | None,
    call_ends: tuple[CallEnd, ...] = (),
) -> CallRecord:
    """`publish_call`, also giving back ``reservation`` on each task it held, as it adds to it."""
    if task is not None:
        held = reservation.tasks if reservation is not None else ()
        for node in task.ancestry:
            try:
                node._add(record, reservation.amount if reservation is not None and node in held else None)
            except Exception as exc:
                log.error("meter.failed", stage="task", error=type(exc).__name__)
    try:
        get_writer().submit_call(record)
    except Exception as exc:
        log.error("meter.failed", stage="ledger", error=type(exc).__name__, detail=str(exc)[:200])
    info = log.info
    if info is not _disabled:  # nobody listens: skip building the event (it runs on every call)
        _log_call(info, record)
    for hook in list(_call_hooks):
        try:
            hook(record)
        except Exception as exc:
            log.error("meter.hook_failed", hook=repr(hook), error=type(exc).__name__)
    for end in call_ends:  # otel hook: call end
        try:
            end(record)
        except Exception as exc:
            log.error("meter.hook_failed", hook=repr(end), error=type(exc).__name__)
    return record


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
