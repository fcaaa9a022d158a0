"""Constructed ledger histories for the report, check and HTML tests (and docs/report.png).

Costs are priced here from fixed per-million rates with plain Decimal arithmetic, so a record's
cost is whatever this module says; the tests then recompute every figure from these raw records.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from budgetclient.usage import CallRecord, CostBreakdown, Outcome, TaskRecord, Usage

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
MILLION = Decimal(1_000_000)
# USD per million tokens: input, cache read, cache write, output
RATES = {
    "claude-sonnet-4-5": (Decimal(3), Decimal("0.3"), Decimal("3.75"), Decimal(15)),
    "claude-haiku-4-5": (Decimal(1), Decimal("0.1"), Decimal("1.25"), Decimal(5)),
}


def breakdown(model: str, usage: Usage) -> CostBreakdown | None:
    if model not in RATES:
        return None
    rin, rread, rwrite, rout = RATES[model]
    return CostBreakdown(
        uncached_input=usage.uncached_input_tokens * rin / MILLION,
        cache_read=usage.cache_read_tokens * rread / MILLION,
        cache_write=usage.cache_write_tokens * rwrite / MILLION,
        output=usage.output_tokens * rout / MILLION,
    )


def make_call(
    n: int,
    *,
    at: datetime,
    model: str = "claude-sonnet-4-5",
    usage: Usage,
    task: TaskRecord | None = None,
    task_id: str | None = None,
    task_name: str | None = None,
    conversation: str | None = None,
    prefix_hash: str | None = None,
    status: str = "ok",
) -> CallRecord:
    parts = breakdown(model, usage)
    return CallRecord(
        id=f"call-{n}",
        provider="anthropic",
        model=model,
        operation="messages",
        started_at=at,
        duration_s=1.5,
        usage=usage,
        cost=None if parts is None else parts.total,
        cost_breakdown=parts,
        status=status,  # type: ignore[arg-type]
        task_id=task.id if task else task_id,
        task_name=task.name if task else task_name,
        conversation=conversation,
        prefix_hash=prefix_hash,
    )


def task_from_calls(
    task_id: str,
    name: str,
    outcome: Outcome,
    calls: Sequence[CallRecord],
    *,
    started_at: datetime,
    parent_id: str | None = None,
    budget_usd: Decimal | None = None,
) -> TaskRecord:
    """A TaskRecord whose totals are the sums of ``calls`` (as tasks.py would roll them up)."""
    priced = [c for c in calls if c.cost is not None]
    return TaskRecord(
        id=task_id,
        name=name,
        parent_id=parent_id,
        outcome=outcome,
        started_at=started_at,
        ended_at=max((c.started_at for c in calls), default=started_at) + timedelta(seconds=2),
        usage=sum((c.usage for c in calls), Usage()),
        cost=None
        if len(priced) < len(calls)
        else sum((c.cost for c in priced if c.cost is not None), Decimal(0)),
        cost_breakdown=sum(
            (c.cost_breakdown for c in priced if c.cost_breakdown is not None), CostBreakdown()
        ),
        calls=len(calls),
        budget_usd=budget_usd,
    )


@dataclass
class History:
    tasks: list[TaskRecord] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)


def sample_history(seed: int = 7, days: int = 10) -> History:
    """A realistic fortnight: four task names, failures, a cost regression, an unpriced model,
    a nested child task and calls made outside any task."""
    rng = random.Random(seed)
    history = History()
    counter = 0

    def run(name: str, start: datetime, n_calls: int, *, base_input: int, growth: int, out: int,
            hit: float, outcome: Outcome, model: str = "claude-sonnet-4-5",
            parent_id: str | None = None, extra: Sequence[CallRecord] = (),
            task_id: str | None = None) -> TaskRecord:  # fmt: skip
        nonlocal counter
        counter += 1
        task_id = task_id or f"{name}-{counter}"
        calls: list[CallRecord] = []
        for i in range(n_calls):
            input_tokens = base_input + growth * i + rng.randint(0, 400)
            read = int(input_tokens * hit) if i else 0
            write = 0 if i else int(input_tokens * 0.8)
            counter += 1
            calls.append(
                make_call(
                    counter,
                    at=start + timedelta(seconds=20 * i),
                    model=model,
                    usage=Usage(
                        input_tokens=input_tokens,
                        cache_read_tokens=read,
                        cache_write_tokens=write,
                        output_tokens=out + rng.randint(0, out // 2 + 1),
                        requests=1,
                    ),
                    task_id=task_id,
                    task_name=name,
                    conversation=f"conv-{task_id}",
                    prefix_hash=f"prefix-{name}",
                )
            )
        history.calls.extend(calls)
        record = task_from_calls(
            task_id,
            name,
            outcome,
            [*calls, *extra],
            started_at=start - timedelta(seconds=1),
            parent_id=parent_id,
        )
        history.tasks.append(record)
        return record

    for day in range(days):
        for k in range(6):
            start = T0 + timedelta(days=day, hours=k * 1.5, minutes=rng.randint(0, 30))
            # triage: steady, cheap, well cached; its history grows from day 6 (cost regression)
            growth = 400 if day < 6 else 6000
            run("triage-ticket", start, 5, base_input=3000, growth=growth, out=250, hit=0.8,
                outcome="failure" if rng.random() < 0.1 else "success")  # fmt: skip
            # research: expensive, long, a third of the runs fail
            if k % 2 == 0:
                parent_id = f"research-agent-{day}-{k}"
                child = run("summarize-doc", start + timedelta(minutes=5), 2, base_input=6000, growth=0,
                            out=600, hit=0.0, outcome="success", model="claude-haiku-4-5",
                            parent_id=parent_id)  # fmt: skip
                child_calls = [c for c in history.calls if c.task_id == child.id]
                run("research-agent", start + timedelta(minutes=4), 8, base_input=12000, growth=1500, out=900,
                    hit=0.7, outcome="failure" if k == 4 else ("partial" if day % 3 == 0 else "success"),
                    extra=child_calls, task_id=parent_id)  # fmt: skip
            # classify: tiny prompts, long answers (output ratio signal)
            if k == 1:
                run("classify-intent", start + timedelta(minutes=9), 1, base_input=300, growth=0, out=1400,
                    hit=0.0, outcome="success", model="claude-haiku-4-5")  # fmt: skip
        # one call a day outside any task, and one run of an unpriced model
        counter += 1
        history.calls.append(
            make_call(
                counter,
                at=T0 + timedelta(days=day, hours=11),
                usage=Usage(input_tokens=1500 + day, output_tokens=120, requests=1),
            )
        )
    run("experimental", T0 + timedelta(days=days - 1, hours=12), 2, base_input=2000, growth=0, out=300,
        hit=0.0, outcome="success", model="in-house-model")  # fmt: skip
    return history
