"""Reports that start from what an earlier report kept (`ledger.rollups`: SQLite's call sums up to a
rowid, each task name's row sums and replayed signals up to a run) give, figure for figure, what the
Python aggregation over every decoded record gives: as the ledger grows, when a run that ended
earlier is stored late, when rows are deleted, and under other thresholds; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetclient import config, ledger_report
from budgetclient.cli.check import checklist
from budgetclient.errors import LedgerError
from budgetclient.ledger import Ledger, _codec, open_ledger
from budgetclient.ledger import sqlite as sqlite_ledger
from budgetclient.ledger_report import read_ledger_report
from budgetclient.usage import CostBreakdown, Usage

from . import test_ledger_report
from ._hypothesis import FAST
from ._report_data import T0, History, make_call, task_from_calls
from .test_ledger_report import (
    SETTINGS,
    exact,
    reference,
    small_ledgers,
    stored_alerts,
    varied_history,
)

pg_ledger = test_ledger_report.pg_ledger  # the fixture: a fresh schema, skipped without a server


def same_figures(ledger: Ledger, *, facts: bool, settings: config.Settings = SETTINGS) -> None:
    """A whole-ledger report (and with ``facts``, the checklist) as the Python aggregation gives it."""
    old, old_facts, old_items = reference(ledger, None, None, settings)
    new = read_ledger_report(ledger, settings=settings, facts=facts)
    assert exact(replace(new.report, points=())) == exact(replace(old, points=()))
    if facts:
        assert exact(new.facts) == exact(old_facts)
        assert new.facts is not None and checklist(new.facts, new.report, settings=settings) == old_items


def split(history: History, cut: datetime, late: set[str] = frozenset()) -> tuple[History, History]:  # type: ignore[assignment]
    """What a fleet has stored by ``cut`` (runs that ended, calls that started), and the rest; the
    ``late`` runs (and their calls) are stored with the rest, as a slow writer would."""
    first, rest = History(), History()
    for task in history.tasks:
        (first if task.ended_at < cut and task.id not in late else rest).tasks.append(task)
    for call in history.calls:
        (first if call.started_at < cut and call.task_id not in late else rest).calls.append(call)
    return first, rest


def lone_runs(history: History) -> list[str]:
    """Runs with neither parent nor children: storing one late changes no other run's calls."""
    parents = {t.parent_id for t in history.tasks}
    return [t.id for t in history.tasks if t.parent_id is None and t.id not in parents]


def grow_and_report(ledger: Ledger, history: History, cut: datetime, late: set[str]) -> None:
    first, rest = split(history, cut, late)
    ledger.write(calls=first.calls, tasks=first.tasks)
    same_figures(ledger, facts=False)  # computes and keeps
    same_figures(ledger, facts=True)  # the checklist's figures kept too
    same_figures(ledger, facts=False)  # from what was kept only
    ledger.write(calls=rest.calls, tasks=rest.tasks)
    same_figures(ledger, facts=False)  # the runs after the mark (or all, where a late run broke it)
    same_figures(ledger, facts=False)
    same_figures(ledger, facts=True)
    same_figures(ledger, facts=False)


def sqlite_at(path: Path) -> Ledger:
    return open_ledger(f"sqlite:///{path}")


@pytest.fixture(scope="module")
def history() -> History:
    return varied_history()


def test_a_growing_sqlite_ledger_reports_as_the_records_say(tmp_path: Path, history: History) -> None:
    ledger = sqlite_at(tmp_path / "ledger.db")
    ledger.write(alerts=stored_alerts(history))
    late = set(lone_runs(history)[::7])
    assert late
    grow_and_report(ledger, history, T0 + timedelta(days=5), late)
    with sqlite3.connect(tmp_path / "ledger.db") as raw:
        names = {name for (name,) in raw.execute("SELECT name FROM rollups")}
    assert "call_sums" in names and {f"signals:{t.name}" for t in history.tasks} <= names
    ledger.close()


