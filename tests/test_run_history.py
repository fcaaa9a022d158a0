"""The TTL learned across runs: the first call of a run writes a 1h entry when earlier runs of the
same task (in the ledger) had gaps over five minutes, and a 5m one otherwise or without history.
Driven through the real SDK on the fake backend; what was written is read from the fake's usage."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import budgetclient as bc
from budgetclient.ledger.opening import open_ledger
from budgetclient.run_history import STABLE_PREFIX, run_gaps, run_history
from budgetclient.testing import FakeAnthropic, FakeClock
from tests.test_ledger import make_call

MODEL = "claude-sonnet-4-6"
POSTGRES = os.environ.get("BUDGETCLIENT_TEST_POSTGRES_URL", "")
SYSTEM = " ".join(f"s{i}" for i in range(12_000))
OTHER = " ".join(f"o{i}" for i in range(12_000))


def earlier_run(task_name: str, gap_s: float, calls: int = 6, *, days_ago: float = 1.0) -> list[Any]:
    start = datetime.now(UTC) - timedelta(days=days_ago)
    task_id = uuid.uuid4().hex
    return [make_call(k, id=uuid.uuid4().hex, task_id=task_id, task_name=task_name, model=MODEL, attempt=0,
                      started_at=start + timedelta(seconds=k * gap_s)) for k in range(calls)]


def first_call_writes(task_name: str) -> dict[str, int]:
    client = bc.Anthropic(api_key="test", http_client=FakeAnthropic(clock=FakeClock()).http_client())
    with bc.task(task_name):
        message = client.messages.create(model=MODEL, max_tokens=20, system=SYSTEM,
                                         messages=[{"role": "user", "content": "status?"}])
    usage = message.usage
    long = usage.cache_creation.ephemeral_1h_input_tokens if usage.cache_creation else 0
    return {"1h": long, "5m": (usage.cache_creation_input_tokens or 0) - long}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(
    not POSTGRES, reason="BUDGETCLIENT_TEST_POSTGRES_URL is not set (.ci/postgres.sh)"))])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    schema = f"test_{uuid.uuid4().hex[:16]}"
    yield f"{POSTGRES}{'&' if '?' in POSTGRES else '?'}schema={schema}"
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def seed(url: str, *runs: list[Any]) -> None:
    ledger = open_ledger(url)
    try:
        ledger.write(calls=[call for run in runs for call in run])
    finally:
        ledger.close()


def test_gaps_come_from_each_earlier_run_of_the_task() -> None:
    a = earlier_run("monitor", 420.0, calls=3, days_ago=2)
    b = earlier_run("monitor", 60.0, calls=3)
    retry = replace(b[1], id="retry", attempt=1, started_at=b[1].started_at + timedelta(seconds=5))
    other_model = replace(b[2], id="other", model="claude-haiku-4-5")
    gaps = run_gaps([*a, *b, retry, other_model], model=MODEL)
    assert gaps == [420.0, 420.0, 60.0, 60.0]  # within runs, never across them; retries and other models out
    assert run_gaps([*a, *b], model=MODEL, exclude_task=b[0].task_id) == [420.0, 420.0]


def test_a_periodic_task_with_history_writes_1h_from_its_first_call(ledger_url: str) -> None:
    monitor, quick_name = f"monitor-{uuid.uuid4().hex}", f"quick-{uuid.uuid4().hex}"
    seed(ledger_url, earlier_run(monitor, 420.0), earlier_run(monitor, 450.0, days_ago=0.5),
         earlier_run(quick_name, 30.0))
    bc.configure(ledger=ledger_url)
    before = run_history.queries
    periodic = first_call_writes(monitor)
    assert periodic["1h"] > 0 and periodic["5m"] == 0
    # earlier runs whose calls came seconds apart: a 5m entry is cheaper
    quick = first_call_writes(quick_name)
    assert quick["5m"] == periodic["1h"] and quick["1h"] == 0
    # no history: today's behaviour
    fresh = first_call_writes(f"never-ran-{uuid.uuid4().hex}")
    assert fresh["5m"] == periodic["1h"] and fresh["1h"] == 0
    # each name read once (the last hour, then two weeks when that held too little)
    assert run_history.queries - before == 6
    before = run_history.queries
    assert first_call_writes(monitor) == periodic  # a new run of the task: cached, no read
    assert run_history.queries == before


def test_a_frequent_task_reads_only_its_last_hour_and_none_with_a_memory_ledger(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    name = f"monitor-{uuid.uuid4().hex}"
    seed(url, earlier_run(name, 420.0, days_ago=0.02), earlier_run(name, 420.0, days_ago=0.04))
    bc.configure(ledger=url)
    client = bc.Anthropic(api_key="test", http_client=FakeAnthropic(clock=FakeClock()).http_client())
    before = run_history.queries
    with bc.task(name):
        for k in range(3):  # two conversations of the task, three calls
            client.messages.create(model=MODEL, max_tokens=20, system=SYSTEM if k != 1 else OTHER,
                                   messages=[{"role": "user", "content": f"status {k}?"}])
    assert run_history.queries - before == 1  # ten gaps in the last hour: no wider read
    bc.configure(ledger=f"memory://{uuid.uuid4().hex}")
    before = run_history.queries
    assert first_call_writes(f"monitor-{uuid.uuid4().hex}")["1h"] == 0
    assert run_history.queries == before


def test_no_ledger_file_is_created_to_look_for_history(tmp_path: Any) -> None:
    path = tmp_path / "missing.db"
    bc.configure(ledger=f"sqlite:///{path}")
    before = run_history.queries
    client = bc.Anthropic(api_key="test", http_client=FakeAnthropic(clock=FakeClock()).http_client())
    with bc.task(f"monitor-{uuid.uuid4().hex}"):
        client.messages.create(model=MODEL, max_tokens=20, system=SYSTEM,
                               messages=[{"role": "user", "content": "status?"}])
    assert run_history.queries == before
    bc.flush()


def join_history_reads() -> None:
    for thread in threading.enumerate():
        if thread.name == "budgetclient-run-history":
            thread.join()


def test_the_ttl_is_learnt_per_stable_prefix_and_read_as_the_task_starts(ledger_url: str) -> None:
    from budgetclient.formats.anthropic.blocks import conversation_head

    name = f"monitor-{uuid.uuid4().hex}"
    slow, quick = (conversation_head({"system": system}).fingerprint for system in (SYSTEM, OTHER))

    def tagged(run: list[Any], prefix: str) -> list[Any]:
        return [replace(call, metadata={STABLE_PREFIX: prefix}) for call in run]

    # one task name, two prompts: runs with SYSTEM came 7 minutes apart, runs with OTHER seconds apart
    seed(ledger_url, tagged(earlier_run(name, 420.0), slow),
         tagged(earlier_run(name, 30.0, days_ago=0.5), quick))
    bc.configure(ledger=ledger_url)
    first_call_writes(f"warm-up-{uuid.uuid4().hex}")  # a client asked for a prior: task starts read ahead
    before = run_history.queries
    client = bc.Anthropic(api_key="test", http_client=FakeAnthropic(clock=FakeClock()).http_client())
    with bc.task(name):
        join_history_reads()
        assert run_history.queries - before == 2  # read as the task started, before any call
        writes = []
        for system in (SYSTEM, OTHER):  # two agents of the task (their own first messages)
            usage = client.messages.create(model=MODEL, max_tokens=20, system=system,
                                           messages=[{"role": "user", "content": system[:9]}]).usage
            long = usage.cache_creation.ephemeral_1h_input_tokens if usage.cache_creation else 0
            writes.append((long, (usage.cache_creation_input_tokens or 0) - long))
    assert run_history.queries - before == 2  # the calls read no ledger
    (slow_1h, slow_5m), (quick_1h, quick_5m) = writes
    assert slow_1h > 0 and slow_5m == 0  # SYSTEM's runs had long gaps: 1h from the first call
    assert quick_1h == 0 and quick_5m > 0  # OTHER's runs were quick: 5m
