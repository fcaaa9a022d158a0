"""Ledger backends (memory://, SQLite), URL handling and the background writer."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient.drift import PrefixDrift
from budgetclient.errors import LedgerError
from budgetclient.ledger import (
    AlertRecord,
    Ledger,
    LedgerWriter,
    get_ledger,
    get_writer,
    mask_url,
    open_ledger,
)
from budgetclient.ledger import sqlite as sqlite_module
from budgetclient.ledger import writer as writer_module
from budgetclient.ledger._codec import (
    ALERT_COLUMNS,
    CALL_COLUMNS,
    COMPACT_RECORD_FIELDS,
    TASK_COLUMNS,
    alert_to_row,
    call_to_row,
    task_to_row,
)
from budgetclient.ledger.sqlite import MIGRATIONS, SCHEMA_VERSION
from budgetclient.usage import CallRecord, CostBreakdown, TaskRecord, Usage

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def make_call(n: int = 0, **changes: Any) -> CallRecord:
    usage = Usage(
        input_tokens=1000 + n,
        cache_read_tokens=600,
        cache_write_tokens=300,
        cache_write_long_tokens=100,
        output_tokens=250,
        reasoning_tokens=40,
        requests=1,
    )
    breakdown = CostBreakdown(
        uncached_input=Decimal("0.000300"),
        cache_read=Decimal("0.00018"),
        cache_write=Decimal("0.001125"),
        output=Decimal("0.003750"),
        storage=Decimal("0"),
    )
    record = CallRecord(
        id=f"call-{n}-{uuid.uuid4().hex}",
        provider="anthropic",
        model="claude-sonnet-4-5",
        operation="messages",
        started_at=T0 + timedelta(seconds=n),
        duration_s=1.25 + n / 1000,
        usage=usage,
        cost=breakdown.total,
        cost_breakdown=breakdown,
        status="ok",
        http_status=200,
        task_id="task-1",
        task_name="triage",
        conversation="conv-9",
        stream=True,
        batch=False,
        attempt=1,
        request_bytes=4096,
        prefix_hash="sha256:abc",
        response_id="msg_01",
        service_tier="standard",
        metadata={"tenant": "acme", "nested": {"k": [1, 2, 3]}},
    )
    return replace(record, **changes)


def make_task(n: int = 0, **changes: Any) -> TaskRecord:
    breakdown = CostBreakdown(output=Decimal("0.1234567890123456789012345"), cache_read=Decimal("1E-9"))
    record = TaskRecord(
        id=f"task-{n}-{uuid.uuid4().hex}",
        name="triage",
        parent_id=None,
        outcome="success",
        started_at=T0 + timedelta(minutes=n),
        ended_at=T0 + timedelta(minutes=n, seconds=3.5),
        usage=Usage(input_tokens=5000, cache_read_tokens=4000, output_tokens=700, requests=3),
        cost=breakdown.total,
        cost_breakdown=breakdown,
        calls=3,
        budget_usd=Decimal("0.50"),
        metadata={"tenant": "acme"},
    )
    return replace(record, **changes)


def make_alert(n: int = 0, **changes: Any) -> AlertRecord:
    record = AlertRecord(
        id=f"alert-{n}-{uuid.uuid4().hex}",
        kind="cost_per_task",
        task_name="triage",
        task_id="task-1",
        created_at=T0 + timedelta(hours=n),
        message="cost per task 0.42 > baseline 0.20",
        value=0.42,
        threshold=0.2,
        details={"baseline": "0.20", "window": 20},
    )
    return replace(record, **changes)


DRIFT = PrefixDrift(
    segment="system[0].text",
    offset=118,
    before="Today is 2025-03-01T12:00",
    after="Today is 2025-03-01T12:05",
    cause="timestamp",
    tokens_at_risk=4200,
    est_extra_cost=Decimal("0.0141750000000000001"),
    provider_reason="system_changed",
    provider_missed_tokens=4100,
)


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://test-{uuid.uuid4().hex}"
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    handle = open_ledger(url)
    yield handle
    handle.close()


# -- round trips --------------------------------------------------------------------------------


def test_records_round_trip_exactly(ledger: Ledger) -> None:
    with_drift = make_call(1, drift=DRIFT, cost=Decimal("0.123456789012345678901234567890"))
    unpriced = make_call(2, model="future-model", cost=None, cost_breakdown=None, status="incomplete",
                         http_status=None, task_id=None, task_name=None, metadata={})  # fmt: skip
    drift_unpriced = make_call(3, drift=replace(DRIFT, est_extra_cost=None, provider_reason=None))
    task = make_task(1, error="no answer", outcome="failure", parent_id="parent-1")
    unpriced_task = make_task(2, cost=None, budget_usd=None)
    alert = make_alert(1)
    bare_alert = make_alert(2, task_name=None, task_id=None, value=None, threshold=None, details={})

    ledger.write(
        calls=[with_drift, unpriced, drift_unpriced], tasks=[task, unpriced_task], alerts=[alert, bare_alert]
    )

    stored = [replace(c, drift=c.drift.without_excerpts()) if c.drift else c for c in (with_drift, unpriced,
              drift_unpriced)]  # fmt: skip
    assert ledger.read_calls() == stored  # everything but the excerpts (prompt text is never stored)
    assert ledger.read_tasks() == [task, unpriced_task]
    assert ledger.read_alerts() == [alert, bare_alert]
    (read,) = ledger.read_calls(task_id="task-1", since=T0 + timedelta(seconds=1), task_name="triage")[:1]
    assert read.drift == DRIFT.without_excerpts()
    assert isinstance(read.cost, Decimal) and str(read.cost) == "0.123456789012345678901234567890"
    assert read.cost_breakdown == with_drift.cost_breakdown
    assert read.usage == with_drift.usage
    assert read.started_at == T0 + timedelta(seconds=1)
    tasks = ledger.read_tasks()
    assert str(tasks[0].cost_breakdown.output) == "0.1234567890123456789012345"
    assert tasks[0].cost == Decimal("0.1234567890123456789012345") + Decimal("1E-9")
    assert tasks[1].cost is None


def test_empty_ledger_reads_empty(ledger: Ledger) -> None:
    ledger.write()
    assert ledger.read_calls() == [] and ledger.read_tasks() == [] and ledger.read_alerts() == []


def test_retried_batch_does_not_duplicate(ledger: Ledger) -> None:
    calls = [make_call(i) for i in range(3)]
    task, alert = make_task(), make_alert()
    ledger.write(calls=calls, tasks=[task], alerts=[alert])
    ledger.write(calls=calls, tasks=[task], alerts=[alert])
    assert ledger.read_calls() == calls
    assert ledger.read_tasks() == [task]
    assert ledger.read_alerts() == [alert]


def test_filters_and_time_order(ledger: Ledger) -> None:
    a = make_call(5, task_name="alpha", task_id="t-a")
    b = make_call(1, task_name="beta", task_id="t-b")
    c = make_call(9, task_name="alpha", task_id="t-c")
    ledger.write(calls=[a, b, c])
    assert ledger.read_calls() == [b, a, c]
    assert ledger.read_calls(task_name="alpha") == [a, c]
    assert ledger.read_calls(task_id="t-c") == [c]
    assert ledger.read_calls(since=T0 + timedelta(seconds=5)) == [a, c]
    # the same instant written in another time zone
    plus_two = timezone(timedelta(hours=2))
    assert ledger.read_calls(since=(T0 + timedelta(seconds=6)).astimezone(plus_two)) == [c]
    assert ledger.read_calls(task_name="alpha", since=T0 + timedelta(seconds=6)) == [c]
    assert ledger.read_calls(task_name="nobody") == []

    early, late = make_task(1, name="alpha"), make_task(10, name="beta")
    ledger.write(tasks=[late, early])
    assert ledger.read_tasks() == [early, late]
    assert ledger.read_tasks(name="beta") == [late]
    assert ledger.read_tasks(since=T0 + timedelta(minutes=2)) == [late]

    x, y = make_alert(1, task_name="alpha"), make_alert(3, task_name="beta")
    ledger.write(alerts=[y, x])
    assert ledger.read_alerts() == [x, y]
    assert ledger.read_alerts(task_name="alpha") == [x]
    assert ledger.read_alerts(since=T0 + timedelta(hours=2)) == [y]


@pytest.mark.parametrize(
    "name",
    ["x'; DROP TABLE calls; --", "Robert'); DROP TABLE tasks;--", 'a" OR "1"="1', "%_\\ ' ; \x00?"],
)
def test_sql_injection_looking_names_are_stored_verbatim(ledger: Ledger, name: str) -> None:
    call = make_call(task_name=name, model=name, metadata={name: name})
    task = make_task(name=name)
    alert = make_alert(task_name=name, message=name)
    other = make_call(7, task_name="other")
    ledger.write(calls=[call, other], tasks=[task], alerts=[alert])
    assert ledger.read_calls(task_name=name) == [call]
    assert ledger.read_tasks(name=name) == [task]
    assert ledger.read_alerts(task_name=name) == [alert]
    assert len(ledger.read_calls()) == 2


# -- SQLite specifics ---------------------------------------------------------------------------


def test_sqlite_file_is_private_and_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    ledger.write(calls=[make_call()])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    for companion in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        if companion.exists():
            assert stat.S_IMODE(companion.stat().st_mode) == 0o600
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger.close()


def test_sqlite_schema_is_versioned_and_reopening_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    call = make_call(cost=Decimal("0.000001234567890123456789"))
    first = open_ledger(f"sqlite:///{path}")
    first.write(calls=[call])
    first.close()
    for _ in range(3):
        again = open_ledger(f"sqlite:///{path}")
        assert again.read_calls() == [call]
        again.close()
    with sqlite3.connect(path) as raw:
        versions = [v for (v,) in raw.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1)) and SCHEMA_VERSION == 6
        columns = {row[1]: row[2] for row in raw.execute("PRAGMA table_info(calls)")}
        counts = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_long_tokens",
                  "output_tokens", "reasoning_tokens", "requests", "request_bytes")  # fmt: skip
        assert columns == {
            "id": "TEXT", "started_at": "INTEGER", "task_id": "TEXT", "task_name": "TEXT",
            "duration_s": "REAL", **dict.fromkeys(counts, "INTEGER"), "record": "TEXT",
            **dict.fromkeys(("m_cost", "m_uncached_input", "m_cache_read", "m_cache_write", "m_output",
                             "m_storage", "m_from_record"), "INTEGER"),
            "model": "TEXT", "operation": "TEXT", "drifted": "INTEGER",
        }  # fmt: skip
        kind = raw.execute("SELECT model, operation, drifted FROM calls").fetchone()
        assert kind == (call.model, call.operation, 0 if call.drift is None else 1)
        (started_at, record) = raw.execute("SELECT started_at, record FROM calls").fetchone()
        assert started_at == (call.started_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        # money is stored as exact decimal text, not a float
        fields = dict(zip(COMPACT_RECORD_FIELDS, json.loads(record), strict=True))
        assert fields["cost"] == "0.000001234567890123456789"
        assert fields["cost_breakdown"] == ["0.000300", "0.00018", "0.001125", "0.003750", "0"]
        assert fields["model"] == "claude-sonnet-4-5" and fields["metadata"] == call.metadata
        indexes = {row[1]: row[2] for row in raw.execute("PRAGMA index_list(calls)")}
        assert indexes == {"calls_started_at": 1, "calls_task_name": 0, "calls_money_from_record": 0,
                           "calls_kind_unfilled": 0, "calls_drifted": 0}  # fmt: skip
        # the writer leaves the money columns to the next report (tests/test_ledger_report.py)
        money = raw.execute("SELECT m_cost, m_output, m_from_record FROM calls").fetchone()
        assert money == (None, None, 1)
        assert raw.execute("PRAGMA page_size").fetchone() == (16384,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def make_version_1_ledger(
    path: Path, calls: Sequence[CallRecord] = (), tasks: Sequence[TaskRecord] = (),
    alerts: Sequence[AlertRecord] = (),
) -> None:  # fmt: skip
    """A ledger file as budgetclient left it at schema version 1: its DDL, one column per field."""
    path.touch(mode=0o600)
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA journal_mode = WAL")
        for statement in MIGRATIONS[0]:
            assert isinstance(statement, str)
            raw.execute(statement)
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT)")
        raw.execute("INSERT INTO schema_version (version, applied_at) VALUES (1, datetime('now'))")
        for table, columns, encode, records in (
            ("calls", CALL_COLUMNS, call_to_row, calls),
            ("tasks", TASK_COLUMNS, task_to_row, tasks),
            ("alerts", ALERT_COLUMNS, alert_to_row, alerts),
        ):
            insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            raw.executemany(insert, [encode(r) for r in records])


def test_sqlite_migrates_a_version_1_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    tie = T0 + timedelta(seconds=30)
    hostile = "x'; DROP TABLE calls; --"
    odd_metadata = {"n": [1, 2.50, None], "ü": "é 🚀", "amount": "1.10"}
    unpriced = {"cost": None, "cost_breakdown": None, "http_status": None, "task_id": None, "task_name": None}
    inserted = [  # in this (rowid) order; the two calls started at the same instant keep it
        make_call(3, task_name=hostile, error="boom\x00", task_id="t-3", metadata=odd_metadata),
        make_call(1, drift=DRIFT, cost=Decimal("0.123456789012345678901234567890")),
        make_call(9, started_at=tie, duration_s=0.1 + 0.2),
        make_call(8, started_at=tie, stream=False, batch=True, attempt=0, service_tier=None),
        make_call(2, model="future-model", status="incomplete", metadata={}, prefix_hash=None, **unpriced),
        make_call(4, drift=replace(DRIFT, est_extra_cost=None, provider_reason=None)),
    ]
    tasks, alerts = [make_task(1), make_task(2, cost=None, budget_usd=None)], [make_alert(1)]
    make_version_1_ledger(path, inserted, tasks, alerts)
    expected = sorted(inserted, key=lambda c: c.started_at)  # stable: ties in rowid order
    expected = [replace(c, drift=c.drift.without_excerpts()) if c.drift else c for c in expected]

    ledger = open_ledger(f"sqlite:///{path}")
    assert ledger.schema_version() == SCHEMA_VERSION  # type: ignore[attr-defined]
    assert ledger.read_calls() == expected
    assert [c.id for c in ledger.read_calls(since=tie)] == [inserted[2].id, inserted[3].id]
    assert ledger.read_calls(task_name=hostile) == [inserted[0]]
    assert ledger.read_calls(task_id="t-3") == [inserted[0]]
    (priced,) = ledger.read_calls(since=T0 + timedelta(seconds=1), task_name="triage")[:1]
    assert str(priced.cost) == "0.123456789012345678901234567890" and priced.drift == DRIFT.without_excerpts()
    assert priced.cost_breakdown is not None and str(priced.cost_breakdown.uncached_input) == "0.000300"
    assert ledger.read_tasks() == tasks and ledger.read_alerts() == alerts

    # new records go in beside the old ones; old ones written again are not duplicated
    new = [make_call(20 + i) for i in range(70)]
    ledger.write(calls=[*new, inserted[1]])
    ledger.write(calls=new[:10])
    assert ledger.read_calls() == sorted([*expected, *new], key=lambda c: c.started_at)
    ledger.close()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as raw:
        tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"calls", "tasks", "alerts", "schema_version", "rollups"}
        versions = raw.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(1,), (2,), (3,), (4,), (5,), (6,)]
        assert raw.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM calls").fetchone() == (76, 76)
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_failed_migration_leaves_the_version_1_ledger_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    make_version_1_ledger(path, [make_call(1), make_call(2)])
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE calls SET metadata = '{not json' WHERE id LIKE 'call-2-%'")
    with pytest.raises(LedgerError, match=r"version 2 failed: JSONDecodeError: .*unchanged, at version 1"):
        open_ledger(f"sqlite:///{path}")
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert "metadata" in {row[1] for row in raw.execute("PRAGMA table_info(calls)")}
        assert raw.execute("SELECT COUNT(*) FROM calls").fetchone() == (2,)


def test_sqlite_stores_any_text_and_numbers_python_holds(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    naive = datetime(2025, 3, 1, 11, 59, 0, 7)  # before T0: taken as UTC
    odd = [
        make_call(1, error="lone \udc80 surrogate", conversation="é ü 🚀 \x00", response_id='q " b \\ \n',
                  metadata={"k\udc00": "v\x00", "deep": {"x": [1.5, -0.0, 10**30]}}, duration_s=float("inf")),
        make_call(2, cost=Decimal("-0E-30"), usage=Usage(input_tokens=2**62, output_tokens=3, requests=1),
                  cost_breakdown=CostBreakdown(output=Decimal("1.000"), storage=Decimal("1E+3")),
                  request_bytes=2**40, http_status=599, duration_s=5e-324),
        make_call(3, started_at=naive, provider="ünïcode", model="m\u2028odel", operation="op\x7f"),
    ]  # fmt: skip
    ledger.write(calls=odd)
    expected = [replace(odd[2], started_at=naive.replace(tzinfo=UTC)), odd[0], odd[1]]
    assert ledger.read_calls() == expected
    assert [str(c.cost) for c in ledger.read_calls()] == ["0.005355", "0.005355", "-0E-30"]
    assert ledger.read_calls(since=naive) == expected
    assert ledger.read_calls(since=naive + timedelta(microseconds=1)) == expected[1:]
    ledger.close()


def test_a_sqlite_write_is_atomic_and_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    calls = [make_call(i) for i in range(150)]  # two 64-row statements, then 22 single rows
    real = sqlite_module._insert_calls

    def fails_before_commit(conn: sqlite3.Connection, rows: Sequence[Any]) -> None:
        real(conn, rows)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_module, "_insert_calls", fails_before_commit)
    with pytest.raises(LedgerError, match="writing 150 records failed: OperationalError: disk I/O error"):
        ledger.write(calls=calls)
    assert ledger.read_calls() == []
    monkeypatch.undo()
    ledger.write(calls=calls[:100])
    ledger.write(calls=calls)  # a retry overlapping what was written
    ledger.write(calls=[*calls, *calls])  # and duplicates within one write
    assert ledger.read_calls() == calls
    ledger.close()


class _FailsOnStatement:
    """A connection stand-in for the pipeline's helper thread: statement ``n`` raises."""

    def __init__(self, conn: sqlite3.Connection, n: int) -> None:
        self.conn, self.n, self.seen = conn, n, 0

    def execute(self, sql: str, params: Sequence[Any]) -> Any:
        self.seen += 1
        if self.seen == self.n:
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, params)


