"""A task name's report row from sums over its runs, so the sums can be kept (`signal_rollup`) up to
a run and only later runs added: what `reports._task_row` gives from every run, figure for figure.

Every figure of the row but the percentiles is a sum, a count, a minimum or a maximum; money sums
are exact `Decimal` additions from ``Decimal(0)`` (the same value and places in any grouping). The
percentiles need every priced run's cost, ranked by the database (`ledger.run_marks.cost_percentiles`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from .reports import OUTCOMES, TaskNameRow, _quotient
from .usage import CostBreakdown, TaskRecord, Usage

__all__ = ["RunSums", "row_from_sums", "run_sums"]

_ZERO = Decimal(0)
_BUCKETS = ("uncached_input", "cache_read", "cache_write", "output", "storage")
_USAGE = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_long_tokens",
          "output_tokens", "reasoning_tokens", "requests")  # fmt: skip


@dataclass(slots=True)
class RunSums:
    runs: int
    outcomes: dict[str, int]
    """Every outcome of `reports.OUTCOMES`, then others in the order runs first had them."""
    calls: int
    priced: int
    cost: Decimal
    successes: int
    """Priced runs that succeeded."""
    failure_cost: Decimal
    budgeted: int
    breakdown: list[Decimal]
    usage: list[int]
    first_started_at: datetime | None
    last_ended_at: datetime | None

    def add(self, runs: Sequence[TaskRecord]) -> None:
        """Add these runs (in the order they ended)."""
        outcomes, breakdown, usage = self.outcomes, self.breakdown, self.usage
        for run in runs:
            outcomes[run.outcome] = outcomes.get(run.outcome, 0) + 1
            self.calls += run.calls
            if run.cost is not None:
                self.priced += 1
                self.cost += run.cost
                if run.outcome == "success":
                    self.successes += 1
                elif run.outcome == "failure":
                    self.failure_cost += run.cost
            if run.budget_usd is not None:
                self.budgeted += 1
            b, u = run.cost_breakdown, run.usage
            for i, field in enumerate(_BUCKETS):
                breakdown[i] += getattr(b, field)
            for i, field in enumerate(_USAGE):
                usage[i] += getattr(u, field)
            if self.first_started_at is None or run.started_at < self.first_started_at:
                self.first_started_at = run.started_at
            if self.last_ended_at is None or run.ended_at > self.last_ended_at:
                self.last_ended_at = run.ended_at
        self.runs += len(runs)

    def as_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs, "outcomes": list(self.outcomes.items()), "calls": self.calls,
            "priced": self.priced, "cost": str(self.cost), "successes": self.successes,
            "failure_cost": str(self.failure_cost), "budgeted": self.budgeted,
            "breakdown": [str(v) for v in self.breakdown], "usage": self.usage,
            "first": None if self.first_started_at is None else self.first_started_at.isoformat(),
            "last": None if self.last_ended_at is None else self.last_ended_at.isoformat(),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSums:
        first, last = data["first"], data["last"]
        return cls(
            runs=int(data["runs"]), outcomes={str(o): int(n) for o, n in data["outcomes"]},
            calls=int(data["calls"]), priced=int(data["priced"]), cost=Decimal(data["cost"]),
            successes=int(data["successes"]), failure_cost=Decimal(data["failure_cost"]),
            budgeted=int(data["budgeted"]), breakdown=[Decimal(v) for v in data["breakdown"]],
            usage=[int(v) for v in data["usage"]],
            first_started_at=None if first is None else datetime.fromisoformat(first),
            last_ended_at=None if last is None else datetime.fromisoformat(last),
        )  # fmt: skip


def run_sums(runs: Sequence[TaskRecord] = ()) -> RunSums:
    sums = RunSums(
        runs=0, outcomes={o: 0 for o in OUTCOMES}, calls=0, priced=0, cost=_ZERO, successes=0,
        failure_cost=_ZERO, budgeted=0, breakdown=[_ZERO] * len(_BUCKETS), usage=[0] * len(_USAGE),
        first_started_at=None, last_ended_at=None,
    )  # fmt: skip
    sums.add(runs)
    return sums


def row_from_sums(
    name: str, sums: RunSums, percentiles: tuple[Decimal | None, Decimal | None], models: tuple[str, ...]
) -> TaskNameRow:
    """`reports._task_row` of the runs summed, given the 50th and 95th percentiles of their costs."""
    total = sums.cost if sums.priced else None
    failure = sums.failure_cost
    return TaskNameRow(
        task=name, runs=sums.runs, outcomes=dict(sums.outcomes), calls=sums.calls, priced_runs=sums.priced,
        unpriced_runs=sums.runs - sums.priced, cost_total=total,
        cost_mean=None if total is None else _quotient(total, sums.priced),
        cost_p50=percentiles[0], cost_p95=percentiles[1],
        cost_per_success=None if total is None else _quotient(total, sums.successes),
        failure_cost=None if total is None else failure,
        failure_cost_share=None if not total else float(failure / total),
        cost_breakdown=CostBreakdown(**dict(zip(_BUCKETS, sums.breakdown, strict=True))),
        usage=Usage(**dict(zip(_USAGE, sums.usage, strict=True))), models=models,
        first_started_at=sums.first_started_at, last_ended_at=sums.last_ended_at,
    )  # fmt: skip
