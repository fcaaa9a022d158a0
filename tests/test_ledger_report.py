"""`report` and `check` figures read with SQL equal, field by field and digit for digit, what the
Python aggregation over every decoded record gives (`build_report`, `facts_from_records`): on SQLite,
on PostgreSQL (when ``BUDGETCLIENT_TEST_POSTGRES_URL`` names a server) and on ``memory://``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import fields, is_dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetclient import config
from budgetclient.cli.check import checklist, evaluate_checklist
from budgetclient.drift import PrefixDrift
from budgetclient.errors import LedgerError
from budgetclient.ledger import AlertRecord, Ledger, _codec, open_ledger
from budgetclient.ledger import sqlite as sqlite_ledger
from budgetclient.ledger.aggregate import Selection, drifted_calls, sql_ledger
from budgetclient.ledger_report import read_ledger_report
from budgetclient.reports import Report, build_report, facts_from_records
from budgetclient.reports_drift import drift_rows
from budgetclient.usage import CallRecord, CostBreakdown, Usage

from ._hypothesis import FAST
from ._report_data import T0, History, make_call, sample_history, task_from_calls

PG_URL = os.environ.get("BUDGETCLIENT_TEST_POSTGRES_URL", "")
SETTINGS = config.Settings(
    ledger_url="memory://", alert_cost_per_task_by_name={"triage-ticket": Decimal("0.05")}
)


def varied_history() -> History:
    """The report tests' fortnight, plus what stresses the SQL: calls that started at the same
    instant, amounts with more than 12 decimal places and in scientific notation, cache storage,
    failed calls, calls of tasks that never ended, a nested task whose child has another name and a
    grandchild, budgets, and two names whose runs end at the same instant."""
    history = sample_history(seed=11)
    n = 10_000
    at = T0 + timedelta(days=2, hours=3)

    def call(**kw: Any) -> CallRecord:
        nonlocal n
        n += 1
        return make_call(n, **kw)

    # two names ending together; their calls start together too
    for name in ("tie-a", "tie-b"):
        calls = [
            call(
                at=at,
                usage=Usage(input_tokens=3000, cache_read_tokens=2000, output_tokens=10, requests=1),
                task_id=f"{name}-1",
                task_name=name,
                prefix_hash="p",
            )
            for _ in range(3)
        ]
        history.calls.extend(calls)
        history.tasks.append(
            task_from_calls(
                f"{name}-1",
                name,
                "success",
                calls,
                started_at=at,
                budget_usd=Decimal("1") if name == "tie-a" else None,
            )
        )
    # storage and odd amounts: priced by hand
    odd = [
        (Decimal("0.0000012345678901234567"), "cache.storage"),  # 22 places: summed from the record
        (Decimal("3E-7"), "messages"),
        (Decimal("1.5E-7"), "messages"),
        (Decimal("0.30"), "messages"),
    ]
    parent, child, grandchild = "nest-parent-1", "nest-child-1", "nest-grand-1"
    nested: dict[str, list[CallRecord]] = {parent: [], child: [], grandchild: []}
    for i, (amount, operation) in enumerate(odd):
        owner = (parent, child, grandchild, None)[i]
        record = replace(
            call(
                at=at + timedelta(minutes=1, seconds=i),
                usage=Usage(input_tokens=2500, output_tokens=7, requests=1),
                task_id=owner,
                task_name=None if owner is None else owner.rsplit("-", 1)[0],
                conversation="c",
            ),
            cost=amount,
            operation=operation,
            cost_breakdown=CostBreakdown(storage=amount)
            if operation == "cache.storage"
            else CostBreakdown(output=amount),
        )
        history.calls.append(record)
        if owner is not None:
            nested[owner].append(record)
    grand = task_from_calls(
        grandchild, "nest-grand", "failure", nested[grandchild], started_at=at, parent_id=child
    )
    kid = task_from_calls(
        child, "nest-child", "success", [*nested[child], *nested[grandchild]], started_at=at, parent_id=parent
    )
    top = task_from_calls(
        parent,
        "nest-parent",
        "partial",
        [*nested[parent], *nested[child], *nested[grandchild]],
        started_at=at,
    )
    history.tasks.extend([grand, kid, top])
    # failed calls, and calls of a task that never ended
    history.calls.append(
        call(
            at=at,
            usage=Usage(input_tokens=9000, requests=1),
            task_id="triage-ticket-x",
            task_name="triage-ticket",
            status="error",
        )
    )
    history.calls.append(
        call(
            at=at + timedelta(hours=30),
            model="in-house-model",
            usage=Usage(input_tokens=4000, cache_write_tokens=100, requests=1),
            task_id="ghost-1",
            task_name="ghost",
        )
    )
    return history


def stored_alerts(history: History) -> list[AlertRecord]:
    research = next(t for t in history.tasks if t.name == "research-agent" and t.outcome == "failure")
    return [
        AlertRecord(
            id="stored-1",
            kind="failure_cost_share",
            task_name=research.name,
            task_id=research.id,
            created_at=research.ended_at,
            message="stored",
            value=0.5,
            threshold=0.25,
        ),
        AlertRecord(
            id="stored-2",
            kind="cost_per_task",
            task_name=None,
            task_id=None,
            created_at=T0,
            message="loose",
            details={"k": 1},
        ),
    ]


def exact(value: Any) -> Any:
    """A value with every Decimal as its text (so 0.30 and 0.3 differ) and alert ids dropped."""
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    if isinstance(value, datetime):
        return ("time", value.isoformat())
    if is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            *(
                exact(getattr(value, f.name))
                for f in fields(value)
                if f.name not in ("generated_at", "id") or not isinstance(value, Report | AlertRecord)
            ),
        )
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [exact(v) for v in value]
    return value


def reference(
    ledger: Ledger, since: datetime | None, task: str | None, settings: config.Settings = SETTINGS
) -> tuple[Report, Any, Any]:
    """Today's aggregation: every record decoded, aggregated in Python."""
    tasks = ledger.read_tasks(since=since, name=task)
    calls = ledger.read_calls(since=since, task_name=task)
    alerts = ledger.read_alerts(since=since, task_name=task)
    report = build_report(tasks, calls, alerts, task_name=task, settings=settings, since=since)
    return (
        report,
        facts_from_records(tasks, calls, settings=settings),
        evaluate_checklist(tasks, calls, report, settings=settings),
    )


