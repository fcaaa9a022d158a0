"""Replaying a trace under a caching strategy, on a simulated Anthropic prompt cache.

`STRATEGIES` turns a trace's body into what a strategy would send:

- ``"none"``: no markers;
- ``"system-only"``: one 5m marker on the last system block (the guide's advice);
- ``"provider-auto"``: Anthropic's automatic mode, a top-level ``cache_control``;
- ``"budgetclient"``: `formats.anthropic.prepare.prepare_request` with ``cache="auto"``.

`run_trace` sends each body to a `ReplayBackend`: by default `SimulatedAnthropic`, which bills with
the documented cache rules (`cachesim.anthropic`) in process; ``budgetclient.testing`` runs the
same replay through `FakeAnthropic`'s HTTP handler. Costs use the pricing module's rates for the
trace's model (genai-prices unless overridden), never a price table of this module's own.
"""

from __future__ import annotations

import hashlib
import itertools
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

from ..formats.anthropic.blocks import conversation_head, prefix_shape
from ..formats.anthropic.markers import cache_control
from ..formats.anthropic.prepare import PreparedRequest, observe_response, prepare_request
from ..lineage import LineageRegistry, LineageState
from ..pricing import Rates, rates_for
from ..usage import Usage
from .anthropic import PromptCache, cache_breakpoints, min_cacheable_tokens, prompt_blocks
from .traces import MODEL, Trace

__all__ = [
    "STRATEGIES",
    "ReplayBackend",
    "BudgetclientStrategy",
    "SimulatedAnthropic",
    "SimulatedClock",
    "Strategy",
    "TraceRun",
    "run_trace",
    "trace_rates",
    "usage_cost",
    "usage_of",
]

DEFAULT_EPOCH = 1_767_225_600.0
"""2026-01-01T00:00:00Z: a fixed start, so replays are reproducible."""
OUTPUT_TOKENS = 20
"""Tokens a simulated reply reports (fewer when ``max_tokens`` is lower), as `FakeAnthropic`'s default."""

_MILLION = Decimal(1_000_000)


def trace_rates(model: str = MODEL) -> Rates:
    """The pricing module's rates for ``model``; a trace on an unpriced model cannot be costed."""
    rates = rates_for(model, "anthropic")
    if rates is None:
        raise LookupError(f"no price for {model!r}: add one with bc.configure(prices=...)")
    return rates


def usage_cost(usage: Mapping[str, Any], rates: Rates | None = None, *, output: bool = True) -> Decimal:
    """USD of one Anthropic ``usage`` object (``input_tokens`` excludes cache reads and writes).

    ``rates`` defaults to the trace model's (`trace_rates`); tiers follow the request's total input.
    """
    rates = rates or trace_rates()
    creation = usage.get("cache_creation") or {}
    long_writes = int(creation.get("ephemeral_1h_input_tokens") or 0)
    writes = int(usage.get("cache_creation_input_tokens") or 0)
    reads = int(usage.get("cache_read_input_tokens") or 0)
    uncached = int(usage.get("input_tokens") or 0)
    total_input = uncached + reads + writes
    total = (
        uncached * rates.input.at(total_input)
        + reads * rates.cache_read.at(total_input)
        + (writes - long_writes) * rates.cache_write.at(total_input)
        + long_writes * rates.cache_write_long.at(total_input)
    )
    if output:
        total += int(usage.get("output_tokens") or 0) * rates.output.at(total_input)
    return total / _MILLION


def usage_of(usage: Mapping[str, Any]) -> Usage:
    """`Usage` of an Anthropic ``usage`` object (whose ``input_tokens`` excludes cache tokens)."""
    read = int(usage.get("cache_read_input_tokens") or 0)
    write = int(usage.get("cache_creation_input_tokens") or 0)
    long_writes = int((usage.get("cache_creation") or {}).get("ephemeral_1h_input_tokens") or 0)
    return Usage(
        input_tokens=int(usage.get("input_tokens") or 0) + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_long_tokens=long_writes,
        output_tokens=int(usage.get("output_tokens") or 0),
        requests=1,
    )


Strategy = Callable[[dict[str, Any], LineageState, float], dict[str, Any]]


def _none(body: dict[str, Any], state: LineageState, now: float) -> dict[str, Any]:
    return body


def _system_only(body: dict[str, Any], state: LineageState, now: float) -> dict[str, Any]:
    system = body.get("system")
    if isinstance(system, str) and system:
        return {**body, "system": [{"type": "text", "text": system, "cache_control": cache_control("5m")}]}
    if isinstance(system, list) and system:
        marked = [*system[:-1], {**system[-1], "cache_control": cache_control("5m")}]
        return {**body, "system": marked}
    return body


def _provider_auto(body: dict[str, Any], state: LineageState, now: float) -> dict[str, Any]:
    return {**body, "cache_control": cache_control("5m")}


