"""Several processes writing one SQLite ledger at once lose and duplicate nothing."""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

PROCESSES = 4
RECORDS_PER_PROCESS = 500
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def record_cost(process: int, i: int) -> Decimal:
    """A distinct cost with many digits for every record (a sum of floats would drift); exact in Decimal."""
    return Decimal(7 * i + 3 * process + 1) * Decimal("0.000000123456789123456789")


def write_records(url: str, process: int, start: Any) -> None:
    """Runs in a spawned child: its own LedgerWriter, all children released together."""
    from budgetclient.ledger import LedgerWriter
    from budgetclient.usage import CallRecord, Usage

    writer = LedgerWriter(url, batch_size=25, flush_interval=0.005)
    start.wait()
    for i in range(RECORDS_PER_PROCESS):
        writer.submit_call(
            CallRecord(
                id=f"p{process}-{i}",
                provider="anthropic",
                model="claude-sonnet-4-5",
                operation="messages",
                started_at=T0 + timedelta(milliseconds=i),
                duration_s=0.5,
                usage=Usage(input_tokens=100 + i, output_tokens=10, requests=1),
                cost=record_cost(process, i),
                cost_breakdown=None,
                task_name=f"worker-{process}",
            )
        )
    if not writer.flush(60):
        raise SystemExit(f"process {process}: flush timed out with {writer.pending} records pending")
    writer.close()


def run_writers(url: str) -> None:
    """PROCESSES spawned processes writing RECORDS_PER_PROCESS records each into ``url`` at once."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    workers = [ctx.Process(target=write_records, args=(url, p, start)) for p in range(PROCESSES)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * PROCESSES


def test_four_processes_write_one_sqlite_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "ledger.db"  # fresh: the processes also race to create the schema
    url = f"sqlite:///{path}"
    run_writers(url)

    expected_ids = {f"p{p}-{i}" for p in range(PROCESSES) for i in range(RECORDS_PER_PROCESS)}
    expected_total = sum(
        (record_cost(p, i) for p in range(PROCESSES) for i in range(RECORDS_PER_PROCESS)), Decimal(0)
    )

    from budgetclient.ledger import open_ledger
    from budgetclient.ledger.sqlite import SCHEMA_VERSION

    ledger = open_ledger(url)
    calls = ledger.read_calls()
    ledger.close()
    assert len(calls) == PROCESSES * RECORDS_PER_PROCESS
    assert {c.id for c in calls} == expected_ids
    assert sum((c.cost or Decimal(0) for c in calls), Decimal(0)) == expected_total
    for p in range(PROCESSES):
        assert sum(1 for c in calls if c.task_name == f"worker-{p}") == RECORDS_PER_PROCESS

    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM calls").fetchone() == (2000, 2000)
        assert raw.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (SCHEMA_VERSION,)


def submit_without_flush(url: str, process: int) -> None:
    """Runs in a forked child: queue records on the process-wide writer and just return."""
    import budgetclient as bc
    from budgetclient.ledger import get_writer
    from budgetclient.usage import CallRecord, Usage

    bc.configure(ledger=url)
    for i in range(RECORDS_PER_PROCESS):
        get_writer().submit_call(
            CallRecord(
                id=f"fork{process}-{i}",
                provider="openai",
                model="gpt-5-mini",
                operation="responses",
                started_at=T0,
                duration_s=0.1,
                usage=Usage(input_tokens=10, output_tokens=1, requests=1),
                cost=record_cost(process, i),
                cost_breakdown=None,
            )
        )


def test_fork_started_children_write_their_records_at_exit(tmp_path: Path) -> None:
    """multiprocessing's fork children skip atexit; their queued records must still be written."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=submit_without_flush, args=(url, p)) for p in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]

    from budgetclient.ledger import open_ledger

    calls = open_ledger(url).read_calls()
    assert sorted(c.id for c in calls) == sorted(
        f"fork{p}-{i}" for p in range(2) for i in range(RECORDS_PER_PROCESS)
    )
    expected_total = sum(
        (record_cost(p, i) for p in range(2) for i in range(RECORDS_PER_PROCESS)), Decimal(0)
    )
    assert sum((c.cost or Decimal(0) for c in calls), Decimal(0)) == expected_total


def test_processes_opening_a_version_1_ledger_at_once_migrate_it_once(tmp_path: Path) -> None:
    """An upgrade: every process races to migrate the old file; one does, all old rows survive."""
    from dataclasses import replace

    from budgetclient.ledger import open_ledger
    from budgetclient.ledger.sqlite import SCHEMA_VERSION
    from tests.test_ledger import make_call, make_version_1_ledger

    path = tmp_path / "ledger.db"
    old = [
        replace(make_call(i), id=f"old-{i}", cost=record_cost(99, i), started_at=T0 - timedelta(seconds=i))
        for i in range(300)
    ]
    make_version_1_ledger(path, old)
    url = f"sqlite:///{path}"
    run_writers(url)

    ledger = open_ledger(url)
    calls = ledger.read_calls()
    ledger.close()
    assert calls[:300] == sorted(old, key=lambda c: c.started_at)  # exactly as they were, oldest first
    assert len(calls) == len({c.id for c in calls}) == 300 + PROCESSES * RECORDS_PER_PROCESS
    expected_total = sum(
        (record_cost(p, i) for p in range(PROCESSES) for i in range(RECORDS_PER_PROCESS)),
        sum((c.cost or Decimal(0) for c in old), Decimal(0)),
    )
    assert sum((c.cost or Decimal(0) for c in calls), Decimal(0)) == expected_total
    with sqlite3.connect(path) as raw:
        versions = raw.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