SELECTIONS = [
    (None, None),
    (T0 + timedelta(days=2), None),
    (None, "research-agent"),
    (None, "nest-parent"),
    (T0 + timedelta(days=1, hours=5), "triage-ticket"),
    (None, "no-such-task"),
]


def assert_same_figures(ledger: Ledger) -> None:
    for since, task in SELECTIONS:
        old, old_facts, old_items = reference(ledger, since, task)
        new = read_ledger_report(
            ledger, since=since, task_name=task, settings=SETTINGS, points=True, facts=True
        )
        where = f"since={since} task={task}"
        assert [r.task for r in new.report.rows] == [r.task for r in old.rows], where
        for got, want in zip(new.report.rows, old.rows, strict=True):
            for f in fields(want):
                assert exact(getattr(got, f.name)) == exact(getattr(want, f.name)), (where, want.task, f.name)
        assert exact(new.report) == exact(old), where
        assert exact(new.facts) == exact(old_facts), where
        assert new.facts is not None and checklist(new.facts, new.report, settings=SETTINGS) == old_items, (
            where
        )
        json_rows = [
            {**row, "alerts": [{**a, "id": None} for a in row["alerts"]]} for row in new.report.as_json()
        ]
        assert json_rows == [
            {**row, "alerts": [{**a, "id": None} for a in row["alerts"]]} for row in old.as_json()
        ]


@pytest.fixture(scope="module")
def history() -> History:
    return varied_history()


def fill(ledger: Ledger, history: History) -> None:
    ledger.write(calls=history.calls, tasks=history.tasks, alerts=stored_alerts(history))


def test_the_history_exercises_what_it_claims(history: History) -> None:
    report = build_report(history.tasks, history.calls, settings=SETTINGS)
    kinds = {a.kind for r in report.rows for a in r.alerts}
    assert {"cost_per_task", "cost_baseline", "cache_hit_rate", "failure_cost_share", "output_ratio"} <= kinds
    assert report.unpriced_calls and any(r.task is None for r in report.rows)
    assert any(_codec.fixed_money(str(c.cost)) is None for c in history.calls if c.cost is not None)


def test_sqlite_figures_equal_the_python_aggregation(tmp_path: Path, history: History) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    fill(ledger, history)
    assert_same_figures(ledger)
    ledger.close()


def test_memory_figures_equal_the_python_aggregation(history: History) -> None:
    ledger = open_ledger(f"memory://report-{uuid.uuid4().hex}")
    fill(ledger, history)
    assert_same_figures(ledger)


