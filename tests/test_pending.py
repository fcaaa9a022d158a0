"""Records made off the call path (`pending`): exact totals right after a call, holds kept until
the roll-up, the budget cap, and records made at once when something observes them."""

from __future__ import annotations

from decimal import Decimal

import pytest

import budgetclient as bc
from budgetclient import metering, pending
from budgetclient.ledger.writer import get_ledger
from budgetclient.usage import Usage

pytestmark = pytest.mark.usefixtures("nothing_observes_records")


PRICE = {"pending-model": {"input": "3", "output": "15"}}
"""USD per million tokens."""


def _cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (Decimal(input_tokens) * 3 + Decimal(output_tokens) * 15) / 1_000_000


def _call(input_tokens: int, output_tokens: int, *, estimate: int = 0, max_output: int = 0) -> object:
    ctx = metering.begin_call(
        "anthropic",
        "pending-model",
        "messages",
        estimated_input_tokens=(lambda: estimate) if estimate else None,
        max_output_tokens=max_output,
    )
    return metering.finish_call(
        ctx, Usage(input_tokens=input_tokens, output_tokens=output_tokens, requests=1)
    )


def test_totals_are_exact_right_after_a_deferred_call(ledger_url: str) -> None:
    bc.configure(prices=PRICE)
    with bc.task("t", budget_usd=100) as t:
        made = _call(1000, 100, estimate=1000, max_output=100)
        assert made is None  # nothing observes the record as the call ends: made off the call path
        assert t.cost == _cost(1000, 100)
        assert t.calls == 1 and t.usage.input_tokens == 1000 and t.usage.output_tokens == 100
        assert t._reserved == 0
    assert bc.flush(10)
    ledger = get_ledger()
    try:
        rows = ledger.read_calls()
    finally:
        ledger.close()
    assert [(r.usage.input_tokens, r.cost) for r in rows] == [(1000, _cost(1000, 100))]


def test_the_hold_stays_until_the_roll_up() -> None:
    bc.configure(prices=PRICE)
    worst = _cost(1000, 500)  # the input estimate at the input rate and the output limit
    with bc.task("t", budget_usd=1) as t:
        with pending._lock:  # the record work cannot run yet
            assert _call(1000, 10, estimate=1000, max_output=500) is None
            assert pending.unsettled()
            assert t._reserved == worst and t._priced_cost == 0  # held, not yet spent
        assert t.cost == _cost(1000, 10) and t._reserved == 0


def test_a_budget_check_settles_pending_calls_before_refusing() -> None:
    bc.configure(prices=PRICE)
    one = _cost(1000, 10)
    worst = _cost(1000, 5000)
    # room for two calls' actual cost and one call's worst case beside it, not two worst cases
    budget = worst + 2 * one
    assert 2 * worst > budget
    with bc.task("t", budget_usd=budget) as t:
        for _ in range(3):
            _call(1000, 10, estimate=1000, max_output=5000)
        assert t.cost == 3 * one and t.calls == 3


def test_spent_never_exceeds_the_budget_under_concurrency() -> None:
    bc.configure(prices=PRICE)
    budget = Decimal("0.05")
    refused: list[int] = []
    with bc.task("t", budget_usd=budget) as t:

        def work() -> None:
            for _ in range(40):
                try:
                    _call(1000, 50, estimate=1000, max_output=50)
                except bc.BudgetExceeded:
                    refused.append(1)

        runners = [bc.task_executor(1) for _ in range(4)]
        futures = [r.submit(work) for r in runners]
        for future in futures:
            future.result()
        for r in runners:
            r.shutdown()
        spent = t.cost
    assert spent is not None and spent <= budget
    assert refused  # the budget ran out
    assert spent == t.calls * _cost(1000, 50)


def test_records_are_made_at_once_for_a_call_hook() -> None:
    bc.configure(prices=PRICE)
    seen: list[bc.CallRecord] = []
    remove = metering.add_call_hook(seen.append)
    try:
        with bc.task("t", budget_usd=100):
            made = _call(1000, 100, estimate=1000, max_output=100)
            assert made is not None and seen == [made]  # in the caller's thread, as the call ends
    finally:
        remove()


def test_an_unpriced_model_is_recorded_at_once() -> None:
    with bc.task("t"), pytest.warns(bc.UnknownPriceWarning):
        ctx = metering.begin_call("anthropic", "no-such-model-2099", "messages")
        made = metering.finish_call(ctx, Usage(input_tokens=10, output_tokens=1, requests=1))
    assert made is not None and made.cost is None


_IN_ORDER = """
import json
from datetime import UTC, datetime
from decimal import Decimal

import budgetclient as bc
from budgetclient import metering, pending
from budgetclient.usage import CallRecord, Usage

pending._thread = object()  # no records thread in this process: queued records wait for a settle
bc.configure(prices={"pending-model": {"input": "3", "output": "15"}}, ledger="memory://")


def call(tokens):
    ctx = metering.begin_call("anthropic", "pending-model", "messages")
    return metering.finish_call(ctx, Usage(input_tokens=tokens, output_tokens=1, requests=1))


seen = []
with bc.task("t") as t:
    queued = call(1) is None and pending.unsettled()  # nothing observes it: made off the call path
    remove = metering.add_call_hook(lambda r: seen.append(r.usage.input_tokens))
    made_now = call(2) is not None  # a hook observes it: made in the caller's thread
    remove()
    call(3)
    storage = CallRecord(
        id="storage", provider="google", model="pending-model", operation="cache.storage",
        started_at=datetime.now(UTC), duration_s=1.0, usage=Usage(input_tokens=4), cost=Decimal(0),
        cost_breakdown=None, task_id=t.id, task_name=t.name,
    )
    metering.publish_call(storage, t)  # a record made elsewhere (Gemini's cache storage)
    order = [r.usage.input_tokens for r in t.records]
print(json.dumps({"queued": queued, "made_now": made_now, "seen": seen, "order": order}))
"""


def test_a_record_made_at_once_comes_after_the_records_still_queued() -> None:
    """A task lists its records in the order their calls ended, also when one is made in the
    caller's thread (a call hook, an unpriced model, Gemini's cache storage) while earlier ones
    still wait off the call path. In a process of its own, with no records thread, so the earlier
    record is certainly still queued."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).absolute().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _IN_ORDER], capture_output=True, text=True, timeout=60, check=False,
        cwd=root, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # the hook gets the queued record too (delivered after it was added), before the new one
    assert result == {"queued": True, "made_now": True, "seen": [1, 2], "order": [1, 2, 3, 4]}
