"""The record path of one model request: usage → price → task → ledger, log and hooks.

Providers call ``begin_call`` before sending (it captures the task and enforces budgets) and
``finish_call`` once usage is known. ``finish_call`` never raises: a metering fault is logged and
the user's call goes on unchanged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from . import pricing
from ._log import log
from .drift import PrefixDrift
from .tasks import Task, _Reservation, current_task, reserve_budget
from .usage import CallRecord, CallStatus, Usage

__all__ = ["CallContext", "add_call_hook", "begin_call", "finish_call"]


_call_hooks: list[Callable[[CallRecord], None]] = []


def add_call_hook(hook: Callable[[CallRecord], None]) -> Callable[[], None]:
    """Call ``hook(record)`` after every metered call; returns a function that removes it."""
    _call_hooks.append(hook)
    return lambda: _call_hooks.remove(hook) if hook in _call_hooks else None


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
    if (
        t is not None
        and estimated_input_tokens is not None
        and any(x.budget_usd is not None for x in t.ancestry)
    ):
        try:
            estimate = estimated_input_tokens()
            tokens = int(getattr(estimate, "tokens", estimate))
            raw = int(getattr(estimate, "raw_tokens", 0))
        except Exception as exc:
            log.error("tokens.estimate_failed", model=model, error=type(exc).__name__)
            tokens = 0
        reservation = reserve_budget(t, estimate_input_cost(provider, model, tokens), model)
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
    try:
        if ctx.reservation is not None:
            ctx.reservation.release()
            ctx.reservation = None
        model_name = model or ctx.model
        if ctx.estimated_raw_tokens and status == "ok" and usage.input_tokens:
            _calibrate(ctx.provider, model_name, ctx.estimated_raw_tokens, usage.input_tokens)
        try:
            breakdown = pricing.price_call(usage, model_name, ctx.provider, batch=batch)
        except Exception as exc:  # pricing must never break a call
            log.error("price.failed", model=model_name, error=type(exc).__name__, detail=str(exc)[:200])
            breakdown = None
        t = ctx.task
        record = CallRecord(
            id=uuid.uuid4().hex,
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
            metadata={**ctx.metadata, **(metadata or {})},
        )
    except Exception as exc:
        log.error("meter.failed", stage="record", error=type(exc).__name__, detail=str(exc)[:200])
        return None
    return publish_call(record, ctx.task)


def _calibrate(provider: str, model: str, raw: int, reported: int) -> None:
    try:
        from .tokens import calibrate

        calibrate(provider, model, raw, reported)
    except Exception as exc:
        log.error("tokens.calibrate_failed", model=model, error=type(exc).__name__)


def publish_call(record: CallRecord, task: Task | None) -> CallRecord:
    """Deliver a finished record to its task chain, the ledger, the log and hooks; never raises."""
    if task is not None:
        for node in task.ancestry:
            try:
                node._add(record)
            except Exception as exc:
                log.error("meter.failed", stage="task", error=type(exc).__name__)
    try:
        from .ledger.writer import get_writer

        get_writer().submit_call(record)
    except Exception as exc:
        log.error("meter.failed", stage="ledger", error=type(exc).__name__, detail=str(exc)[:200])
    u = record.usage
    log.info(
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
    for hook in list(_call_hooks):
        try:
            hook(record)
        except Exception as exc:
            log.error("meter.hook_failed", hook=repr(hook), error=type(exc).__name__)
    return record