def test_a_large_sqlite_write_is_pipelined_and_still_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enough calls for the encode/insert pipeline (several full statements plus a remainder):
    written exactly and in order, nothing at all when a statement or a record fails midway."""
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    size = sqlite_module.CALLS_PER_INSERT
    calls = [make_call(i, started_at=T0 + timedelta(microseconds=i // 4)) for i in range(4 * size + 7)]
    real = sqlite_module._execute_each

    def third_statement_fails(conn: sqlite3.Connection, *args: Any) -> None:
        real(_FailsOnStatement(conn, 3), *args)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite_module, "_execute_each", third_statement_fails)
    with pytest.raises(LedgerError, match=f"writing {len(calls)} records failed: OperationalError: database"):
        ledger.write(calls=calls)
    assert ledger.read_calls() == []
    monkeypatch.undo()

    nan = replace(calls[0], id="nan", duration_s=float("nan"))
    broken = [*calls[: 2 * size + 5], nan, *calls[2 * size + 5 :]]
    with pytest.raises(ValueError, match="NaN"):
        ledger.write(calls=broken)
    assert ledger.read_calls() == []

    ledger.write(calls=calls[size:])
    ledger.write(calls=calls)  # a retry overlapping what was written
    assert ledger.read_calls() == sorted(calls, key=lambda c: c.started_at)  # same instant: written order
    assert len(ledger.read_calls(since=T0 + timedelta(microseconds=size // 4))) == len(calls) - size
    ledger.close()


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    open_ledger(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(LedgerError, match="upgrade budgetclient"):
        open_ledger(f"sqlite:///{path}")


def test_sqlite_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(LedgerError, match="a-file"):
        open_ledger(f"sqlite:///{blocker}/ledger.db")


def test_sqlite_ledger_shared_by_threads(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    batches = [[make_call(i * 10 + j) for j in range(10)] for i in range(8)]
    threads = [threading.Thread(target=ledger.write, kwargs={"calls": b}) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.id for r in ledger.read_calls()) == sorted(r.id for b in batches for r in b)
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.read_calls()


# -- URLs ---------------------------------------------------------------------------------------


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    call = make_call()
    relative = open_ledger("sqlite:///relative.db")
    relative.write(calls=[call])
    relative.close()
    assert (tmp_path / "relative.db").is_file()
    plain = open_ledger(str(tmp_path / "plain.db"))
    plain.write(calls=[call])
    plain.close()
    assert open_ledger(str(tmp_path / "plain.db")).read_calls() == [call]
    absolute = open_ledger(f"sqlite:///{tmp_path / 'relative.db'}")
    assert absolute.read_calls() == [call]
    absolute.close()


def test_memory_ledgers_are_shared_by_name() -> None:
    name = f"memory://shared-{uuid.uuid4().hex}"
    call = make_call()
    open_ledger(name).write(calls=[call])
    assert open_ledger(name).read_calls() == [call]
    assert open_ledger(f"memory://other-{uuid.uuid4().hex}").read_calls() == []
    default = open_ledger("memory://")
    default.write(tasks=[task := make_task()])
    assert task in open_ledger("memory://").read_tasks()


@pytest.mark.parametrize(
    "bad", ["mysql://u:hunter2@h/db", "ledger.txt", "", "sqlite://host/x.db", "sqlite:///"]
)
def test_bad_urls_name_the_url_and_the_accepted_forms(bad: str) -> None:
    with pytest.raises(LedgerError) as caught:
        open_ledger(bad)
    message = str(caught.value)
    assert "sqlite:///" in message and "memory://" in message
    assert "hunter2" not in message
    if bad:
        assert mask_url(bad) in message


def test_postgres_url_points_to_the_extra_and_masks_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if budgetclient[postgres] were not installed
    with pytest.raises(LedgerError) as caught:
        open_ledger("postgresql://u:secret@h/db")
    message = str(caught.value)
    assert "budgetclient[postgres]" in message
    assert "secret" not in message
    assert "postgresql://u:***@h/db" in message


def test_mask_url() -> None:
    assert (
        mask_url("postgresql://u:secret@h:5432/db?sslmode=require")
        == "postgresql://u:***@h:5432/db?sslmode=require"
    )
    assert (
        mask_url("postgresql://h/db?user=u&password=secret&x=1")
        == "postgresql://h/db?user=u&password=***&x=1"
    )
    assert mask_url("host=h password=secret dbname=db") == "host=h password=*** dbname=db"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_url("sqlite:////tmp/ledger.db") == "sqlite:////tmp/ledger.db"


# -- the writer ---------------------------------------------------------------------------------


class FlakyLedger:
    """A memory ledger whose ``write`` fails while ``failures_left`` > 0 (or ``down`` is set)."""

    def __init__(self, url: str, state: dict[str, Any]) -> None:
        self.url = url
        self.inner = open_ledger(url)
        self.state = state

    def write(self, calls: Sequence[CallRecord] = (), tasks: Sequence[TaskRecord] = (),
              alerts: Sequence[AlertRecord] = ()) -> None:  # fmt: skip
        with self.state["lock"]:
            self.state["attempts"] += 1
            if self.state["down"] or self.state["failures_left"] > 0:
                self.state["failures_left"] -= 1
                raise LedgerError("server at postgresql://u:secret@h/db went away")
        self.inner.write(calls, tasks, alerts)

    def read_calls(self, **kw: Any) -> list[CallRecord]:
        return self.inner.read_calls(**kw)

    def read_tasks(self, **kw: Any) -> list[TaskRecord]:
        return self.inner.read_tasks(**kw)

    def read_alerts(self, **kw: Any) -> list[AlertRecord]:
        return self.inner.read_alerts(**kw)

    def close(self) -> None:
        self.inner.close()


def flaky(failures: int = 0, down: bool = False) -> tuple[dict[str, Any], Any]:
    state: dict[str, Any] = {"lock": threading.Lock(), "attempts": 0, "failures_left": failures, "down": down}
    return state, lambda url: FlakyLedger(url, state)


def memory_url() -> str:
    return f"memory://writer-{uuid.uuid4().hex}"


def test_writer_many_threads_every_record_exactly_once() -> None:
    url = memory_url()
    writer = LedgerWriter(url, batch_size=256, flush_interval=0.01)
    per_thread, threads_n = 500, 8
    ids: list[list[str]] = [[] for _ in range(threads_n)]
    base = make_call()
    start = threading.Barrier(threads_n)

    def work(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            record = replace(base, id=f"{t}-{i}", task_name=f"thread-{t}")
            ids[t].append(record.id)
            writer.submit_call(record)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.flush(10)
    assert writer.pending == 0
    stored = [r.id for r in open_ledger(url).read_calls()]
    assert len(stored) == per_thread * threads_n
    assert sorted(stored) == sorted(i for chunk in ids for i in chunk)
    assert [r.id for r in open_ledger(url).read_calls(task_name="thread-3")] == ids[3]  # same instant: FIFO
    writer.close()


def test_a_patched_time_monotonic_reaches_neither_the_writer_nor_its_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Code under test patches ``time.monotonic`` (anyio's fake clock raises outside an event loop):
    the writer's thread, lingering beside it, keeps its own clock and writes every record."""
    url = memory_url()
    writer = LedgerWriter(url, flush_interval=0.05)
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    first, second = make_call(1), make_call(2)
    writer.submit_call(first)  # the thread starts and lingers, reading its clock

    def no_event_loop() -> float:
        raise RuntimeError("Not currently running on any asynchronous event loop")

    monkeypatch.setattr(time, "monotonic", no_event_loop)
    writer.submit_call(second)
    assert writer.flush(10)
    monkeypatch.undo()
    assert died == []
    assert [r.id for r in open_ledger(url).read_calls()] == [first.id, second.id]
    writer.close()