class BudgetclientStrategy:
    """budgetclient's placement; remembers each lineage's last preparation for `observe`.

    With a ``registry``, each body is matched to a conversation by content within the replay's
    lineage (as a client does, `LineageRegistry.match`), so one trace may hold several agents;
    ``drifts`` counts the requests whose preparation reported drift (``drift="warn"``);
    ``history``: gaps earlier runs of the task showed, as `run_history` finds them in a ledger.
    """

    def __init__(self, registry: LineageRegistry | None = None, drift: Literal["warn", "off"] = "off",
                 history: Sequence[float] = ()) -> None:
        self.__name__ = "budgetclient"
        self._prepared: weakref.WeakKeyDictionary[LineageState, PreparedRequest] = weakref.WeakKeyDictionary()
        self._matched: weakref.WeakKeyDictionary[LineageState, LineageState] = weakref.WeakKeyDictionary()
        self._registry = registry
        self._drift: Literal["warn", "off"] = drift
        self.drifts = 0
        self._history = list(history)

    def __call__(self, body: dict[str, Any], state: LineageState, now: float) -> dict[str, Any]:
        if self._registry is not None:
            matched = self._registry.match(state.key, conversation_head(body), lambda: prefix_shape(body))
            self._matched[state] = matched
            state = matched
        if state.prior_gaps is None and self._history:
            state.prior_gaps = list(self._history)  # what `run_history` reads from the ledger
        prepared = prepare_request(body, cache="auto", cache_ttl="auto", drift=self._drift, state=state,
                                   now=now, diagnostics=False)
        if prepared.drift is not None:
            self.drifts += 1
        self._prepared[state] = prepared
        return prepared.body

    def ttl_of(self, state: LineageState) -> str | None:
        """TTL mode of the last request prepared for ``state``: ``"5m"``, ``"1h"``, ``"anchored"``
        (1h on an anchor, 5m on the rest) or None (no breakpoints placed)."""
        prepared = self._prepared.get(self._matched.get(state, state))
        if prepared is None or not prepared.markers:
            return None
        return "anchored" if any(m.role == "anchor" for m in prepared.markers) else prepared.ttl

    def observe(self, state: LineageState, message: Mapping[str, Any], now: float) -> None:
        state = self._matched.get(state, state)
        prepared = self._prepared.get(state)
        if prepared is not None:
            observe_response(state, prepared, usage_of(message.get("usage") or {}), message, now=now)


STRATEGIES: dict[str, Strategy] = {
    "none": _none,
    "system-only": _system_only,
    "provider-auto": _provider_auto,
    "budgetclient": BudgetclientStrategy(),
}


# --- backends -----------------------------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> float: ...

    def advance(self, seconds: float) -> None: ...


class ReplayBackend(Protocol):
    """Where a replay sends its bodies: ``send(body)`` answers with a decoded Messages response."""

    @property
    def clock(self) -> Clock: ...

    def send(self, body: Mapping[str, Any]) -> dict[str, Any]: ...


class SimulatedClock:
    """Seconds on a clock that moves only when told to."""

    def __init__(self, start: float = DEFAULT_EPOCH) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        self._now += seconds


class SimulatedAnthropic:
    """The Messages API's prompt cache and usage, in process: no HTTP, no SDK."""

    def __init__(self, *, clock: Clock | None = None, output_tokens: int = OUTPUT_TOKENS) -> None:
        self._clock = clock or SimulatedClock()
        self.output_tokens = output_tokens
        self.cache = PromptCache()
        self._ids = itertools.count(1)

    @property
    def clock(self) -> Clock:
        return self._clock

    def send(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Bill one request on the cache (which it updates); raises `InvalidRequest` as the API would 400."""
        model = str(body.get("model", ""))
        blocks = prompt_blocks(body)
        points = cache_breakpoints(body, blocks)
        min_tokens = min_cacheable_tokens(model)
        accounting = self.cache.account(blocks, points, now=self._clock.now(), min_tokens=min_tokens)
        output = min(self.output_tokens, int(body.get("max_tokens") or 0))
        digest = hashlib.sha256(f"msg_{next(self._ids)}".encode()).hexdigest()
        return {
            "id": f"msg_01{digest[:22]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "ok"}] if output > 0 else [],
            "usage": accounting.usage(output),
        }


# --- running a trace ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceRun:
    """What a strategy paid on a trace, call by call, as the fake backend reported it."""

    trace: str
    strategy: str
    usages: tuple[Mapping[str, Any], ...]
    bodies: tuple[Mapping[str, Any], ...] = field(repr=False, default=())
    ttls: tuple[str | None, ...] = ()
    """TTL the strategy chose for each call, when it reports one (budgetclient does)."""

    model: str = MODEL
    """The model the trace ran on; its rates price `cost` and `input_cost` by default."""

    def cost(self, rates: Rates | None = None) -> Decimal:
        rates = rates or trace_rates(self.model)
        return sum((usage_cost(u, rates) for u in self.usages), Decimal(0))

    def input_cost(self, rates: Rates | None = None) -> Decimal:
        rates = rates or trace_rates(self.model)
        return sum((usage_cost(u, rates, output=False) for u in self.usages), Decimal(0))


def run_trace(trace: Trace, strategy: str | Strategy, *, backend: ReplayBackend | None = None,
              keep_bodies: bool = False) -> TraceRun:
    """Replay ``trace`` on a fresh `SimulatedAnthropic` (or ``backend``) with one strategy."""
    name = strategy if isinstance(strategy, str) else getattr(strategy, "__name__", "custom")
    prepare = STRATEGIES[strategy] if isinstance(strategy, str) else strategy
    backend = backend or SimulatedAnthropic()
    state = LineageState(key=f"trace:{trace.name}:{name}")
    usages = []
    bodies = []
    ttls: list[str | None] = []
    ttl_of = getattr(prepare, "ttl_of", None)
    observe = getattr(prepare, "observe", None)
    for call in trace.calls:
        backend.clock.advance(call.gap_s)
        now = backend.clock.now()
        body = prepare(dict(call.body), state, now)
        if ttl_of is not None:
            ttls.append(ttl_of(state))
        message = backend.send(body)
        if observe is not None:
            observe(state, message, now)
        usages.append(message["usage"])
        if keep_bodies:
            bodies.append(body)
    return TraceRun(trace.name, name, tuple(usages), tuple(bodies), tuple(ttls), trace.model)
