"""A fleet: 8 worker processes x 500 metered calls into one ledger (PostgreSQL and SQLite).

Every call and task record must arrive exactly once and the money must add up exactly, computed
here from the usage each worker sent and the rates it was configured with.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

PROCESSES = 8
CALLS_PER_PROCESS = 500
CALLS_PER_TASK = 10
MODEL = "fleet-model"
RATES = {"input": Decimal("2.5"), "output": Decimal(10), "cache_read": Decimal("0.25")}
PG_URL = os.environ.get("BUDGETCLIENT_TEST_POSTGRES_URL", "")


def usage_of(process: int, i: int) -> tuple[int, int, int]:
    """(input, cache_read, output) tokens of call i of a process: distinct, deterministic."""
    input_tokens = 1000 + 37 * i + 101 * process
    return input_tokens, (input_tokens // 2) if i % 3 else 0, 50 + (i * 7 + process) % 400


def cost_of(process: int, i: int) -> Decimal:
    input_tokens, read, output = usage_of(process, i)
    million = Decimal(1_000_000)
    return (
        (input_tokens - read) * RATES["input"] + read * RATES["cache_read"] + output * RATES["output"]
    ) / million


def worker(url: str, process: int, start: Any) -> None:
    """Runs in a spawned child: the ordinary record path (tasks, metering, process-wide writer)."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    import budgetclient as bc
    from budgetclient import metering
    from budgetclient.usage import Usage

    bc.configure(ledger=url, prices={MODEL: {k: str(v) for k, v in RATES.items()}})
    start.wait()
    for t in range(CALLS_PER_PROCESS // CALLS_PER_TASK):
        with bc.task(f"worker-{process}"):
            for k in range(CALLS_PER_TASK):
                i = t * CALLS_PER_TASK + k
                input_tokens, read, output = usage_of(process, i)
                ctx = metering.begin_call("openai", MODEL, "responses")
                ctx.metadata["call"] = f"{process}-{i}"
                metering.finish_call(
                    ctx,
                    Usage(
                        input_tokens=input_tokens, cache_read_tokens=read, output_tokens=output, requests=1
                    ),
                )
    if not bc.flush(120):
        raise SystemExit(f"process {process}: flush timed out")


@pytest.fixture(params=["sqlite", "postgres"])
def fleet_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet' / 'ledger.db'}"
        return
    if not PG_URL:
        pytest.skip(
            "BUDGETCLIENT_TEST_POSTGRES_URL is not set; `source .ci/postgres.sh` starts a throwaway server"
        )
    schema = f"fleet_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_eight_processes_into_one_ledger(fleet_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    workers = [ctx.Process(target=worker, args=(fleet_url, p, start)) for p in range(PROCESSES)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    assert [w.exitcode for w in workers] == [0] * PROCESSES

    from budgetclient.ledger import open_ledger
    from budgetclient.reports import build_report

    ledger = open_ledger(fleet_url)
    try:
        calls, tasks = ledger.read_calls(), ledger.read_tasks()
    finally:
        ledger.close()

    expected = {f"{p}-{i}": cost_of(p, i) for p in range(PROCESSES) for i in range(CALLS_PER_PROCESS)}
    assert len(calls) == PROCESSES * CALLS_PER_PROCESS == len({c.id for c in calls})
    assert {c.metadata["call"] for c in calls} == set(expected)
    for c in calls:
        assert c.cost == expected[c.metadata["call"]], c.metadata["call"]
    total = sum(expected.values(), Decimal(0))
    assert sum((c.cost for c in calls if c.cost is not None), Decimal(0)) == total

    assert len(tasks) == PROCESSES * CALLS_PER_PROCESS // CALLS_PER_TASK == len({t.id for t in tasks})
    by_task: dict[str, Decimal] = {}
    for c in calls:
        assert c.task_id is not None
        by_task[c.task_id] = by_task.get(c.task_id, Decimal(0)) + (c.cost or Decimal(0))
    for t in tasks:
        assert t.calls == CALLS_PER_TASK and t.cost == by_task[t.id]
    for p in range(PROCESSES):
        mine = sum((cost_of(p, i) for i in range(CALLS_PER_PROCESS)), Decimal(0))
        assert sum((t.cost or Decimal(0) for t in tasks if t.name == f"worker-{p}"), Decimal(0)) == mine

    report = build_report(tasks, calls, replay_signals=False)
    assert report.cost_total == total and report.calls == PROCESSES * CALLS_PER_PROCESS
    assert sum((r.cost_total or Decimal(0) for r in report.rows), Decimal(0)) == total
    assert {r.task: r.runs for r in report.rows} == {
        f"worker-{p}": CALLS_PER_PROCESS // CALLS_PER_TASK for p in range(PROCESSES)
    }
