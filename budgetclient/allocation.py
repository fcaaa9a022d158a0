"""Allocation targets: the share of a context window each component of a request may use.

A value of configuration (``bc.configure(allocation_check=...)``) as much as of planning, so it
lives below both: `config` types ``Settings.allocation_check`` with it without importing `plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .errors import PlanError

__all__ = ["ALLOCATION_KEYS", "GUIDE_ALLOCATION", "AllocationTargets"]

ALLOCATION_KEYS = ("system_and_tools", "retrieved", "history", "tool_outputs", "user_and_output")
"""The guide's allocation components, in its table's order."""

GUIDE_ALLOCATION: Mapping[str, float] = MappingProxyType(
    {
        "system_and_tools": 15.0,
        "retrieved": 25.0,
        "history": 30.0,
        "tool_outputs": 20.0,
        "user_and_output": 10.0,
    }
)
"""The guide's common allocation for a 32k-token window, in percent."""


@dataclass(frozen=True, slots=True)
class AllocationTargets:
    """Percent of ``window`` each component may use; components left out are not checked."""

    window: int = 32_000
    shares: Mapping[str, float] = field(default_factory=lambda: GUIDE_ALLOCATION)

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window <= 0:
            raise PlanError(f"allocation window must be a positive token count, got {self.window!r}")
        unknown = sorted(set(self.shares) - set(ALLOCATION_KEYS))
        if unknown:
            raise PlanError(f"unknown allocation component(s) {unknown}; use {', '.join(ALLOCATION_KEYS)}")
        if any(not 0 <= v <= 100 for v in self.shares.values()) or sum(self.shares.values()) > 100.0001:
            raise PlanError(
                f"allocation percentages must be 0-100 and add up to at most 100, got {dict(self.shares)}"
            )
        object.__setattr__(self, "shares", MappingProxyType(dict(self.shares)))

    @classmethod
    def guide_default(cls, window: int = 32_000) -> AllocationTargets:
        """The guide's 15 / 25 / 30 / 20 / 10 split, scaled to ``window``."""
        return cls(window=window, shares=GUIDE_ALLOCATION)

    def tokens(self, component: str) -> int:
        """Target tokens for ``component`` (4,800 for system_and_tools in the guide's 32k default)."""
        return round(self.window * self.shares[component] / 100)
