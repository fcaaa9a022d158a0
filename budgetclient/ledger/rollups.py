"""A report's own work kept in the ledger (table ``rollups``: a name and JSON), so the next report
starts where it stopped instead of from the first record.

Each rollup says up to which mark it holds (a rowid and a row count, or a number of runs and their
digest), and its reader checks that mark against the ledger before using it: a rollup whose mark no
longer holds (rows deleted, runs that ended earlier stored since) is ignored and replaced. Rollups
cover whole-ledger reports only (no ``--since``, no ``--task``). A ledger that cannot be written (a
read-only file or role) keeps none, and its reports do all the work each time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import LedgerError

if TYPE_CHECKING:
    from .aggregate import SqlLedger

__all__ = ["read_rollups", "store_rollups"]


def read_rollups(
    ledger: SqlLedger, *, skip: str | None = None, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The rollups by name, decoded: every one but those whose name starts with ``skip``, or only
    those ``names``; none when the ledger has no table for them or cannot be read."""
    table = "rollups" if ledger.dialect == "sqlite" else "{schema}.rollups"
    sql = f"SELECT name, data FROM {table}"
    mark = "?" if ledger.dialect == "sqlite" else "%s"
    params: list[Any] = []
    if names is not None:
        if not names:
            return {}
        sql += f" WHERE name IN ({', '.join([mark] * len(names))})"
        params = list(names)
    elif skip is not None:
        sql += f" WHERE substr(name, 1, {len(skip)}) != {mark}"
        params = [skip]
    try:
        rows = ledger.fetch(sql, params)
    except LedgerError:
        return {}
    found: dict[str, Any] = {}
    for name, data in rows:
        try:
            found[name] = json.loads(data)
        except ValueError:
            continue  # computed again and replaced
    return found


def store_rollups(ledger: object, rows: Sequence[tuple[str, Any]]) -> None:
    """Keep these (name, JSON-able) rollups, where the ledger can (else the work is done next time too)."""
    store = getattr(ledger, "store_rollups", None)
    if store is None or not rows:
        return
    try:
        store([(name, json.dumps(data, separators=(",", ":"))) for name, data in rows])
    except LedgerError:
        pass
