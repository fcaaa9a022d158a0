"""What a report reads of a SQL ledger: call totals summed by the database, and per task name its runs
and the few call fields the signals need, so no report decodes whole call records or holds a whole
ledger in memory.

Call money is summed exactly: PostgreSQL sums its ``NUMERIC`` columns, SQLite its integer money
columns (`_codec.MONEY_COLUMNS`); the rare SQLite rows whose amounts those cannot hold are summed here
from their records, in `Decimal`. Works on a ledger with ``dialect`` (``"sqlite"`` or ``"postgres"``)
and ``fetch(sql, params)``; `sql_ledger` says whether one has them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .._construct import fast_constructor
from ..drift import PrefixDrift
from ..errors import LedgerError
from ..usage import CostBreakdown, TaskRecord, Usage, _new_breakdown, _trusted_usage
from . import _codec
from .rollups import store_rollups

__all__ = [
    "DriftedCall",
    "drifted_calls",
    "CallFacts",
    "CallGroup",
    "ChildTask",
    "Selection",
    "SqlLedger",
    "call_groups",
    "calls_of",
    "child_tasks",
    "sql_ledger",
    "task_names",
    "tasks_of",
]


@runtime_checkable
class SqlLedger(Protocol):
    """A ledger a report can query: SQLite and PostgreSQL."""

    dialect: str

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


def sql_ledger(ledger: object) -> SqlLedger | None:
    return ledger if isinstance(ledger, SqlLedger) and ledger.dialect in _DIALECTS else None


@dataclass(frozen=True, slots=True)
class Selection:
    """The records a report covers: started (tasks, calls) at or after ``since``, of one task name."""

    since: datetime | None = None
    task_name: str | None = None


@dataclass(frozen=True, slots=True)
class CallGroup:
    """Calls summed by the database, per (in a task or not, task name, model, cache storage or not)."""

    in_task: bool
    task_name: str | None
    model: str
    storage: bool
    """``operation == "cache.storage"``."""
    calls: int
    priced: int
    usage: Usage
    cost: Decimal
    """Sum over priced calls."""
    cost_breakdown: CostBreakdown
    """Sum over calls with a breakdown."""
    first_started_at: datetime
    last_started_at: datetime


class CallFacts(NamedTuple):
    """The fields of a call the signals and the checklist's cache check read (`signals.PrefixCall`)."""

    order: int
    """Stored order (SQLite rowid, PostgreSQL seq): breaks ties between calls that started together."""
    task_id: str | None
    started_at: datetime
    duration_s: float
    conversation: str | None
    prefix_hash: str | None
    status: str
    usage: Usage
    """Input, cache read and cache write tokens only."""


class ChildTask(NamedTuple):
    """A task with a parent, as far as passing its calls up to the parent goes."""

    order: int
    id: str
    parent_id: str
    name: str
    started_at: datetime
    ended_at: datetime


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZERO = Decimal(0)
_NO_BREAKDOWN = CostBreakdown()
_DIALECTS = ("sqlite", "postgres")
_TOKEN_SUMS = ", ".join(f"SUM({c})" for c in _codec.USAGE_COLUMNS)
_BUCKETS = ("uncached_input", "cache_read", "cache_write", "output", "storage")