def test_a_writer_thread_that_fails_logs_it_and_the_next_one_writes_its_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = memory_url()
    writer = LedgerWriter(url, flush_interval=0.01)
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    real = writer._normalised
    faults = iter([RuntimeError("a bug")])

    def once(batch: list[Any]) -> list[Any]:
        fault = next(faults, None)
        if fault is not None:
            raise fault
        return real(batch)

    monkeypatch.setattr(writer, "_normalised", once)
    first, second = make_call(1), make_call(2)
    with capture_logs() as logs:
        writer.submit_call(first)
        deadline = time.monotonic() + 10
        while not any(e["event"] == "ledger.writer_failed" for e in logs) and time.monotonic() < deadline:
            time.sleep(0.01)
        writer.submit_call(second)  # starts a new thread, which takes the handed-back batch first
        assert writer.flush(10)
    assert died == []
    (failed,) = [e for e in logs if e["event"] == "ledger.writer_failed"]
    assert failed["error"] == "RuntimeError" and failed["detail"] == "a bug"
    assert [r.id for r in open_ledger(url).read_calls()] == [first.id, second.id]
    writer.close()


def test_writer_handles_all_record_kinds() -> None:
    url = memory_url()
    writer = LedgerWriter(url)
    call, task, alert = make_call(), make_task(), make_alert()
    writer.submit_call(call)
    writer.submit_task(task)
    writer.submit_alert(alert)
    assert writer.flush(10)
    ledger = open_ledger(url)
    assert (ledger.read_calls(), ledger.read_tasks(), ledger.read_alerts()) == ([call], [task], [alert])
    writer.close()
    # a closed writer still accepts records and writes them
    late = make_call(2)
    writer.submit_call(late)
    assert writer.flush(10)
    assert ledger.read_calls() == [call, late]


