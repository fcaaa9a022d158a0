"""The stored form of a warning signal that fired.

Its own module so the row codec and the ledgers can use it without importing `base`, whose
`open_ledger` imports the ledgers (that was an import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["AlertRecord"]


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A warning signal that fired (cost drift, low cache hit rate, failure cost...), as stored."""

    id: str
    kind: str
    """What fired, e.g. ``"cost_per_task"``, ``"cache_hit_rate"``, ``"failure_cost"``."""
    task_name: str | None
    task_id: str | None
    created_at: datetime
    message: str
    """One line for a person: what was seen, against what threshold."""
    value: float | None = None
    """The observed value that crossed ``threshold``."""
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Extra JSON-serialisable facts (baseline, window, counts)."""
