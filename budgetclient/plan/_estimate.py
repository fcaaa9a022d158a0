"""The guide's context budget model: per-turn tokens and what one session costs three ways."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import PlanError
from ..pricing import Rates, price_usage, rates_for
from ..usage import Usage
from ._allocation import AllocationRow, AllocationTargets, check_components
from ._schema import PlanKeyError, PlanSpec, line_of, load_plan, parse_plan
from ._simulate import simulate_budgetclient

__all__ = ["Estimate", "ModelCost", "TurnRow", "estimate", "estimate_file"]

_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1_000)
STRATEGIES = ("uncached", "fixed_prefix_cached", "budgetclient")


@dataclass(frozen=True, slots=True)
class TurnRow:
    """Tokens of one call's context at a turn (every call of a turn sends the same context)."""

    turn: int
    fixed: int
    history: int
    retrieved: int
    tool_outputs: int
    user_message: int
    variable: int
    """history + retrieved + tool_outputs + user_message."""
    total: int
    """fixed + variable: the input tokens of each of the turn's calls."""


@dataclass(frozen=True, slots=True)
class ModelCost:
    """One session's cost on one model, by caching strategy (USD, input and output)."""

    model: str
    session_cost: Mapping[str, Decimal]
    """``uncached``, ``fixed_prefix_cached``, ``budgetclient``: input plus output."""
    session_input_cost: Mapping[str, Decimal]
    """The same without output (the guide's "$0.60 per session in input tokens")."""
    per_1000_sessions: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class Estimate:
    """What `estimate` found for a plan; ``session_cost`` is for the plan's first model."""

    name: str
    model: str
    turns: tuple[TurnRow, ...]
    calls_per_turn: int
    output_tokens: int
    fixed_tokens: int
    session_input_tokens: int
    session_cost: Mapping[str, Decimal]
    session_input_cost: Mapping[str, Decimal]
    per_1000_sessions: Mapping[str, Decimal]
    models: tuple[ModelCost, ...]
    """Side by side, one entry per plan model (the first is ``session_cost``)."""
    allocation: tuple[AllocationRow, ...]
    """The largest turn's components against the allocation targets."""
    window: int
    """The context window the allocation targets are shares of."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: Decimals as strings (exact), everything else as plain values."""

        def money(mapping: Mapping[str, Decimal]) -> dict[str, str]:
            return {k: str(v) for k, v in mapping.items()}

        return {
            "name": self.name,
            "model": self.model,
            "calls_per_turn": self.calls_per_turn,
            "output_tokens": self.output_tokens,
            "fixed_tokens": self.fixed_tokens,
            "window": self.window,
            "session_input_tokens": self.session_input_tokens,
            "turns": [
                {
                    "turn": r.turn,
                    "fixed": r.fixed,
                    "history": r.history,
                    "retrieved": r.retrieved,
                    "tool_outputs": r.tool_outputs,
                    "user_message": r.user_message,
                    "variable": r.variable,
                    "total": r.total,
                }
                for r in self.turns
            ],
            "session_cost": money(self.session_cost),
            "session_input_cost": money(self.session_input_cost),
            "per_1000_sessions": money(self.per_1000_sessions),
            "models": [
                {
                    "model": m.model,
                    "session_cost": money(m.session_cost),
                    "session_input_cost": money(m.session_input_cost),
                    "per_1000_sessions": money(m.per_1000_sessions),
                }
                for m in self.models
            ],
            "allocation": [
                {
                    "component": a.component,
                    "tokens": a.tokens,
                    "share": a.share,
                    "target_share": a.target_share,
                    "target_tokens": a.target_tokens,
                    "exceeded": a.exceeded,
                }
                for a in self.allocation
            ],
        }


def _rows(spec: PlanSpec) -> tuple[TurnRow, ...]:
    fixed = spec.fixed_tokens
    retrieved = spec.retrieved_chunks * spec.chunk_tokens
    tool_outputs = spec.tool_outputs * spec.tool_output_tokens
    rows = []
    for turn in range(1, spec.turns + 1):
        history = spec.history_at(turn)
        variable = history + retrieved + tool_outputs + spec.user_message
        rows.append(
            TurnRow(
                turn, fixed, history, retrieved, tool_outputs, spec.user_message, variable, fixed + variable
            )
        )
    return tuple(rows)