def test_writer_keeps_and_retries_records_when_writes_fail() -> None:
    url = memory_url()
    state, opener = flaky(failures=3)
    writer = LedgerWriter(url, batch_size=50, flush_interval=0.01, opener=opener)
    records = [make_call(i, task_name="very-private-task-name") for i in range(120)]
    with capture_logs() as logs:
        for r in records:
            writer.submit_call(r)
        assert writer.flush(20)
    stored = open_ledger(url).read_calls()
    assert sorted(r.id for r in stored) == sorted(r.id for r in records)
    assert state["attempts"] >= 3 + 3  # three failures, then at least three batches of <= 50
    failed = [e for e in logs if e["event"] == "ledger.write_failed"]
    assert len(failed) == 3
    assert all(e["error"] == "LedgerError" and e["log_level"] == "error" for e in failed)
    assert any(e["event"] == "ledger.write_recovered" for e in logs)
    dumped = repr(logs)
    assert "secret" not in dumped and "u:***@h" in dumped
    assert "very-private-task-name" not in dumped and records[0].id not in dumped
    writer.close()


def test_flush_times_out_while_the_ledger_is_down_then_catches_up() -> None:
    url = memory_url()
    state, opener = flaky(down=True)
    writer = LedgerWriter(url, flush_interval=0.01, opener=opener)
    records = [make_call(i) for i in range(10)]
    with capture_logs():
        for r in records:
            writer.submit_call(r)
        assert writer.flush(0.3) is False
        assert writer.flush(0) is False
        assert writer.pending == 10
        assert open_ledger(url).read_calls() == []
        with state["lock"]:
            state["down"] = False
        assert writer.flush(20)
    assert writer.pending == 0
    assert open_ledger(url).read_calls() == records
    writer.close()


