from __future__ import annotations

import asyncio
import contextvars
import threading
import warnings
from decimal import Decimal

import pytest

import budgetclient as bc
from budgetclient import metering

from ._held import held

# Literal test prices, USD per million tokens.
RATES = {
    "input": Decimal("2"),
    "output": Decimal("10"),
    "cache_read": Decimal("0.2"),
    "cache_write": Decimal("2.5"),
    "cache_write_long": Decimal("4"),
}
MTOK = Decimal(1_000_000)


@pytest.fixture(autouse=True)
def _prices() -> None:
    bc.configure(prices={"test-model": {k: str(v) for k, v in RATES.items()}})


def expected_cost(u: bc.Usage) -> Decimal:
    uncached = u.input_tokens - u.cache_read_tokens - u.cache_write_tokens
    return (
        uncached * RATES["input"]
        + u.cache_read_tokens * RATES["cache_read"]
        + (u.cache_write_tokens - u.cache_write_long_tokens) * RATES["cache_write"]
        + u.cache_write_long_tokens * RATES["cache_write_long"]
        + u.output_tokens * RATES["output"]
    ) / MTOK


def fake_call(usage: bc.Usage, model: str = "test-model", estimate: int | None = None) -> None:
    ctx = metering.begin_call(
        "anthropic",
        model,
        "messages",
        estimated_input_tokens=(lambda: estimate) if estimate is not None else None,
    )
    metering.finish_call(ctx, usage)


U1 = bc.Usage(
    input_tokens=1200,
    cache_read_tokens=800,
    cache_write_tokens=300,
    cache_write_long_tokens=100,
    output_tokens=90,
    requests=1,
)
U2 = bc.Usage(input_tokens=500, output_tokens=40, requests=1)


def test_task_collects_usage_cost_and_records() -> None:
    with bc.task("triage", metadata={"tenant": "acme"}) as t:
        assert bc.current_task() is t
        fake_call(U1)
        fake_call(U2)
    assert bc.current_task() is None
    assert t.outcome == "success"
    assert t.calls == 2
    assert t.usage == U1 + U2
    assert t.cost == expected_cost(U1) + expected_cost(U2)
    assert t.cost_breakdown.total == t.cost
    assert t.cost_breakdown.cache_read == 800 * RATES["cache_read"] / MTOK
    assert (
        t.cost_breakdown.cache_write == (200 * RATES["cache_write"] + 100 * RATES["cache_write_long"]) / MTOK
    )
    assert [r.usage for r in t.records] == [U1, U2]
    assert all(r.task_id == t.id and r.task_name == "triage" for r in t.records)
    assert t.cache_hit_rate == 800 / 1700
    assert t.duration_s >= 0


def test_children_roll_up_into_parents() -> None:
    with bc.task("outer") as outer:
        fake_call(U1)
        with bc.task("inner") as inner:
            assert inner.parent is outer
            fake_call(U2)
    assert inner.usage == U2
    assert outer.usage == U1 + U2
    assert outer.calls == 2
    assert outer.cost == expected_cost(U1) + expected_cost(U2)


def test_exception_marks_failure_and_is_reraised_unchanged() -> None:
    err = KeyError("boom")
    with pytest.raises(KeyError) as info, bc.task("x") as t:
        raise err
    assert info.value is err
    assert t.outcome == "failure"


def test_explicit_outcomes() -> None:
    with bc.task("a") as a:
        a.fail("no answer")
    with bc.task("b") as b:
        b.partial()
    assert (a.outcome, a.error, b.outcome) == ("failure", "no answer", "partial")


def test_unpriced_call_makes_cost_none_but_keeps_tokens() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bc.task("x") as t:
            fake_call(U1)
            fake_call(U2, model="no-such-model-xyz")
            fake_call(U2, model="no-such-model-xyz")
    assert t.cost is None
    assert t.usage == U1 + U2 + U2
    assert sum(isinstance(w.message, bc.UnknownPriceWarning) for w in caught) == 1


