"""Usage and the frozen records that flow from a finished call to tasks, ledger and logs.

Token counts follow the OpenTelemetry convention: ``input_tokens`` includes cached tokens, and
``cache_read_tokens`` / ``cache_write_tokens`` are subsets of it. Providers that report input
without the cached part (Anthropic) are normalised in ``providers/`` before a ``Usage`` exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from ._construct import fast_constructor
from .drift import PrefixDrift

__all__ = ["CallRecord", "CallStatus", "CostBreakdown", "Outcome", "TaskRecord", "Usage"]

Outcome = Literal["success", "partial", "failure"]
CallStatus = Literal["ok", "error", "incomplete"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token usage of one or more model requests; immutable and addable.

    Do not sum usage across requests before pricing it: tiers apply per request. Price each call,
    then add money (see `pricing.price_call`).
    """

    input_tokens: int = 0
    """All input tokens, cached ones included."""
    cache_read_tokens: int = 0
    """Subset of ``input_tokens`` read from a prompt cache."""
    cache_write_tokens: int = 0
    """Subset of ``input_tokens`` written to a prompt cache (all TTLs)."""
    cache_write_long_tokens: int = 0
    """Subset of ``cache_write_tokens`` written with the long TTL (Anthropic 1h, OpenAI 12h)."""
    output_tokens: int = 0
    """All output tokens, reasoning included."""
    reasoning_tokens: int = 0
    """Subset of ``output_tokens`` spent on reasoning / thinking."""
    requests: int = 0
    """Billable model requests."""

    def __post_init__(self) -> None:
        values = (
            self.input_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.cache_write_long_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            self.requests,
        )
        if set(map(type, values)) == _PLAIN_INT and min(values) >= 0:
            return  # the common case, checked at C speed; the loop below names the bad field
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Usage.{f.name} must be a non-negative int, got {value!r}")

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens billed at the plain input rate (neither read from nor written to cache)."""
        uncached = self.input_tokens - self.cache_read_tokens - self.cache_write_tokens
        return uncached if uncached > 0 else 0  # not max(): this runs for every priced call

    @property
    def cache_write_short_tokens(self) -> int:
        """Cache writes with the default (short) TTL."""
        short = self.cache_write_tokens - self.cache_write_long_tokens
        return short if short > 0 else 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cache_hit_rate(self) -> float:
        """``cache_read_tokens / input_tokens``; 0.0 when there was no input."""
        return self.cache_read_tokens / self.input_tokens if self.input_tokens else 0.0

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        # both sides were validated, so their sums are valid: skip the checks
        return _trusted_usage(
            input_tokens=self.input_tokens + other.input_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_write_long_tokens=self.cache_write_long_tokens + other.cache_write_long_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            requests=self.requests + other.requests,
        )

    def __radd__(self, other: object) -> Usage:
        # lets ``sum(usages)`` start from the int 0
        if other == 0:
            return self
        return self.__add__(other)

    def otel_attributes(self) -> dict[str, int]:
        """GenAI semantic-convention span attributes for this usage."""
        return {
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.cache_read.input_tokens": self.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": self.cache_write_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            "gen_ai.usage.reasoning.output_tokens": self.reasoning_tokens,
        }


_PLAIN_INT = {int}
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class CostBreakdown:
    """USD cost split by bucket; ``total`` is their sum."""

    uncached_input: Decimal = _ZERO
    cache_read: Decimal = _ZERO
    cache_write: Decimal = _ZERO
    output: Decimal = _ZERO
    storage: Decimal = _ZERO
    """Explicit cache storage (Gemini ``cachedContents``, per token-hour)."""

    @property
    def total(self) -> Decimal:
        return self.uncached_input + self.cache_read + self.cache_write + self.output + self.storage

    @property
    def input(self) -> Decimal:
        """Everything billed for input: uncached, cache reads and cache writes."""
        return self.uncached_input + self.cache_read + self.cache_write

    def __add__(self, other: object) -> CostBreakdown:
        if not isinstance(other, CostBreakdown):
            return NotImplemented
        return _new_breakdown(
            uncached_input=self.uncached_input + other.uncached_input,
            cache_read=self.cache_read + other.cache_read,
            cache_write=self.cache_write + other.cache_write,
            output=self.output + other.output,
            storage=self.storage + other.storage,
        )

    def __radd__(self, other: object) -> CostBreakdown:
        if other == 0:
            return self
        return self.__add__(other)

    def as_dict(self) -> dict[str, Decimal]:
        return {
            "uncached_input": self.uncached_input,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
            "output": self.output,
            "storage": self.storage,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """One model request (one HTTP attempt, or one batch result), as metered and stored.

    Holds counts, costs, hashes, sizes and timings; never prompt text and never credentials.
    """

    id: str
    provider: str
    """``"anthropic"``, ``"openai"`` or ``"google"``."""
    model: str
    operation: str
    """What was called, e.g. ``"messages"``, ``"chat.completions"``, ``"batch"``, ``"cache.storage"``."""
    started_at: datetime
    duration_s: float
    usage: Usage
    cost: Decimal | None
    """USD; None when the model has no known price (never silently 0)."""
    cost_breakdown: CostBreakdown | None
    status: CallStatus = "ok"
    """``ok``; ``error`` (non-2xx or transport failure); ``incomplete`` (stream cut short)."""
    http_status: int | None = None
    error: str | None = None
    task_id: str | None = None
    task_name: str | None = None
    conversation: str | None = None
    """Lineage key of the conversation this call belongs to (used for drift detection)."""
    stream: bool = False
    batch: bool = False
    attempt: int = 0
    """Retries the SDK had taken before this attempt (0 on the first)."""
    request_bytes: int = 0
    prefix_hash: str | None = None
    response_id: str | None = None
    service_tier: str | None = None
    drift: PrefixDrift | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """A finished task with the totals of every call made inside it (children included)."""

    id: str
    name: str
    parent_id: str | None
    outcome: Outcome
    started_at: datetime
    ended_at: datetime
    usage: Usage
    cost: Decimal | None
    cost_breakdown: CostBreakdown
    calls: int
    budget_usd: Decimal | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()

    @property
    def cache_hit_rate(self) -> float:
        return self.usage.cache_hit_rate


# -- fast constructors for the record path ----------------------------------------------------

_trusted_usage = fast_constructor(Usage)
"""``Usage(...)`` without validation, for counts already known to be non-negative ints."""
_new_breakdown = fast_constructor(CostBreakdown)
_new_call_record = fast_constructor(CallRecord)
