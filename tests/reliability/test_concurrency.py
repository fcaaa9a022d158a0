"""Concurrency: threads, asyncio tasks and processes calling at once; every total exact.

Each call gets distinct usage on the wire (derived from its number), so a lost, doubled or
misattributed record shows up in the sums, which are computed here from those usages and the
rates configured in the test.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest

import budgetclient as bc
from budgetclient.ledger import open_ledger

from .._held import held

MODEL = "conc-model"
KEY = "sk-ant-api03-concurrency-0123456789"
MTOK = Decimal(1_000_000)
RATES = {
    "input": Decimal(3),
    "output": Decimal(15),
    "cache_read": Decimal("0.30"),
    "cache_write": Decimal("3.75"),
}
PRICES = {MODEL: {k: str(v) for k, v in RATES.items()}}


def usage_for(n: int) -> dict[str, int]:
    """Distinct usage for call number ``n`` (carried in the request, echoed by the wire)."""
    return {
        "input_tokens": 100 + n % 97,
        "output_tokens": 10 + n % 13,
        "cache_read_input_tokens": (n % 5) * 64,
        "cache_creation_input_tokens": 0,
    }


def cost_for(n: int) -> Decimal:
    u = usage_for(n)
    return (
        u["input_tokens"] * RATES["input"]
        + u["cache_read_input_tokens"] * RATES["cache_read"]
        + u["output_tokens"] * RATES["output"]
    ) / MTOK


def input_for(n: int) -> int:
    u = usage_for(n)
    return u["input_tokens"] + u["cache_read_input_tokens"]


def _respond(request: httpx2.Request) -> httpx2.Response:
    body = json.loads(request.content)
    n = int(body["metadata"]["user_id"])
    message = {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage_for(n),
    }
    return httpx2.Response(200, json=message)


async def _respond_async(request: httpx2.Request) -> httpx2.Response:
    await asyncio.sleep(0)  # let other tasks interleave mid-call
    return _respond(request)


def _request(n: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 16,
        "metadata": {"user_id": str(n)},
        "messages": [{"role": "user", "content": f"call {n}"}],
    }


@pytest.fixture(autouse=True)
def _rates() -> Iterator[None]:
    bc.configure(prices=PRICES)
    yield


def test_threads_share_one_client_and_each_own_a_task(ledger_url: str) -> None:
    client = bc.Anthropic(
        api_key=KEY,
        base_url="http://anthropic.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(_respond)),
    )
    threads, per_thread = 8, 40
    barrier = threading.Barrier(threads)
    with bc.task("parent") as parent:

        def work(k: int) -> bc.Task:
            barrier.wait()
            with bc.task(
                f"thread-{k}"
            ) as t:  # a child of "parent": each thread runs in a copy of its context
                for i in range(per_thread):
                    client.messages.create(**_request(k * per_thread + i))
            return t

        contexts = [contextvars.copy_context() for _ in range(threads)]
        with ThreadPoolExecutor(threads) as pool:
            tasks = list(pool.map(lambda k: contexts[k].run(work, k), range(threads)))
    for k, t in enumerate(tasks):
        numbers = range(k * per_thread, (k + 1) * per_thread)
        assert t.calls == per_thread
        assert t.cost == sum(cost_for(n) for n in numbers)
        assert t.usage.input_tokens == sum(input_for(n) for n in numbers)
    everything = range(threads * per_thread)
    assert parent.calls == threads * per_thread
    assert parent.cost == sum(cost_for(n) for n in everything)
    assert bc.flush(10)
    records = open_ledger(ledger_url).read_calls()
    assert sorted(r.response_id for r in records) == sorted(f"msg_{n}" for n in everything)
    for r in records:
        n = int(r.response_id.removeprefix("msg_"))  # type: ignore[union-attr]
        assert r.task_name == f"thread-{n // per_thread}"
        assert r.cost == cost_for(n)


def test_task_executor_carries_the_task_into_threads(ledger_url: str) -> None:
    client = bc.Anthropic(
        api_key=KEY,
        base_url="http://anthropic.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(_respond)),
    )
    with bc.task("fan-out") as t, bc.task_executor(max_workers=4) as pool:
        list(pool.map(lambda n: client.messages.create(**_request(n)), range(100)))
    assert t.calls == 100
    assert t.cost == sum(cost_for(n) for n in range(100))


async def test_asyncio_tasks_with_their_own_budget_tasks(ledger_url: str) -> None:
    client = bc.AsyncAnthropic(
        api_key=KEY,
        base_url="http://anthropic.test",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(_respond_async)),
    )
    jobs, per_job = 25, 8

    async def job(k: int) -> bc.Task:
        with bc.task(f"job-{k}", budget_usd=10) as t:
            for i in range(per_job):
                await client.messages.create(**_request(k * per_job + i))
        return t

    with bc.task("root") as root:
        tasks = await asyncio.gather(*(job(k) for k in range(jobs)))
    for k, t in enumerate(tasks):
        numbers = range(k * per_job, (k + 1) * per_job)
        assert t.calls == per_job
        assert t.cost == sum(cost_for(n) for n in numbers)
        assert held(t) == 0
    assert root.cost == sum(cost_for(n) for n in range(jobs * per_job))
    assert bc.flush(10)
    assert len(open_ledger(ledger_url).read_calls()) == jobs * per_job


def _process_worker(url: str, process: int, calls: int, start: Any) -> None:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    import httpx2 as h

    import budgetclient as b

    b.configure(ledger=url, prices=PRICES)
    client = b.Anthropic(
        api_key=KEY,
        base_url="http://anthropic.test",
        max_retries=0,
        http_client=h.Client(transport=h.MockTransport(_respond)),
    )
    start.wait()
    with b.task(f"proc-{process}"):
        for i in range(calls):
            client.messages.create(**_request(process * calls + i))
    assert b.flush(30)


def test_processes_write_one_sqlite_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    processes, per_process = 3, 40
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_process_worker, args=(url, p, per_process, start)) for p in range(processes)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ledger = open_ledger(url)
    records = ledger.read_calls()
    everything = range(processes * per_process)
    assert sorted(r.response_id for r in records) == sorted(f"msg_{n}" for n in everything)
    assert sum(r.cost for r in records if r.cost is not None) == sum(cost_for(n) for n in everything)
    tasks = ledger.read_tasks()
    assert sorted(t.name for t in tasks) == [f"proc-{p}" for p in range(processes)]
    for t in tasks:
        p = int(t.name.removeprefix("proc-"))
        assert t.cost == sum(cost_for(n) for n in range(p * per_process, (p + 1) * per_process))
    ledger.close()