def test_track_task_bare_and_named_sync_and_async() -> None:
    seen: list[bc.Task | None] = []

    @bc.track_task
    def summarize() -> str:
        seen.append(bc.current_task())
        return "ok"

    @bc.track_task("asummarize", budget_usd=0.1)
    async def asummarize() -> str:
        seen.append(bc.current_task())
        return "ok"

    assert summarize() == "ok"
    assert asyncio.run(asummarize()) == "ok"
    assert seen[0] is not None and seen[0].name.endswith("summarize") and "test_track_task" in seen[0].name
    assert seen[1] is not None and seen[1].name == "asummarize" and seen[1].budget_usd == Decimal("0.1")


def test_async_with_and_200_concurrent_asyncio_tasks_get_their_own_usage() -> None:
    async def worker(i: int) -> bc.Task:
        async with bc.task(f"w{i}") as t:
            for _ in range(3):
                await asyncio.sleep(0)
                fake_call(bc.Usage(input_tokens=100 + i, output_tokens=i, requests=1))
        return t

    async def main() -> list[bc.Task]:
        return await asyncio.gather(*(worker(i) for i in range(200)))

    tasks = asyncio.run(main())
    for i, t in enumerate(tasks):
        assert t.usage == bc.Usage(input_tokens=3 * (100 + i), output_tokens=3 * i, requests=3)
        assert t.calls == 3


def test_eight_threads_each_in_own_task() -> None:
    results: dict[int, bc.Task] = {}
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        with bc.task(f"t{i}") as t:
            barrier.wait()
            for _ in range(50):
                fake_call(bc.Usage(input_tokens=10 * (i + 1), output_tokens=i, requests=1))
        results[i] = t

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i, t in results.items():
        assert t.usage == bc.Usage(input_tokens=500 * (i + 1), output_tokens=50 * i, requests=50)


def test_threads_inherit_task_through_copy_context_and_task_executor() -> None:
    with bc.task("parent") as t:
        ctx = contextvars.copy_context()
        th = threading.Thread(target=ctx.run, args=(fake_call, U2))
        th.start()
        th.join()
        with bc.task_executor(4) as pool:
            list(pool.map(lambda _: fake_call(U2), range(4)))
        plain = threading.Thread(target=lambda: fake_call(U2))  # no context: not attributed
        plain.start()
        plain.join()
    assert t.calls == 5
    assert t.usage == U2 + U2 + U2 + U2 + U2


def test_budget_exceeded_before_call_and_warning_once() -> None:
    # each call costs 1000*2/1e6 + 100*10/1e6 = 0.003; budget 0.01, warn at 0.5 → warning after call 2
    per_call = bc.Usage(input_tokens=1000, output_tokens=100, requests=1)
    cost = expected_cost(per_call)
    assert cost == Decimal("0.003")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with (
            pytest.raises(bc.BudgetExceeded) as info,
            bc.task("b", budget_usd=Decimal("0.01"), warn_at=0.5) as t,
        ):
            for _ in range(10):
                fake_call(per_call, estimate=1000)
    # 3 calls spent 0.009; the 4th's input estimate 1000*2/1e6 = 0.002 would pass 0.01
    assert t.calls == 3
    assert info.value.spent_usd == 3 * cost
    assert info.value.estimate_usd == Decimal("0.002")
    assert "budget_usd=0.01" in str(info.value)
    assert sum(isinstance(w.message, bc.BudgetWarning) for w in caught) == 1
    assert t.outcome == "failure"


def test_parent_budget_applies_to_child_calls() -> None:
    with pytest.raises(bc.BudgetExceeded), bc.task("parent", budget_usd="0.001"), bc.task("child"):
        fake_call(U2, estimate=1000)  # 0.002 > 0.001


def test_budget_refuses_a_call_it_cannot_price() -> None:
    with pytest.raises(bc.UnpricedModelError) as info, bc.task("b", budget_usd=1) as t:
        fake_call(U2, model="mystery-model-1", estimate=10)
    assert t.calls == 0 and held(t) == 0  # nothing sent, nothing held
    assert isinstance(info.value, bc.BudgetExceeded) and info.value.model == "mystery-model-1"
    message = str(info.value)
    assert "'mystery-model-1'" in message and "bc.configure(prices=" in message
    assert "on_unpriced='allow'" in message