def test_a_growing_postgres_ledger_reports_as_the_records_say(pg_ledger: Ledger, history: History) -> None:
    pg_ledger.write(alerts=stored_alerts(history))
    grow_and_report(pg_ledger, history, T0 + timedelta(days=5), set(lone_runs(history)[::7]))


def _delete_sqlite(path: Path, sql: str) -> Callable[[], None]:
    def delete() -> None:
        with sqlite3.connect(path) as raw:
            assert raw.execute(sql).rowcount
    return delete


@pytest.mark.parametrize(
    "delete",
    [
        "DELETE FROM calls WHERE rowid IN (SELECT rowid FROM calls ORDER BY rowid LIMIT 3)",
        "DELETE FROM tasks WHERE rowid IN (SELECT MIN(rowid) FROM tasks GROUP BY name)",
    ],
)
def test_rows_deleted_under_a_mark_are_noticed(tmp_path: Path, history: History, delete: str) -> None:
    path = tmp_path / "ledger.db"
    ledger = sqlite_at(path)
    ledger.write(calls=history.calls, tasks=history.tasks)
    same_figures(ledger, facts=True)
    _delete_sqlite(path, delete)()
    same_figures(ledger, facts=False)
    same_figures(ledger, facts=True)
    ledger.close()


def test_other_thresholds_do_not_take_the_kept_signals(tmp_path: Path, history: History) -> None:
    ledger = sqlite_at(tmp_path / "ledger.db")
    ledger.write(calls=history.calls, tasks=history.tasks)
    same_figures(ledger, facts=True)
    stricter = replace(
        SETTINGS, signals=replace(SETTINGS.signals, cost_baseline_factor=1.1, cache_hit_rate_min=0.9)
    )
    same_figures(ledger, facts=True, settings=stricter)
    same_figures(ledger, facts=False, settings=stricter)
    same_figures(ledger, facts=False)
    ledger.close()


def test_a_ledger_that_cannot_be_written_reports_without_keeping(
    tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: object, *args: object) -> int:
        raise LedgerError("read-only")

    for method in ("store_rollups", "store_task_facts", "fill_money_columns"):
        monkeypatch.setattr(sqlite_ledger.SQLiteLedger, method, refuse)
    path = tmp_path / "ledger.db"
    ledger = sqlite_at(path)
    ledger.write(calls=history.calls, tasks=history.tasks)
    same_figures(ledger, facts=True)
    same_figures(ledger, facts=False)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM rollups").fetchone() == (0,)
    ledger.close()


