"""Fleet limits on PostgreSQL: one round trip per reservation, the window rows locked ``FOR UPDATE``.

A reservation is one call of a PL/pgSQL function (created with the tables, in the ledger's
schema) that locks each limit's window row in name order (no deadlocks between callers holding
several limits), drops expired holds, checks spent + held + this call against the cap and inserts
the hold, all in one transaction. A settlement is one statement (delete the hold, add the cost).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from .limits_store import Claim, LimitRow, LimitStoreError, Reserved, window_of
from .postgres import CONNECT_TIMEOUT_S, split_url

__all__ = ["PostgresLimitStore"]

_T = TypeVar("_T")


def _schema_sql(s: str) -> tuple[str, ...]:
    return (
        f'CREATE SCHEMA IF NOT EXISTS "{s}"',
        f'CREATE TABLE IF NOT EXISTS "{s}".limit_defs '
        "(name TEXT PRIMARY KEY, usd NUMERIC NOT NULL, per TEXT)",
        f'CREATE TABLE IF NOT EXISTS "{s}".limit_windows '
        "(name TEXT NOT NULL, window_start TIMESTAMPTZ NOT NULL, spent NUMERIC NOT NULL, "
        "PRIMARY KEY (name, window_start))",
        f'CREATE TABLE IF NOT EXISTS "{s}".limit_holds (id TEXT NOT NULL, name TEXT NOT NULL, '
        "window_start TIMESTAMPTZ NOT NULL, amount NUMERIC NOT NULL, expires_at DOUBLE PRECISION NOT NULL, "
        "PRIMARY KEY (id, name))",
        f'CREATE INDEX IF NOT EXISTS limit_holds_window ON "{s}".limit_holds (name, window_start)',
        f"""CREATE OR REPLACE FUNCTION "{s}".limit_reserve(
    p_id TEXT, p_names TEXT[], p_windows TIMESTAMPTZ[], p_caps NUMERIC[], p_pers TEXT[], p_enforce BOOLEAN[],
    p_amount NUMERIC, p_now DOUBLE PRECISION, p_lease DOUBLE PRECISION,
    OUT refused TEXT, OUT totals NUMERIC[]) LANGUAGE plpgsql AS $$
DECLARE
    i INT;
    v_spent NUMERIC;
    v_held NUMERIC;
BEGIN
    totals := ARRAY[]::NUMERIC[];
    FOR i IN 1 .. array_length(p_names, 1) LOOP
        INSERT INTO "{s}".limit_windows (name, window_start, spent) VALUES (p_names[i], p_windows[i], 0)
            ON CONFLICT DO NOTHING;
        SELECT spent INTO v_spent FROM "{s}".limit_windows
            WHERE name = p_names[i] AND window_start = p_windows[i] FOR UPDATE;
        DELETE FROM "{s}".limit_holds WHERE name = p_names[i] AND expires_at <= p_now;
        SELECT COALESCE(SUM(amount), 0) INTO v_held FROM "{s}".limit_holds
            WHERE name = p_names[i] AND window_start = p_windows[i];
        totals := totals || (v_spent + v_held);
        IF p_enforce[i] AND v_spent + v_held + p_amount > p_caps[i] THEN
            refused := p_names[i];
            RETURN;
        END IF;
    END LOOP;
    FOR i IN 1 .. array_length(p_names, 1) LOOP
        INSERT INTO "{s}".limit_defs (name, usd, per) VALUES (p_names[i], p_caps[i], p_pers[i])
            ON CONFLICT (name) DO UPDATE SET usd = EXCLUDED.usd, per = EXCLUDED.per
            WHERE "{s}".limit_defs.usd IS DISTINCT FROM EXCLUDED.usd
               OR "{s}".limit_defs.per IS DISTINCT FROM EXCLUDED.per;
        INSERT INTO "{s}".limit_holds (id, name, window_start, amount, expires_at)
            VALUES (p_id, p_names[i], p_windows[i], p_amount, p_now + p_lease);
    END LOOP;
END $$""",
    )


class PostgresLimitStore:
    """Limits in the ledger's PostgreSQL schema; one autocommit connection per process, one lock."""

    def __init__(self, url: str) -> None:
        self._dsn, self.schema = split_url(url)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = 0

    def _connection(self) -> Any:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        import psycopg

        conn = psycopg.connect(
            self._dsn,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="budgetclient-limits",
            autocommit=True,
        )
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"budgetclient-limits:{self.schema}",)
                )
                for statement in _schema_sql(self.schema):
                    conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _run(self, work: Callable[[Any], _T]) -> _T:
        with self._lock:
            try:
                return work(self._connection())
            except Exception as exc:
                if type(exc).__module__.startswith("psycopg"):
                    conn, self._conn = self._conn, None
                    if conn is not None and self._pid == os.getpid():
                        conn.close()
                    raise LimitStoreError(f"PostgreSQL limits store: {type(exc).__name__}: {exc}") from exc
                raise

    def reserve(
        self, hold_id: str, claims: Sequence[Claim], amount: Decimal, now: float, lease_s: float
    ) -> Reserved:
        def work(conn: Any) -> Reserved:
            refused, totals = conn.execute(
                f'SELECT * FROM "{self.schema}".limit_reserve'
                "(%s, %s, %s::timestamptz[], %s, %s, %s, %s, %s, %s)",
                (
                    hold_id,
                    [c.name for c in claims],
                    [c.window for c in claims],
                    [c.usd for c in claims],
                    [c.per for c in claims],
                    [c.enforce for c in claims],
                    amount,
                    now,
                    lease_s,
                ),
            ).fetchone()
            return Reserved(refused=refused, totals=dict(zip((c.name for c in claims), totals, strict=False)))

        return self._run(work)

    def settle(self, hold_id: str, claims: Sequence[Claim], amount: Decimal) -> None:
        self._run(
            lambda conn: conn.execute(
                f'WITH gone AS (DELETE FROM "{self.schema}".limit_holds WHERE id = %s) '
                f'INSERT INTO "{self.schema}".limit_windows (name, window_start, spent) '
                "SELECT unnest(%s::text[]), unnest(%s::timestamptz[]), %s "
                "ON CONFLICT (name, window_start) DO UPDATE "
                f'SET spent = "{self.schema}".limit_windows.spent + EXCLUDED.spent',
                (hold_id, [c.name for c in claims], [c.window for c in claims], amount),
            )
        )

    def release(self, hold_id: str) -> None:
        self._run(
            lambda conn: conn.execute(f'DELETE FROM "{self.schema}".limit_holds WHERE id = %s', (hold_id,))
        )

    def rows(self, now: float) -> list[LimitRow]:
        def work(conn: Any) -> list[LimitRow]:
            out: list[LimitRow] = []
            for name, usd, per in conn.execute(
                f'SELECT name, usd, per FROM "{self.schema}".limit_defs ORDER BY name'
            ).fetchall():
                window = window_of(per, now)
                start = datetime.fromisoformat(window)
                spent, held = conn.execute(
                    f'SELECT (SELECT COALESCE(SUM(spent), 0) FROM "{self.schema}".limit_windows '
                    "WHERE name = %s AND window_start = %s), "
                    f'(SELECT COALESCE(SUM(amount), 0) FROM "{self.schema}".limit_holds '
                    "WHERE name = %s AND window_start = %s AND expires_at > %s)",
                    (name, start, name, start, now),
                ).fetchone()
                out.append(LimitRow(name, Decimal(usd), per, window, Decimal(spent), Decimal(held)))
            return out

        return self._run(work)