def test_budget_with_on_unpriced_allow_warns_unenforceable() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bc.task("b", budget_usd=1, on_unpriced="allow") as t:
            fake_call(U2, model="mystery-model-1", estimate=10)
    assert any(isinstance(w.message, bc.UnenforceableBudgetWarning) for w in caught)
    assert t.calls == 1 and t.cost is None
    assert t.cost_breakdown is None  # never a $0 breakdown beside an unknown cost


def test_cost_breakdown_is_none_whenever_cost_is() -> None:
    with bc.task("mixed") as t:
        fake_call(U1)
        assert t.cost_breakdown is not None and t.cost_breakdown.total == t.cost == expected_cost(U1)
        fake_call(U2, model="mystery-model-1")
    assert t.cost is None and t.cost_breakdown is None


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(bc.ConfigurationError, match="budget_usd"):
        bc.task("x", budget_usd=-1)
    with pytest.raises(bc.ConfigurationError, match="warn_at"):
        bc.task("x", warn_at=2)
    with pytest.raises(bc.ConfigurationError, match="name"):
        bc.task("")
    with pytest.raises(bc.ConfigurationError, match="budget_mode"):
        bc.task("x", budget_mode="soft")  # type: ignore[arg-type]
    with pytest.raises(bc.ConfigurationError, match="on_unpriced"):
        bc.task("x", on_unpriced="warn")  # type: ignore[arg-type]


def test_calls_outside_tasks_and_task_records_reach_the_ledger(ledger_url: str) -> None:
    from budgetclient.ledger import open_ledger

    fake_call(U1)
    with bc.task("persisted") as t:
        fake_call(U2)
    assert bc.flush(10)
    ledger = open_ledger(ledger_url)
    calls = ledger.read_calls()
    assert sorted((c.task_name or "", c.usage.input_tokens) for c in calls) == [
        ("", 1200),
        ("persisted", 500),
    ]
    tasks = ledger.read_tasks()
    assert [(r.id, r.name, r.outcome, r.cost) for r in tasks] == [
        (t.id, "persisted", "success", expected_cost(U2))
    ]


def _begin(*, input_tokens: int, max_output_tokens: int) -> metering.CallContext:
    return metering.begin_call(
        "anthropic",
        "test-model",
        "messages",
        estimated_input_tokens=lambda: input_tokens,
        max_output_tokens=max_output_tokens,
    )


def test_cap_mode_holds_the_worst_case_and_settles_to_the_cost() -> None:
    # worst case of one call: 1000 input at 2/M + 200 output at 10/M = 0.004; it costs 0.003
    per_call = bc.Usage(input_tokens=1000, output_tokens=100, requests=1)
    worst = (1000 * RATES["input"] + 200 * RATES["output"]) / MTOK
    with bc.task("cap", budget_usd=worst * 2) as t:  # room for two worst cases held at once
        contexts = [_begin(input_tokens=1000, max_output_tokens=200) for _ in range(2)]
        assert held(t) == 2 * worst
        with pytest.raises(bc.BudgetExceeded) as info:  # a third would pass the budget at worst
            _begin(input_tokens=1000, max_output_tokens=200)
        assert info.value.estimate_usd == worst
        for ctx in contexts:
            metering.finish_call(ctx, per_call)
    assert held(t) == 0 and t.cost == 2 * expected_cost(per_call)


def test_estimate_mode_holds_the_input_estimate_only() -> None:
    with bc.task("soft", budget_usd=1, budget_mode="estimate") as t:
        ctx = _begin(input_tokens=1000, max_output_tokens=200)
        assert held(t) == 1000 * RATES["input"] / MTOK
        metering.finish_call(ctx, U2)
    assert held(t) == 0


def test_a_task_keeps_its_last_records_and_exact_totals() -> None:
    from budgetclient.tasks import RECORDS_KEPT

    calls = RECORDS_KEPT + 25
    with bc.task("long-lived") as t:
        for _ in range(calls):
            fake_call(U2)
    assert t.calls == calls and len(t.records) == RECORDS_KEPT
    assert t.usage.input_tokens == calls * U2.input_tokens
    assert t.cost == calls * expected_cost(U2)