def _costs(spec: PlanSpec, rows: tuple[TurnRow, ...], model: str, simulated: tuple[Usage, ...]) -> ModelCost:
    """The three strategies for one model. See `estimate` for the exact arithmetic."""
    provider = spec.provider
    rates: Rates | None = rates_for(model, provider)
    if rates is None:
        raise PlanKeyError(
            ("models",) if len(spec.models) > 1 else ("model",),
            f"no price known for model {model!r}; set one with bc.configure(prices=...) or "
            "the price file, or pick a priced model",
        )
    out = spec.output_tokens
    uncached_in = cached_in = output = Decimal(0)
    first = True
    for row in rows:
        for _ in range(spec.calls_per_turn):
            n = row.total
            uncached_in += n * rates.input.at(n)
            fixed_rate = rates.cache_write.at(n) if first else rates.cache_read.at(n)
            cached_in += row.fixed * fixed_rate + row.variable * rates.input.at(n)
            output += out * rates.output.at(n)
            first = False
    simulated_in = Decimal(0)
    for usage in simulated:
        simulated_in += price_usage(Usage(**{**_fields(usage), "output_tokens": 0}), rates).total
    inputs = {
        "uncached": uncached_in / _MILLION,
        "fixed_prefix_cached": cached_in / _MILLION,
        "budgetclient": simulated_in,
    }
    totals = {k: v + output / _MILLION for k, v in inputs.items()}
    return ModelCost(
        model=model,
        session_cost=MappingProxyType(totals),
        session_input_cost=MappingProxyType(inputs),
        per_1000_sessions=MappingProxyType({k: v * _THOUSAND for k, v in totals.items()}),
    )


def _fields(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cache_write_long_tokens": usage.cache_write_long_tokens,
        "requests": usage.requests,
    }


def estimate(
    plan: Mapping[str, Any], *, base_dir: str | Path | None = None, targets: AllocationTargets | None = None
) -> Estimate:
    """Per-turn tokens and one session's cost for a parsed plan (the TOML file's dict).

    Every call of turn t sends ``fixed + history(t) + chunks x chunk_tokens + tool_outputs x
    tool_output_tokens + user_message`` input tokens and gets ``output_tokens`` back; history
    grows linearly from 0 at turn 1 (``history_per_turn``, or ``history_final`` at the last turn).
    With N = turns x calls_per_turn calls, F fixed and V(t) variable tokens:

    - ``uncached``: every input token at the input rate: sum (F + V) x input.
    - ``fixed_prefix_cached`` (the guide's arithmetic): the first call writes F at the 5-minute
      cache-write rate (1.25 x input on Anthropic), the other N - 1 calls read F at the cache-read
      rate; V is always at the input rate. Provider minimum cacheable lengths and TTL expiry are
      ignored, as in the guide.
    - ``budgetclient``: the plan's session is built as a synthetic conversation (exact sizes in the
      simulation's tokens) and replayed on `budgetclient.cachesim`'s Anthropic cache with
      budgetclient's placement, exactly like the cache benchmark's ``run_trace(trace, "budgetclient")``;
      the input usage it reports is priced at the model's rates. The simulation applies Anthropic's
      caching rules whatever the model (a non-Claude model is replayed as claude-sonnet-4-6).

    Output (N x output_tokens x output rate) is added to all three; ``session_input_cost`` leaves
    it out. Tiered rates use each call's input size. Raises `PlanError` naming the bad key.
    """
    spec = parse_plan(plan, base_dir)
    rows = _rows(spec)
    simulated = simulate_budgetclient(spec)
    costs = tuple(_costs(spec, rows, model, simulated.get(model) or simulated["*"]) for model in spec.models)
    if targets is None:
        targets = (
            AllocationTargets(window=spec.window, shares=spec.allocation)
            if spec.allocation
            else AllocationTargets.guide_default(spec.window)
        )
    last = max(rows, key=lambda r: r.total)
    components = {
        "system_and_tools": last.fixed,
        "retrieved": last.retrieved,
        "history": last.history,
        "tool_outputs": last.tool_outputs,
        "user_and_output": last.user_message + spec.output_tokens,
    }
    return Estimate(
        name=spec.name,
        model=spec.models[0],
        turns=rows,
        calls_per_turn=spec.calls_per_turn,
        output_tokens=spec.output_tokens,
        fixed_tokens=spec.fixed_tokens,
        session_input_tokens=sum(r.total for r in rows) * spec.calls_per_turn,
        session_cost=costs[0].session_cost,
        session_input_cost=costs[0].session_input_cost,
        per_1000_sessions=costs[0].per_1000_sessions,
        models=costs,
        allocation=check_components(components, targets),
        window=targets.window,
    )


def estimate_file(path: str | Path, *, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> Estimate:
    """`estimate` for a plan file; errors start ``PATH:LINE:`` (the offending key's line).

    ``overrides`` replaces top-level keys (``{"models": [...]}`` also drops the file's ``model``).
    """
    where = Path(path)
    plan = load_plan(where)
    if overrides:
        if "models" in overrides:
            plan.pop("model", None)
        plan.update(overrides)
    try:
        return estimate(plan, base_dir=where.parent, **kwargs)
    except PlanKeyError as exc:
        line = line_of(where.read_text(encoding="utf-8"), exc.key)
        prefix = f"{where}:{line}:" if line else f"{where}:"
        raise PlanError(f"{prefix} {exc}") from None
