"""Model tiers: route sub-tasks to a cheaper model by rule, and see spend per tier.

Exposed as ``bc.models``. The guide's sixth optimisation: summarisation, retrieval and
classification sub-tasks often do as well on a small model. A `Router` maps a sub-task kind to
a tier and a tier to a model; `Router.summary` groups metered calls by tier, so the saving shows
up in the records budgetclient already keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from .errors import ConfigurationError
from .usage import CallRecord, Usage

__all__ = ["Router", "TierUsage"]

Rule = Callable[[str], str | None]
"""A kind -> tier rule; None means "no opinion" (the next rule or the default decides)."""


@dataclass(frozen=True, slots=True)
class TierUsage:
    """Metered calls of one tier."""

    tier: str
    model: str
    calls: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    unpriced_calls: int = 0
    """Calls whose model had no price (their cost is not in ``cost``)."""


class Router:
    """``route(kind) -> model``: by ``routes[kind]``, then ``rules`` in order, then ``default`` tier.

    ``tiers`` maps tier names to model ids, e.g. ``{"small": "claude-haiku-4-5", "large":
    "claude-sonnet-4-6"}``; ``routes`` maps kinds to tiers, e.g. ``{"summarize": "small"}``.
    """

    def __init__(
        self,
        tiers: Mapping[str, str],
        routes: Mapping[str, str] | None = None,
        *,
        default: str,
        rules: Iterable[Rule] = (),
    ) -> None:
        if not tiers:
            raise ConfigurationError(
                "Router needs at least one tier, e.g. tiers={'large': 'claude-sonnet-4-6'}"
            )
        self.tiers = dict(tiers)
        if default not in self.tiers:
            raise ConfigurationError(f"default tier {default!r} is not one of the tiers {sorted(self.tiers)}")
        self.routes = dict(routes or {})
        unknown = sorted({t for t in self.routes.values() if t not in self.tiers})
        if unknown:
            raise ConfigurationError(f"routes name unknown tier(s) {unknown}; tiers are {sorted(self.tiers)}")
        self.default = default
        self.rules = list(rules)
        self._tier_of_model = {model: tier for tier, model in self.tiers.items()}

    def tier(self, kind: str) -> str:
        """The tier for a sub-task kind."""
        if kind in self.routes:
            return self.routes[kind]
        for rule in self.rules:
            tier = rule(kind)
            if tier is not None:
                if tier not in self.tiers:
                    raise ConfigurationError(f"rule {rule!r} chose unknown tier {tier!r} for kind {kind!r}")
                return tier
        return self.default

    def route(self, kind: str) -> str:
        """The model for a sub-task kind."""
        return self.tiers[self.tier(kind)]

    def tier_of(self, model: str) -> str | None:
        """The tier a model id belongs to (dated snapshots match their alias's prefix); None if none."""
        if model in self._tier_of_model:
            return self._tier_of_model[model]
        matches = [m for m in self._tier_of_model if model.startswith(m)]
        return self._tier_of_model[max(matches, key=len)] if matches else None

    def summary(self, calls: Iterable[CallRecord]) -> dict[str, TierUsage]:
        """Calls grouped by tier (``"other"`` for models outside every tier): count, usage, cost."""
        totals: dict[str, TierUsage] = {t: TierUsage(t, m) for t, m in self.tiers.items()}
        for call in calls:
            tier = self.tier_of(call.model) or "other"
            current = totals.get(tier) or TierUsage(tier, call.model)
            totals[tier] = TierUsage(
                tier=tier,
                model=current.model,
                calls=current.calls + 1,
                usage=current.usage + call.usage,
                cost=current.cost + (call.cost or Decimal(0)),
                unpriced_calls=current.unpriced_calls + (call.cost is None),
            )
        return totals