def test_open_failure_is_retried_and_logged_with_password_masked() -> None:
    target = memory_url()
    state = {"up": False}

    def opener(url: str) -> Ledger:
        return open_ledger(target) if state["up"] else open_ledger(url)  # a postgres URL fails: no extra yet

    writer = LedgerWriter("postgresql://u:secret@db.internal/ledger", flush_interval=0.01, opener=opener)
    call = make_call()
    with capture_logs() as logs:
        writer.submit_call(call)
        assert writer.flush(0.3) is False
        state["up"] = True
        assert writer.flush(20)
    failed = [e for e in logs if e["event"] == "ledger.write_failed"]
    assert failed and all(e["url"] == "postgresql://u:***@db.internal/ledger" for e in failed)
    assert "secret" not in repr(logs)
    assert "secret" not in repr(writer)
    assert open_ledger(target).read_calls() == [call]
    writer.close()


def test_submit_never_raises_and_records_survive_a_broken_opener() -> None:
    url = memory_url()
    state = {"broken": True}

    def opener(u: str) -> Ledger:
        if state["broken"]:
            raise ZeroDivisionError("division by zero")
        return open_ledger(u)

    writer = LedgerWriter(url, flush_interval=0.01, opener=opener)
    records = (make_call(), make_task(), make_alert())
    with capture_logs() as logs:
        writer.submit_call(records[0])
        writer.submit_task(records[1])
        writer.submit_alert(records[2])
        assert writer.flush(0.05) is False
        assert writer.pending == 3
        state["broken"] = False
        assert writer.flush(20)
    assert any(e["event"] == "ledger.write_failed" and e["error"] == "ZeroDivisionError" for e in logs)
    ledger = open_ledger(url)
    assert (*ledger.read_calls(), *ledger.read_tasks(), *ledger.read_alerts()) == records
    writer.close()