class _Sql:
    """The dialect's spelling of each query; ``where`` builds the selection's filters."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        self.mark = "?" if self.sqlite else "%s"
        self.order = "rowid" if self.sqlite else "seq"
        self.prefix = "" if self.sqlite else "{schema}."

    def time(self, moment: datetime, table: str) -> Any:
        if not self.sqlite:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return _codec.time_us(moment) if table == "calls" else _codec.time_text(moment)

    def where(
        self, sel: Selection, table: str, *, named: bool = False, name: str | None = None, extra: str = ""
    ) -> tuple[str, list[Any]]:
        """Filters for ``table``: the selection's, or with ``named`` task name ``name`` (None: no name)."""
        name_column = "name" if table == "tasks" else "task_name"
        filters: list[str] = [extra] if extra else []
        params: list[Any] = []
        if sel.since is not None:
            filters.append(f"started_at >= {self.mark}")
            params.append(self.time(sel.since, table))
        chosen = name if named else sel.task_name
        if named and name is None:
            filters.append(f"{name_column} IS NULL")
        elif chosen is not None:
            filters.append(f"{name_column} = {self.mark}")
            params.append(chosen)
        return (f" WHERE {' AND '.join(filters)}" if filters else ""), params

    def call_kind(self, filled: bool) -> str:
        """The call's model and operation: two columns (on SQLite, unless ``filled``, from ``record``
        where a row stored before schema 4 has them empty; a report fills them)."""
        if self.sqlite and not filled:
            return (
                "COALESCE(model, json_extract(record, '$[1]')), "
                "COALESCE(operation, json_extract(record, '$[2]'))"
            )
        return "model, operation"

    def call_signals(self) -> str:
        """The call's status, conversation and prefix hash: three columns, or one JSON array."""
        return (
            "json_extract(record, '$[3]', '$[6]', '$[7]')"
            if self.sqlite
            else "status, conversation, prefix_hash"
        )

    def moment(self, value: Any) -> datetime:
        if self.sqlite:
            if isinstance(value, int):
                return _EPOCH + timedelta(microseconds=value)
            return datetime.fromisoformat(value)
        return value.astimezone(UTC) if isinstance(value, datetime) else datetime.fromisoformat(value)


def _kinds_filled(ledger: SqlLedger, sql: _Sql) -> bool:
    """Whether every call has its model, operation and drift flag as columns (SQLite: no row stored
    before schema 4 left unfilled; one probe of a partial index), so queries need not read ``record``."""
    return not sql.sqlite or not ledger.fetch("SELECT 1 FROM calls WHERE drifted IS NULL LIMIT 1")


def _money_sum(sql: _Sql, column: str) -> str:
    if sql.sqlite:
        return f"SUM(m_{column} >> 4), MAX(m_{column} & 15)"
    return f"SUM({'cost' if column == 'cost' else 'cost_' + column}), NULL"


def _money(sql: _Sql, total: Any, places: Any) -> Decimal:
    if total is None:
        return Decimal(0)
    if sql.sqlite:
        return _codec.money_from_fixed(int(total), int(places or 0))
    return Decimal(0) + Decimal(total)  # as a Python sum from 0 shows it (no fewer places than 0)


def call_groups(ledger: SqlLedger, sel: Selection, rollups: dict[str, Any] | None = None) -> list[CallGroup]:
    """Every call of the selection, summed per (in a task, task name, model, operation).

    On SQLite the money columns of calls stored since the last report are filled first; where that
    cannot be done (a read-only file), those calls are summed from their records instead. With
    ``rollups`` (`rollups.read_rollups`; a whole-ledger report on SQLite) the sums up to the kept
    rowid mark are read from there and only later calls are summed (and the mark moved on)."""
    sql = _Sql(ledger.dialect)
    fill = getattr(ledger, "fill_money_columns", None)
    if sql.sqlite and fill is not None:
        try:
            fill()
        except LedgerError:
            pass
    width = 4
    money = ", ".join(_money_sum(sql, c) for c in ("cost", *_BUCKETS))
    exact_rows = "SUM(m_from_record != 0), COUNT(m_cost)" if sql.sqlite else "0, COUNT(cost)"
    kind = sql.call_kind(_kinds_filled(ledger, sql))
    select = (
        f"SELECT task_id IS NULL, task_name, {kind}, COUNT(*), {exact_rows}, {_TOKEN_SUMS}, "
        f"{money}, MIN(started_at), MAX(started_at)"
    )
    if rollups is not None and sel == Selection():
        rows = _rolled_up_sums(ledger, select, rollups)
    else:
        where, params = sql.where(sel, "calls")
        rows = ledger.fetch(f"{select} FROM {sql.prefix}calls{where} GROUP BY {_positions(width)}", params)
    unfilled = sql.sqlite and any(row[width + 1] for row in rows)
    loose = _record_money(ledger, sql, sel, kind) if unfilled else {}
    groups = []
    for row in rows:
        key = tuple(row[:width])
        model, operation = row[2:4]
        calls, from_record, priced = (int(v or 0) for v in row[width : width + 3])
        sums = row[width + 3 :]
        usage = Usage(**{c: int(v or 0) for c, v in zip(_codec.USAGE_COLUMNS, sums[:7], strict=True)})
        amounts = [_money(sql, sums[i], sums[i + 1]) for i in range(7, 19, 2)]
        if from_record:
            extra_priced, extra = loose[key]
            priced += extra_priced
            amounts = [a + b for a, b in zip(amounts, extra, strict=True)]
        groups.append(
            CallGroup(
                in_task=not key[0], task_name=key[1], model=model, storage=operation == "cache.storage",
                calls=calls, priced=priced, usage=usage, cost=amounts[0],
                cost_breakdown=CostBreakdown(**dict(zip(_BUCKETS, amounts[1:], strict=True))),
                first_started_at=sql.moment(sums[19]), last_started_at=sql.moment(sums[20]),
            )
        )  # fmt: skip
    return groups


