"""The drift section of a report: which tasks keep breaking their cached prefix, why, and what it costs.

Each call record whose prefix drifted carries a `PrefixDrift` (segment, offset, cause, tokens at
risk, estimated extra cost; the ledger keeps no excerpts). Grouped by task name, cause and
segment, the rows say where to look first (most money at risk first) and, through
`drift.fix_hint`, what to change. Pure over records; `read_drift` is the one function that reads
a ledger.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from .drift import fix_hint
from .ledger.aggregate import DriftedCall, Selection, drifted_calls, sql_ledger
from .ledger.base import Ledger
from .ledger.opening import open_ledger
from .usage import CallRecord

__all__ = ["DriftRow", "drift_rows", "drift_summary_line", "ledger_drift", "read_drift"]

_GROWING = re.compile(r"^(messages|contents|input)\[\d+\]")


@dataclass(frozen=True, slots=True)
class DriftRow:
    """The drifts of one task name with one cause in one segment."""

    task: str | None
    """Task name (None: calls made outside any task)."""
    cause: str
    segment: str
    """Where the prefix first differed; message indices are folded (``messages[*]``), as they grow."""
    calls: int
    """Calls whose prefix drifted this way."""
    tokens_at_risk: int
    """Previously cacheable tokens these calls could no longer read from cache."""
    cost_at_risk: Decimal | None
    """Estimated extra USD those calls paid (None when none of them had a price)."""
    unpriced: int
    """Calls of the row whose extra cost is unknown (left out of ``cost_at_risk``)."""
    last_seen: datetime
    hint: str
    """What to change so the drift stops."""

    def as_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "cause": self.cause,
            "segment": self.segment,
            "calls": self.calls,
            "tokens_at_risk": self.tokens_at_risk,
            "cost_at_risk": None if self.cost_at_risk is None else str(self.cost_at_risk),
            "unpriced_calls": self.unpriced,
            "last_seen": self.last_seen.isoformat(),
            "hint": self.hint,
        }


def _segment_group(segment: str) -> str:
    return _GROWING.sub(lambda m: f"{m.group(1)}[*]", segment)


def drift_rows(calls: Iterable[CallRecord | DriftedCall]) -> list[DriftRow]:
    """Drifted calls grouped by (task, cause, segment); most money, then most tokens, at risk first."""
    groups: dict[tuple[str | None, str, str], list[CallRecord | DriftedCall]] = {}
    for call in calls:
        if call.drift is not None:
            key = (call.task_name, call.drift.cause, _segment_group(call.drift.segment))
            groups.setdefault(key, []).append(call)
    rows = []
    for (task, cause, segment), members in groups.items():
        costs = [c.drift.est_extra_cost for c in members if c.drift and c.drift.est_extra_cost is not None]
        rows.append(
            DriftRow(
                task=task,
                cause=cause,
                segment=segment,
                calls=len(members),
                tokens_at_risk=sum(c.drift.tokens_at_risk for c in members if c.drift),
                cost_at_risk=sum(costs, Decimal(0)) if costs else None,
                unpriced=len(members) - len(costs),
                last_seen=max(c.started_at for c in members),
                hint=fix_hint(cause, segment),
            )
        )
    rows.sort(key=lambda r: (-(r.cost_at_risk or Decimal(0)), -r.tokens_at_risk, r.task or "", r.segment))
    return rows


def drift_summary_line(rows: Iterable[DriftRow], usd: Any) -> str | None:
    """One line for the end of a report (None when nothing drifted); ``usd`` formats money."""
    rows = list(rows)
    if not rows:
        return None
    calls = sum(r.calls for r in rows)
    tasks = len({r.task for r in rows})
    cost = sum((r.cost_at_risk or Decimal(0) for r in rows), Decimal(0))
    return (
        f"prefix drift: {calls} call{'s' * (calls != 1)} in {tasks} task name{'s' * (tasks != 1)}, "
        f"~{usd(cost)} extra (budgetclient report --drift)"
    )


def read_drift(url: str, *, since: datetime | None = None, task: str | None = None) -> list[DriftRow]:
    """The drift rows of the calls the ledger at ``url`` holds (from ``since``, of task ``task``)."""
    ledger = open_ledger(url)
    try:
        return ledger_drift(ledger, since=since, task=task)
    finally:
        ledger.close()


def ledger_drift(ledger: Ledger, *, since: datetime | None = None, task: str | None = None) -> list[DriftRow]:
    """`read_drift` on a ledger already open."""
    db = sql_ledger(ledger)
    if db is None:  # memory://: small, read whole
        return drift_rows(ledger.read_calls(since=since, task_name=task))
    return drift_rows(drifted_calls(db, Selection(since, task)))