def test_a_record_that_cannot_be_encoded_does_not_block_the_others() -> None:
    url = memory_url()
    writer = LedgerWriter(url, flush_interval=0.01)
    good, broken, later = make_call(1), make_call(2, usage=None), make_call(3)
    with capture_logs() as logs:
        for r in (good, broken, later):
            writer.submit_call(r)
        assert writer.flush(20)
    assert open_ledger(url).read_calls() == [good, later]
    assert writer.rejected == [broken]
    (rejected,) = [e for e in logs if e["event"] == "ledger.record_quarantined"]
    assert rejected["id"] == broken.id and rejected["error"] == "AttributeError"
    assert rejected["quarantined_in"] == "ledger"
    writer.close()


def test_records_sqlite_cannot_store_are_normalised_or_quarantined(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    writer = LedgerWriter(url, flush_interval=0.01)
    good, later = make_call(1), make_call(4)
    surrogate = make_call(2, task_name="half a pair: \ud800")  # UTF-8 cannot encode it: SQLite cannot bind it
    nan = make_call(3, duration_s=float("nan"))  # SQLite would store NULL
    with capture_logs() as logs:
        for r in (good, surrogate, nan, later):
            writer.submit_call(r)
        assert writer.flush(20)
    stored = open_ledger(url).read_calls()
    assert stored == [good, replace(surrogate, task_name="half a pair: \ufffd"), later]
    assert writer.rejected == [nan]
    (invalid,) = [e for e in logs if e["event"] == "ledger.record_invalid"]
    assert invalid["id"] == surrogate.id and invalid["problems"][0].startswith("task_name:")
    rejected = [e for e in logs if e["event"] == "ledger.record_quarantined"]
    assert [e["error"] for e in rejected] == ["ValueError"]
    writer.close()


def test_a_backlog_is_written_in_transactions_of_at_most_batch_size() -> None:
    assert LedgerWriter("memory://").batch_size == writer_module.BATCH_SIZE == 20_000
    url = memory_url()
    state, opener = flaky(down=True)
    sizes: list[int] = []

    def recording(u: str) -> Ledger:
        ledger = opener(u)
        write = ledger.write

        def counted(calls: Sequence[CallRecord] = (), tasks: Sequence[TaskRecord] = (),
                    alerts: Sequence[AlertRecord] = ()) -> None:  # fmt: skip
            write(calls, tasks, alerts)
            sizes.append(len(calls))

        ledger.write = counted
        return ledger

    writer = LedgerWriter(url, batch_size=1000, flush_interval=0.01, opener=recording)
    records = [make_call(i) for i in range(2500)]
    with capture_logs():
        for r in records:
            writer.submit_call(r)
        assert writer.flush(0.1) is False
        with state["lock"]:
            state["down"] = False
        assert writer.flush(20)
    assert sum(sizes) == 2500 and max(sizes) == 1000
    assert open_ledger(url).read_calls() == records
    writer.close()


def _eventually(condition: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_writer_wakes_for_a_first_record_and_for_a_full_batch_without_flush() -> None:
    """Submitting takes no lock; the thread must still be woken for what it waits for."""
    url = memory_url()
    ledger = open_ledger(url)
    idle = LedgerWriter(url, flush_interval=0.0)
    first = make_call(0)
    idle.submit_call(first)  # starts the thread
    assert _eventually(lambda: ledger.read_calls() == [first])
    second = make_call(1)
    idle.submit_call(second)  # the thread is waiting for a record
    assert _eventually(lambda: ledger.read_calls() == [first, second])
    idle.close()

    lingering = LedgerWriter(url, batch_size=100, flush_interval=3600.0)  # only a full batch is written
    batch, task = [make_call(i) for i in range(2, 102)], make_task(1)
    for r in batch[:50]:
        lingering.submit_call(r)
    lingering.submit_task(task)
    for r in batch[50:99]:
        lingering.submit_call(r)  # the 100th queued record: a full batch
    assert _eventually(lambda: len(ledger.read_calls()) == 101)
    assert ledger.read_calls() == [first, second, *batch[:99]] and ledger.read_tasks() == [task]
    lingering.submit_call(batch[99])
    assert lingering.pending == 1  # lingers for a batch, or a flush
    assert lingering.flush(20)
    assert ledger.read_calls() == [first, second, *batch]
    lingering.close()


def test_odd_metadata_is_stored_not_refused(ledger: Ledger) -> None:
    circular: dict[str, Any] = {"a": 1}
    circular["self"] = circular
    odd = make_call(metadata={"when": T0, "amount": Decimal("1.10"), "tags": {"x"}, "obj": object()})
    loop = make_call(1, metadata=circular)
    ledger.write(calls=[odd, loop])
    first, second = ledger.read_calls()
    assert first.metadata["when"] == T0.isoformat() and first.metadata["amount"] == "1.10"
    assert first.metadata["tags"] == ["x"] and first.metadata["obj"].startswith("<object")
    assert "unserialisable" in second.metadata


def test_writer_rejects_bad_settings() -> None:
    with pytest.raises(bc.ConfigurationError, match="batch_size"):
        LedgerWriter("memory://", batch_size=0)
    with pytest.raises(bc.ConfigurationError, match="flush_interval"):
        LedgerWriter("memory://", flush_interval=-1)


# -- the process-wide writer ----------------------------------------------------------------------


def test_process_writer_follows_the_configured_url(ledger_url: str) -> None:
    first = get_writer()
    assert first.url == ledger_url
    call = make_call()
    first.submit_call(call)
    other = memory_url()
    bc.configure(ledger=other)
    # the old writer was drained to its own URL before configure() returned
    assert open_ledger(ledger_url).read_calls() == [call]
    second = get_writer()
    assert second is not first and second.url == other
    later = make_call(1)
    second.submit_call(later)
    assert writer_module.flush(10)
    assert get_ledger().read_calls() == [later]
    assert open_ledger(ledger_url).read_calls() == [call]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_does_not_inherit_queued_records(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    state: dict[str, Any] = {"down": True}

    def opener(u: str) -> Ledger:
        if state["down"]:
            raise LedgerError("down")
        return open_ledger(u)

    writer = LedgerWriter(url, flush_interval=0.01, opener=opener)
    parent_records = [make_call(i, task_name="parent") for i in range(5)]
    with capture_logs():
        for r in parent_records:
            writer.submit_call(r)
        assert writer.flush(0.1) is False
        child_record = make_call(99, task_name="child")
        pid = os.fork()
        if pid == 0:  # the child: its own empty queue and its own thread
            code = 1
            try:
                state["down"] = False
                if writer.pending == 0:
                    writer.submit_call(child_record)
                    code = 0 if writer.flush(10) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert [r.id for r in open_ledger(url).read_calls()] == [child_record.id]
        assert writer.pending == 5
        state["down"] = False
        assert writer.flush(20)
    stored = sorted(r.id for r in open_ledger(url).read_calls())
    assert stored == sorted([child_record.id, *(r.id for r in parent_records)])
    writer.close()


def test_exit_flush_writes_queued_records(tmp_path: Path) -> None:
    """Records queued just before the interpreter exits still reach the ledger."""
    import subprocess

    path = tmp_path / "exit.db"
    code = (
        "import budgetclient as bc\n"
        "from budgetclient.ledger import get_writer\n"
        "from tests.test_ledger import make_call\n"
        f"bc.configure(ledger={f'sqlite:///{path}'!r})\n"
        "w = get_writer()\n"
        "for i in range(50): w.submit_call(make_call(i))\n"
    )
    root = Path(__file__).absolute().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env, timeout=60)
    assert len(open_ledger(f"sqlite:///{path}").read_calls()) == 50