def test_kept_names_read_no_run_before_their_mark(
    tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing stored since, a report reads no name's runs (only their costs, for the
    percentiles); with runs added, only those and the history the signals keep."""
    ledger = sqlite_at(tmp_path / "ledger.db")
    first, rest = split(history, T0 + timedelta(days=5))
    ledger.write(calls=first.calls, tasks=first.tasks)
    same_figures(ledger, facts=True)

    real_tasks_of = ledger_report.tasks_of
    kept = {t.name for t in first.tasks}

    def tasks_of(*args: Any, **kw: Any) -> Any:
        # a kept name's runs are read only from a new run's start on, to compute its facts
        assert kw.get("start") is not None or args[2] not in kept, f"read every run of {args[2]}"
        return real_tasks_of(*args, **kw)

    monkeypatch.setattr(ledger_report, "tasks_of", tasks_of)
    same_figures(ledger, facts=False)
    same_figures(ledger, facts=True)
    ledger.write(calls=rest.calls, tasks=rest.tasks)
    same_figures(ledger, facts=False)
    ledger.close()


def test_schema_5_ledgers_gain_the_rollups(tmp_path: Path, history: History) -> None:
    """A ledger last opened by the previous release (schema 5) is migrated on open: the rollups
    table and the index of runs by end appear, and reports are the same before and after."""
    path = tmp_path / "ledger.db"
    path.touch(mode=0o600)
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT)")
        for version, steps in enumerate(sqlite_ledger.MIGRATIONS[:5], 1):
            for step in steps:
                raw.execute(step) if isinstance(step, str) else step(raw)
            raw.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        # records as schema 5 stored them (its call and task rows are schema 6's)
        raw.executemany(sqlite_ledger._INSERT_CALL, [_codec.call_to_compact_row(c) for c in history.calls])
        raw.executemany(sqlite_ledger._INSERT_TASK, [_codec.task_to_row(t) for t in history.tasks])
    ledger = sqlite_at(path)
    assert ledger.schema_version() == 6  # type: ignore[attr-defined]
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM rollups").fetchone() == (0,)
        indexes = {row[1] for row in raw.execute("PRAGMA index_list(tasks)")}
        assert "tasks_name_ended" in indexes
    same_figures(ledger, facts=True)
    same_figures(ledger, facts=False)
    ledger.close()


@settings(FAST, max_examples=60)
@given(history=small_ledgers(), cut=st.integers(0, 3600), late=st.sets(st.integers(0, 6), max_size=2))
def test_generated_ledgers_grow_and_report_as_a_replay(history: History, cut: int, late: set[int]) -> None:
    """Hypothesis ledgers stored in two parts at a cut (some lone runs late): each report, from what
    the ones before kept, equals the replay of every call."""
    path = Path(tempfile.mkdtemp()) / "ledger.db"
    ledger = sqlite_at(path)
    lone = lone_runs(history)
    try:
        grow_and_report(
            ledger, history, T0 + timedelta(seconds=cut), {lone[i] for i in late if i < len(lone)}
        )
    finally:
        ledger.close()
        shutil.rmtree(path.parent, ignore_errors=True)


@pytest.mark.skipif(not test_ledger_report.PG_URL, reason="BUDGETCLIENT_TEST_POSTGRES_URL is not set")
def test_schema_3_postgres_ledgers_gain_the_rollups(history: History) -> None:
    """A PostgreSQL schema last opened by the previous release (schema 3) is migrated on open, with
    its records: the rollups table and the index of runs by end appear; reports equal the records."""
    import psycopg

    from budgetclient.ledger import postgres

    base = test_ledger_report.PG_URL
    schema = f"test_{uuid.uuid4().hex[:16]}"
    try:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            conn.execute(
                f'CREATE TABLE "{schema}".schema_version '
                "(version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            conn.execute(f'SET search_path TO "{schema}"')
            for version, statements in enumerate(postgres.MIGRATIONS[:3], 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            for table, columns, rows in (
                ("calls", _codec.CALL_COLUMNS, [_codec.call_to_row(c) for c in history.calls]),
                ("tasks", _codec.TASK_COLUMNS, [_codec.task_to_row(t) for t in history.tasks]),
            ):
                marks = ", ".join(["%s"] * len(columns))
                with conn.cursor() as cur:
                    cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
        old = open_ledger(url)
        assert old.schema_version() == 4  # type: ignore[attr-defined]
        old.write(alerts=stored_alerts(history))
        with psycopg.connect(base) as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchall()
            indexes = conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'tasks'", (schema,)
            ).fetchall()
        assert ("rollups",) in tables and ("tasks_name_ended",) in indexes
        same_figures(old, facts=True)
        same_figures(old, facts=False)
        old.close()
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_postgres_rows_that_commit_late_under_a_mark_are_noticed(pg_ledger: Ledger, history: History) -> None:
    """A call that took its seq before the mark and committed after the report (stored here with a
    seq of its choosing), and a deleted run: the next report takes the sums again."""
    import psycopg

    from budgetclient.ledger.postgres import PostgresLedger

    assert isinstance(pg_ledger, PostgresLedger)
    late = history.calls[len(history.calls) // 2]
    first = [c for c in history.calls if c is not late]
    pg_ledger.write(calls=first, tasks=history.tasks)
    same_figures(pg_ledger, facts=True)
    columns = _codec.CALL_COLUMNS
    with psycopg.connect(test_ledger_report.PG_URL, autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{pg_ledger.schema}".calls (seq, {", ".join(columns)}) OVERRIDING SYSTEM VALUE '
            f"VALUES (2, {', '.join(['%s'] * len(columns))})",
            _codec.call_to_row(late),
        )
    same_figures(pg_ledger, facts=False)
    same_figures(pg_ledger, facts=True)
    with psycopg.connect(test_ledger_report.PG_URL, autocommit=True) as conn:
        conn.execute(
            f'DELETE FROM "{pg_ledger.schema}".tasks WHERE seq IN '
            f'(SELECT MIN(seq) FROM "{pg_ledger.schema}".tasks GROUP BY name)'
        )
    same_figures(pg_ledger, facts=False)
    same_figures(pg_ledger, facts=True)


def test_equal_costs_written_differently_rank_as_in_python(tmp_path: Path) -> None:
    """The percentiles pick, among equal costs written with other places (0.1, 0.10), the one the
    Python ranking picks: the earliest run to end. SQLite ranks decimal text here, PostgreSQL in SQL."""
    ledgers = [sqlite_at(tmp_path / "ledger.db")]
    if test_ledger_report.PG_URL:
        schema = f"test_{uuid.uuid4().hex[:16]}"
        base = test_ledger_report.PG_URL
        ledgers.append(open_ledger(f"{base}{'&' if '?' in base else '?'}schema={schema}"))
    history = History()
    for i, cost in enumerate(["0.20", "0.100", "0.1", "0.10", "0.2", "0.3", "0.1000"]):
        usage = Usage(input_tokens=100, output_tokens=10, requests=1)
        at = T0 + timedelta(minutes=i)
        call = make_call(i + 1, at=at, usage=usage, task_id=f"run-{i}", task_name="same")
        call = replace(call, cost=Decimal(cost), cost_breakdown=CostBreakdown(output=Decimal(cost)))
        history.calls.append(call)
        history.tasks.append(task_from_calls(f"run-{i}", "same", "success", [call], started_at=at))
    try:
        for ledger in ledgers:
            ledger.write(calls=history.calls, tasks=history.tasks)
            same_figures(ledger, facts=False)
            same_figures(ledger, facts=False)  # from the kept sums, percentiles from the database
            row = read_ledger_report(ledger, settings=SETTINGS).report.rows[0]
            # ranked: 0.100 0.1 0.10 0.1000 0.20 0.2 0.3 (equal ones in the order their runs ended)
            assert (str(row.cost_p50), str(row.cost_p95)) == ("0.1000", "0.3")
    finally:
        for ledger in ledgers:
            ledger.close()
        if len(ledgers) > 1:
            import psycopg

            with psycopg.connect(test_ledger_report.PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_check_after_runs_were_added_reads_only_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs added after the last report, each starting after the ones before: the report adds them to
    the kept checklist figures too, so the check after it reads no run, and gives the same figures."""
    history = History()
    n = 0
    for i in range(12):
        at = T0 + timedelta(minutes=3 * i)
        calls = []
        for j in range(3):
            n += 1
            usage = Usage(input_tokens=3000, cache_read_tokens=1000 * (i % 3), output_tokens=20, requests=1)
            calls.append(make_call(
                n, at=at + timedelta(seconds=10 * j), usage=usage, task_id=f"run-{i}", task_name="steady",
                prefix_hash="p" if i % 2 else None, conversation=f"c{i % 4}",
            ))  # fmt: skip
        history.calls += calls
        history.tasks.append(task_from_calls(f"run-{i}", "steady", "success", calls, started_at=at))
    first, rest = split(history, T0 + timedelta(minutes=18))
    ledger = sqlite_at(tmp_path / "ledger.db")
    ledger.write(calls=first.calls, tasks=first.tasks)
    same_figures(ledger, facts=True)
    ledger.write(calls=rest.calls, tasks=rest.tasks)
    same_figures(ledger, facts=False)

    def no_tasks_of(*args: Any, **kw: Any) -> Any:
        raise AssertionError("read every run of a name")

    monkeypatch.setattr(ledger_report, "tasks_of", no_tasks_of)
    same_figures(ledger, facts=True)
    ledger.close()