CALL_SUMS = "call_sums"
"""The rollup of the call sums: ``{"v": 2, "mark": rowid or seq, "count": rows up to it, "orders": the
sum of their rowids or seqs, "rows": [...]}``."""
_SUM_KEY = 4
_SUM_MAX = frozenset(range(15, 26, 2))
"""Positions in a call-sums row: the group key before ``_SUM_KEY``, then sums, except the money
columns' decimal places (a maximum), the first start (a minimum) and the last start (a maximum)."""
_SUM_FIRST, _SUM_LAST = 26, 27


def _rolled_up_sums(ledger: SqlLedger, select: str, rollups: dict[str, Any]) -> list[tuple[Any, ...]]:
    """`call_groups`' rows from the kept sums up to a mark (a rowid or seq) and the calls after it.

    Rows are only added (a report's fill writes only rows not filled yet), so the kept sums hold while
    the rows up to the mark are the same: their count and the sum of their rowids or seqs tell (a
    delete lowers both; on PostgreSQL a row that took its seq before the mark and committed after it
    raises both, and the sums are taken again from the first row). On SQLite rowids are given in
    commit order, so only a delete can change them: a count tells. SQLite's new mark stops before the
    first row whose money columns are not filled yet."""
    sql = _Sql(ledger.dialect)
    mark, count, orders, kept = 0, 0, 0, []
    try:
        found = rollups.get(CALL_SUMS)
        if isinstance(found, dict) and found.get("v") == 2:
            mark, count, orders = int(found["mark"]), int(found["count"]), int(found["orders"])
            kept = [tuple(_cell_from(v) for v in row) for row in found["rows"]]
    except (KeyError, TypeError, ValueError, ArithmeticError):
        mark, count, orders, kept = 0, 0, 0, []
    if sql.sqlite:  # a rowid range is counted row by row, the whole table from its b-tree's size
        ((total, after),) = ledger.fetch(
            "SELECT (SELECT COUNT(*) FROM calls), (SELECT COUNT(*) FROM calls WHERE rowid > ?)", [mark]
        )
        holds = total - after == count
        ((last, unfilled),) = ledger.fetch(
            "SELECT (SELECT MAX(rowid) FROM calls), "
            # + 0: through the partial index, not a walk of the table in rowid order
            "(SELECT MIN(rowid + 0) FROM calls WHERE m_from_record != 0 AND m_from_record = 1)"
        )
        new_mark = min(last or 0, (unfilled - 1) if unfilled else (last or 0))
    else:
        ((up_to, up_to_orders, last),) = ledger.fetch(
            "SELECT COUNT(*) FILTER (WHERE seq <= %s), SUM(seq) FILTER (WHERE seq <= %s), MAX(seq) "
            "FROM {schema}.calls WHERE seq <= %s OR seq = (SELECT MAX(seq) FROM {schema}.calls)",
            [mark, mark, mark],
        )
        holds = (int(up_to), int(up_to_orders or 0)) == (count, orders)
        new_mark = int(last or 0)
    if not holds:  # rows changed under the mark (or the rollup is not this ledger's)
        mark, count, orders, kept = 0, 0, 0, []
    new_mark = max(mark, new_mark)
    rows = ledger.fetch(
        f"{select}, {sql.order} <= {sql.mark}, SUM({sql.order}) FROM {sql.prefix}calls "
        f"WHERE {sql.order} > {sql.mark} GROUP BY {_positions(_SUM_KEY)}, {_SUM_LAST + 2}",
        [new_mark, mark],
    )
    covered = [row[:-2] for row in rows if row[-2]]
    beyond = [row[:-2] for row in rows if not row[-2]]
    if covered:
        kept = _merge_sums(kept, covered)
        count += sum(int(row[_SUM_KEY]) for row in covered)
        orders += sum(int(row[-1]) for row in rows if row[-2])
        data = {
            "v": 2, "mark": new_mark, "count": count, "orders": orders,
            "rows": [[_cell_json(v) for v in row] for row in kept],
        }  # fmt: skip
        rollups[CALL_SUMS] = data
        store_rollups(ledger, [(CALL_SUMS, data)])
    return _merge_sums(kept, beyond) if beyond else kept