def test_sqlite_money_columns_are_filled_once_by_the_first_report(tmp_path: Path, history: History) -> None:
    path = tmp_path / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    fill(ledger, history)
    columns = ", ".join(_codec.MONEY_COLUMNS)
    with sqlite3.connect(path) as raw:  # the writer leaves them empty
        assert raw.execute("SELECT DISTINCT m_from_record FROM calls").fetchall() == [(1,)]
    read_ledger_report(ledger, settings=SETTINGS)
    with sqlite3.connect(path) as raw:
        filled = raw.execute(f"SELECT {columns} FROM calls ORDER BY rowid").fetchall()
        records = raw.execute("SELECT record FROM calls ORDER BY rowid").fetchall()
    for row, (record,) in zip(filled, records, strict=True):
        cost, buckets = json.loads(record)[12:14]
        exact = [cost, *(buckets or [None] * 5)]
        if row[-1] == 2:  # more than 12 decimal places: summed from the record
            assert any(t is not None and _codec.fixed_money(t) is None for t in exact)
            continue
        assert row[-1] == 0
        for fixed, text in zip(row[:-1], exact, strict=True):
            assert (fixed is None) == (text is None)
            if text is not None:  # the column holds the amount exactly
                assert _codec.money_from_fixed(fixed >> 4, fixed & 15) == Decimal(text)
    assert sqlite_ledger.SQLiteLedger.fill_money_columns(ledger) == 0  # type: ignore[arg-type]
    ledger.close()


