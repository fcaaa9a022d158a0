"""The one step every model request passes before it is sent, for every provider.

A provider's hook reads its request with its format adapter (body → blocks, the conversation's
lineage, placement of cache markers) and describes the result as an `Admission`; `admit` then
applies the same policy to all of them, in this order:

1. drift check: ``drift="raise"`` stops the request (``PrefixDriftError``); ``"warn"`` reports it
   once per call (not again on the SDK's retries);
2. allocation check (``bc.configure(allocation_check=...)``), logged, never raised;
3. budget reservation: the call's worst case is held on every budgeted task of its chain
   (``BudgetExceeded`` when it does not fit; see `metering.begin_call`);
4. fleet limits (`limits`): the same worst case is held on every ``bc.limit`` covering the call,
   in one transaction on the shared store (``LimitExceeded`` / ``LimitUnavailable``; the task
   holds are given back then). The call's record settles the hold with the actual cost.

The held budget is given back on every exit: by the call's record once usage arrives (stream
ends, closes or is collected), by `sending` when the SDK raises or the call is cancelled or
interrupted, and by `holding` for a failure after admission but before the request is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from . import limits, metering
from ._guard import guarded
from ._log import log
from .blocks import Ttl
from .config import get_settings
from .drift import PrefixDrift, drift_fields
from .errors import PrefixDriftError
from .metering import CallContext
from .options import DriftMode
from .usage import CallStatus, Usage

__all__ = [
    "DEFAULT_OUTPUT_LIMIT",
    "Admission",
    "admit",
    "check_allocation",
    "failed",
    "holding",
    "output_limit",
    "sending",
]


DEFAULT_OUTPUT_LIMIT = 32_768
"""Output tokens a budget reserves for a request that sets no output limit of its own.

The price data has no per-model output caps; set ``max_tokens`` (``max_completion_tokens`` /
``max_output_tokens``, ``maxOutputTokens``) on the request for an exact worst case."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """One request as a provider's adapter read it, ready for `admit`."""

    provider: str
    model: str
    operation: str
    body: Mapping[str, Any] | None = None
    """The JSON body as it will be sent (after placement), read by the allocation check."""
    drift: PrefixDrift | None = None
    """Drift of the request's cacheable prefix against its lineage's previous call."""
    drift_mode: DriftMode = "warn"
    announce: Callable[[PrefixDrift], None] | None = None
    """The provider's drift report for ``drift_mode="warn"`` (log, listeners, warning)."""
    estimate: Callable[[], Any] | None = None
    """Input tokens (an int or a ``tokens.TokenEstimate``), evaluated only for a budgeted task."""
    max_output_tokens: int | None = None
    """The request's own output limit; None: `DEFAULT_OUTPUT_LIMIT`."""
    cache_write_ttl: Ttl | None = None
    """The longest TTL of the request's cache markers, if it has any (cache writes are priced
    into its worst case; None: the provider bills no cache writes above the input rate)."""
    stream: bool = False
    attempt: int = 0
    """Retries the SDK had taken before this attempt."""
    request_bytes: int = 0
    conversation: str | None = None
    prefix_hash: str | None = None
    metadata: Mapping[str, Any] | None = None


def output_limit(value: Any) -> int | None:
    """A body's output-limit field when it is a usable count (the SDK validates it, not us)."""
    return value if type(value) is int and value >= 0 else None


def admit(request: Admission) -> CallContext:
    """Check drift, allocation and budget for one request; hold its budget; return its context.

    Raises ``PrefixDriftError`` (``drift="raise"``) or ``BudgetExceeded`` before anything is
    held or sent. From the returned context on, the caller owns a hold: see `holding`/`sending`.
    """
    drift = request.drift
    if drift is not None and request.drift_mode == "raise":
        log.warning(
            "cache.drift",
            provider=request.provider,
            model=request.model,
            action="raised",
            **drift_fields(drift),
        )
        raise PrefixDriftError(drift)
    if drift is not None and request.drift_mode == "warn" and request.attempt == 0 and request.announce:
        request.announce(drift)
    check_allocation(request.provider, request.body, request.model)
    ctx = metering.begin_call(
        request.provider,
        request.model,
        request.operation,
        estimated_input_tokens=request.estimate,
        max_output_tokens=DEFAULT_OUTPUT_LIMIT
        if request.max_output_tokens is None
        else request.max_output_tokens,
        cache_write_ttl=request.cache_write_ttl,
        stream=request.stream,
        attempt=request.attempt,
        request_bytes=request.request_bytes,
        conversation=request.conversation,
    )
    ctx.prefix_hash = request.prefix_hash
    ctx.drift = drift
    if request.metadata:
        ctx.metadata.update(request.metadata)
    if limits.any_covering(ctx.task):
        _hold_limits(ctx, request)
    return ctx


