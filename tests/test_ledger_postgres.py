"""The PostgreSQL ledger against a real server: the SQLite ledger's contract, plus its own specifics.

Needs ``BUDGETCLIENT_TEST_POSTGRES_URL`` (``.ci/postgres.sh`` starts a throwaway server and sets it).
Each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient.errors import LedgerError
from budgetclient.ledger import Ledger, LedgerWriter, open_ledger
from budgetclient.ledger import sqlite as sqlite_ledger
from budgetclient.reports import build_report

# The backend-neutral contract tests, run here against PostgreSQL through this module's `ledger`.
from .test_ledger import (  # noqa: F401
    T0,
    make_alert,
    make_call,
    make_task,
    test_empty_ledger_reads_empty,
    test_filters_and_time_order,
    test_odd_metadata_is_stored_not_refused,
    test_records_round_trip_exactly,
    test_retried_batch_does_not_duplicate,
)

BASE_URL = os.environ.get("BUDGETCLIENT_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(
    not BASE_URL,
    reason="BUDGETCLIENT_TEST_POSTGRES_URL is not set; `source .ci/postgres.sh` starts a throwaway server",
)


def with_schema(schema: str) -> str:
    return f"{BASE_URL}{'&' if '?' in BASE_URL else '?'}schema={schema}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    drop_schema(name)


@pytest.fixture
def url(schema: str) -> str:
    return with_schema(schema)


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    handle = open_ledger(url)
    yield handle
    handle.close()


@pytest.mark.parametrize(
    "name", ["x'; DROP TABLE calls; --", "Robert'); DROP TABLE tasks;--", 'a" OR "1"="1', "%_\\ ' ; ?"]
)
def test_sql_injection_looking_names_are_stored_verbatim(ledger: Ledger, name: str) -> None:
    call = make_call(task_name=name, model=name, metadata={name: name})
    task = make_task(name=name)
    alert = make_alert(task_name=name, message=name)
    ledger.write(calls=[call, make_call(7, task_name="other")], tasks=[task], alerts=[alert])
    assert ledger.read_calls(task_name=name) == [call]
    assert ledger.read_tasks(name=name) == [task]
    assert ledger.read_alerts(task_name=name) == [alert]


def test_nul_characters_cannot_block_the_queue(ledger: Ledger) -> None:
    """PostgreSQL text holds no NUL: it is stored as U+FFFD instead of making the record unstorable."""
    call = make_call(task_name="a\x00b", error="bad\x00byte", metadata={"k": "v\x00"})
    ledger.write(calls=[call])
    (read,) = ledger.read_calls(task_name="a\x00b")
    assert read.task_name == "a\ufffdb" and read.error == "bad\ufffdbyte"
    assert read.metadata == {"k": "v\x00"}  # JSON text escapes it, so it survives exactly


def test_columns_are_the_shared_one_column_per_field_layout(ledger: Ledger, schema: str) -> None:
    """PostgreSQL keeps one typed column per field (SQLite's version-1 layout; SQLite moved its calls
    to a compact row in version 2, which PostgreSQL does not need: it binds columns cheaply)."""
    import psycopg

    from budgetclient.ledger import _codec, postgres

    assert postgres.SCHEMA_VERSION == 4 and sqlite_ledger.SCHEMA_VERSION == 6
    assert isinstance(ledger, postgres.PostgresLedger) and ledger.schema_version() == postgres.SCHEMA_VERSION
    expected = {"calls": _codec.CALL_COLUMNS, "tasks": _codec.TASK_COLUMNS, "alerts": _codec.ALERT_COLUMNS}
    with psycopg.connect(BASE_URL) as conn:
        for table, codec_columns in expected.items():
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (schema, table),
            ).fetchall()
            columns = {r[0] for r in rows} - {"seq", "facts"}  # facts: what reports computed per run
            sqlite_v1_columns = {
                line.strip().split()[0]
                for statement in sqlite_ledger.MIGRATIONS[0]
                if isinstance(statement, str) and statement.startswith(f"CREATE TABLE {table} ")
                for line in statement.split("(", 1)[1].rsplit(")", 1)[0].split(",")
                if line.strip()
            }
            assert columns == set(codec_columns) == sqlite_v1_columns, table


def test_reopening_does_not_migrate_again(url: str, schema: str) -> None:
    import psycopg

    for _ in range(3):
        open_ledger(url).close()
    with psycopg.connect(BASE_URL) as conn:
        (count,) = conn.execute(f'SELECT COUNT(*) FROM "{schema}".schema_version').fetchone() or (0,)
    from budgetclient.ledger import postgres

    assert count == postgres.SCHEMA_VERSION


def test_a_newer_schema_is_refused(url: str, schema: str) -> None:
    import psycopg

    open_ledger(url).close()
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{schema}".schema_version (version) VALUES (99)')
    with pytest.raises(LedgerError, match="schema version 99"):
        open_ledger(url)


def test_many_processes_open_a_fresh_schema_at_once(url: str, schema: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_open_and_close, args=(url,)) for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 6
    from budgetclient.ledger import postgres

    assert open_ledger(url).schema_version() == postgres.SCHEMA_VERSION  # type: ignore[attr-defined]


def _open_and_close(url: str) -> None:
    open_ledger(url).close()


def test_threads_share_one_ledger(ledger: Ledger) -> None:
    def write(k: int) -> None:
        for i in range(25):
            ledger.write(calls=[make_call(i, id=f"t{k}-{i}")])

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ledger.read_calls()) == 200


def test_unreachable_server_is_a_clear_error_with_the_password_masked() -> None:
    with pytest.raises(LedgerError) as info:
        open_ledger("postgresql://someone:s3cret@127.0.0.1:1/nothing?connect_timeout=2")
    message = str(info.value)
    assert "s3cret" not in message and "someone:***@127.0.0.1:1" in message and "connecting failed" in message


def test_bad_schema_name_is_refused() -> None:
    with pytest.raises(LedgerError, match="schema="):
        open_ledger(with_schema("bad-name; DROP"))


def test_writer_retries_while_the_server_is_unreachable_then_writes(url: str) -> None:
    state = {"up": False}

    def opener(target: str) -> Ledger:
        return open_ledger(target if state["up"] else "postgresql://u:pw@127.0.0.1:1/x?connect_timeout=1")

    writer = LedgerWriter(url, flush_interval=0.01, opener=opener)
    calls = [make_call(i) for i in range(5)]
    with capture_logs() as logs:
        for call in calls:
            writer.submit_call(call)
        assert not writer.flush(0.5)
        state["up"] = True
        assert writer.flush(20)
    writer.close()
    assert any(e["event"] == "ledger.write_failed" for e in logs)
    assert open_ledger(url).read_calls() == calls


def test_process_writer_and_reports_read_postgres(url: str) -> None:
    bc.configure(ledger=url, prices={"pg-model": {"input": 2, "output": 8}})
    from budgetclient import metering
    from budgetclient.usage import Usage

    for outcome in ("success", "failure"):
        with bc.task("pg-task") as t:
            ctx = metering.begin_call("openai", "pg-model", "responses")
            metering.finish_call(ctx, Usage(input_tokens=1000, output_tokens=100, requests=1))
            if outcome == "failure":
                t.fail("no answer")
    assert bc.flush(20)
    ledger = open_ledger(url)
    (row,) = build_report(ledger.read_tasks(), ledger.read_calls(), ledger.read_alerts()).as_json()
    per_run = Decimal(1000 * 2 + 100 * 8) / 1_000_000
    assert row["task"] == "pg-task" and row["runs"] == 2 and row["outcomes"]["failure"] == 1
    assert Decimal(row["cost_total"]) == 2 * per_run and Decimal(row["failure_cost"]) == per_run
    assert Decimal(row["cost_per_success"]) == 2 * per_run  # everything spent, for one success


def test_since_filters_use_server_side_time(ledger: Ledger) -> None:
    calls = [make_call(i) for i in (1, 5, 9)]
    ledger.write(calls=calls)
    assert [c.id for c in ledger.read_calls(since=T0 + timedelta(seconds=5))] == [c.id for c in calls[1:]]
    naive = (T0 + timedelta(seconds=5)).replace(tzinfo=None)  # naive means UTC, as in SQLite
    assert [c.id for c in ledger.read_calls(since=naive)] == [c.id for c in calls[1:]]