def test_sqlite_rows_that_cannot_be_filled_are_summed_from_their_records(
    tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report on a file it may not write (or a fill that fails) still gives exact figures."""

    def refuse(self: object) -> int:
        raise LedgerError("read-only")

    monkeypatch.setattr(sqlite_ledger.SQLiteLedger, "fill_money_columns", refuse)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    fill(ledger, history)
    assert_same_figures(ledger)
    ledger.close()


def test_money_columns_hold_exact_pico_usd() -> None:
    for text in ["0.037035", "3E-7", "1.5E-7", "0", "12", "0.30", "0E-10", "1E+2", "-0.5", "0.000000000001"]:
        fixed = _codec.fixed_money(text)
        assert fixed is not None
        assert (
            _codec.money_from_fixed(fixed >> 4, fixed & 15).as_tuple()
            == (Decimal(text) + Decimal(0)).as_tuple()
        )
    assert _codec.fixed_money("0.0000000000001") is None and _codec.fixed_money("NaN") is None
    assert _codec.fixed_money("10000000") is None  # beyond 2**63 pico-USD x 16: summed from the record


@pytest.fixture
def pg_ledger() -> Iterator[Ledger]:
    if not PG_URL:
        pytest.skip(
            "BUDGETCLIENT_TEST_POSTGRES_URL is not set; `source .ci/postgres.sh` starts a throwaway server"
        )
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:16]}"
    ledger = open_ledger(f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}")
    yield ledger
    ledger.close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_postgres_figures_equal_the_python_aggregation(pg_ledger: Ledger, history: History) -> None:
    fill(pg_ledger, history)
    assert_same_figures(pg_ledger)


def test_points_only_when_asked(tmp_path: Path, history: History) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    fill(ledger, history)
    assert read_ledger_report(ledger, settings=SETTINGS).report.points == ()
    assert len(read_ledger_report(ledger, settings=SETTINGS, points=True).report.points) == len(history.tasks)
    ledger.close()


def _drifted(i: int, task: str | None, cause: str, cost: str | None) -> CallRecord:
    drift = PrefixDrift(
        segment=f"messages[{i}].content", offset=i, before="a", after="b", cause=cause,
        tokens_at_risk=100 * (i + 1), est_extra_cost=None if cost is None else Decimal(cost),
    )  # fmt: skip
    return replace(make_drift_base(i, task), drift=drift)


def make_drift_base(i: int, task: str | None) -> CallRecord:
    return CallRecord(
        id=f"drift-{i}", provider="anthropic", model="claude-sonnet-4-6", operation="messages",
        started_at=datetime(2026, 12, 1, 12, i, tzinfo=UTC), duration_s=0.1, usage=Usage(input_tokens=10),
        cost=None, cost_breakdown=None, status="ok", http_status=200, error=None, task_id=None,
        task_name=task, conversation=None, stream=False, batch=False, attempt=1, request_bytes=10,
        prefix_hash=None, response_id=None, service_tier=None, drift=None, metadata={},
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_drift_section_reads_only_drifted_calls_and_matches_the_records(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        ledger: Ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    else:
        ledger = request.getfixturevalue("pg_ledger")
    calls = [
        _drifted(0, "agent", "timestamp", "0.01"),
        _drifted(1, "agent", "timestamp", None),
        _drifted(2, None, "key-order", "0.002"),
        make_drift_base(3, "agent"),  # no drift: not in the section
        _drifted(4, "other", "content", "0.5"),
    ]
    ledger.write(calls=calls)
    db = sql_ledger(ledger)
    assert db is not None
    drifted = drifted_calls(db, Selection())
    assert sorted(c.task_name or "" for c in drifted) == ["", "agent", "agent", "other"]
    rows = drift_rows(drifted)
    assert rows == drift_rows(calls)  # the same section as from whole records (memory://'s path)
    agent = next(r for r in rows if r.task == "agent")
    assert (agent.calls, agent.tokens_at_risk, agent.unpriced) == (2, 100 + 200, 1)
    assert agent.cost_at_risk == Decimal("0.01")
    assert rows[0].task == "other"  # most money at risk first


def same_as_reference(
    ledger: Ledger, since: datetime | None, task: str | None, settings: config.Settings = SETTINGS
) -> None:
    old, old_facts, old_items = reference(ledger, since, task, settings)
    new = read_ledger_report(ledger, since=since, task_name=task, settings=settings, points=True, facts=True)
    where = f"since={since} task={task}"
    assert exact(replace(new.report, rows=())) == exact(replace(old, rows=())), where
    for got, want in zip(new.report.rows, old.rows, strict=True):
        assert exact(replace(got, alerts=())) == exact(replace(want, alerts=())), where
        assert [replace(a, id="") for a in got.alerts] == [replace(a, id="") for a in want.alerts], (
            where,
            want.task,
        )
    assert len(new.report.rows) == len(old.rows)
    assert exact(new.facts) == exact(old_facts), where
    assert new.facts is not None and checklist(new.facts, new.report, settings=settings) == old_items, where


def test_reports_from_stored_run_facts_equal_a_replay_of_every_call(
    tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first report computes each run's facts from its calls and stores them; later ones read the
    runs only (no call of a task name with runs is read again) and give the same figures and alerts."""
    from budgetclient import ledger_report

    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    fill(ledger, history)
    read_ledger_report(ledger, settings=SETTINGS, facts=True)
    with sqlite3.connect(tmp_path / "ledger.db") as raw:
        assert raw.execute("SELECT COUNT(*) FROM tasks WHERE facts IS NULL").fetchone() == (0,)
    owner = {t.id: t.name for t in history.tasks}
    # the checklist reads the calls of a name that has calls outside its runs (loose, or of a task
    # that never ended): those are not in any run's facts
    run_names = {t.name for t in history.tasks} - {
        c.task_name for c in history.calls if owner.get(c.task_id or "") != c.task_name
    }
    assert len(run_names) >= 5
    real_calls_of = ledger_report.calls_of

    def calls_of(db: Any, sel: Selection, name: str | None, **kw: Any) -> Any:
        assert name not in run_names or sel.task_name is not None, name  # only loose and orphan calls
        return real_calls_of(db, sel, name, **kw)

    monkeypatch.setattr(ledger_report, "calls_of", calls_of)
    for since, task in SELECTIONS:
        if task is None:
            same_as_reference(ledger, since, task)
    ledger.close()


def test_run_facts_of_another_threshold_are_computed_again(tmp_path: Path, history: History) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    fill(ledger, history)
    read_ledger_report(ledger, settings=SETTINGS)
    other = replace(SETTINGS, signals=replace(SETTINGS.signals, cache_min_input_tokens=2500))
    same_as_reference(ledger, None, None, other)
    ledger.close()


@st.composite
def small_ledgers(draw: st.DrawFn) -> History:
    """Runs of two names close together (within the cache TTL or not), sharing prefix hashes and
    conversations or not, with children of either name (ending before their parent or after it),
    failed calls, inputs either side of the cache threshold, loose calls and calls of tasks that
    never ended: what decides which calls repeat a prefix, per run and across runs."""
    history = History()
    n = 0

    def calls_for(task_id: str | None, name: str | None, start: datetime, count: int) -> list[CallRecord]:
        nonlocal n
        out = []
        at = start
        for _ in range(count):
            n += 1
            at += timedelta(seconds=draw(st.sampled_from([0, 1, 30, 200, 400])))
            input_tokens = draw(st.sampled_from([500, 1024, 3000]))
            read = draw(st.sampled_from([0, input_tokens // 4, input_tokens]))
            out.append(make_call(
                n, at=at, usage=Usage(input_tokens=input_tokens, cache_read_tokens=read, output_tokens=10),
                task_id=task_id, task_name=name,
                conversation=draw(st.sampled_from([None, "c1", "c2", f"own-{task_id}"])),
                prefix_hash=draw(st.sampled_from([None, "p1", "p2"])),
                status=draw(st.sampled_from(["ok", "ok", "ok", "error"])),
            ))  # fmt: skip
        return out

    for i in range(draw(st.integers(1, 6))):
        name = draw(st.sampled_from(["alpha", "beta"]))
        start = T0 + timedelta(seconds=draw(st.integers(0, 1500)))
        own = calls_for(f"run-{i}", name, start, draw(st.integers(0, 4)))
        children: list[CallRecord] = []
        for j in range(draw(st.integers(0, 2))):
            child_name = draw(st.sampled_from(["alpha", "beta"]))
            child_calls = calls_for(
                f"run-{i}-{j}", child_name, start + timedelta(seconds=1), draw(st.integers(0, 3))
            )
            child = task_from_calls(
                f"run-{i}-{j}", child_name, "success", child_calls,
                started_at=start + timedelta(seconds=1), parent_id=f"run-{i}",
            )  # fmt: skip
            if draw(st.booleans()):  # ends after its parent: its calls never reach the parent
                child = replace(child, ended_at=child.ended_at + timedelta(hours=1))
            history.tasks.append(child)
            history.calls += child_calls
            children += child_calls
        outcome = draw(st.sampled_from(["success", "failure"]))
        run = task_from_calls(f"run-{i}", name, outcome, [*own, *children], started_at=start)
        history.tasks.append(run)
        history.calls += own
    history.calls += calls_for(None, draw(st.sampled_from([None, "alpha"])), T0, draw(st.integers(0, 2)))
    history.calls += calls_for("never-ended", "beta", T0, draw(st.integers(0, 2)))
    return history


@settings(FAST, max_examples=60)
@given(history=small_ledgers(), cut=st.integers(0, 1500))
def test_generated_ledgers_report_as_a_replay_of_every_call(history: History, cut: int) -> None:
    """Hypothesis ledgers: the first report (facts computed from the calls), a second one (facts read
    back), and a window, each equal to the replay of every call."""
    path = Path(tempfile.mkdtemp()) / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    try:
        ledger.write(calls=history.calls, tasks=history.tasks)
        same_as_reference(ledger, None, None)
        same_as_reference(ledger, None, None)
        same_as_reference(ledger, T0 + timedelta(seconds=cut), None)
        same_as_reference(ledger, None, "alpha")
    finally:
        ledger.close()
        shutil.rmtree(path.parent, ignore_errors=True)


def test_calls_stored_before_schema_4_are_read_from_their_records_then_filled(
    tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows without the kind columns (stored before schema 4) give the same figures, read from their
    records while they cannot be filled (a read-only file), and are filled by the next report."""
    path = tmp_path / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    fill(ledger, history)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE calls SET model = NULL, operation = NULL, drifted = NULL")
    real_fill = sqlite_ledger.SQLiteLedger.fill_money_columns

    def refuse(self: object) -> int:
        raise LedgerError("read-only")

    monkeypatch.setattr(sqlite_ledger.SQLiteLedger, "fill_money_columns", refuse)
    same_as_reference(ledger, None, None)
    assert drift_rows(drifted_calls(sql_ledger(ledger), Selection())) == drift_rows(ledger.read_calls())  # type: ignore[arg-type]
    monkeypatch.setattr(sqlite_ledger.SQLiteLedger, "fill_money_columns", real_fill)
    same_as_reference(ledger, None, None)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM calls WHERE drifted IS NULL").fetchone() == (0,)
        stored = raw.execute("SELECT model, operation, drifted, record FROM calls").fetchall()
    for model, operation, drifted, record in stored:
        fields = dict(zip(_codec.COMPACT_RECORD_FIELDS, json.loads(record), strict=False))
        assert (model, operation, drifted) == (
            fields["model"],
            fields["operation"],
            int(fields["drift"] is not None),
        )
    ledger.close()


def test_postgres_limits_are_read_without_creating_their_tables(pg_ledger: Ledger) -> None:
    import psycopg

    from budgetclient.ledger.limits_store import read_limit_rows

    db = sql_ledger(pg_ledger)
    assert db is not None and read_limit_rows(db, 0.0) == []
    schema = pg_ledger.schema  # type: ignore[attr-defined]
    with psycopg.connect(PG_URL) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    assert not [t for (t,) in tables if t.startswith("limit_")]