# -- fleet limits (issue 21): after the task budgets, before sending ----------------------------


def _hold_limits(ctx: CallContext, request: Admission) -> None:
    """Hold the call's worst case on the limits covering it; settle with its record."""
    with holding(ctx):  # refused or unreachable: the task holds taken above go back
        specs = limits.covering(ctx.task)
        if not specs:
            return
        worst = _worst_case(ctx, request)
        hold = limits.reserve(specs, worst, request.model)
    if hold is not None:
        ctx.call_ends = (*ctx.call_ends, hold.settle)
        ctx.releases = (*ctx.releases, hold.release)


def _worst_case(ctx: CallContext, request: Admission) -> Decimal | None:
    """The worst case a ``budget_mode="cap"`` task already priced, else priced here."""
    if ctx.reservation is not None and ctx.task is not None and ctx.task.budget_mode == "cap":
        held = ctx.reservation.amount_for(ctx.task)
        if held is not None:
            return held
    tokens = 0
    if request.estimate is not None:
        with guarded("tokens.estimate_failed", model=request.model):  # as for budgets: never refused
            estimate = request.estimate()
            tokens = int(getattr(estimate, "tokens", estimate))
    output = DEFAULT_OUTPUT_LIMIT if request.max_output_tokens is None else request.max_output_tokens
    with guarded("price.estimate_failed", model=request.model):
        return metering.call_cost(
            request.provider, request.model, tokens, output, cache_write_ttl=request.cache_write_ttl
        ).worst_usd
    return None


def check_allocation(provider: str, body: Mapping[str, Any] | None, model: str) -> None:
    """Run ``configure(allocation_check=...)`` on a request about to be sent; never raises."""
    targets = get_settings().allocation_check
    if targets is None or body is None:
        return
    with guarded("plan.allocation_check_failed", provider=provider):
        from .plan import check_allocation as check  # plan loads the token counters: on first use

        check(provider, body, targets, model=model)


class _OnRaise:
    """A context manager that reports an exception leaving its block to `_raised`, and lets it
    propagate. A class rather than ``@contextmanager`` (as `guarded`): it runs on every call."""

    __slots__ = ("ctx",)

    def __init__(self, ctx: CallContext | None) -> None:
        self.ctx = ctx

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> Literal[False]:
        if exc is not None:
            self._raised(exc)
        return False

    def _raised(self, exc: BaseException) -> None:
        raise NotImplementedError


class holding(_OnRaise):
    """Between admission and sending: any exit by an exception gives the call's hold back."""

    __slots__ = ()

    def _raised(self, exc: BaseException) -> None:
        metering.abandon_call(self.ctx)


def failed(ctx: CallContext | None, exc: BaseException) -> None:
    """Record a call whose sending raised (the SDK's error, a timeout, a cancel, an interrupt).

    It may have reached the provider, so it is a record (``error``, or ``incomplete`` when the
    caller stopped it), and its hold goes back with it.
    """
    if ctx is None:
        return
    status: CallStatus = "incomplete" if _interrupted(exc) else "error"
    metering.finish_call(ctx, Usage(), status=status, error=type(exc).__name__)


class sending(_OnRaise):
    """Around the SDK's send: an exception records the call as `failed` and propagates."""

    __slots__ = ()

    def _raised(self, exc: BaseException) -> None:
        failed(self.ctx, exc)


def _interrupted(exc: BaseException) -> bool:
    return isinstance(exc, (KeyboardInterrupt, GeneratorExit, asyncio.CancelledError))
