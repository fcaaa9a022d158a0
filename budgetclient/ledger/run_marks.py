"""What a whole-ledger report reads of the task names whose work an earlier report kept up to a run
(`signal_rollup`): whether each mark still holds, the runs that ended after it, the runs the signals'
history needs before it, and every name's cost percentiles. Each is one query over all the names
(a few hundred marks to a query), not one per name: on PostgreSQL a query is a round trip.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..reports import percentile
from ..usage import TaskRecord
from .aggregate import _TASK_READ, SqlLedger, _Sql, _task

__all__ = ["RunMark", "cost_percentiles", "runs_after", "runs_before", "runs_up_to"]

RunMark = tuple[datetime, datetime, int]
"""A run's place in the order runs ended: (ended at, started at, stored order)."""
Run = tuple[TaskRecord, int, str | None]
"""A run, its stored order and its stored facts (as `aggregate.tasks_of` gives them)."""

_MARKS_PER_QUERY = 200


def _marked(
    ledger: SqlLedger, marks: Mapping[str, RunMark], select: str, op: str, *, group: bool
) -> Iterable[tuple[Any, ...]]:
    """Per mark (``m``), the name and ``select`` over its runs ``t`` with ``(ended_at, started_at,
    order) <op> mark`` (``group``: one row a name, of aggregates). PostgreSQL takes each name's runs
    through the index (a lateral subquery: a join of the marks to every run would be planned as a
    scan of the table); SQLite's planner does so with a join."""
    sql = _Sql(ledger.dialect)
    columns = select.format(order=sql.order)
    where = (
        f"t.name = m.name AND (t.ended_at, t.started_at, t.{sql.order}) {op} (m.ended_at, m.started_at, m.o)"
    )
    items = list(marks.items())
    for start in range(0, len(items), _MARKS_PER_QUERY):
        chunk = items[start : start + _MARKS_PER_QUERY]
        row = f"({', '.join([sql.mark] * 4)})"
        params: list[Any] = []
        for name, (ended, started, order) in chunk:
            params += [name, sql.time(ended, "tasks"), sql.time(started, "tasks"), order]
        marked = f"WITH m (name, ended_at, started_at, o) AS (VALUES {', '.join([row] * len(chunk))}) "
        if sql.sqlite:
            tail = " GROUP BY m.name" if group else ""
            query = f"{marked}SELECT m.name, {columns} FROM m JOIN tasks t ON {where}{tail}"
        else:
            offset = "" if group else " OFFSET 0"  # kept apart: not flattened into a join
            query = (
                f"{marked}SELECT m.name, r.* FROM m CROSS JOIN LATERAL "
                f"(SELECT {columns} FROM {{schema}}.tasks t WHERE {where}{offset}) r"
            )
        yield from ledger.fetch(query, params)


def runs_up_to(ledger: SqlLedger, marks: Mapping[str, RunMark]) -> dict[str, tuple[int, int]]:
    """Per name, how many runs ended at or before its mark, and the sum of their stored orders: a run
    stored since then among them changes both (stored orders only grow), a deleted one the count."""
    found = {name: (0, 0) for name in marks}
    for name, count, orders in _marked(ledger, marks, "COUNT(*), SUM(t.{order})", "<=", group=True):
        found[name] = (int(count), int(orders or 0))
    return found


def runs_after(ledger: SqlLedger, marks: Mapping[str, RunMark]) -> dict[str, list[Run]]:
    """Per name, its runs that ended after its mark, in that order."""
    sql = _Sql(ledger.dialect)
    found: dict[str, list[Run]] = {name: [] for name in marks}
    columns = ", ".join(f"t.{c}" for c in _TASK_READ)
    rows = list(_marked(ledger, marks, f"t.{{order}}, t.facts, {columns}", ">", group=False))
    for row in rows:
        found[row[0]].append((_task(sql, row[1:]), row[1], row[2]))
    for runs in found.values():
        runs.sort(key=lambda run: (run[0].ended_at, run[0].started_at, run[1]))
    return found


def runs_before(ledger: SqlLedger, name: str, mark: RunMark, count: int) -> list[Run]:
    """The last ``count`` runs of the name up to its mark, in the order they ended (no facts)."""
    sql = _Sql(ledger.dialect)
    ended, started, order = mark
    marks = ", ".join([sql.mark] * 3)
    rows = ledger.fetch(
        f"SELECT {sql.order}, NULL, {', '.join(_TASK_READ)} FROM {sql.prefix}tasks "
        f"WHERE name = {sql.mark} AND (ended_at, started_at, {sql.order}) <= ({marks}) "
        f"ORDER BY ended_at DESC, started_at DESC, {sql.order} DESC LIMIT {int(count)}",
        [name, sql.time(ended, "tasks"), sql.time(started, "tasks"), order],
    )
    return [(_task(sql, row), row[0], None) for row in reversed(rows)]


def cost_percentiles(
    ledger: SqlLedger, priced: Mapping[str, int]
) -> dict[str, tuple[Decimal | None, Decimal | None]]:
    """Per task name, the 50th and 95th percentile of its ``priced[name]`` priced runs' costs, as
    `reports.percentile` gives them over the costs in the order the runs ended (a tie in value keeps
    that order). On PostgreSQL two probes of the index ``tasks_name_cost`` a name, at the nearest ranks
    (``NUMERIC`` orders exactly; a tie in value is ordered by end, as here); SQLite's costs are decimal
    text, ranked here from a scan of the covering index ``tasks_name_ended``."""
    sql = _Sql(ledger.dialect)
    if sql.sqlite:  # in the covering index's order: runs that ended and started together by cost
        rows = ledger.fetch(
            "SELECT name, ended_at, started_at, rowid, cost FROM tasks WHERE cost IS NOT NULL "
            "ORDER BY name, ended_at, started_at"
        )
        costs: dict[str, list[Decimal]] = {}
        previous: tuple[Any, ...] = ()
        tied = False
        for row in rows:
            tied = tied or row[:3] == previous
            previous = row[:3]
        if tied:  # rare: the order runs ended in, stored order last
            rows.sort(key=lambda row: row[:4])
        for name, _, _, _, cost in rows:
            costs.setdefault(name, []).append(Decimal(cost))
        return {name: (percentile(values, 50), percentile(values, 95)) for name, values in costs.items()}
    wanted = {  # the ranks `reports.percentile` takes (within 1..count)
        name: (math.ceil(Decimal(50) * count / 100), math.ceil(Decimal(95) * count / 100))
        for name, count in priced.items()
        if count
    }
    ranks = [(name, rank) for name, pair in wanted.items() for rank in dict.fromkeys(pair)]
    found: dict[str, tuple[Decimal | None, Decimal | None]] = {}
    for start in range(0, len(ranks), 2 * _MARKS_PER_QUERY):
        chunk = ranks[start : start + 2 * _MARKS_PER_QUERY]
        rows = ledger.fetch(
            f"WITH m (name, r) AS (VALUES {', '.join(['(%s, %s)'] * len(chunk))}) "
            "SELECT m.name, m.r, (SELECT t.cost FROM {schema}.tasks t WHERE t.name = m.name "
            "AND t.cost IS NOT NULL ORDER BY t.cost, t.ended_at, t.started_at, t.seq OFFSET m.r - 1 LIMIT 1) "
            "FROM m",
            [value for item in chunk for value in item],
        )
        for name, rank, cost in rows:
            low, high = found.get(name, (None, None))
            value = None if cost is None else Decimal(cost)
            p50, p95 = wanted[name]
            found[name] = (value if rank == p50 else low, value if rank == p95 else high)
    return found
