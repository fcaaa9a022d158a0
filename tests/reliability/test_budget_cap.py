"""Issue 17 item 3: ``budget_usd`` is a cap under any concurrency (spent ≤ budget).

32 threads and 200 asyncio tasks share one budgeted task and call the fake backends (real SDK
clients over `budgetclient.testing`'s transports) until the budget refuses them. Every call's
cost is recomputed here from its usage and this test's own price sheet.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from google.genai import types as gtypes

import budgetclient as bc
from budgetclient.testing import FakeAnthropic, FakeGemini, FakeOpenAI

from .._held import held

MTOK = Decimal(1_000_000)
BUDGET = Decimal("0.05")
PRICES = {  # USD per million tokens: output dear, so that the output limit is most of a worst case
    "claude-sonnet-4-6": {"input": Decimal(3), "output": Decimal(15), "cache_read": Decimal("0.3"),
                          "cache_write": Decimal("3.75"), "cache_write_long": Decimal(6)},
    "gpt-4o": {"input": Decimal("2.5"), "output": Decimal(10), "cache_read": Decimal("1.25")},
    "gemini-2.5-flash": {"input": Decimal("0.3"), "output": Decimal("2.5"), "cache_read": Decimal("0.03")},
}  # fmt: skip
PROMPT = "Summarise the ticket in one line. " * 40
MAX_TOKENS = 400
THREADS, ASYNC_TASKS, CALLS_EACH = 32, 200, 40


def _cost(record: bc.CallRecord) -> Decimal:
    """The record's cost from its usage and this test's price sheet (absent rates: input's)."""
    rates = PRICES[record.model]
    u = record.usage
    write_short = u.cache_write_tokens - u.cache_write_long_tokens
    uncached = u.input_tokens - u.cache_read_tokens - u.cache_write_tokens
    return (
        uncached * rates["input"]
        + u.cache_read_tokens * rates.get("cache_read", rates["input"])
        + write_short * rates.get("cache_write", rates["input"])
        + u.cache_write_long_tokens * rates.get("cache_write_long", rates["input"])
        + u.output_tokens * rates["output"]
    ) / MTOK


def _check(t: bc.Task, refused: int) -> None:
    spent = sum((_cost(r) for r in t.records), Decimal(0))
    assert t.calls == len(t.records)  # fewer calls than a task keeps: every record is here
    assert t.cost == spent
    assert spent <= BUDGET, f"spent {spent} > budget {BUDGET} over {t.calls} calls"
    assert refused > 0 and t.calls > 0  # the budget was reached and refused the rest
    assert held(t) == 0


def _sync_call(provider: str) -> Callable[[], Any]:
    if provider == "anthropic":
        fake = FakeAnthropic(output_tokens=MAX_TOKENS)
        client: Any = bc.Anthropic(api_key="sk-ant-test", http_client=fake.http_client(), max_retries=0)
        return lambda: client.messages.create(
            model="claude-sonnet-4-6", max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}]
        )
    fake_openai = FakeOpenAI(responder=lambda body: "word " * (MAX_TOKENS - 50))
    openai_client = bc.OpenAI(api_key="sk-test", http_client=fake_openai.http_client(), max_retries=0)
    return lambda: openai_client.chat.completions.create(
        model="gpt-4o", max_completion_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}]
    )


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_threads_never_spend_past_the_budget(provider: str) -> None:
    bc.configure(prices=PRICES)
    call = _sync_call(provider)
    refused = [0]
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(CALLS_EACH):
            try:
                call()
            except bc.BudgetExceeded:
                with lock:
                    refused[0] += 1

    with bc.task("threads", budget_usd=BUDGET, warn_at=None) as t, bc.task_executor(THREADS) as pool:
        for future in [pool.submit(worker) for _ in range(THREADS)]:
            future.result()
    _check(t, refused[0])


def _async_call(provider: str) -> Callable[[], Any]:
    if provider == "anthropic":
        fake = FakeAnthropic(output_tokens=MAX_TOKENS)
        client: Any = bc.AsyncAnthropic(
            api_key="sk-ant-test", http_client=fake.async_http_client(), max_retries=0
        )
        return lambda: client.messages.create(
            model="claude-sonnet-4-6", max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}]
        )
    if provider == "openai":
        fake_openai = FakeOpenAI(responder=lambda body: "word " * (MAX_TOKENS - 50))
        openai_client = bc.AsyncOpenAI(
            api_key="sk-test", http_client=fake_openai.async_http_client(), max_retries=0
        )
        return lambda: openai_client.chat.completions.create(
            model="gpt-4o", max_completion_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}]
        )
    transport = FakeGemini(call_functions=False, output_tokens=MAX_TOKENS).transport()
    options = gtypes.HttpOptions(async_client_args={"transport": transport})
    gemini = bc.GenAIClient(api_key="AIza-test-key-0123456789", http_options=options, cache="off")
    config = gtypes.GenerateContentConfig(max_output_tokens=MAX_TOKENS)
    return lambda: gemini.aio.models.generate_content(
        model="gemini-2.5-flash", contents=PROMPT, config=config
    )


@pytest.mark.parametrize("provider", ["anthropic", "openai", "google"])
def test_asyncio_tasks_never_spend_past_the_budget(provider: str) -> None:
    bc.configure(prices=PRICES)
    call = _async_call(provider)

    async def worker() -> int:
        refused = 0
        for _ in range(3):
            try:
                await call()
            except bc.BudgetExceeded:
                refused += 1
        return refused

    async def run() -> tuple[bc.Task, int]:
        async with bc.task("asyncio", budget_usd=BUDGET, warn_at=None) as t:
            refused = await asyncio.gather(*(worker() for _ in range(ASYNC_TASKS)))
        return t, sum(refused)

    t, refused = asyncio.run(run())
    _check(t, refused)