def _cell_json(value: Any) -> Any:
    """A call-sums value as JSON: PostgreSQL's sums are `Decimal`, its times `datetime`."""
    if isinstance(value, Decimal):
        return {"d": str(value)}
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def _cell_from(value: Any) -> Any:
    if isinstance(value, dict):
        return Decimal(value["d"]) if "d" in value else datetime.fromisoformat(value["t"])
    return value


def _merge_sums(a: Sequence[tuple[Any, ...]], b: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for row in (*a, *b):
        key = tuple(row[:_SUM_KEY])
        into = merged.get(key)
        if into is None:
            merged[key] = list(row)
            continue
        for i in range(_SUM_KEY, len(row)):
            x, y = into[i], row[i]
            if x is None or y is None:
                into[i] = y if x is None else x
            elif i == _SUM_FIRST:
                into[i] = min(x, y)
            elif i == _SUM_LAST or i in _SUM_MAX:
                into[i] = max(x, y)
            else:
                into[i] = x + y
    return [tuple(row) for row in merged.values()]


def _positions(count: int) -> str:
    return ", ".join(str(i) for i in range(1, count + 1))


def _record_money(
    ledger: SqlLedger, sql: _Sql, sel: Selection, kind: str
) -> dict[tuple[Any, ...], tuple[int, list[Decimal]]]:
    """SQLite rows whose money columns are not filled (amounts with more than 12 decimal places, or
    rows not filled yet): their money, summed from the records, per call group."""
    where, params = sql.where(sel, "calls", extra="m_from_record != 0")
    rows = ledger.fetch(
        f"SELECT task_id IS NULL, task_name, {kind}, json_extract(record, '$[12]'), "
        f"json_extract(record, '$[13]') FROM calls{where}",
        params,
    )
    sums: dict[tuple[Any, ...], tuple[int, list[Decimal]]] = {}
    for loose, name, model, operation, cost, buckets in rows:
        key = (loose, name, model, operation)
        priced, amounts = sums.get(key, (0, [Decimal(0)] * 6))
        if cost is not None:
            priced += 1
            amounts[0] += Decimal(cost)
        if buckets is not None:
            for i, text in enumerate(json.loads(buckets), 1):
                amounts[i] += Decimal(text)
        sums[key] = (priced, amounts)
    return sums


def task_names(ledger: SqlLedger, sel: Selection) -> list[str]:
    sql = _Sql(ledger.dialect)
    if not sql.sqlite and sel.since is None:  # PostgreSQL's DISTINCT reads every run: skip through the index
        rows = ledger.fetch(
            "WITH RECURSIVE n (name) AS (SELECT MIN(name) FROM {schema}.tasks UNION ALL "
            "SELECT (SELECT MIN(name) FROM {schema}.tasks WHERE name > n.name) FROM n "
            "WHERE n.name IS NOT NULL) "
            "SELECT name FROM n WHERE name IS NOT NULL"
        )
        return [name for (name,) in rows if sel.task_name is None or name == sel.task_name]
    where, params = sql.where(sel, "tasks")
    return [name for (name,) in ledger.fetch(f"SELECT DISTINCT name FROM {sql.prefix}tasks{where}", params)]


_TASK_READ = ("id", "name", "parent_id", "outcome", "started_at", "ended_at", *_codec.USAGE_COLUMNS,
              "cost", *_codec.BUCKET_COLUMNS, "calls", "budget_usd", "error")  # fmt: skip


def tasks_of(
    ledger: SqlLedger, sel: Selection, name: str, *, start: datetime | None = None
) -> list[tuple[TaskRecord, int, str | None]]:
    """The runs of one task name (that started at ``start`` or later, if given), oldest start first,
    each with its stored order and its stored facts (``ledger_report.RunFacts`` as JSON, None until a
    report has computed them); metadata left out."""
    sql = _Sql(ledger.dialect)
    where, params = sql.where(sel, "tasks", named=True, name=name)
    if start is not None:
        where += f" AND started_at >= {sql.mark}"
        params.append(sql.time(start, "tasks"))
    rows = ledger.fetch(
        f"SELECT {sql.order}, facts, {', '.join(_TASK_READ)} FROM {sql.prefix}tasks{where} "
        f"ORDER BY started_at, {sql.order}",
        params,
    )
    return [(_task(sql, row), row[0], row[1]) for row in rows]


_new_task = fast_constructor(TaskRecord)
"""``TaskRecord(...)`` without a frozen dataclass's per-field cost: a report builds one per run."""


def _task(sql: _Sql, row: Sequence[Any]) -> TaskRecord:
    """A run from its `_TASK_READ` values (after order and facts): what `_codec.task_from_row` gives,
    positionally (a report decodes every run), for SQLite's text forms and PostgreSQL's typed values."""
    task_id, name, parent, outcome, started, ended, i, r, w, wl, o, rs, rq, cost, b1, b2, b3, b4, b5, calls, \
        budget, error = row[2:]  # fmt: skip
    if sql.sqlite:  # times as ISO text, money as decimal text, counts as integers
        started_at, ended_at = datetime.fromisoformat(started), datetime.fromisoformat(ended)
    else:
        started_at, ended_at = sql.moment(started), sql.moment(ended)
    if b1 is None and b2 is None and b3 is None and b4 is None and b5 is None:
        breakdown = _NO_BREAKDOWN
    else:
        breakdown = _new_breakdown(
            uncached_input=_ZERO if b1 is None else Decimal(b1),
            cache_read=_ZERO if b2 is None else Decimal(b2),
            cache_write=_ZERO if b3 is None else Decimal(b3),
            output=_ZERO if b4 is None else Decimal(b4),
            storage=_ZERO if b5 is None else Decimal(b5),
        )  # fmt: skip
    return _new_task(
        id=task_id, name=name, parent_id=parent, outcome=outcome, started_at=started_at, ended_at=ended_at,
        usage=_trusted_usage(input_tokens=int(i), cache_read_tokens=int(r), cache_write_tokens=int(w),
                             cache_write_long_tokens=int(wl), output_tokens=int(o), reasoning_tokens=int(rs),
                             requests=int(rq)),
        cost=None if cost is None else Decimal(cost), cost_breakdown=breakdown, calls=int(calls),
        budget_usd=None if budget is None else Decimal(budget), error=error,
    )  # fmt: skip


def calls_of(
    ledger: SqlLedger,
    sel: Selection,
    name: str | None,
    *,
    between: tuple[datetime, datetime] | None = None,
    task_ids: Sequence[str] = (),
    start: datetime | None = None,
) -> list[CallFacts]:
    """The calls of one task name (None: calls with no task name) in stored order, as `CallFacts`;
    ``between`` keeps those that started in that closed interval, ``start`` those that started then
    or later, ``task_ids`` those of these tasks."""
    sql = _Sql(ledger.dialect)
    where, params = sql.where(sel, "calls", named=True, name=name)
    if start is not None:
        where += f" AND started_at >= {sql.mark}"
        params.append(sql.time(start, "calls"))
    if between is not None:
        where += f" AND started_at >= {sql.mark} AND started_at <= {sql.mark}"
        params += [sql.time(between[0], "calls"), sql.time(between[1], "calls")]
    if task_ids:
        where += f" AND task_id IN ({', '.join([sql.mark] * len(task_ids))})"
        params += list(task_ids)
    rows = ledger.fetch(
        f"SELECT {sql.order}, task_id, started_at, duration_s, input_tokens, cache_read_tokens, "
        f"cache_write_tokens, {sql.call_signals()} FROM {sql.prefix}calls{where} "
        f"ORDER BY started_at, {sql.order}",
        params,
    )
    moment, loads, usage = sql.moment, json.loads, _trusted_usage
    return [
        CallFacts(order, task_id, moment(started), duration, conv, prefix_hash, status,
                  usage(input_tokens=i, cache_read_tokens=r, cache_write_tokens=w, cache_write_long_tokens=0,
                        output_tokens=0, reasoning_tokens=0, requests=0))
        for order, task_id, started, duration, i, r, w, *signals in rows
        for status, conv, prefix_hash in (loads(signals[0]) if len(signals) == 1 else signals,)
    ]  # fmt: skip


def child_tasks(ledger: SqlLedger, sel: Selection) -> list[ChildTask]:
    """Every task of the selection that has a parent."""
    sql = _Sql(ledger.dialect)
    where, params = sql.where(sel, "tasks", extra="parent_id IS NOT NULL")
    rows = ledger.fetch(
        f"SELECT {sql.order}, id, parent_id, name, started_at, ended_at FROM {sql.prefix}tasks{where}", params
    )
    return [ChildTask(o, i, p, n, sql.moment(s), sql.moment(e)) for o, i, p, n, s, e in rows]


class DriftedCall(NamedTuple):
    """What the drift section needs of a call whose cached prefix changed."""

    task_name: str | None
    started_at: datetime
    drift: PrefixDrift


def drifted_calls(ledger: SqlLedger, sel: Selection) -> list[DriftedCall]:
    """Only the calls with a drift, filtered in the database: the section costs what drifted, not
    what the ledger holds."""
    sql = _Sql(ledger.dialect)
    column = "json_extract(record, '$[15]')" if sql.sqlite else "drift"
    if not sql.sqlite:
        drifted = "drift IS NOT NULL"
    elif _kinds_filled(ledger, sql):
        drifted = "drifted = 1"  # the partial index calls_drifted
    else:  # the flag, or the record for a row stored before schema 4 not yet filled
        drifted = f"(drifted = 1 OR (drifted IS NULL AND {column} IS NOT NULL))"
    where, params = sql.where(sel, "calls", extra=drifted)
    rows = ledger.fetch(
        f"SELECT task_name, started_at, {column} FROM {sql.prefix}calls{where} "
        f"ORDER BY started_at, {sql.order}",
        params,
    )
    loads, moment, drift = json.loads, sql.moment, _codec.drift_from
    return [
        DriftedCall(name, moment(started), drift(text if isinstance(text, dict) else loads(text)))
        for name, started, text in rows
    ]
